//! What the rendered Envoy config and the processor agree on: header names, the metadata
//! namespace, the marker of the processor's own replies, and the limits each side enforces for
//! the other. One place, read by both `envoy/` and `gateway/` (Envoy AI Gateway's
//! `internal/filterapi` plays this role there).

/// The header Envoy routes on, set by the processor from the body's `model`.
pub const MODEL_HEADER: &str = "x-ai-eg-model";
/// Header the processor sets to the chosen AIServiceBackend, for rules with several backends.
pub const BACKEND_HEADER: &str = "x-ai-eg-backend";
/// Dynamic metadata namespace shared with Envoy AI Gateway.
pub const METADATA_NAMESPACE: &str = "io.envoy.ai_gateway";
/// Key (in [`METADATA_NAMESPACE`]) the processor sets on its own immediate replies, so that
/// Envoy's local-reply mapping leaves them as they are and shapes only Envoy's own errors.
pub const PROCESSOR_REPLY_KEY: &str = "processor_reply";
/// Largest request body, buffered by Envoy and decoded by the processor (413 beyond).
pub const DEFAULT_MAX_BODY_BYTES: u32 = 16 * 1024 * 1024;
/// Headers a client may send (counted as Envoy passes them to the processor, pseudo-headers and
/// [`ENVOY_ADDED_HEADERS`] aside: as many as Envoy alone allows), and their total size: the
/// processor answers 431 beyond.
pub const MAX_REQUEST_HEADERS: usize = 100;
/// What Envoy adds to every request before the processor sees it.
pub const ENVOY_ADDED_HEADERS: [&str; 4] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-request-id",
    "x-envoy-external-address",
];
pub const MAX_REQUEST_HEADER_BYTES: usize = 60 * 1024;
/// Envoy's own limits sit above the processor's, leaving room for the headers the processor
/// adds (model, backend, credentials, trace context): a header mutation that crossed Envoy's
/// limit would fail the request with a 500.
pub const ENVOY_MAX_REQUEST_HEADERS: u32 = 120;
pub const ENVOY_MAX_REQUEST_HEADERS_KB: u32 = 96;
