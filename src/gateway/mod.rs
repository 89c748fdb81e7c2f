//! What the gateway does to each HTTP stream, on our own types: pick the rule and backend,
//! rewrite model, path and credentials, answer what Envoy should not forward, read usage.
//! Nothing here knows tonic or envoy-types; `extproc` translates at the edge.

mod error;
mod headers;
mod reply;
mod route;
mod stream;

pub use error::{ClientError, StreamError};
pub use headers::Headers;
pub use reply::{BodyMode, Continue, Immediate, MetaValue, Reply};
pub use route::{select, Selection};
pub use stream::{Stream, BACKEND_HEADER, METADATA_NAMESPACE};

#[cfg(test)]
mod tests;
