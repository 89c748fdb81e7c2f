//! Logs and traces: `tracing` with text or JSON output, and, when an OTLP endpoint is given
//! (off by default), one LLM span per request exported over OTLP (`crate::otlp`), a child of
//! the client's W3C trace context and handed on to the provider.

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

    /// Whether the input (`input`) or output messages are hidden whole:
    /// `OPENINFERENCE_HIDE_INPUTS`/`_OUTPUTS` or `..._INPUT_MESSAGES`/`..._OUTPUT_MESSAGES`.
    pub fn hides_messages(&self, input: bool) -> bool {
        if input {
            self.hide_inputs || self.hide_input_messages
        } else {
            self.hide_outputs || self.hide_output_messages
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
    _export: Option<crate::otlp::ExportGuard>,
}

/// Installs the global subscriber and, with `otlp_endpoint`, starts the span exporter.
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
    // The log level filters the log only: LLM spans do not go through `tracing`, so they are
    // exported whatever `--log` says (`--log warn` once kept them from the collector).
    let fmt = match format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
    };
    let export = match otlp_endpoint {
        Some(endpoint) => {
            let env = |name: &str| std::env::var(name).ok();
            let sampler = crate::otlp::sampler_from_env(env)?;
            let settings = crate::otlp::Settings::from_env(endpoint, env)?;
            let (sink, guard) = crate::otlp::start(settings)?;
            crate::otlp::install(crate::otlp::Tracer { sink, sampler });
            Some(guard)
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(fmt)
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(TelemetryGuard { _export: export })
}
