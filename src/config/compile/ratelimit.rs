//! Envoy Gateway BackendTrafficPolicies' `rateLimit` rules, as budgets ai-extproc enforces
//! itself (src/budget): who they apply to (header selectors), how much per window, and what a
//! request costs (a number on the way in, a route cost when the usage is known). What it
//! cannot honour is an error naming the field.

use std::time::Duration;

use super::Compiler;
use crate::config::error::Location;
use crate::config::raw::{
    ClientSelectorSpec, CostSourceSpec, HeaderSelectorSpec, RateLimitRuleSpec, RateLimitSpec,
};
use crate::config::runtime::{Budget, HeaderSelector, RouteId, SelectorMatch};
use crate::config::targets::Target;
use crate::contract::METADATA_NAMESPACE;

impl Compiler<'_> {
    /// The budgets of one policy's `rateLimit`, for the routes its targets name.
    pub(super) fn rate_limit(
        &mut self,
        loc: &Location,
        policy: &str,
        spec: &RateLimitSpec,
        targets: &[Target],
    ) {
        let routes: Vec<RouteId> = if targets.contains(&Target::Gateway) {
            (0..self.config.routes.len()).collect()
        } else {
            targets
                .iter()
                .filter_map(|t| match t {
                    Target::Route(name) => self.config.routes.iter().position(|r| &r.name == name),
                    Target::Gateway => None,
                })
                .collect()
        };
        let (global, rules, field) = match (spec.kind.as_deref(), &spec.global, &spec.local) {
            (Some("Global") | None, Some(g), None) => (true, &g.rules, "global"),
            (Some("Local") | None, None, Some(l)) => (false, &l.rules, "local"),
            (Some(kind @ ("Global" | "Local")), _, _) => {
                let want = kind.to_ascii_lowercase();
                self.err(
                    loc,
                    "spec.rateLimit",
                    format!("type {kind} needs spec.rateLimit.{want} (and only it)"),
                );
                return;
            }
            (Some(other), _, _) => {
                self.err(
                    loc,
                    "spec.rateLimit.type",
                    format!("unknown type {other:?} (Global or Local)"),
                );
                return;
            }
            (None, _, _) => {
                self.err(
                    loc,
                    "spec.rateLimit",
                    "needs one of global or local, with its rules",
                );
                return;
            }
        };
        for (i, rule) in rules.iter().enumerate() {
            let path = format!("spec.rateLimit.{field}.rules[{i}]");
            if let Some(budget) = self.budget(loc, &path, rule, &routes) {
                self.config.budgets.push(Budget {
                    name: format!("{policy}#{i}"),
                    global,
                    ..budget
                });
            }
        }
    }

    fn budget(
        &mut self,
        loc: &Location,
        path: &str,
        rule: &RateLimitRuleSpec,
        routes: &[RouteId],
    ) -> Option<Budget> {
        let errors = self.errors.len();
        let mut selectors = Vec::new();
        for (i, s) in rule.client_selectors.iter().enumerate() {
            selectors.extend(self.selectors(loc, &format!("{path}.clientSelectors[{i}]"), s));
        }
        let window = match rule.limit.unit.as_str() {
            "Second" => Duration::from_secs(1),
            "Minute" => Duration::from_secs(60),
            "Hour" => Duration::from_secs(3600),
            "Day" => Duration::from_secs(86_400),
            other => {
                self.err(
                    loc,
                    format!("{path}.limit.unit"),
                    format!("unknown unit {other:?} (Second, Minute, Hour or Day)"),
                );
                Duration::from_secs(1)
            }
        };
        if rule.limit.requests == 0 {
            self.err(
                loc,
                format!("{path}.limit.requests"),
                "must be at least 1 (a budget of nothing refuses every request)",
            );
        }
        let cost = rule.cost.clone().unwrap_or_default();
        // Envoy Gateway charges 1 per request when no cost is given.
        let request_cost = match &cost.request {
            None if cost.response.is_none() => 1,
            None => 0,
            Some(c) => self.request_cost(loc, &format!("{path}.cost.request"), c),
        };
        let response_cost = cost
            .response
            .as_ref()
            .and_then(|c| self.response_cost(loc, &format!("{path}.cost.response"), c, routes));
        if rule.shared == Some(false) && routes.len() > 1 {
            self.err(
                loc,
                format!("{path}.shared"),
                "false (a budget per route) is not supported: ai-extproc shares one budget across the routes a rule targets",
            );
        }
        (self.errors.len() == errors).then(|| Budget {
            name: String::new(),
            routes: routes.to_vec(),
            selectors,
            limit: rule.limit.requests,
            window,
            request_cost,
            response_cost,
            global: true,
        })
    }

    fn selectors(
        &mut self,
        loc: &Location,
        path: &str,
        spec: &ClientSelectorSpec,
    ) -> Vec<HeaderSelector> {
        for field in spec.other.keys() {
            self.err(
                loc,
                format!("{path}.{field}"),
                "not supported: ai-extproc selects clients by headers only",
            );
        }
        spec.headers
            .iter()
            .enumerate()
            .filter_map(|(i, h)| self.selector(loc, &format!("{path}.headers[{i}]"), h))
            .collect()
    }

    fn selector(
        &mut self,
        loc: &Location,
        path: &str,
        spec: &HeaderSelectorSpec,
    ) -> Option<HeaderSelector> {
        let invert = spec.invert.unwrap_or(false);
        let value = spec.value.clone();
        let matcher = match (spec.kind.as_deref().unwrap_or("Exact"), value) {
            ("Exact", Some(v)) => SelectorMatch::Exact(v),
            ("RegularExpression", Some(v)) => match regex::Regex::new(&format!("^(?:{v})$")) {
                Ok(r) => SelectorMatch::Regex(r),
                Err(e) => {
                    self.err(loc, format!("{path}.value"), format!("invalid regex: {e}"));
                    return None;
                }
            },
            ("Distinct", None) if !invert => SelectorMatch::Distinct,
            ("Distinct", None) => {
                self.err(
                    loc,
                    format!("{path}.invert"),
                    "a Distinct selector cannot be inverted (it has no value to not match)",
                );
                return None;
            }
            ("Distinct", Some(_)) => {
                self.err(
                    loc,
                    format!("{path}.value"),
                    "a Distinct selector takes no value",
                );
                return None;
            }
            ("Exact" | "RegularExpression", None) => {
                self.err(loc, format!("{path}.value"), "required for this type");
                return None;
            }
            (other, _) => {
                self.err(
                    loc,
                    format!("{path}.type"),
                    format!("unknown type {other:?} (Exact, RegularExpression or Distinct)"),
                );
                return None;
            }
        };
        Some(HeaderSelector {
            name: spec.name.to_ascii_lowercase(),
            matcher,
            invert,
        })
    }

    fn request_cost(&mut self, loc: &Location, path: &str, spec: &CostSourceSpec) -> u64 {
        match (spec.from.as_str(), spec.number, &spec.metadata) {
            ("Number", Some(n), None) => n,
            ("Number", None, _) => {
                self.err(loc, format!("{path}.number"), "required with from: Number");
                0
            }
            ("Metadata", _, _) => {
                self.err(
                    loc,
                    format!("{path}.from"),
                    "Metadata is known only once the response is: use it in cost.response",
                );
                0
            }
            (other, _, _) => {
                self.err(
                    loc,
                    format!("{path}.from"),
                    format!("unknown source {other:?} (Number or Metadata)"),
                );
                0
            }
        }
    }

    /// The `metadataKey` a response cost reads; every route the budget applies to must define it.
    fn response_cost(
        &mut self,
        loc: &Location,
        path: &str,
        spec: &CostSourceSpec,
        routes: &[RouteId],
    ) -> Option<String> {
        match (spec.from.as_str(), &spec.metadata) {
            ("Metadata", Some(m)) => {
                if m.namespace != METADATA_NAMESPACE {
                    self.err(
                        loc,
                        format!("{path}.metadata.namespace"),
                        format!(
                            "{:?}: ai-extproc writes its costs under {METADATA_NAMESPACE:?} only",
                            m.namespace
                        ),
                    );
                    return None;
                }
                let missing: Vec<&str> = routes
                    .iter()
                    .map(|r| &self.config.routes[*r])
                    .filter(|r| !r.costs.iter().any(|c| c.metadata_key == m.key))
                    .map(|r| r.name.as_str())
                    .collect();
                if !missing.is_empty() {
                    let message = format!(
                        "{:?} is not a metadataKey of the llmRequestCosts of {}",
                        m.key,
                        missing.join(", ")
                    );
                    self.err(loc, format!("{path}.metadata.key"), message);
                    return None;
                }
                Some(m.key.clone())
            }
            ("Metadata", None) => {
                self.err(
                    loc,
                    format!("{path}.metadata"),
                    "required with from: Metadata",
                );
                None
            }
            ("Number", _) => {
                self.err(
                    loc,
                    format!("{path}.from"),
                    "Number on the response is not supported: charge a number in cost.request",
                );
                None
            }
            (other, _) => {
                self.err(
                    loc,
                    format!("{path}.from"),
                    format!("unknown source {other:?} (Number or Metadata)"),
                );
                None
            }
        }
    }
}
