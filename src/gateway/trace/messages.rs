//! The conversation in a request or an answer, read from whichever API wrote it into one
//! shape ([`Message`]) that both attribute formats write out.

use std::borrow::Cow;

use serde_json::Value;

use crate::llm::Family;

use super::{capped_bytes, view, TRUNCATED};
use crate::gateway::response::ResponseOutcome;

/// One message, as OpenInference lists them.
#[derive(Debug, Default)]
pub(super) struct Message {
    pub(super) role: String,
    /// Plain text content.
    pub(super) content: Option<String>,
    /// Parts: ("text", text) or ("image", url).
    pub(super) parts: Vec<(&'static str, String)>,
    /// Reasoning text (an answer's).
    pub(super) reasoning: Option<String>,
    /// (id, name, arguments)
    pub(super) tool_calls: Vec<(String, String, String)>,
    pub(super) tool_call_id: Option<String>,
}

pub(super) fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Content as text or parts, whichever API wrote it (OpenAI's `text`/`image_url` parts, the
/// Responses API's `input_text`/`input_image`/`output_text`, Anthropic's `text`/`image`/
/// `thinking`/`tool_use`/`tool_result` blocks).
fn read_content(content: &Value, m: &mut Message) {
    match content {
        Value::String(s) => m.content = Some(s.clone()),
        Value::Array(parts) => {
            for p in parts {
                match p["type"].as_str().unwrap_or("") {
                    "text" | "input_text" | "output_text" => {
                        m.parts.push(("text", str_of(&p["text"])));
                    }
                    "image_url" => {
                        let url = p["image_url"]["url"]
                            .as_str()
                            .or(p["image_url"].as_str())
                            .unwrap_or("");
                        m.parts.push(("image", url.to_string()));
                    }
                    "input_image" => {
                        m.parts
                            .push(("image", p["image_url"].as_str().unwrap_or("").to_string()));
                    }
                    "image" => {
                        // Anthropic: a URL source, or base64 data.
                        let src = &p["source"];
                        let url = match src["type"].as_str() {
                            Some("url") => src["url"].as_str().unwrap_or("").to_string(),
                            _ => format!(
                                "data:{};base64,{}",
                                src["media_type"].as_str().unwrap_or("image"),
                                src["data"].as_str().unwrap_or("")
                            ),
                        };
                        m.parts.push(("image", url));
                    }
                    "thinking" => {
                        m.reasoning = Some(str_of(&p["thinking"]));
                    }
                    "tool_use" => m.tool_calls.push((
                        str_of(&p["id"]),
                        str_of(&p["name"]),
                        p["input"].to_string(),
                    )),
                    "tool_result" => {
                        m.tool_call_id = Some(str_of(&p["tool_use_id"]));
                        match &p["content"] {
                            Value::String(s) => m.parts.push(("text", s.clone())),
                            Value::Array(inner) => {
                                for i in inner {
                                    m.parts.push(("text", str_of(&i["text"])));
                                }
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// The request's messages, whichever family.
pub(super) fn input_messages(family: &dyn Family, fields: &view::Fields<'_>) -> Vec<Message> {
    if family.name() == "chat" {
        return view::chat_messages(fields);
    }
    let body = &fields.object(&["instructions", "input", "system", "messages"]);
    let mut out = Vec::new();
    match family.name() {
        "responses" => {
            if let Some(i) = body["instructions"].as_str() {
                out.push(Message {
                    role: "system".into(),
                    content: Some(i.into()),
                    ..Message::default()
                });
            }
            match &body["input"] {
                Value::String(s) => out.push(Message {
                    role: "user".into(),
                    content: Some(s.clone()),
                    ..Message::default()
                }),
                Value::Array(items) => {
                    for item in items {
                        match item["type"].as_str() {
                            Some("function_call_output") => out.push(Message {
                                role: "tool".into(),
                                content: Some(str_of(&item["output"])),
                                tool_call_id: item["call_id"].as_str().map(String::from),
                                ..Message::default()
                            }),
                            Some("function_call") => out.push(Message {
                                role: "assistant".into(),
                                tool_calls: vec![(
                                    str_of(&item["call_id"]),
                                    str_of(&item["name"]),
                                    str_of(&item["arguments"]),
                                )],
                                ..Message::default()
                            }),
                            _ => {
                                let mut m = Message {
                                    role: item["role"].as_str().unwrap_or("user").into(),
                                    ..Message::default()
                                };
                                read_content(&item["content"], &mut m);
                                out.push(m);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        "messages" | "count_tokens" => {
            if !body["system"].is_null() {
                let mut m = Message {
                    role: "system".into(),
                    ..Message::default()
                };
                read_content(&body["system"], &mut m);
                out.push(m);
            }
            for v in body["messages"].as_array().into_iter().flatten() {
                let mut m = Message {
                    role: str_of(&v["role"]),
                    ..Message::default()
                };
                read_content(&v["content"], &mut m);
                out.push(m);
            }
        }
        _ => {}
    }
    out
}

/// The answer's messages from a whole JSON body.
fn output_messages(family: &dyn Family, body: &[u8]) -> Vec<Message> {
    if matches!(family.name(), "chat" | "completions") {
        return view::answer_messages(body).unwrap_or_default();
    }
    let body = &serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    match family.name() {
        "responses" => {
            let mut m = Message {
                role: "assistant".into(),
                ..Message::default()
            };
            for item in body["output"].as_array().into_iter().flatten() {
                match item["type"].as_str() {
                    Some("message") => read_content(&item["content"], &mut m),
                    Some("function_call") => m.tool_calls.push((
                        str_of(&item["call_id"]),
                        str_of(&item["name"]),
                        str_of(&item["arguments"]),
                    )),
                    Some("reasoning") => {
                        let text: Vec<String> = item["summary"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|s| str_of(&s["text"]))
                            .collect();
                        m.reasoning = Some(text.join(""));
                    }
                    _ => {}
                }
            }
            vec![m]
        }
        "messages" => {
            let mut m = Message {
                role: str_of(&body["role"]),
                ..Message::default()
            };
            read_content(&body["content"], &mut m);
            vec![m]
        }
        _ => Vec::new(),
    }
}

/// The answer: its messages, its text for `output.value` (capped) and that text's MIME type
/// (empty when there was no answer).
pub(super) struct Answer<'a> {
    pub messages: Vec<Message>,
    pub value: Cow<'a, str>,
    pub mime: &'static str,
}

/// The answer of `outcome`: a JSON body's messages, or what a stream's events said.
pub(super) fn answer<'a>(
    family: &dyn Family,
    outcome: &'a ResponseOutcome,
    cap: usize,
) -> Answer<'a> {
    match (&outcome.trace_body, &outcome.capture) {
        (Some(body), _) => Answer {
            messages: output_messages(family, body),
            value: capped_bytes(body, cap),
            mime: "application/json",
        },
        (None, Some(c)) => {
            let mut text = c.text.clone();
            if c.truncated {
                text.push_str(TRUNCATED);
            }
            let m = Message {
                role: "assistant".into(),
                content: (!text.is_empty()).then(|| text.clone()),
                reasoning: (!c.reasoning.is_empty()).then(|| c.reasoning.clone()),
                tool_calls: c.tool_calls.clone(),
                ..Message::default()
            };
            Answer {
                messages: vec![m],
                value: Cow::Owned(text),
                mime: "text/plain",
            }
        }
        (None, None) => Answer {
            messages: Vec::new(),
            value: Cow::Borrowed(""),
            mime: "",
        },
    }
}
