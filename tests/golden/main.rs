//! Golden tests without Envoy, in seconds: recorded ext_proc sequences through the real tonic
//! service, and usage read from recorded provider bodies; both compared with snapshots in
//! `snapshots/`. A binary of their own so that `make mutants` can run them for every mutant
//! without linking the end-to-end suite (`tests/it`).

// Tests fail loudly: unwrap and expect are the point here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

mod grpc_fixtures;
mod usage_golden;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn examples() -> Vec<PathBuf> {
    vec![
        root().join("examples/basic.yaml"),
        root().join("examples/fireworks.yaml"),
    ]
}
