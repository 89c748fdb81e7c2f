//! ai-extproc: the Envoy external processor that makes Envoy an AI gateway.
//!
//! Layout (arrows point one way): `cli` -> everything; `extproc` (the only module that names
//! envoy-types' ext_proc messages) -> `gateway` -> `providers`, `llm`, `config`; `envoy` ->
//! `config`; `contract` holds the names the Envoy config and the processor share.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod budget;
pub mod cli;
pub mod config;
pub mod contract;
pub mod envoy;
pub mod extproc;
pub mod gateway;
pub mod http_get;
pub mod llm;
pub mod local;
pub mod otlp;
pub mod providers;
pub mod telemetry;
pub mod upstreams;
pub mod usage;
