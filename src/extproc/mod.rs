//! The Envoy edge: the tonic `ExternalProcessor` service. The only module that names
//! envoy-types' ext_proc messages; it turns them into `gateway` calls and back.

mod convert;
mod serve;
mod service;

pub use serve::{serve, serve_with_health, Bound, Listen};
pub use service::Processor;
