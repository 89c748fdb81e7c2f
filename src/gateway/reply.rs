//! What the gateway answers for one ext_proc message, before the edge encodes it.

use bytes::Bytes;

/// The answer to one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Let the request or response go on, changed as said.
    Continue(Continue),
    /// Answer the client now; nothing reaches the upstream.
    Immediate(Immediate),
    /// The request counts against budgets: the edge awaits [`super::Stream::admit`] and sends
    /// its reply instead.
    Admit,
}

/// Changes to apply before the message goes on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Continue {
    /// Headers to set (overwriting), lower-case names.
    pub set_headers: Vec<(String, String)>,
    /// Headers to remove.
    pub remove_headers: Vec<String>,
    /// The whole new body, when it changes.
    pub body: Option<Bytes>,
    /// Re-select the route (after `x-ai-eg-model` was set).
    pub clear_route_cache: bool,
    /// Entries for the `io.envoy.ai_gateway` dynamic metadata namespace.
    pub metadata: Vec<(String, MetaValue)>,
    /// How Envoy should send the response body (only in replies to headers).
    pub response_body_mode: Option<BodyMode>,
}

/// A dynamic metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    Str(String),
    Num(f64),
}

/// How Envoy sends a body to the processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// Not at all.
    None,
    /// Whole, in one message.
    Buffered,
    /// Chunk by chunk, as it arrives.
    Streamed,
}

/// A locally generated response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Immediate {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Immediate {
    /// A JSON response.
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        }
    }
}
