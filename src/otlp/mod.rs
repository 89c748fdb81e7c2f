//! Span export over OTLP/gRPC, lean: a request's span is written as OTLP protobuf while the
//! request is handled (attributes encoded once, straight from the borrowed request and answer)
//! and queued whole to an export thread that batches and sends it.
//!
//! Why not the OpenTelemetry SDK's span pipeline (tracing-opentelemetry, `SdkTracerProvider`,
//! the batch processor and the tonic exporter)? Measured under `make bench`, it cost ~35 µs per
//! request beside the ~100 µs the whole processor takes: the `tracing` layer's bookkeeping on
//! every poll of a stream, each attribute built as an owned `KeyValue`, cloned once more by the
//! exporter, converted into the generated OTLP structs and only then encoded, on the
//! processor's own runtime. The SDK still does what it is good at here: W3C propagation, the
//! ids, the sampler from `OTEL_TRACES_SAMPLER`, the resource from `OTEL_RESOURCE_ATTRIBUTES`.

mod export;
mod settings;
mod span;
mod wire;

use std::sync::OnceLock;

#[cfg(test)]
pub use export::Received;
pub use export::{start, ExportGuard, Sink};
pub use settings::Settings;
pub use span::{now_ns, SpanWriter};
pub use wire::Value;

use opentelemetry_sdk::trace::Sampler;

/// What a request needs to record a span: the sampler and where finished spans go.
#[derive(Debug)]
pub struct Tracer {
    pub sink: Sink,
    pub sampler: Sampler,
}

static TRACER: OnceLock<Tracer> = OnceLock::new();

/// The process's tracer, when spans are exported (`--otlp-endpoint`).
pub fn tracer() -> Option<&'static Tracer> {
    TRACER.get()
}

/// Spans dropped since start (queue full, the collector failing, unreachable or rejecting
/// them); 0 when spans are not exported.
pub fn dropped() -> u64 {
    tracer().map_or(0, |t| t.sink.dropped())
}

/// Makes `tracer` the process's (once; later calls are ignored).
pub fn install(tracer: Tracer) {
    let _ = TRACER.set(tracer);
}

/// The sampler `OTEL_TRACES_SAMPLER` (and `..._ARG`) names, as the SDK reads them; an unknown
/// name is an error rather than the SDK's silent fallback.
pub fn sampler_from_env(get: impl Fn(&str) -> Option<String>) -> Result<Sampler, String> {
    let ratio = || -> Result<f64, String> {
        match get("OTEL_TRACES_SAMPLER_ARG") {
            None => Ok(1.0),
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("OTEL_TRACES_SAMPLER_ARG={v:?}: not a ratio in [0, 1]")),
        }
    };
    Ok(match get("OTEL_TRACES_SAMPLER").as_deref().map(str::trim) {
        None | Some("" | "parentbased_always_on") => {
            Sampler::ParentBased(Box::new(Sampler::AlwaysOn))
        }
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("parentbased_always_off") => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        Some("traceidratio") => Sampler::TraceIdRatioBased(ratio()?),
        Some("parentbased_traceidratio") => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio()?)))
        }
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER={other:?}: one of always_on, always_off, traceidratio, \
                 parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
            ))
        }
    })
}

#[cfg(test)]
mod tests;
