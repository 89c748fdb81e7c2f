//! The request and answer as a span reads them, without building a `serde_json::Value` of the
//! whole body: the top level is split into borrowed raw fields, and the chat API (most of the
//! traffic) has its messages and answer read into borrowed typed structs. A whole `Value`
//! costs a map allocation per object and string; this costs one per attribute kept.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::messages::Message;

/// A JSON object's fields, unparsed.
#[derive(Default)]
pub(super) struct Fields<'a>(BTreeMap<&'a str, &'a RawValue>);

impl<'a> Fields<'a> {
    /// `None` when `body` is not an object (or has escaped keys): the caller reads nothing.
    pub(super) fn parse(body: &'a [u8]) -> Option<Self> {
        serde_json::from_slice(body).ok().map(Self)
    }

    pub(super) fn raw(&self, key: &str) -> Option<&'a RawValue> {
        self.0.get(key).copied()
    }

    /// One field as a `Value` (`Null` when absent).
    pub(super) fn value(&self, key: &str) -> Value {
        self.raw(key)
            .and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or(Value::Null)
    }

    /// Several fields as one small object, for the readers that walk a `Value`.
    pub(super) fn object(&self, keys: &[&str]) -> Value {
        let mut m = serde_json::Map::new();
        for k in keys {
            let v = self.value(k);
            if !v.is_null() {
                m.insert((*k).to_string(), v);
            }
        }
        Value::Object(m)
    }

    /// The object without `skip`, as JSON (the raw values copied as they came).
    pub(super) fn without(&self, skip: &[&str]) -> String {
        let mut out = String::from("{");
        for (k, v) in &self.0 {
            if skip.contains(k) {
                continue;
            }
            if out.len() > 1 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k).unwrap_or_default());
            out.push(':');
            out.push_str(v.get());
        }
        out.push('}');
        out
    }

    /// An array field's elements, unparsed.
    pub(super) fn elements(&self, key: &str) -> Vec<&'a RawValue> {
        self.raw(key)
            .and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct ChatMessage<'a> {
    #[serde(default, borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(default, borrow)]
    tool_call_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    image_url: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ImageUrl<'a> {
    #[serde(default, borrow)]
    url: Option<Cow<'a, str>>,
}

fn owned(s: &Option<Cow<'_, str>>) -> String {
    s.as_deref().unwrap_or("").to_string()
}

impl ChatMessage<'_> {
    fn message(&self) -> Message {
        let mut m = Message {
            role: owned(&self.role),
            reasoning: self.reasoning_content.as_deref().map(String::from),
            tool_call_id: self.tool_call_id.as_deref().map(String::from),
            ..Message::default()
        };
        if let Some(raw) = self.content {
            let text = raw.get().trim_start();
            if text.starts_with('"') {
                m.content = serde_json::from_str::<Cow<'_, str>>(text)
                    .ok()
                    .map(Cow::into_owned);
            } else if text.starts_with('[') {
                let parts: Vec<Part<'_>> = serde_json::from_str(text).unwrap_or_default();
                for p in parts {
                    match p.kind.as_deref() {
                        Some("text") => m.parts.push(("text", owned(&p.text))),
                        Some("image_url") => {
                            let url = p.image_url.map_or(String::new(), |u| {
                                let u = u.get();
                                if u.trim_start().starts_with('"') {
                                    serde_json::from_str::<String>(u).unwrap_or_default()
                                } else {
                                    serde_json::from_str::<ImageUrl<'_>>(u)
                                        .map(|i| owned(&i.url))
                                        .unwrap_or_default()
                                }
                            });
                            m.parts.push(("image", url));
                        }
                        _ => {}
                    }
                }
            }
        }
        for call in self.tool_calls.iter().flatten() {
            let f = call.function.as_ref();
            m.tool_calls.push((
                owned(&call.id),
                f.map(|f| owned(&f.name)).unwrap_or_default(),
                f.map(|f| owned(&f.arguments)).unwrap_or_default(),
            ));
        }
        m
    }
}

/// A chat request's `messages`.
pub(super) fn chat_messages(fields: &Fields<'_>) -> Vec<Message> {
    let Some(raw) = fields.raw("messages") else {
        return Vec::new();
    };
    let list: Vec<ChatMessage<'_>> = serde_json::from_str(raw.get()).unwrap_or_default();
    list.iter().map(ChatMessage::message).collect()
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    message: Option<ChatMessage<'a>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

/// A chat or completions answer's messages; `None` when the body is not such an answer.
pub(super) fn answer_messages(body: &[u8]) -> Option<Vec<Message>> {
    let answer: Answer<'_> = serde_json::from_slice(body).ok()?;
    Some(
        answer
            .choices
            .iter()
            .map(|c| match &c.message {
                Some(m) => m.message(),
                None => Message {
                    role: "assistant".into(),
                    content: Some(owned(&c.text)),
                    ..Message::default()
                },
            })
            .collect(),
    )
}
