//! Integration tests: one binary (each extra test binary costs a full link). The golden tests
//! without Envoy (`tests/golden`) are a second, small one: `make mutants` runs them for every
//! mutant, and this one takes far longer to link.
//!
//! - `guide`: every curl of the Fireworks guide through real Envoy 1.40, ai-extproc and the fake
//!   upstreams, checking what the provider received and what the client got.
//! - `envoy_config`: the committed bootstrap in `envoy/` matches the renderer and Envoy accepts it.
//! - `cli`: the binary's `check` and error reporting.

// Tests fail loudly: unwrap and expect are the point here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod apis;
mod auth;
mod budgets;
mod budgets_redis;
mod cli;
mod deploy;
mod edge;
mod envoy_config;
mod envoy_gateway;
mod failover;
mod faults;
mod guide;
mod hardening;
mod harness;
mod long;
mod messages;
mod ops;
mod otlp;
mod responses;
mod sdk;
mod soak;
mod traces;
mod usage;
