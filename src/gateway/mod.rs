//! What the gateway does to each HTTP stream, on our own types: pick the rule and backend,
//! rewrite model, path and credentials, answer what Envoy should not forward, read usage.
//! Nothing here knows tonic or envoy-types; `extproc` translates at the edge.

mod attempts;
mod budget;
mod clock;
mod error;
mod headers;
mod identity;
mod pins;
mod record;
mod reply;
mod request;
mod response;
mod route;
mod stream;
mod trace;

pub use clock::Clock;
pub use error::{ClientError, StreamError};
pub use headers::Headers;
pub use reply::{BodyMode, Continue, Immediate, MetaValue, Reply};
pub use route::{select, NoRoute, Selection};
pub use stream::{Stream, LARGE_COMPRESSED_BODY};
pub use trace::LlmSpan;

/// Output tokens reserved for a request without an output bound.
pub const DEFAULT_OUTPUT_ESTIMATE: u64 = 256;

/// Per-process settings of the data path.
#[derive(Debug, Clone)]
pub struct Options {
    /// Request header naming the user in usage records (e.g. `x-user-id`).
    pub user_header: Option<String>,
    /// Where usage records go.
    pub usage: Option<crate::usage::UsageHub>,
    /// Largest request body once decoded (Envoy bounds it before decoding).
    pub max_body_bytes: u32,
    /// Whether the processor puts the backend's key on the request (beside Envoy Gateway), or
    /// Envoy does (the bootstraps ai-extproc renders: the key then stays out of Envoy's logs).
    pub inject_keys: bool,
    /// Where timings are read.
    pub clock: Clock,
    /// Where budgets are counted; `None`: the config's budgets are not enforced (tests of
    /// other things).
    pub budgets: Option<std::sync::Arc<crate::budget::Budgets>>,
    /// Output tokens a request is estimated to use when it sets no bound (`max_tokens`...).
    pub default_output_estimate: u64,
    /// Which backend holds each stored response (shared by every stream of the processor).
    pub pins: std::sync::Arc<pins::Pins>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            user_header: None,
            usage: None,
            max_body_bytes: crate::contract::DEFAULT_MAX_BODY_BYTES,
            inject_keys: true,
            clock: Clock::default(),
            budgets: None,
            default_output_estimate: DEFAULT_OUTPUT_ESTIMATE,
            pins: std::sync::Arc::default(),
        }
    }
}

#[cfg(test)]
mod tests;
