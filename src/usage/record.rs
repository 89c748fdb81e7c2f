//! One finished request's usage.

use serde::Serialize;

use super::pb;

/// What a billing system needs about one request.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageRecord {
    pub request_id: String,
    pub time_unix_ms: i64,
    pub route: String,
    pub backend: String,
    pub requested_model: String,
    pub provider_model: String,
    /// The model id sent to the provider (the override, else the client's).
    pub provider_request_model: String,
    pub user: String,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub reasoning_tokens: u64,
    /// `(metadataKey, value)` in config order; a JSON object in the log.
    #[serde(serialize_with = "costs_as_object")]
    pub costs: Vec<(String, f64)>,
    pub status: u16,
    pub duration_ms: f64,
    pub time_to_first_token_ms: f64,
    pub inter_token_latency_ms: f64,
    pub stream: bool,
    pub endpoint: &'static str,
    pub usage_seen: bool,
    /// Attempts Envoy made, for a rule that fails over (0 otherwise).
    pub attempts: u32,
    /// The attempts before the serving one: backend, and why it failed.
    pub failed_attempts: Vec<FailedAttempt>,
    /// `(budget, units)` charged to each budget the request counted against; a JSON object.
    #[serde(serialize_with = "charges_as_object")]
    pub budget_charges: Vec<(String, u64)>,
    /// What client authentication verified: `(header, value)` (the client id, claims); a JSON
    /// object, empty without a SecurityPolicy's apiKeyAuth or jwt.
    #[serde(serialize_with = "identity_as_object")]
    pub identity: Vec<(String, String)>,
}

/// An attempt at a backend that failed before another one served.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FailedAttempt {
    pub backend: String,
    /// The provider's status (`503`), or `no answer`.
    pub reason: String,
}

impl UsageRecord {
    pub fn to_proto(&self, dropped_before: u64) -> pb::UsageRecord {
        pb::UsageRecord {
            request_id: self.request_id.clone(),
            time_unix_ms: self.time_unix_ms,
            route: self.route.clone(),
            backend: self.backend.clone(),
            requested_model: self.requested_model.clone(),
            provider_model: self.provider_model.clone(),
            provider_request_model: self.provider_request_model.clone(),
            user: self.user.clone(),
            input_tokens: self.input_tokens,
            cached_input_tokens: self.cached_input_tokens,
            cache_creation_input_tokens: self.cache_creation_input_tokens,
            budget_charges: self.budget_charges.iter().cloned().collect(),
            identity: self.identity.iter().cloned().collect(),
            output_tokens: self.output_tokens,
            total_tokens: self.total_tokens,
            reasoning_tokens: self.reasoning_tokens,
            costs: self.costs.iter().cloned().collect(),
            status: u32::from(self.status),
            duration_ms: self.duration_ms,
            time_to_first_token_ms: self.time_to_first_token_ms,
            inter_token_latency_ms: self.inter_token_latency_ms,
            stream: self.stream,
            endpoint: self.endpoint.to_string(),
            usage_seen: self.usage_seen,
            dropped_before,
            attempts: self.attempts,
            failed_attempts: self
                .failed_attempts
                .iter()
                .map(|f| pb::FailedAttempt {
                    backend: f.backend.clone(),
                    reason: f.reason.clone(),
                })
                .collect(),
        }
    }
}

fn identity_as_object<S: serde::Serializer>(
    identity: &[(String, String)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(identity.len()))?;
    for (k, v) in identity {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

fn charges_as_object<S: serde::Serializer>(
    charges: &[(String, u64)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(charges.len()))?;
    for (k, v) in charges {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

fn costs_as_object<S: serde::Serializer>(costs: &[(String, f64)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(costs.len()))?;
    for (k, v) in costs {
        map.serialize_entry(k, v)?;
    }
    map.end()
}
