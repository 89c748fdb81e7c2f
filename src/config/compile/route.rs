//! AIGatewayRoutes: their rules (matches, backends, timeouts), costs and the models they name.

use regex::Regex;

use super::{ns, parse_rfc3339, Compiler, DEFAULT_OWNED_BY, DEFAULT_REQUEST_TIMEOUT};
use crate::config::cel::CelCost;
use crate::config::checks;
use crate::config::error::Location;
use crate::config::load::Obj;
use crate::config::raw::{AIGatewayRouteSpec, RuleSpec};
use crate::config::runtime::{
    Cost, CostKind, HeaderMatch, Match, ModelInfo, Route, Rule, WeightedBackend,
};
use crate::contract::MODEL_HEADER;

impl<'a> Compiler<'a> {
    pub(super) fn route(&mut self, obj: &'a Obj<AIGatewayRouteSpec>) {
        let loc = &obj.location;
        if let Some(schema) = &obj.spec.schema {
            if schema.name != "OpenAI" {
                self.err(
                    loc,
                    "spec.schema.name",
                    format!(
                        "input schema {:?} is not supported (supported: OpenAI)",
                        schema.name
                    ),
                );
            }
        }
        let costs = self.costs(obj);
        let route_id = self.config.routes.len();
        self.config.routes.push(Route {
            name: format!("{}/{}", ns(obj), obj.meta.name),
            location: obj.location.clone(),
            costs,
            retry: None,
        });
        if obj.spec.rules.is_empty() {
            self.err(loc, "spec.rules", "at least one rule is required");
        }
        let created_default = obj
            .meta
            .creation_timestamp
            .as_deref()
            .and_then(|t| parse_rfc3339(t).ok())
            .unwrap_or(self.options.now);
        for (i, rule) in obj.spec.rules.iter().enumerate() {
            self.rule(obj, route_id, i, rule, created_default);
        }
    }

    pub(super) fn costs(&mut self, obj: &Obj<AIGatewayRouteSpec>) -> Vec<Cost> {
        let mut costs = Vec::new();
        for (i, cost) in obj.spec.llm_request_costs.iter().enumerate() {
            let path = format!("spec.llmRequestCosts[{i}]");
            let kind = match cost.kind.as_str() {
                "InputToken" => CostKind::InputToken,
                "CachedInputToken" => CostKind::CachedInputToken,
                "CacheCreationInputToken" => CostKind::CacheCreationInputToken,
                "OutputToken" => CostKind::OutputToken,
                "TotalToken" => CostKind::TotalToken,
                "ReasoningToken" => CostKind::ReasoningToken,
                "CEL" => match cost.cel.as_deref().map(CelCost::compile) {
                    Some(Ok(expr)) => CostKind::Cel(expr),
                    Some(Err(e)) => {
                        self.err(&obj.location, format!("{path}.cel"), e);
                        continue;
                    }
                    None => {
                        self.err(
                            &obj.location,
                            format!("{path}.cel"),
                            "required for type CEL",
                        );
                        continue;
                    }
                },
                other => {
                    self.err(
                        &obj.location,
                        format!("{path}.type"),
                        format!("unknown cost type {other:?} (expected InputToken, CachedInputToken, CacheCreationInputToken, OutputToken, TotalToken, ReasoningToken or CEL)"),
                    );
                    continue;
                }
            };
            if cost.metadata_key.is_empty() {
                self.err(
                    &obj.location,
                    format!("{path}.metadataKey"),
                    "must not be empty",
                );
            } else if costs
                .iter()
                .any(|c: &Cost| c.metadata_key == cost.metadata_key)
            {
                self.err(
                    &obj.location,
                    format!("{path}.metadataKey"),
                    format!("duplicate metadataKey {:?}", cost.metadata_key),
                );
            }
            costs.push(Cost {
                metadata_key: cost.metadata_key.clone(),
                kind,
            });
        }
        costs
    }

    pub(super) fn rule(
        &mut self,
        obj: &'a Obj<AIGatewayRouteSpec>,
        route: usize,
        index: usize,
        rule: &RuleSpec,
        created_default: i64,
    ) {
        let loc = &obj.location;
        let path = format!("spec.rules[{index}]");
        let matches = self.matches(loc, &path, rule);
        let mut backends = Vec::new();
        if rule.backend_refs.is_empty() {
            self.err(
                loc,
                format!("{path}.backendRefs"),
                "at least one backendRef is required",
            );
        }
        for (j, r) in rule.backend_refs.iter().enumerate() {
            let bpath = format!("{path}.backendRefs[{j}]");
            if r.group.is_some() || r.kind.is_some() {
                self.err(
                    loc,
                    bpath,
                    "only AIServiceBackend references are supported (leave group and kind unset)",
                );
                continue;
            }
            let k = (
                r.namespace.clone().unwrap_or_else(|| ns(obj).to_string()),
                r.name.clone(),
            );
            let Some(backend) = self.service_backend(&k) else {
                self.err(
                    loc,
                    format!("{bpath}.name"),
                    format!("no AIServiceBackend {}/{}", k.0, k.1),
                );
                continue;
            };
            if r.model_name_override.as_deref() == Some("") {
                self.err(
                    loc,
                    format!("{bpath}.modelNameOverride"),
                    "must not be empty",
                );
            }
            backends.push(WeightedBackend {
                backend,
                weight: r.weight.unwrap_or(1),
                priority: r.priority.unwrap_or(0),
                model_name_override: r.model_name_override.clone(),
            });
        }
        // Weights choose within a priority level: a level whose weights are all 0 never serves.
        for level in backends.iter().map(|b| b.priority) {
            let at_level = backends.iter().filter(|b| b.priority == level);
            if at_level.clone().all(|b| b.weight == 0) {
                let message = if backends.iter().all(|b| b.priority == level) {
                    "all weights are 0".to_string()
                } else {
                    format!("all weights at priority {level} are 0")
                };
                self.err(loc, format!("{path}.backendRefs"), message);
                break;
            }
        }
        let request_timeout = self
            .duration(
                loc,
                &format!("{path}.timeouts.request"),
                rule.timeouts.as_ref().and_then(|t| t.request.as_deref()),
            )
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        let idle_timeout = self.duration(
            loc,
            &format!("{path}.streamIdleTimeout"),
            rule.stream_idle_timeout.as_deref(),
        );
        let owned_by = rule
            .models_owned_by
            .clone()
            .unwrap_or_else(|| DEFAULT_OWNED_BY.into());
        let created = match rule.models_created_at.as_deref().map(parse_rfc3339) {
            None => created_default,
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                self.err(loc, format!("{path}.modelsCreatedAt"), e);
                created_default
            }
        };
        for m in &matches {
            for h in &m.headers {
                if let HeaderMatch::Exact { name, value } = h {
                    if name == MODEL_HEADER && !self.config.models.iter().any(|x| &x.id == value) {
                        self.config.models.push(ModelInfo {
                            id: value.clone(),
                            owned_by: owned_by.clone(),
                            created,
                        });
                    }
                }
            }
        }
        // Envoy fails over across priorities and rewrites each attempt as an OpenAI request;
        // a family goes to the backends that speak it, so one rule mixing schemas must not fail
        // over (a rule with one priority may hold an OpenAI and an Anthropic backend).
        let first = backends.first().map(|b| b.priority);
        let fails_over = backends.iter().any(|b| Some(b.priority) != first);
        let schemas = |b: &WeightedBackend| self.config.backends[b.backend].schema;
        if fails_over
            && backends
                .iter()
                .any(|b| Some(schemas(b)) != backends.first().map(schemas))
        {
            self.err(
                loc,
                format!("{path}.backendRefs"),
                "a rule that fails over (several priorities) needs backends of one schema",
            );
        } else if fails_over
            && backends
                .iter()
                .any(|b| schemas(b) == crate::config::Schema::AzureOpenAI)
        {
            // Envoy rewrites each attempt's path as prefix + endpoint; Azure's path holds the
            // deployment (the model) and the api-version.
            self.err(
                loc,
                format!("{path}.backendRefs"),
                "failover (several priorities) across AzureOpenAI backends is not supported yet",
            );
        }
        self.config.rules.push(Rule {
            route,
            index,
            matches,
            backends,
            request_timeout,
            idle_timeout,
        });
    }

    pub(super) fn matches(&mut self, loc: &Location, path: &str, rule: &RuleSpec) -> Vec<Match> {
        if rule.matches.is_empty() {
            // Gateway API: a rule without matches takes every request.
            return vec![Match::default()];
        }
        let mut out = Vec::new();
        for (i, m) in rule.matches.iter().enumerate() {
            let mut headers = Vec::new();
            for (j, h) in m.headers.iter().enumerate() {
                let hpath = format!("{path}.matches[{i}].headers[{j}]");
                let name = h.name.to_ascii_lowercase();
                if name.is_empty() || name.starts_with(':') {
                    self.err(
                        loc,
                        format!("{hpath}.name"),
                        "must be a regular header name",
                    );
                    continue;
                }
                if let Some(why) = checks::unknowable_header(&name) {
                    self.warn(
                        loc,
                        format!("{hpath}.name"),
                        format!("the processor and Envoy may disagree on {name:?}: {why}"),
                    );
                }
                match h.kind.as_deref().unwrap_or("Exact") {
                    "Exact" => headers.push(HeaderMatch::Exact {
                        name,
                        value: h.value.clone(),
                    }),
                    "RegularExpression" => match Regex::new(&format!("^(?:{})$", h.value)) {
                        Ok(regex) => headers.push(HeaderMatch::Regex { name, regex }),
                        Err(e) => self.err(
                            loc,
                            format!("{hpath}.value"),
                            format!("invalid regular expression: {e}"),
                        ),
                    },
                    other => self.err(
                        loc,
                        format!("{hpath}.type"),
                        format!(
                            "unknown match type {other:?} (expected Exact or RegularExpression)"
                        ),
                    ),
                }
            }
            out.push(Match { headers });
        }
        out
    }
}
