//! Picks the rule and backend for a request, with the same semantics as the Envoy routes that
//! `envoy-config` renders (first rule whose any match has all its header conditions).

use rand::Rng;

use crate::config::{BackendId, Config, WeightedBackend};
use crate::contract::MODEL_HEADER;
use crate::llm::Family;
use crate::providers;

use super::headers::Headers;

/// The chosen rule and backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    /// Index in `Config::rules`.
    pub rule: usize,
    /// Index in the rule's `backends`.
    pub backend_ref: usize,
    /// The AIServiceBackend.
    pub backend: BackendId,
}

/// Why no backend was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoute {
    /// No rule matches.
    NoRule,
    /// The rule's backends (their schemas named) do not serve the request's family.
    NotServed { schemas: Vec<&'static str> },
}

/// The first rule matching `headers`, where `x-ai-eg-model` is taken as `model` whatever the
/// client sent; then, among its backends whose schema serves `family` (a rule may hold an OpenAI
/// and an Anthropic backend for one model), one by weight at the first priority (`pick` gets a
/// number below the weights' total).
pub fn select(
    config: &Config,
    headers: &Headers,
    model: &str,
    family: &dyn Family,
    pick: impl FnOnce(u64) -> u64,
) -> Result<Selection, NoRoute> {
    let value_of = |name: &str| {
        if name == MODEL_HEADER {
            Some(model)
        } else {
            headers.get(name)
        }
    };
    let rule_index = config
        .rules
        .iter()
        .position(|rule| {
            rule.matches.iter().any(|m| {
                m.headers
                    .iter()
                    .all(|h| value_of(h.name()).is_some_and(|v| h.matches(v)))
            })
        })
        .ok_or(NoRoute::NoRule)?;
    let rule = &config.rules[rule_index];
    let serves = |b: &WeightedBackend| providers::serves(config.backends[b.backend].schema, family);
    // The serving priority (a rule that fails over is routed by Envoy; this is the first
    // attempt's level, until the response names the backend that served).
    let Some(level) = rule
        .backends
        .iter()
        .filter(|b| serves(b))
        .map(|b| b.priority)
        .min()
    else {
        let mut schemas: Vec<&'static str> = rule
            .backends
            .iter()
            .map(|b| config.backends[b.backend].schema.name())
            .collect();
        schemas.dedup();
        return Err(NoRoute::NotServed { schemas });
    };
    let weight = |b: &WeightedBackend| {
        if b.priority == level && serves(b) {
            u64::from(b.weight)
        } else {
            0
        }
    };
    let total: u64 = rule.backends.iter().map(weight).sum();
    let backend_ref = if rule.backends.len() == 1 {
        0
    } else if total == 0 {
        // Weights of 0: the first that serves.
        rule.backends
            .iter()
            .position(|b| b.priority == level && serves(b))
            .unwrap_or(0)
    } else {
        let mut n = pick(total);
        rule.backends
            .iter()
            .position(|b| {
                let w = weight(b);
                if n < w {
                    true
                } else {
                    n -= w;
                    false
                }
            })
            .unwrap_or(0)
    };
    Ok(Selection {
        rule: rule_index,
        backend_ref,
        backend: rule.backends[backend_ref].backend,
    })
}

/// A uniform pick from the thread's random generator.
pub fn random_pick(total: u64) -> u64 {
    rand::rng().random_range(0..total)
}
