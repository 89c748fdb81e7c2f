//! Request bodies: read only the fields the gateway acts on, and rewrite the model value in
//! place so every other byte the client sent reaches the provider as sent.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::family::{Family, MAX_REQUIRED};

/// The request fields that bound a response's output tokens, across the OpenAI APIs.
const MAX_TOKEN_FIELDS: [&str; 3] = ["max_tokens", "max_completion_tokens", "max_output_tokens"];

/// Longest model name accepted (provider ids are far shorter; this bounds headers and logs).
pub const MAX_MODEL_LEN: usize = 256;

/// What the gateway needs from a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// The client's model name.
    pub model: String,
    /// Byte range of the model's JSON string (quotes included) in the body.
    pub model_span: Range<usize>,
    /// `stream: true`.
    pub stream: bool,
    /// Byte range of `stream_options`' value, if present.
    pub stream_options: Option<Range<usize>>,
    /// `stream_options.include_usage: true`.
    pub include_usage: bool,
    /// Offset of the body's opening `{`.
    pub object_start: usize,
    /// The most output tokens asked for (`max_tokens`, `max_completion_tokens` or
    /// `max_output_tokens`), when a whole number.
    pub max_output_tokens: Option<u64>,
    /// The earlier response this one continues (the family's [`Family::pin_field`]).
    pub pin: Option<String>,
}

/// Why a request body is refused. Every variant is a client error (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("We could not parse the JSON body of your request: {0}")]
    InvalidJson(String),
    #[error("The request body must be a JSON object.")]
    NotAnObject,
    #[error("You must provide a model parameter.")]
    MissingModel,
    #[error("Invalid type for 'model': expected a string.")]
    ModelNotString,
    #[error("The model parameter must not be empty.")]
    EmptyModel,
    #[error("The model parameter is longer than {MAX_MODEL_LEN} bytes.")]
    ModelTooLong,
    #[error("The model parameter contains control characters.")]
    ModelControlChars,
    #[error("Missing required parameter: '{0}'.")]
    MissingField(&'static str),
    #[error("Invalid type for '{field}': expected {expected}.")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("'messages' must contain at least one message.")]
    EmptyMessages,
}

impl RequestError {
    /// The request parameter at fault, for the error body's `param`.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            Self::InvalidJson(_) | Self::NotAnObject => None,
            Self::MissingModel
            | Self::ModelNotString
            | Self::EmptyModel
            | Self::ModelTooLong
            | Self::ModelControlChars => Some("model"),
            Self::MissingField(f) => Some(f),
            Self::WrongType { field, .. } => Some(field),
            Self::EmptyMessages => Some("messages"),
        }
    }
}

/// The fields the gateway reads: `model`, the stream options, and the fields the family
/// requires. Every other field is walked too (as a [`Shape`]), so that serde_json's nesting limit
/// holds for the whole body: a 10,000-deep `tools` is refused like a 10,000-deep `messages`,
/// rather than forwarded for the provider to choke on.
struct View<'a> {
    required: &'static [&'static str],
    pin_field: Option<&'static str>,
    pin: Option<&'a RawValue>,
    model: Option<&'a RawValue>,
    /// Shapes of the `required` fields, in their order.
    fields: [Option<Shape>; MAX_REQUIRED],
    stream: Option<&'a RawValue>,
    /// `null` is kept as a value (its span is replaced too).
    stream_options: Option<&'a RawValue>,
    /// The first of `max_tokens`, `max_completion_tokens`, `max_output_tokens` given.
    max_tokens: Option<&'a RawValue>,
    /// Fields taken so far (a field given twice is refused).
    seen: Vec<Field>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Model,
    Stream,
    StreamOptions,
    /// One of the output bounds, by index in [`MAX_TOKEN_FIELDS`].
    MaxTokens(usize),
    /// The family's required field at this index.
    Required(usize),
    /// The family's pin field.
    Pin,
    Other,
}

/// Reads a key as a [`Field`] without allocating (escaped keys are compared once unescaped):
/// the family's required fields and its pin field.
struct KeySeed(&'static [&'static str], Option<&'static str>);

impl<'de> serde::de::DeserializeSeed<'de> for KeySeed {
    type Value = Field;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for KeySeed {
    type Value = Field;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, key: &str) -> Result<Field, E> {
        Ok(match key {
            "model" => Field::Model,
            "stream" => Field::Stream,
            "stream_options" => Field::StreamOptions,
            // A family may require an output bound (Anthropic's `max_tokens`).
            _ if self.0.contains(&key) => {
                Field::Required(self.0.iter().position(|f| *f == key).unwrap_or(0))
            }
            _ if self.1 == Some(key) => Field::Pin,
            _ if MAX_TOKEN_FIELDS.contains(&key) => {
                Field::MaxTokens(MAX_TOKEN_FIELDS.iter().position(|f| *f == key).unwrap_or(0))
            }
            _ => Field::Other,
        })
    }
}

impl<'a> View<'a> {
    fn field_name(&self, field: Field) -> &'static str {
        match field {
            Field::Model => "model",
            Field::Stream => "stream",
            Field::StreamOptions => "stream_options",
            Field::MaxTokens(i) => MAX_TOKEN_FIELDS[i],
            Field::Required(i) => self.required[i],
            Field::Pin => self.pin_field.unwrap_or(""),
            Field::Other => "",
        }
    }

    /// Takes a field's value; a field given twice is the error serde's derive would give.
    fn once<'de, A: serde::de::MapAccess<'de>, T: Deserialize<'de>>(
        &mut self,
        map: &mut A,
        field: Field,
    ) -> Result<T, A::Error> {
        if self.seen.contains(&field) {
            return Err(serde::de::Error::duplicate_field(self.field_name(field)));
        }
        self.seen.push(field);
        map.next_value()
    }
}

impl<'de: 'a, 'a> serde::de::DeserializeSeed<'de> for View<'a> {
    type Value = View<'a>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<View<'a>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de: 'a, 'a> serde::de::Visitor<'de> for View<'a> {
    type Value = View<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<View<'a>, A::Error> {
        while let Some(field) = map.next_key_seed(KeySeed(self.required, self.pin_field))? {
            // As with serde's `Option`, a `null` is an absent field, except for
            // `stream_options`, whose `null` is a value to replace.
            match field {
                Field::Model => self.model = self.once(&mut map, field)?,
                Field::Stream => self.stream = self.once(&mut map, field)?,
                Field::StreamOptions => {
                    self.stream_options = Some(self.once(&mut map, field)?);
                }
                Field::Required(i) if MAX_TOKEN_FIELDS.contains(&self.required[i]) => {
                    // Both a required field and the output bound budgets estimate from.
                    let value: Option<&'a RawValue> = self.once(&mut map, field)?;
                    self.fields[i] = value
                        .map(|v| serde_json::from_str::<Shape>(v.get()))
                        .transpose()
                        .map_err(serde::de::Error::custom)?;
                    self.max_tokens = self.max_tokens.or(value);
                }
                Field::Required(i) => self.fields[i] = self.once(&mut map, field)?,
                Field::Pin => self.pin = self.once(&mut map, field)?,
                Field::MaxTokens(_) => {
                    let value: Option<&'a RawValue> = self.once(&mut map, field)?;
                    self.max_tokens = self.max_tokens.or(value);
                }
                Field::Other => {
                    map.next_value::<Shape>()?;
                }
            }
        }
        Ok(self)
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Validates a request body for `family` and finds its model.
pub fn parse_request(family: &dyn Family, body: &[u8]) -> Result<RequestInfo, RequestError> {
    let object_start = body.iter().position(|b| !b.is_ascii_whitespace());
    match object_start.map(|i| body[i]) {
        Some(b'{') => {}
        Some(_) => {
            // Tell "not JSON at all" from "JSON of the wrong shape".
            return match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => Err(RequestError::NotAnObject),
                Err(e) => Err(RequestError::InvalidJson(e.to_string())),
            };
        }
        None => return Err(RequestError::InvalidJson("the body is empty".into())),
    }
    let required = family.required();
    let view = View {
        required,
        pin_field: family.pin_field(),
        pin: None,
        model: None,
        fields: [None; MAX_REQUIRED],
        stream: None,
        stream_options: None,
        max_tokens: None,
        seen: Vec::new(),
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let view = serde::de::DeserializeSeed::deserialize(view, &mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| RequestError::InvalidJson(e.to_string()))?;
    let raw_model = view.model.ok_or(RequestError::MissingModel)?;
    let model: String =
        serde_json::from_str(raw_model.get()).map_err(|_| RequestError::ModelNotString)?;
    if model.is_empty() {
        return Err(RequestError::EmptyModel);
    }
    if model.len() > MAX_MODEL_LEN {
        return Err(RequestError::ModelTooLong);
    }
    if model.chars().any(char::is_control) {
        return Err(RequestError::ModelControlChars);
    }
    family.check(&view.fields[..required.len()])?;
    let stream = match view.stream.map(|s| s.get()) {
        None | Some("false") | Some("null") => false,
        Some("true") => true,
        Some(_) => {
            return Err(RequestError::WrongType {
                field: "stream",
                expected: "a boolean",
            })
        }
    };
    let pin =
        match view.pin {
            None => None,
            Some(v) => Some(serde_json::from_str::<String>(v.get()).map_err(|_| {
                RequestError::WrongType {
                    field: family.pin_field().unwrap_or(""),
                    expected: "a string",
                }
            })?),
        };
    let include_usage = view
        .stream_options
        .and_then(|o| serde_json::from_str::<StreamOptions>(o.get()).ok())
        .and_then(|o| o.include_usage)
        == Some(true);
    Ok(RequestInfo {
        model,
        model_span: span(body, raw_model),
        stream,
        stream_options: view.stream_options.map(|o| span(body, o)),
        include_usage,
        object_start: object_start.unwrap_or(0),
        max_output_tokens: view.max_tokens.and_then(|v| v.get().parse().ok()),
        pin,
    })
}

/// Where a raw value borrowed from `body` sits in it.
fn span(body: &[u8], raw: &RawValue) -> Range<usize> {
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    start..start + raw.get().len()
}

/// The JSON type of a field whose content the gateway does not read. It walks nested values
/// as `Shape`s again, so serde_json's nesting limit holds (`RawValue` and `IgnoredAny` skip
/// any depth without it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    String,
    Array { empty: bool },
    Other,
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShapeVisitor)
    }
}

struct ShapeVisitor;

impl<'de> serde::de::Visitor<'de> for ShapeVisitor {
    type Value = Shape;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::String)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        let mut empty = true;
        while seq.next_element::<Shape>()?.is_some() {
            empty = false;
        }
        Ok(Shape::Array { empty })
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        while map.next_entry::<serde::de::IgnoredAny, Shape>()?.is_some() {}
        Ok(Shape::Other)
    }

    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Other)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
}

/// A change to a request body: replace `range` with `text` (an empty range inserts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub range: Range<usize>,
    pub text: String,
}

/// The edit that sets the model value to `model`.
pub fn model_edit(info: &RequestInfo, model: &str) -> Edit {
    Edit {
        range: info.model_span.clone(),
        text: serde_json::to_string(model).unwrap_or_default(),
    }
}

/// The body with `edits` applied (non-overlapping, any order); every other byte unchanged.
pub fn apply_edits(body: &[u8], mut edits: Vec<Edit>) -> Bytes {
    edits.sort_by_key(|e| e.range.start);
    let added: usize = edits.iter().map(|e| e.text.len()).sum();
    let mut out = BytesMut::with_capacity(body.len() + added);
    let mut at = 0;
    for e in &edits {
        out.put_slice(&body[at..e.range.start]);
        out.put_slice(e.text.as_bytes());
        at = e.range.end;
    }
    out.put_slice(&body[at..]);
    out.freeze()
}

/// The body with the model value replaced by `model`; every other byte unchanged.
pub fn rewrite_model(body: &[u8], info: &RequestInfo, model: &str) -> Bytes {
    apply_edits(body, vec![model_edit(info, model)])
}

#[cfg(test)]
mod tests;
