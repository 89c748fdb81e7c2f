//! Envoy Gateway BackendTrafficPolicies: their `retry`, applied to the routes they target (an
//! HTTPRoute named after an AIGatewayRoute, or the Gateway: every route). A route's own policy
//! wins over the Gateway's. Their `rateLimit` is compiled beside (ratelimit.rs). What ai-extproc cannot honour is an error naming the field; the
//! policy's other settings are Envoy Gateway's, named in a warning.

use std::time::Duration;

use super::Compiler;
use crate::config::error::Location;
use crate::config::load::Obj;
use crate::config::raw::{BackOffSpec, BackendTrafficPolicySpec, RetrySpec};
use crate::config::runtime::Retry;
use crate::config::targets::{self, Target};

/// Envoy `retry_on` conditions that apply to HTTP APIs, as Envoy Gateway spells its triggers.
const HTTP_TRIGGERS: [&str; 7] = [
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
];
/// Envoy Gateway's gRPC triggers: they read `grpc-status`, which LLM APIs do not send.
const GRPC_TRIGGERS: [&str; 5] = [
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];
/// Envoy Gateway's retries when `retryOn` is absent, less its gRPC triggers.
const DEFAULT_TRIGGERS: [&str; 3] = [
    "connect-failure",
    "refused-stream",
    "retriable-status-codes",
];
const DEFAULT_STATUS_CODES: [u16; 1] = [503];
const DEFAULT_NUM_RETRIES: u32 = 2;

impl Compiler<'_> {
    /// Applies every BackendTrafficPolicy's retry to the routes it targets.
    pub(super) fn retries(&mut self) {
        let mut from_route: Vec<Option<&Location>> = vec![None; self.config.routes.len()];
        let mut from_gateway: Option<(Retry, &Location)> = None;
        for policy in self.index.traffic_policies.clone() {
            let loc = &policy.location;
            for field in policy.spec.other.keys() {
                self.warn(
                    loc,
                    format!("spec.{field}"),
                    "not applied by ai-extproc, which applies only spec.retry and spec.rateLimit (Envoy Gateway applies the rest where it programs Envoy)",
                );
            }
            let targets = self.targets(policy);
            if let Some(spec) = &policy.spec.rate_limit {
                let ns = policy.meta.namespace.as_deref().unwrap_or("default");
                let name = format!("{ns}/{}", policy.meta.name);
                self.rate_limit(loc, &name, spec, &targets);
            }
            let Some(spec) = &policy.spec.retry else {
                continue;
            };
            let Some(retry) = self.retry(loc, spec) else {
                continue;
            };
            for target in targets {
                match target {
                    Target::Route(name) => {
                        let Some(route) = self.config.routes.iter().position(|r| r.name == name)
                        else {
                            continue;
                        };
                        if let Some(first) = from_route[route] {
                            self.err(
                                loc,
                                "spec.retry",
                                format!(
                                    "route {} already has a retry policy from {first}",
                                    self.config.routes[route].name
                                ),
                            );
                        }
                        from_route[route] = Some(loc);
                        self.config.routes[route].retry = Some(retry.clone());
                    }
                    Target::Gateway => {
                        if let Some((_, first)) = &from_gateway {
                            let message =
                                format!("the Gateway already has a retry policy from {first}");
                            self.err(loc, "spec.retry", message);
                        }
                        from_gateway = Some((retry.clone(), loc));
                    }
                }
            }
        }
        if let Some((retry, _)) = from_gateway {
            for route in &mut self.config.routes {
                route.retry.get_or_insert_with(|| retry.clone());
            }
        }
    }

    fn targets(&mut self, policy: &Obj<BackendTrafficPolicySpec>) -> Vec<Target> {
        let ns = policy.meta.namespace.as_deref().unwrap_or("default");
        let routes = &self.config.routes;
        targets::resolve(
            &policy.location,
            ns,
            &policy.spec.target_refs,
            policy.spec.target_ref.as_ref(),
            |name| routes.iter().any(|r| r.name == name),
            &mut self.errors,
        )
    }

    /// A `spec.retry` as Envoy will apply it; `None` (with errors) when it cannot be honoured.
    fn retry(&mut self, loc: &Location, spec: &RetrySpec) -> Option<Retry> {
        let errors = self.errors.len();
        let (triggers, codes) = match &spec.retry_on {
            None => (
                DEFAULT_TRIGGERS.map(String::from).to_vec(),
                DEFAULT_STATUS_CODES.to_vec(),
            ),
            Some(on) => (on.triggers.clone(), on.http_status_codes.clone()),
        };
        for (i, t) in triggers.iter().enumerate() {
            let path = format!("spec.retry.retryOn.triggers[{i}]");
            if GRPC_TRIGGERS.contains(&t.as_str()) {
                self.err(loc, path, format!("{t:?} is a gRPC trigger (it reads grpc-status, which LLM APIs do not send); use reset, 5xx or retriable-status-codes"));
            } else if !HTTP_TRIGGERS.contains(&t.as_str()) {
                self.err(
                    loc,
                    path,
                    format!(
                        "unknown trigger {t:?} (one of {})",
                        HTTP_TRIGGERS.join(", ")
                    ),
                );
            }
        }
        for (i, code) in codes.iter().enumerate() {
            // A provider's 4xx judges the request itself: another provider would refuse it too
            // (and a 400 must reach the client as it is). Timeouts, conflicts and rate limits
            // are the provider's state, worth another attempt.
            if !matches!(code, 408 | 409 | 429 | 500..=599) {
                self.err(
                    loc,
                    format!("spec.retry.retryOn.httpStatusCodes[{i}]"),
                    format!("{code} is not retried: only 408, 409, 429 and 5xx are (a provider's other answers judge the request, which another attempt would send again)"),
                );
            }
        }
        if !codes.is_empty() && !triggers.iter().any(|t| t == "retriable-status-codes") {
            self.err(
                loc,
                "spec.retry.retryOn.httpStatusCodes",
                "applies only with the retriable-status-codes trigger, which is not listed",
            );
        }
        if spec.num_attempts_per_priority == Some(0) {
            self.err(
                loc,
                "spec.retry.numAttemptsPerPriority",
                "must be at least 1",
            );
        }
        let per_retry = spec.per_retry.clone().unwrap_or_default();
        let per_try_timeout = self.duration(
            loc,
            "spec.retry.perRetry.timeout",
            per_retry.timeout.as_deref(),
        );
        let backoff = per_retry
            .back_off
            .as_ref()
            .and_then(|b| self.backoff(loc, b));
        (self.errors.len() == errors).then(|| Retry {
            num_retries: spec.num_retries.unwrap_or(DEFAULT_NUM_RETRIES),
            attempts_per_priority: spec.num_attempts_per_priority.unwrap_or(1),
            retry_on: triggers,
            status_codes: codes,
            per_try_timeout,
            backoff,
        })
    }

    fn backoff(
        &mut self,
        loc: &Location,
        spec: &BackOffSpec,
    ) -> Option<(Duration, Option<Duration>)> {
        let path = "spec.retry.perRetry.backOff";
        let base = self.duration(
            loc,
            &format!("{path}.baseInterval"),
            spec.base_interval.as_deref(),
        );
        let max = self.duration(
            loc,
            &format!("{path}.maxInterval"),
            spec.max_interval.as_deref(),
        );
        match (base, max) {
            (Some(base), Some(max)) if max < base => {
                self.err(
                    loc,
                    format!("{path}.maxInterval"),
                    "must not be less than baseInterval",
                );
                None
            }
            (Some(base), max) if !base.is_zero() => Some((base, max)),
            (Some(_), _) => {
                self.err(loc, format!("{path}.baseInterval"), "must be more than 0");
                None
            }
            (None, Some(_)) => {
                self.err(
                    loc,
                    format!("{path}.baseInterval"),
                    "required with maxInterval",
                );
                None
            }
            (None, None) => None,
        }
    }
}
