//! Usage records of finished requests, for billing systems: streamed over this project's own
//! gRPC API (`proto/ai_extproc/usage/v1/usage.proto`) and/or appended to a JSON-lines file.
//! Delivery never blocks the data path: each consumer has a bounded buffer and what does not
//! fit is counted as dropped.

mod export;
mod hub;
mod jsonl;
mod record;

/// Code generated from `proto/` by build.rs.
pub mod pb {
    #![allow(clippy::all, clippy::unwrap_used, clippy::expect_used, missing_docs)]
    tonic::include_proto!("ai_extproc.usage.v1");
}

pub use export::UsageExportService;
pub use hub::{UsageHub, SUBSCRIBER_BUFFER};
pub use jsonl::spawn_jsonl_sink;
pub use record::{FailedAttempt, UsageRecord};
