//! The Envoy side of failover. A rule whose backends have several priorities gets one cluster
//! whose endpoints are its backends (a locality each, at the rank of its priority, weighted), so
//! that Envoy's retries move from a failed priority to the next (`previous_priorities`): Envoy
//! owns the attempts, the backoff and the choice of host.
//!
//! Envoy runs only upstream filters on a retry, so what depends on the backend is redone there,
//! for every attempt, from the chosen endpoint's metadata, without a message to the processor:
//! - `header_mutation` names the attempt's backend ([`BACKEND_HEADER`], from the endpoint) and
//!   its number ([`ATTEMPT_HEADER`]);
//! - one credential injector per backend with a key, each skipped unless the attempt is its
//!   backend's (so no key reaches another provider);
//! - a Lua filter puts the backend's prefix before the path suffix the processor reported, its
//!   model name (`modelNameOverride`) at the body span the processor reported, records the
//!   attempt, and reports the attempts on the response ([`ATTEMPTS_HEADER`]); it is skipped
//!   for a first attempt the processor already rewrote (see [`filters`]);
//! - Host is the endpoint's hostname (`auto_host_rewrite`); SNI and CAs are the backend's own
//!   transport socket, matched on the endpoint's metadata.
//!
//! Checked with Envoy 1.40: upstream filters see the attempt's host metadata, header and body
//! changes do not carry over to the next attempt, and the Lua filter reads and writes the
//! request's dynamic metadata.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::time::Duration;

use serde_json::{json, Value};

use super::bootstrap::{address, http_protocol_options, seconds, tls_socket, EnvoyOptions};
use super::credentials::{injector, upstream_codec};
use crate::config::{Config, Retry, Rule};
use crate::contract::{
    ATTEMPTS_HEADER, ATTEMPT_HEADER, ATTEMPT_LOG_KEY, ATTEMPT_LOG_NAMESPACE, BACKEND_HEADER,
    CLIENT_MODEL_KEY, ENDPOINT_BACKEND_KEY, ENDPOINT_METADATA_NAMESPACE, METADATA_NAMESPACE,
    MODEL_END_KEY, MODEL_START_KEY, PATH_SUFFIX_KEY,
};

/// Endpoint metadata namespace Envoy matches transport sockets on.
const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";

/// The cluster of a rule that fails over.
pub fn cluster_name(config: &Config, rule: &Rule) -> String {
    format!("{}/failover", rule.name(config))
}

/// The route action of a rule that fails over: its cluster, Host per attempt, its retries.
pub fn route_action(config: &Config, rule: &Rule) -> Value {
    let retry = rule.retry(config).unwrap_or_else(Retry::failover_default);
    json!({
        "cluster": cluster_name(config, rule),
        "timeout": seconds(rule.request_timeout),
        "auto_host_rewrite": true,
        "retry_policy": retry_policy(&retry, rule.idle_timeout, true),
    })
}

/// Envoy's retry policy for `retry`. `idle`: the rule's `streamIdleTimeout`, per attempt, so a
/// provider that accepts and then says nothing is given up on (and failed over from).
/// `priorities`: move to the next priority once one has had its attempts.
pub fn retry_policy(retry: &Retry, idle: Option<Duration>, priorities: bool) -> Value {
    let mut policy = json!({
        "retry_on": retry.retry_on.join(","),
        "num_retries": retry.num_retries,
        // Another host of the same provider (DNS gives several) before the same one again.
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}
        }],
        "host_selection_retry_max_attempts": 3,
    });
    if !retry.status_codes.is_empty() {
        policy["retriable_status_codes"] = json!(retry.status_codes);
    }
    if let Some(t) = retry.per_try_timeout {
        policy["per_try_timeout"] = json!(seconds(t));
    }
    if let Some(t) = idle {
        policy["per_try_idle_timeout"] = json!(seconds(t));
    }
    if let Some((base, max)) = retry.backoff {
        policy["retry_back_off"] = json!({"base_interval": seconds(base)});
        if let Some(max) = max {
            policy["retry_back_off"]["max_interval"] = json!(seconds(max));
        }
    }
    if priorities {
        policy["retry_priority"] = json!({
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                "update_frequency": retry.attempts_per_priority
            }
        });
    }
    policy
}

/// The cluster of a rule that fails over.
pub fn cluster(config: &Config, rule: &Rule, options: &EnvoyOptions) -> Value {
    let name = cluster_name(config, rule);
    // Envoy's priorities are ranks 0, 1, 2...; the CRD's are any numbers.
    let levels: Vec<u32> = rule
        .backends
        .iter()
        .map(|b| b.priority)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut localities = Vec::new();
    let mut sockets = Vec::new();
    let mut seen = BTreeSet::new();
    for target in rule.backends.iter().filter(|b| b.weight > 0) {
        let backend = &config.backends[target.backend];
        let cluster = &config.clusters[backend.cluster];
        let (_, host, port) = address(cluster, options);
        let mut endpoint =
            json!({"address": {"socket_address": {"address": host, "port_value": port}}});
        if let Some(hostname) = cluster.host() {
            endpoint["hostname"] = json!(hostname);
        }
        localities.push(json!({
            "locality": {"sub_zone": backend.name},
            "priority": levels.iter().position(|l| *l == target.priority).unwrap_or(0),
            "load_balancing_weight": target.weight,
            "lb_endpoints": [{
                "endpoint": endpoint,
                "metadata": {"filter_metadata": {
                    ENDPOINT_METADATA_NAMESPACE: {ENDPOINT_BACKEND_KEY: backend.name},
                    TRANSPORT_SOCKET_MATCH: {ENDPOINT_BACKEND_KEY: backend.name}
                }}
            }]
        }));
        if !seen.insert(backend.name.clone()) {
            continue;
        }
        if let Some(socket) = tls_socket(cluster, options) {
            sockets.push(json!({
                "name": backend.name,
                "match": {ENDPOINT_BACKEND_KEY: backend.name},
                "transport_socket": socket
            }));
        }
    }
    json!({
        "name": name,
        // Resolves every backend's name (or takes its IP); each becomes hosts of its locality.
        "type": "STRICT_DNS",
        "connect_timeout": "10s",
        "dns_lookup_family": "V4_PREFERRED",
        "per_connection_buffer_limit_bytes": options.max_body_bytes,
        // Weights choose among the backends of one priority.
        "common_lb_config": {"locality_weighted_lb_config": {}},
        // Envoy allows 3 retries at once per cluster by default: under load, failing over
        // would itself fail (503, retry overflow) for everyone past the third.
        "circuit_breakers": circuit_breakers(),
        "load_assignment": {"cluster_name": name, "endpoints": localities},
        "transport_socket_matches": sockets,
        "typed_extension_protocol_options": http_protocol_options(Some(filters(config, rule)))
    })
}

/// Retries at once as many as requests at once (Envoy's default bound of both is 1,024 requests).
pub fn circuit_breakers() -> Value {
    json!({"thresholds": [{"priority": "DEFAULT", "max_retries": 1024}]})
}

/// The per-attempt chain: name the backend (and the attempt), its key, path and model, then the
/// codec. Where the processor already rewrote the first attempt (its backend is certain), the
/// Lua rewrite is skipped for that attempt, the cheapest way Envoy offers (a Lua filter costs
/// ~8 % of a request's throughput, a skipped one next to nothing; `make bench`): a second,
/// response-only Lua records a failed skipped attempt's status, and a last `header_mutation`
/// removes the two internal headers the Lua filter removes when it runs.
fn filters(config: &Config, rule: &Rule) -> Value {
    let first = rule
        .first_backend()
        .map(|b| config.backends[b.backend].name.as_str());
    let mut request = vec![set_header(
        BACKEND_HEADER,
        &format!("%UPSTREAM_METADATA({ENDPOINT_METADATA_NAMESPACE}:{ENDPOINT_BACKEND_KEY})%"),
        "OVERWRITE_IF_EXISTS_OR_ADD",
    )];
    if first.is_some() {
        request.push(set_header(
            ATTEMPT_HEADER,
            "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
            "OVERWRITE_IF_EXISTS_OR_ADD",
        ));
    }
    // An attempt the Lua filter skipped and that answered is reported by name only; the
    // processor takes the response's status for it.
    let response = vec![set_header(
        ATTEMPTS_HEADER,
        &format!("%UPSTREAM_METADATA({ENDPOINT_METADATA_NAMESPACE}:{ENDPOINT_BACKEND_KEY})%="),
        "ADD_IF_ABSENT",
    )];
    let mut chain = vec![header_mutation(json!({
        "request_mutations": request,
        "response_mutations": response
    }))];
    let mut keyed = BTreeSet::new();
    for target in &rule.backends {
        let backend = &config.backends[target.backend];
        let Some(source) = backend.key_for_envoy() else {
            continue;
        };
        if keyed.insert(backend.name.clone()) {
            chain.push(only_for(&backend.name, injector(source)));
        }
    }
    let rewrite = lua_filter(lua(config, rule));
    match first {
        None => chain.push(rewrite),
        Some(first) => {
            // Skipped for the first attempt at the backend the processor rewrote it for.
            chain.push(skip_when(
                rewrite,
                json!({"and_matcher": {"predicate": [
                    header_is(ATTEMPT_HEADER, request_header_input(ATTEMPT_HEADER), json!({"exact": "1"})),
                    header_is(BACKEND_HEADER, request_header_input(BACKEND_HEADER), json!({"exact": first})),
                ]}}),
            ));
            // Runs on error answers only: a failed first attempt the rewrite skipped.
            chain.push(skip_when(
                lua_filter(skipped_attempt_lua(first)),
                header_is(
                    "status",
                    response_header_input(":status"),
                    json!({"safe_regex": {"google_re2": {}, "regex": "[1-3][0-9][0-9]"}}),
                ),
            ));
            chain.push(header_mutation(json!({"request_mutations": [
                {"remove": BACKEND_HEADER},
                {"remove": ATTEMPT_HEADER}
            ]})));
        }
    }
    chain.push(upstream_codec());
    Value::Array(chain)
}

fn header_mutation(mutations: Value) -> Value {
    json!({
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": mutations
        }
    })
}

fn set_header(name: &str, value: &str, action: &str) -> Value {
    json!({"append": {"header": {"key": name, "value": value}, "append_action": action}})
}

fn lua_filter(source: String) -> Value {
    json!({
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": source}
        }
    })
}

fn request_header_input(name: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
        "header_name": name
    })
}

fn response_header_input(name: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpResponseHeaderMatchInput",
        "header_name": name
    })
}

/// A matcher predicate: the header read by `input` matches `value_match`.
fn header_is(name: &str, input: Value, value_match: Value) -> Value {
    json!({"single_predicate": {
        "input": {"name": name, "typed_config": input},
        "value_match": value_match
    }})
}

/// `filter`, skipped (for the whole attempt) when `predicate` holds. A predicate on the response
/// is decided when the response arrives: the filter's request side runs meanwhile.
fn skip_when(filter: Value, predicate: Value) -> Value {
    json!({
        "name": "envoy.filters.http.match_delegate",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            "extension_config": filter,
            "xds_matcher": {"matcher_list": {"matchers": [{
                "predicate": predicate,
                "on_match": {"action": {
                    "name": "skip",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"}
                }}
            }]}}
        }
    })
}

/// `filter`, skipped unless the attempt goes to `backend`.
fn only_for(backend: &str, filter: Value) -> Value {
    skip_when(
        filter,
        json!({"not_matcher": header_is(
            "attempt_backend",
            request_header_input(BACKEND_HEADER),
            json!({"exact": backend})
        )}),
    )
}

/// The response-only Lua of a rule whose first attempt the processor rewrites: when that
/// attempt (skipped by the rewrite) answers with an error, it is recorded with its status, as
/// the rewrite records the attempts it sees.
fn skipped_attempt_lua(first: &str) -> String {
    format!(
        r#"-- Rendered by ai-extproc: the status of a failed first attempt the rewrite skipped.
function envoy_on_response(h)
  local meta = h:streamInfo():dynamicMetadata()
  local t = meta:get({log_ns})
  if t and t[{log_key}] then return end
  local log = {first} .. "=" .. (h:headers():get(":status") or "")
  meta:set({log_ns}, {log_key}, log)
  h:headers():replace({attempts_header}, log)
end
"#,
        log_ns = lua_string(ATTEMPT_LOG_NAMESPACE),
        log_key = lua_string(ATTEMPT_LOG_KEY),
        first = lua_string(first),
        attempts_header = lua_string(ATTEMPTS_HEADER),
    )
}

/// The Lua filter's source: the rule's backends as a table, then the per-attempt rewrite.
fn lua(config: &Config, rule: &Rule) -> String {
    let mut table = String::new();
    // Envoy keeps an attempt's header changes for the next attempt: every attempt sets what
    // it depends on (its model and the body's length whenever any backend's model differs,
    // its key or none).
    let rewrites = rule
        .backends
        .iter()
        .any(|b| b.model_name_override.is_some());
    // The backend the processor rewrites the first attempt for, when it is certain.
    let first = rule.first_backend().map_or_else(
        || "nil".into(),
        |b| lua_string(&config.backends[b.backend].name),
    );
    for target in &rule.backends {
        let backend = &config.backends[target.backend];
        let keyed = backend.key_for_envoy().is_some();
        let model = target.model_name_override.as_ref().map_or_else(
            || "nil".to_string(),
            |m| lua_string(&serde_json::to_string(m).unwrap_or_default()),
        );
        let _ = writeln!(
            table,
            "  [{}] = {{prefix = {}, model = {}, keyed = {keyed}}},",
            lua_string(&backend.name),
            lua_string(&backend.prefix),
            model
        );
    }
    format!(
        r#"-- Rendered by ai-extproc for {rule}: each attempt rewritten for its own backend.
local backends = {{
{table}}}
local NS = {ns}
local LOG = {log_ns}
local FIRST = {first}
local REWRITES = {rewrites}

function envoy_on_request(h)
  local headers = h:headers()
  local name = headers:get({backend_header}) or ""
  local attempt = headers:get({attempt_header})
  headers:remove({backend_header})
  headers:remove({attempt_header})
  -- The attempts so far live in their own small namespace, cheap to read; the request's
  -- (larger) metadata is read only for an attempt that needs rewriting.
  local meta = h:streamInfo():dynamicMetadata()
  local t = meta:get(LOG)
  local log = (t and t[{log_key}]) or ""
  -- A later attempt with nothing logged: the first one, skipped here, got no answer (an
  -- answer would have been logged by the response-only filter).
  if log == "" and FIRST ~= nil and attempt ~= nil and attempt ~= "1" then log = FIRST .. "=" end
  local first = log == ""
  if first then meta:set(LOG, {log_key}, name .. "=")
  else meta:set(LOG, {log_key}, log .. ";" .. name .. "=") end
  -- The first attempt, at the backend the processor already rewrote the request for.
  if first and name == FIRST then return end
  local b = backends[name]
  local md = meta:get(NS) or {{}}
  local suffix = md[{suffix_key}]
  if b == nil or suffix == nil then return end
  headers:replace(":path", b.prefix .. suffix)
  if not b.keyed then headers:remove("authorization") end
  local model = b.model
  if model == nil and REWRITES then model = md[{client_model_key}] end
  local s, e = md[{start_key}], md[{end_key}]
  if model ~= nil and s ~= nil and e ~= nil then
    local body = h:body()
    local bytes = body:getBytes(0, body:length())
    local rewritten = string.sub(bytes, 1, s) .. model .. string.sub(bytes, e + 1)
    body:setBytes(rewritten)
    -- (A header handle taken before body() is no longer valid after it.)
    h:headers():replace("content-length", tostring(#rewritten))
  end
end

function envoy_on_response(h)
  local meta = h:streamInfo():dynamicMetadata()
  local t = meta:get(LOG)
  local log = ((t and t[{log_key}]) or "") .. (h:headers():get(":status") or "")
  meta:set(LOG, {log_key}, log)
  h:headers():replace({attempts_header}, log)
end
"#,
        rule = rule.name(config).replace('\n', " "),
        rewrites = rewrites,
        ns = lua_string(METADATA_NAMESPACE),
        log_ns = lua_string(ATTEMPT_LOG_NAMESPACE),
        first = first,
        backend_header = lua_string(BACKEND_HEADER),
        attempt_header = lua_string(ATTEMPT_HEADER),
        log_key = lua_string(ATTEMPT_LOG_KEY),
        suffix_key = lua_string(PATH_SUFFIX_KEY),
        start_key = lua_string(MODEL_START_KEY),
        end_key = lua_string(MODEL_END_KEY),
        attempts_header = lua_string(ATTEMPTS_HEADER),
        client_model_key = lua_string(CLIENT_MODEL_KEY),
    )
}

/// A Lua string literal of any text: bytes outside a plain set as decimal escapes, so no
/// name from the config can end the literal or the script.
fn lua_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_' | b':' | b' ') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\{b:03}");
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str, CompileOptions};

    /// Rule 0: `a` alone first, then `b`; rule 1: `a` and `b` both first, then `c`.
    fn config() -> Config {
        let mut text = String::from(
            "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: r}\nspec:\n  rules:\n    - matches: [{headers: [{name: x-ai-eg-model, value: m}]}]\n      backendRefs: [{name: a}, {name: b, priority: 1}]\n    - matches: [{headers: [{name: x-ai-eg-model, value: n}]}]\n      backendRefs: [{name: a}, {name: b}, {name: c, priority: 1}]\n",
        );
        for name in ["a", "b", "c"] {
            text.push_str(&format!("---\napiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {{name: {name}}}\nspec:\n  schema: {{name: OpenAI}}\n  backendRef: {{name: {name}, kind: Backend, group: gateway.envoyproxy.io}}\n---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {{name: {name}}}\nspec:\n  endpoints: [{{fqdn: {{hostname: {name}.example, port: 443}}}}]\n"));
        }
        load_str("t.yaml", &text, &CompileOptions::default()).unwrap()
    }

    fn names(chain: &Value) -> Vec<String> {
        chain
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let inner = &f["typed_config"]["extension_config"]["name"];
                match inner.as_str() {
                    Some(inner) => format!("skip?{inner}"),
                    None => f["name"].as_str().unwrap().to_string(),
                }
            })
            .collect()
    }

    #[test]
    fn the_rewrite_is_skipped_only_where_the_processor_rewrote_the_first_attempt() {
        let c = config();
        // A certain first backend: the attempt is numbered, the rewrite skipped for attempt 1
        // at that backend, a response-only filter records its failure, the headers removed.
        let certain = filters(&c, &c.rules[0]);
        assert_eq!(
            names(&certain),
            [
                "envoy.filters.http.header_mutation",
                "skip?envoy.filters.http.lua",
                "skip?envoy.filters.http.lua",
                "envoy.filters.http.header_mutation",
                "envoy.filters.http.upstream_codec"
            ]
        );
        let set = &certain[0]["typed_config"]["mutations"];
        assert_eq!(
            set["request_mutations"][1]["append"]["header"]["key"],
            ATTEMPT_HEADER
        );
        let skip = &certain[1]["typed_config"]["xds_matcher"]["matcher_list"]["matchers"][0];
        let both = &skip["predicate"]["and_matcher"]["predicate"];
        assert_eq!(both[0]["single_predicate"]["value_match"]["exact"], "1");
        assert_eq!(
            both[1]["single_predicate"]["value_match"]["exact"],
            "default/a"
        );
        let lua2 = certain[2]["typed_config"]["extension_config"]["typed_config"]
            ["default_source_code"]["inline_string"]
            .as_str()
            .unwrap();
        assert!(lua2.contains("\"default/a\" .. \"=\"") && !lua2.contains("envoy_on_request"));
        let removed = &certain[3]["typed_config"]["mutations"]["request_mutations"];
        assert_eq!(removed[0]["remove"], BACKEND_HEADER);
        assert_eq!(removed[1]["remove"], ATTEMPT_HEADER);
        // Two first backends: the processor rewrote nothing, the rewrite runs on every attempt.
        let uncertain = filters(&c, &c.rules[1]);
        assert_eq!(
            names(&uncertain),
            [
                "envoy.filters.http.header_mutation",
                "envoy.filters.http.lua",
                "envoy.filters.http.upstream_codec"
            ]
        );
        let set = &uncertain[0]["typed_config"]["mutations"]["request_mutations"];
        assert_eq!(set.as_array().unwrap().len(), 1);
        // Either way an answered attempt the Lua filter skipped is reported by name.
        for chain in [&certain, &uncertain] {
            let response = &chain[0]["typed_config"]["mutations"]["response_mutations"][0];
            assert_eq!(response["append"]["header"]["key"], ATTEMPTS_HEADER);
            assert_eq!(response["append"]["append_action"], "ADD_IF_ABSENT");
        }
    }

    #[test]
    fn lua_strings_cannot_break_out() {
        assert_eq!(lua_string("default/a"), r#""default/a""#);
        assert_eq!(lua_string(r#""x"]] end"#), r#""\034x\034\093\093 end""#);
        assert_eq!(lua_string("é"), r#""\195\169""#);
    }
}
