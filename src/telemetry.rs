//! Logs and traces: `tracing` with text or JSON output, and, when an OTLP endpoint is given
//! (off by default), OpenTelemetry trace export with W3C trace context taken from the client
//! and handed on to the provider.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The command-line spelling.
    pub fn as_arg(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// The attributes of the LLM spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TraceFormat {
    /// OpenInference (Arize Phoenix and the tools that read it): `llm.*`, `input.value`...
    #[default]
    #[value(name = "openinference")]
    OpenInference,
    /// OpenTelemetry's GenAI semantic conventions: `gen_ai.*`.
    #[value(name = "genai")]
    GenAi,
}

impl TraceFormat {
    /// The command-line spelling.
    pub fn as_arg(self) -> &'static str {
        match self {
            Self::OpenInference => "openinference",
            Self::GenAi => "genai",
        }
    }
}

/// What the LLM spans show, as Envoy AI Gateway and OpenInference configure it: the
/// `OPENINFERENCE_HIDE_*` variables (`true` hides; a hidden value is replaced by
/// [`REDACTED`], not dropped) and the output cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceConfig {
    pub format: TraceFormat,
    /// `OPENINFERENCE_HIDE_INPUTS`: `input.value` and every input message.
    pub hide_inputs: bool,
    /// `OPENINFERENCE_HIDE_OUTPUTS`: `output.value` and every output message.
    pub hide_outputs: bool,
    /// `OPENINFERENCE_HIDE_INPUT_MESSAGES`, `OPENINFERENCE_HIDE_OUTPUT_MESSAGES`.
    pub hide_input_messages: bool,
    pub hide_output_messages: bool,
    /// `OPENINFERENCE_HIDE_INPUT_TEXT`, `OPENINFERENCE_HIDE_OUTPUT_TEXT`: the text of messages.
    pub hide_input_text: bool,
    pub hide_output_text: bool,
    /// `OPENINFERENCE_HIDE_INPUT_IMAGES`: image URLs in input messages.
    pub hide_input_images: bool,
    /// `OPENINFERENCE_HIDE_EMBEDDING_VECTORS` (vectors are never recorded; kept for parity).
    pub hide_embedding_vectors: bool,
    /// Most bytes of a streamed answer kept.
    pub max_output_bytes: usize,
}

/// What replaces a hidden value.
pub const REDACTED: &str = "__REDACTED__";

/// `--trace-max-output-bytes`'s default.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 64 * 1024;

impl Default for TraceConfig {
    /// Nothing hidden.
    fn default() -> Self {
        Self::from_env(TraceFormat::OpenInference, DEFAULT_MAX_OUTPUT_BYTES, |_| {
            None
        })
    }
}

impl TraceConfig {
    /// From the flags and the `OPENINFERENCE_HIDE_*` variables of `env`.
    pub fn from_env(
        format: TraceFormat,
        max_output_bytes: usize,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let on = |name: &str| {
            env(name).is_some_and(|v| {
                matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes")
            })
        };
        Self {
            format,
            hide_inputs: on("OPENINFERENCE_HIDE_INPUTS"),
            hide_outputs: on("OPENINFERENCE_HIDE_OUTPUTS"),
            hide_input_messages: on("OPENINFERENCE_HIDE_INPUT_MESSAGES"),
            hide_output_messages: on("OPENINFERENCE_HIDE_OUTPUT_MESSAGES"),
            hide_input_text: on("OPENINFERENCE_HIDE_INPUT_TEXT"),
            hide_output_text: on("OPENINFERENCE_HIDE_OUTPUT_TEXT"),
            hide_input_images: on("OPENINFERENCE_HIDE_INPUT_IMAGES"),
            hide_embedding_vectors: on("OPENINFERENCE_HIDE_EMBEDDING_VECTORS"),
            max_output_bytes,
        }
    }
}

static TRACE_CONFIG: std::sync::OnceLock<TraceConfig> = std::sync::OnceLock::new();

/// The LLM spans' settings (defaults until [`init`] sets them).
pub fn trace_config() -> &'static TraceConfig {
    TRACE_CONFIG.get_or_init(TraceConfig::default)
}

/// Keeps the trace exporter alive; flushes it when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Whether spans are exported (and trace context propagated to providers).
static TRACING_EXPORT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn export_enabled() -> bool {
    TRACING_EXPORT.load(std::sync::atomic::Ordering::Relaxed)
}

/// Installs the global subscriber. Call from inside the tokio runtime (the exporter uses it).
pub fn init(
    filter: &str,
    format: LogFormat,
    otlp_endpoint: Option<&str>,
    trace: TraceConfig,
) -> Result<TelemetryGuard, String> {
    let _ = TRACE_CONFIG.set(trace);
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("--log {filter:?}: {e}"))?;
    // Colours only on a terminal: piped logs stay greppable (`request_id=...`).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // The log level filters the log only: spans are exported whatever `--log` says (with
    // `--log warn` the info-level request spans would otherwise never reach the collector).
    let fmt = match format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
    };
    let (otel, provider) = match otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name("ai-extproc")
                .build();
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build();
            let tracer = provider.tracer("ai-extproc");
            TRACING_EXPORT.store(true, std::sync::atomic::Ordering::Relaxed);
            (
                Some(
                    // Only what a trace reader needs: no source locations, threads, targets,
                    // busy/idle timers or context activation, each a cost on every poll of
                    // a stream's future (its span is entered and left per ext_proc message).
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_location(false)
                        .with_threads(false)
                        .with_target(false)
                        .with_tracked_inactivity(false)
                        .with_context_activation(false)
                        .with_filter(
                            tracing_subscriber::filter::Targets::new()
                                .with_target("ai_extproc", tracing::Level::INFO),
                        ),
                ),
                Some(provider),
            )
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(TelemetryGuard { provider })
}

struct HeaderPairs<'a>(&'a [(String, String)]);

impl Extractor for HeaderPairs<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Makes `span` a child of the client's W3C trace context (`traceparent`, `tracestate`).
pub fn adopt_parent(span: &tracing::Span, headers: &[(String, String)]) {
    if !export_enabled() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderPairs(headers));
    let _ = span.set_parent(parent);
}

struct Collect(Vec<(String, String)>);

impl Injector for Collect {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

/// The W3C headers that carry `span`'s context to the provider (empty when export is off).
pub fn context_headers(span: &tracing::Span) -> Vec<(String, String)> {
    if !export_enabled() {
        return Vec::new();
    }
    let mut out = Collect(Vec::new());
    TraceContextPropagator::new().inject_context(&span.context(), &mut out);
    out.0
}
