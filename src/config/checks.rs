//! Warnings about a config that compiles but does not do what it says: a rule no request can
//! reach, a header match that the processor and Envoy would judge differently.

use super::error::ConfigError;
use super::runtime::{Config, HeaderMatch, Match};
use crate::contract::{BACKEND_HEADER, MODEL_HEADER};

/// Why the processor cannot know a header as Envoy routes on it, for names where that holds.
///
/// The processor picks the rule from the request as the client sent it; Envoy then routes on the
/// request as the processor (and Envoy itself) left it. A match on a header either side rewrites
/// can therefore choose one rule in the processor and another in Envoy.
pub fn unknowable_header(name: &str) -> Option<&'static str> {
    match name {
        MODEL_HEADER => None,
        BACKEND_HEADER => Some("the processor sets it to the backend it chose"),
        n if n.starts_with("x-ai-eg-") => {
            Some("the processor strips x-ai-eg-* headers a client sends")
        }
        n if n.starts_with("x-envoy-") => {
            Some("Envoy strips x-envoy-* headers a client sends at the edge")
        }
        "authorization" => Some("the processor replaces it with the backend's key"),
        "content-length" | "content-encoding" | "accept-encoding" => {
            Some("the processor rewrites it with the body")
        }
        "x-request-id" => Some("Envoy replaces a client's with its own"),
        _ => None,
    }
}

/// Matches that can never apply because an earlier rule matches every request they match.
pub fn shadowed_matches(config: &Config) -> Vec<ConfigError> {
    let mut warnings = Vec::new();
    for (i, rule) in config.rules.iter().enumerate() {
        for (k, m) in rule.matches.iter().enumerate() {
            let Some(earlier) = config.rules[..i]
                .iter()
                .find(|r| r.matches.iter().any(|e| covers(e, m)))
            else {
                continue;
            };
            warnings.push(ConfigError::new(
                &config.routes[rule.route].location,
                format!("spec.rules[{}].matches[{k}]", rule.index),
                format!(
                    "never applies: rule {} (earlier) matches every request this one matches, and the first matching rule wins",
                    earlier.name(config)
                ),
            ));
        }
    }
    warnings
}

/// Whether every request matching `later` also matches `earlier`: `earlier`'s conditions are
/// all among `later`'s.
fn covers(earlier: &Match, later: &Match) -> bool {
    earlier
        .headers
        .iter()
        .all(|e| later.headers.iter().any(|l| same_condition(e, l)))
}

fn same_condition(a: &HeaderMatch, b: &HeaderMatch) -> bool {
    match (a, b) {
        (
            HeaderMatch::Exact { name, value },
            HeaderMatch::Exact {
                name: n2,
                value: v2,
            },
        ) => name == n2 && value == v2,
        (
            HeaderMatch::Regex { name, regex },
            HeaderMatch::Regex {
                name: n2,
                regex: r2,
            },
        ) => name == n2 && regex.as_str() == r2.as_str(),
        _ => false,
    }
}
