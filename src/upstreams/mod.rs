//! Upstreams for offline use and tests: the basic guide's test upstream (plain HTTP) and a fake
//! Fireworks (HTTPS with a test CA made at run time) that answers like the real API. Both record
//! what they received so tests can check what the provider saw.

mod fireworks;
mod record;
mod responses;
mod server;
mod testupstream;
mod tls;

pub use fireworks::{
    FireworksOptions, Speaks, FAKE_MODELS, FAULT_HEADER as FAKE_FIREWORKS_FAULT_HEADER,
    STREAM_USAGE_HEADER as FAKE_FIREWORKS_STREAM_USAGE_HEADER,
};
pub use record::{Recorded, Recorder};
pub use server::{spawn, Upstream, UpstreamKind};
pub use testupstream::TestOptions;
pub use tls::TestCa;
