//! What a finished response turns into: dynamic metadata for Envoy, a usage record for billing.

use crate::config::{CelInputs, Config, CostKind};
use crate::llm::Usage;
use crate::usage::UsageRecord;

use super::reply::MetaValue;
use super::request::Routed;
use super::response::ResponseOutcome;

/// `(metadataKey, value)` for each configured cost; a CEL cost that fails is left out (logged).
pub fn costs(config: &Config, routed: &Routed, usage: &Usage) -> Vec<(String, f64)> {
    let rule = &config.rules[routed.selection.rule];
    let route = &config.routes[rule.route];
    route
        .costs
        .iter()
        .filter_map(|cost| {
            let n = match &cost.kind {
                CostKind::InputToken => usage.input as f64,
                CostKind::CachedInputToken => usage.cached_input as f64,
                CostKind::CacheCreationInputToken => usage.cache_creation_input as f64,
                CostKind::OutputToken => usage.output as f64,
                CostKind::TotalToken => usage.total as f64,
                CostKind::ReasoningToken => usage.reasoning as f64,
                CostKind::Cel(expr) => {
                    let inputs = CelInputs {
                        model: &routed.requested_model,
                        backend: routed.backend_name(config),
                        route_name: &route.name,
                        input_tokens: usage.input,
                        cached_input_tokens: usage.cached_input,
                        cache_creation_input_tokens: usage.cache_creation_input,
                        output_tokens: usage.output,
                        total_tokens: usage.total,
                        reasoning_tokens: usage.reasoning,
                    };
                    match expr.evaluate(&inputs) {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::warn!(key = %cost.metadata_key, error = %e, "cost not computed");
                            return None;
                        }
                    }
                }
            };
            Some((cost.metadata_key.clone(), n))
        })
        .collect()
}

/// Metadata written at the end of a response. Costs only for responses with usage: only 2xx
/// bodies are read for it (`ResponseBody::for_response`), so an error is never charged.
pub fn metadata(
    config: &Config,
    routed: &Routed,
    outcome: &ResponseOutcome,
) -> Vec<(String, MetaValue)> {
    let mut out = Vec::new();
    if let Some(usage) = &outcome.usage {
        out.extend(
            costs(config, routed, usage)
                .into_iter()
                .map(|(k, v)| (k, MetaValue::Num(v))),
        );
    }
    if let Some(model) = &outcome.response_model {
        out.push(("response_model".into(), MetaValue::Str(model.clone())));
    }
    if let Some(t) = outcome.time_to_first_token_ms {
        out.push(("time_to_first_token_ms".into(), MetaValue::Num(round3(t))));
    }
    if let Some(t) = outcome.inter_token_latency_ms {
        out.push(("inter_token_latency_ms".into(), MetaValue::Num(round3(t))));
    }
    out
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The usage record of a finished (or ended) request, at `now`.
pub fn usage_record(
    config: &Config,
    routed: &Routed,
    outcome: &ResponseOutcome,
    now: std::time::Instant,
    charges: &[u64],
) -> UsageRecord {
    let rule = &config.rules[routed.selection.rule];
    let usage = outcome.usage;
    let u = usage.unwrap_or_default();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    UsageRecord {
        request_id: routed.request_id.clone(),
        time_unix_ms: now_ms,
        route: config.routes[rule.route].name.clone(),
        backend: routed.backend_name(config).to_string(),
        requested_model: routed.requested_model.clone(),
        provider_model: outcome
            .response_model
            .clone()
            .unwrap_or_else(|| routed.provider_model.clone()),
        provider_request_model: routed.provider_model.clone(),
        user: routed.user.clone(),
        identity: routed.identity.clone(),
        input_tokens: u.input,
        cached_input_tokens: u.cached_input,
        cache_creation_input_tokens: u.cache_creation_input,
        output_tokens: u.output,
        total_tokens: u.total,
        reasoning_tokens: u.reasoning,
        costs: usage.map(|u| costs(config, routed, &u)).unwrap_or_default(),
        status: routed.status,
        duration_ms: now.saturating_duration_since(routed.started).as_secs_f64() * 1000.0,
        time_to_first_token_ms: outcome.time_to_first_token_ms.unwrap_or(0.0),
        inter_token_latency_ms: outcome.inter_token_latency_ms.unwrap_or(0.0),
        stream: routed.stream,
        endpoint: routed.family.name(),
        usage_seen: usage.is_some(),
        attempts: routed.attempts.count() as u32,
        failed_attempts: routed.attempts.failures(),
        budget_charges: routed
            .reservations
            .iter()
            .zip(charges)
            .map(|(r, c)| (r.claim.budget.clone(), r.claim.request_cost + c))
            .collect(),
    }
}
