//! Request bodies: read only the fields the gateway acts on, and rewrite the model value in
//! place so every other byte the client sent reaches the provider as sent.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::endpoint::Endpoint;

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

#[derive(Deserialize)]
struct View<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    messages: Option<Shape>,
    #[serde(default)]
    prompt: Option<Shape>,
    #[serde(default)]
    input: Option<Shape>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
}

/// Validates a request body for `endpoint` and finds its model.
pub fn parse_request(endpoint: Endpoint, body: &[u8]) -> Result<RequestInfo, RequestError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
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
    let view: View<'_> =
        serde_json::from_slice(body).map_err(|e| RequestError::InvalidJson(e.to_string()))?;
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
    check_endpoint_field(endpoint, &view)?;
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
    // The raw value borrows from `body`, so its offset is where the model sits.
    let start = raw_model.get().as_ptr() as usize - body.as_ptr() as usize;
    Ok(RequestInfo {
        model,
        model_span: start..start + raw_model.get().len(),
        stream,
    })
}

fn check_endpoint_field(endpoint: Endpoint, view: &View<'_>) -> Result<(), RequestError> {
    let (field, value) = match endpoint {
        Endpoint::ChatCompletions => ("messages", view.messages),
        Endpoint::Completions => ("prompt", view.prompt),
        Endpoint::Embeddings => ("input", view.input),
        Endpoint::Models => return Ok(()),
    };
    match (endpoint, value) {
        (_, None) => Err(RequestError::MissingField(field)),
        (Endpoint::ChatCompletions, Some(Shape::Array { empty: true })) => {
            Err(RequestError::EmptyMessages)
        }
        (Endpoint::ChatCompletions, Some(Shape::Array { .. })) => Ok(()),
        (Endpoint::ChatCompletions, Some(_)) => Err(RequestError::WrongType {
            field,
            expected: "an array",
        }),
        (_, Some(Shape::Array { .. } | Shape::String)) => Ok(()),
        (_, Some(Shape::Other)) => Err(RequestError::WrongType {
            field,
            expected: "a string or an array",
        }),
    }
}

/// The JSON type of a field whose content the gateway does not read. It walks nested values
/// as `Shape`s again, so serde_json's nesting limit holds (`RawValue` and `IgnoredAny` skip
/// any depth without it).
#[derive(Debug, Clone, Copy)]
enum Shape {
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

/// The body with the model value at `span` replaced by `model`; every other byte unchanged.
pub fn rewrite_model(body: &[u8], span: &Range<usize>, model: &str) -> Bytes {
    let quoted = serde_json::to_string(model).unwrap_or_default();
    let mut out = BytesMut::with_capacity(body.len() - span.len() + quoted.len());
    out.put_slice(&body[..span.start]);
    out.put_slice(quoted.as_bytes());
    out.put_slice(&body[span.end..]);
    out.freeze()
}

#[cfg(test)]
mod tests;
