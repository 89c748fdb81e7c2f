//! What the rendered Envoy config and the processor agree on: header names, the metadata
//! namespace, the marker of the processor's own replies, and the limits each side enforces for
//! the other. One place, read by both `envoy/` and `gateway/` (Envoy AI Gateway's
//! `internal/filterapi` plays this role there).

/// The header Envoy routes on, set by the processor from the body's `model`.
pub const MODEL_HEADER: &str = "x-ai-eg-model";
/// Header the processor sets to the chosen AIServiceBackend, for rules with several backends.
pub const BACKEND_HEADER: &str = "x-ai-eg-backend";
/// Header the processor sets to send a request to one AIServiceBackend whatever the rules say:
/// a stored response's `GET`/`DELETE`, or a request continuing it (`previous_response_id`),
/// goes to the backend that created it. Envoy has one route per backend on it, before the
/// rules'; clients cannot set it (the processor removes every `x-ai-eg-*` it did not set).
pub const PINNED_HEADER: &str = "x-ai-eg-pinned-backend";
/// Response header by which a rule's per-attempt filters (envoy/failover.rs) report the attempts
/// Envoy made: `ns/a=503;ns/b=;ns/c=200`, the last one's answer being the response. An empty
/// status is an attempt without an answer (connection failed, reset, silent past the idle
/// timeout), except on the last one, which answered: its status is the response's (the filters
/// skip a first attempt the processor already rewrote, and then report `ns/a=`). The processor
/// reads and removes it.
pub const ATTEMPTS_HEADER: &str = "x-ai-eg-attempts";
/// Request header the per-attempt filters number the attempt with (Envoy's count, from 1) for
/// their own matching; removed before the provider.
pub const ATTEMPT_HEADER: &str = "x-ai-eg-attempt";
/// Namespace of the endpoint metadata naming the AIServiceBackend an endpoint belongs to (key
/// [`ENDPOINT_BACKEND_KEY`]), in the cluster of a rule that fails over.
pub const ENDPOINT_METADATA_NAMESPACE: &str = "ai_extproc";
pub const ENDPOINT_BACKEND_KEY: &str = "backend";
/// Keys (in [`METADATA_NAMESPACE`]) the processor sets for the per-attempt rewrite: the path
/// after the backend's prefix (query included), and the byte range of the model's JSON string
/// in the body Envoy sends.
pub const PATH_SUFFIX_KEY: &str = "path_suffix";
pub const MODEL_START_KEY: &str = "model_start";
pub const MODEL_END_KEY: &str = "model_end";
/// The client's model as a JSON string, for an attempt at a backend without a model override
/// after one whose model the processor put in.
pub const CLIENT_MODEL_KEY: &str = "client_model";
/// Where the per-attempt filter accumulates the attempts (the value of [`ATTEMPTS_HEADER`]):
/// a namespace of its own, small, so reading it costs little; the access log prints it, also
/// when no attempt was answered (then Envoy answers itself, and the processor sees no header).
pub const ATTEMPT_LOG_NAMESPACE: &str = "ai_extproc.attempts";
pub const ATTEMPT_LOG_KEY: &str = "log";
/// Keys the processor sets from [`ATTEMPTS_HEADER`]: how many attempts, and why the earlier
/// ones failed.
pub const ATTEMPTS_KEY: &str = "attempts";
pub const FAILED_ATTEMPTS_KEY: &str = "failed_attempts";
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
