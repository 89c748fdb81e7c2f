//! Prometheus metrics, named after the OpenTelemetry GenAI semantic conventions
//! (`gen_ai_*`), plus the processor's own health counters (`ai_extproc_*`).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::usage::UsageRecord;

/// Labels of a model call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub gen_ai_operation_name: String,
    pub gen_ai_provider_name: String,
    /// The model sent to the provider.
    pub gen_ai_request_model: String,
    /// The model the client asked for.
    pub gen_ai_original_model: String,
    pub gen_ai_response_model: String,
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    #[prometheus(flatten)]
    model: ModelLabels,
    gen_ai_token_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

/// A budget by name (`namespace/policy#rule`): bounded by the config, never by users.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabel {
    budget: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    backend: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

fn token_buckets() -> Histogram {
    // 1 .. ~4M tokens, as OTel recommends for gen_ai.client.token.usage.
    Histogram::new(exponential_buckets(1.0, 4.0, 12))
}

fn seconds_buckets() -> Histogram {
    // 1 ms .. ~10 min.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

fn token_time_buckets() -> Histogram {
    // 0.1 ms .. ~3 s per token.
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    token_usage: Family<TokenLabels, Histogram, fn() -> Histogram>,
    request_duration: Family<ModelLabels, Histogram, fn() -> Histogram>,
    time_to_first_token: Family<ModelLabels, Histogram, fn() -> Histogram>,
    time_per_output_token: Family<ModelLabels, Histogram, fn() -> Histogram>,
    pub streams: Counter,
    pub streams_active: Gauge,
    stream_errors: Family<KindLabel, Counter>,
    immediate_responses: Family<StatusLabel, Counter>,
    failed_attempts: Family<AttemptLabels, Counter>,
    budget_refused: Family<BudgetLabel, Counter>,
    budget_charged: Family<BudgetLabel, Counter>,
    /// Handed to the budgets' store, which counts reservation errors and its own failures.
    pub budget: crate::budget::Telemetry,
    config_reloads: Family<ResultLabel, Counter>,
    pub config_generation: Gauge<u64, AtomicU64>,
    config_warnings: Gauge<u64, AtomicU64>,
    config_files_emptied: Counter,
    pub usage_records_dropped: Gauge<u64, AtomicU64>,
    pub trace_spans_dropped: Gauge<u64, AtomicU64>,
    pub runtime_workers: Gauge<u64, AtomicU64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            token_usage: Family::new_with_constructor(token_buckets),
            request_duration: Family::new_with_constructor(seconds_buckets),
            time_to_first_token: Family::new_with_constructor(seconds_buckets),
            time_per_output_token: Family::new_with_constructor(token_time_buckets),
            streams: Counter::default(),
            streams_active: Gauge::default(),
            stream_errors: Family::default(),
            immediate_responses: Family::default(),
            failed_attempts: Family::default(),
            budget_refused: Family::default(),
            budget_charged: Family::default(),
            budget: crate::budget::Telemetry::default(),
            config_reloads: Family::default(),
            config_generation: Gauge::default(),
            config_warnings: Gauge::default(),
            config_files_emptied: Counter::default(),
            usage_records_dropped: Gauge::default(),
            trace_spans_dropped: Gauge::default(),
            runtime_workers: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "gen_ai_client_token_usage",
            "Tokens used per request, by gen_ai_token_type",
            m.token_usage.clone(),
        );
        registry.register(
            "gen_ai_server_request_duration_seconds",
            "Time from request headers to the end of the response",
            m.request_duration.clone(),
        );
        registry.register(
            "gen_ai_server_time_to_first_token_seconds",
            "Streams: time from sending the request to the first token",
            m.time_to_first_token.clone(),
        );
        registry.register(
            "gen_ai_server_time_per_output_token_seconds",
            "Streams: mean time between output tokens",
            m.time_per_output_token.clone(),
        );
        registry.register(
            "ai_extproc_streams",
            "ext_proc streams opened by Envoy",
            m.streams.clone(),
        );
        registry.register(
            "ai_extproc_streams_active",
            "ext_proc streams open now",
            m.streams_active.clone(),
        );
        registry.register(
            "ai_extproc_stream_errors",
            "ext_proc streams failed, by kind",
            m.stream_errors.clone(),
        );
        registry.register(
            "ai_extproc_immediate_responses",
            "Responses answered by the processor itself, by status",
            m.immediate_responses.clone(),
        );
        registry.register(
            "ai_extproc_failed_attempts",
            "Attempts at a backend that failed before another backend of the rule served, by backend and reason (status, or no answer)",
            m.failed_attempts.clone(),
        );
        registry.register(
            "ai_extproc_budget_refused",
            "Requests refused with 429 because a budget (BackendTrafficPolicy rateLimit rule) had nothing left, by budget",
            m.budget_refused.clone(),
        );
        registry.register(
            "ai_extproc_budget_charged_units",
            "Units (tokens, or requests) charged to budgets once requests ended, by budget",
            m.budget_charged.clone(),
        );
        m.budget.register(&mut registry);
        registry.register(
            "ai_extproc_config_reloads",
            "Config reloads, by result (applied, rejected)",
            m.config_reloads.clone(),
        );
        registry.register(
            "ai_extproc_config_generation",
            "Generation of the config in use (1 = the one loaded at start)",
            m.config_generation.clone(),
        );
        registry.register(
            "ai_extproc_config_warnings",
            "Warnings of the config in use (a shadowed rule, an unused Backend...; see the log)",
            m.config_warnings.clone(),
        );
        registry.register(
            "ai_extproc_config_files_emptied",
            "Reloads that removed every route of a file that had some (a truncated save?)",
            m.config_files_emptied.clone(),
        );
        registry.register(
            "ai_extproc_usage_records_dropped",
            "Usage records some consumer did not get (buffer full)",
            m.usage_records_dropped.clone(),
        );
        registry.register(
            "ai_extproc_trace_spans_dropped",
            "LLM spans not exported (export queue full, the collector failed, was unreachable or rejected them)",
            m.trace_spans_dropped.clone(),
        );
        registry.register(
            "ai_extproc_runtime_workers",
            "Worker threads of the processor's runtime (1 = current-thread, see --workers)",
            m.runtime_workers.clone(),
        );
        Self { registry, ..m }
    }

    /// Prometheus / OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn stream_error(&self, kind: &str) {
        self.stream_errors
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// A request refused (429) because `budget` had nothing left.
    pub fn budget_refused(&self, budget: &str) {
        self.budget_refused
            .get_or_create(&BudgetLabel {
                budget: budget.to_string(),
            })
            .inc();
    }

    pub fn immediate_response(&self, status: u16) {
        self.immediate_responses
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
    }

    /// A config came into use; `emptied` files lost all their routes with it.
    pub fn config_loaded(&self, config: &crate::config::Config, emptied: usize) {
        self.config_warnings
            .set(u64::try_from(config.warnings.len()).unwrap_or(u64::MAX));
        self.config_files_emptied
            .inc_by(u64::try_from(emptied).unwrap_or(u64::MAX));
    }

    pub fn reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "rejected" };
        self.config_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Observes a finished request.
    pub fn observe(&self, r: &UsageRecord) {
        for (budget, units) in &r.budget_charges {
            self.budget_charged
                .get_or_create(&BudgetLabel {
                    budget: budget.clone(),
                })
                .inc_by(*units);
        }
        for f in &r.failed_attempts {
            self.failed_attempts
                .get_or_create(&AttemptLabels {
                    backend: f.backend.clone(),
                    reason: f.reason.clone(),
                })
                .inc();
        }
        let labels = ModelLabels {
            gen_ai_operation_name: operation(r.endpoint).to_string(),
            gen_ai_provider_name: "openai".to_string(),
            gen_ai_request_model: r.provider_request_model.clone(),
            gen_ai_original_model: r.requested_model.clone(),
            gen_ai_response_model: r.provider_model.clone(),
            backend: r.backend.clone(),
        };
        self.request_duration
            .get_or_create(&labels)
            .observe(r.duration_ms / 1000.0);
        if r.stream && r.time_to_first_token_ms > 0.0 {
            self.time_to_first_token
                .get_or_create(&labels)
                .observe(r.time_to_first_token_ms / 1000.0);
        }
        if r.stream && r.inter_token_latency_ms > 0.0 {
            self.time_per_output_token
                .get_or_create(&labels)
                .observe(r.inter_token_latency_ms / 1000.0);
        }
        if !r.usage_seen {
            return;
        }
        let mut token = TokenLabels {
            model: labels,
            gen_ai_token_type: "input",
        };
        for (kind, n) in [
            ("input", r.input_tokens),
            ("cached_input", r.cached_input_tokens),
            ("output", r.output_tokens),
            ("reasoning", r.reasoning_tokens),
        ] {
            token.gen_ai_token_type = kind;
            self.token_usage.get_or_create(&token).observe(n as f64);
        }
    }
}

/// OTel `gen_ai.operation.name` of an endpoint (a family's name in the record).
fn operation(endpoint: &str) -> &'static str {
    crate::llm::family::named(endpoint).map_or("other", |f| f.operation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_genai_series() {
        let m = Metrics::new();
        let r = UsageRecord {
            endpoint: "chat",
            requested_model: "qwen-thinking".into(),
            provider_request_model: "accounts/fireworks/models/q".into(),
            provider_model: "accounts/fireworks/models/q".into(),
            backend: "default/fw".into(),
            input_tokens: 7,
            output_tokens: 3,
            usage_seen: true,
            stream: true,
            duration_ms: 250.0,
            time_to_first_token_ms: 20.0,
            inter_token_latency_ms: 5.0,
            ..UsageRecord::default()
        };
        m.observe(&r);
        let text = m.encode();
        assert!(
            text.contains("# TYPE gen_ai_client_token_usage histogram"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE gen_ai_server_time_to_first_token_seconds histogram"),
            "{text}"
        );
        assert!(text.contains("gen_ai_token_type=\"output\""), "{text}");
        assert!(
            text.contains("gen_ai_server_time_per_output_token_seconds_sum{"),
            "{text}"
        );
    }

    #[test]
    fn failed_attempts_are_counted_by_backend_and_reason() {
        let m = Metrics::new();
        let failed = |backend: &str, reason: &str| crate::usage::FailedAttempt {
            backend: backend.into(),
            reason: reason.into(),
        };
        for _ in 0..2 {
            m.observe(&UsageRecord {
                endpoint: "chat",
                failed_attempts: vec![failed("default/a", "503"), failed("default/b", "no answer")],
                ..UsageRecord::default()
            });
        }
        let text = m.encode();
        assert!(
            text.contains(
                r#"ai_extproc_failed_attempts_total{backend="default/a",reason="503"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"ai_extproc_failed_attempts_total{backend="default/b",reason="no answer"} 2"#
            ),
            "{text}"
        );
    }
}
