//! Picks the rule and backend for a request, with the same semantics as the Envoy routes that
//! `envoy-config` renders (first rule whose any match has all its header conditions).

use rand::Rng;

use crate::config::{BackendId, Config, WeightedBackend};
use crate::contract::MODEL_HEADER;

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

/// The first rule matching `headers`, where `x-ai-eg-model` is taken as `model` whatever the
/// client sent; then a backend by weight (`pick` gets a number below the weights' total).
pub fn select(
    config: &Config,
    headers: &Headers,
    model: &str,
    pick: impl FnOnce(u64) -> u64,
) -> Option<Selection> {
    let value_of = |name: &str| {
        if name == MODEL_HEADER {
            Some(model)
        } else {
            headers.get(name)
        }
    };
    let rule_index = config.rules.iter().position(|rule| {
        rule.matches.iter().any(|m| {
            m.headers
                .iter()
                .all(|h| value_of(h.name()).is_some_and(|v| h.matches(v)))
        })
    })?;
    let rule = &config.rules[rule_index];
    // The serving priority (a rule that fails over is routed by Envoy; this is the first
    // attempt's level, until the response names the backend that served).
    let level = rule.first_priority();
    let weight = |b: &WeightedBackend| {
        if b.priority == level {
            u64::from(b.weight)
        } else {
            0
        }
    };
    let total: u64 = rule.backends.iter().map(weight).sum();
    let backend_ref = if rule.backends.len() == 1 || total == 0 {
        0
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
    Some(Selection {
        rule: rule_index,
        backend_ref,
        backend: rule.backends[backend_ref].backend,
    })
}

/// A uniform pick from the thread's random generator.
pub fn random_pick(total: u64) -> u64 {
    rand::rng().random_range(0..total)
}
