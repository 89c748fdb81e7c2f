//! Which budgets a request counts against (its route's, whose header selectors hold), what it
//! is estimated to cost when admitted, and what it cost in the end. The counting itself is
//! src/budget's.

use crate::budget::{reset_header, Claim, Standing};
use crate::config::{Config, SelectorMatch};
use crate::llm::Usage;

use super::headers::Headers;
use super::record::costs;
use super::request::Routed;

/// Bytes of request body per estimated input token (English text runs ~4 bytes a token; an
/// image counts as its base64 text, which over-estimates it: reservations err on the safe side).
const BYTES_PER_TOKEN: u64 = 4;

/// The usage a request is estimated to have: its body as input, its output bound (or
/// `default_output`) as output.
pub(super) fn estimate(body_len: usize, max_output: Option<u64>, default_output: u64) -> Usage {
    let input = (body_len as u64).div_ceil(BYTES_PER_TOKEN);
    let output = max_output.unwrap_or(default_output);
    Usage {
        input,
        output,
        total: input + output,
        ..Usage::default()
    }
}

/// The claims of a routed request on the budgets whose selectors its headers meet.
pub(super) fn claims(config: &Config, routed: &Routed, headers: &Headers) -> Vec<Claim> {
    let route = config.rules[routed.selection.rule].route;
    let mut claims = Vec::new();
    for budget in config.budgets.iter().filter(|b| b.routes.contains(&route)) {
        let mut key = budget.name.clone();
        let applies = budget.selectors.iter().all(|s| {
            let value = headers.get(&s.name);
            let holds = match (&s.matcher, value) {
                (SelectorMatch::Distinct, Some(v)) => {
                    // Unit separators keep `a|b` + `c` apart from `a` + `b|c`.
                    key.push('\u{1f}');
                    key.push_str(v);
                    return true;
                }
                (SelectorMatch::Distinct, None) => return false,
                (SelectorMatch::Exact(want), Some(v)) => v == want,
                (SelectorMatch::Regex(re), Some(v)) => re.is_match(v),
                (SelectorMatch::Exact(_) | SelectorMatch::Regex(_), None) => false,
            };
            holds != s.invert
        });
        if !applies {
            continue;
        }
        let estimate = match &budget.response_cost {
            Some(metadata_key) => response_cost(config, routed, &routed.estimate, metadata_key),
            None => 0,
        };
        claims.push(Claim {
            budget: budget.name.clone(),
            key,
            limit: budget.limit,
            window: budget.window,
            request_cost: budget.request_cost,
            estimate,
            tokens: budget.response_cost.is_some(),
            global: budget.global,
        });
    }
    claims
}

/// The route's cost `metadata_key` for `usage`, in whole units (rounded up).
fn response_cost(config: &Config, routed: &Routed, usage: &Usage, metadata_key: &str) -> u64 {
    costs(config, routed, usage)
        .into_iter()
        .find(|(k, _)| k == metadata_key)
        .map_or(0, |(_, v)| v.max(0.0).ceil() as u64)
}

/// What each reservation of a finished request is charged beyond its request cost: the
/// response cost of `usage`, or nothing when there is none.
pub(super) fn charges(config: &Config, routed: &Routed, usage: Option<&Usage>) -> Vec<u64> {
    let budgets = &config.budgets;
    routed
        .reservations
        .iter()
        .map(|r| {
            let key = budgets
                .iter()
                .find(|b| b.name == r.claim.budget)
                .and_then(|b| b.response_cost.as_deref());
            match (key, usage) {
                (Some(key), Some(usage)) => response_cost(config, routed, usage, key),
                _ => 0,
            }
        })
        .collect()
}

/// OpenAI's rate limit headers for a request's tightest budget (`retry-after` on a refusal).
pub(super) fn headers(s: &Standing, refused: bool) -> Vec<(String, String)> {
    let unit = if s.tokens { "tokens" } else { "requests" };
    let mut headers = vec![
        (format!("x-ratelimit-limit-{unit}"), s.limit.to_string()),
        (
            format!("x-ratelimit-remaining-{unit}"),
            s.remaining.to_string(),
        ),
        (format!("x-ratelimit-reset-{unit}"), reset_header(s.reset)),
    ];
    if refused {
        let secs = s.reset.as_secs() + u64::from(s.reset.subsec_nanos() > 0);
        headers.push(("retry-after".into(), secs.max(1).to_string()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_read_the_body_and_the_output_bound() {
        let u = estimate(401, Some(50), 256);
        assert_eq!((u.input, u.output, u.total), (101, 50, 151));
        assert_eq!(estimate(0, None, 256).output, 256);
    }
}
