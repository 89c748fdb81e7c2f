//! What the gateway does to each HTTP stream, on our own types: pick the rule and backend,
//! rewrite model, path and credentials, answer what Envoy should not forward, read usage.
//! Nothing here knows tonic or envoy-types; `extproc` translates at the edge.

mod error;
mod headers;
mod record;
mod reply;
mod response;
mod route;
mod stream;

pub use error::{ClientError, StreamError};
pub use headers::Headers;
pub use reply::{BodyMode, Continue, Immediate, MetaValue, Reply};
pub use route::{select, Selection};
pub use stream::{Stream, BACKEND_HEADER, METADATA_NAMESPACE};

/// Per-process settings of the data path.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Request header naming the user in usage records (e.g. `x-user-id`).
    pub user_header: Option<String>,
    /// Where usage records go.
    pub usage: Option<crate::usage::UsageHub>,
}

#[cfg(test)]
mod tests;
