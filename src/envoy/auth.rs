//! Client authentication (a SecurityPolicy's `apiKeyAuth` and `jwt`) as Envoy's own filters,
//! before the processor: a request without a valid credential never reaches it (401 in
//! OpenAI's shape, from the local reply mappers), and the credential is removed before the
//! request goes on, so it never reaches a provider.
//!
//! Identity headers a client sends itself never get through: `api_key_auth` overwrites the
//! client id header, and `jwt_authn` removes every `claim_to_headers` header before it
//! verifies (so a valid token without the claim leaves none). tests/it/auth.rs checks both
//! with spoofed headers; no extra filter is needed for it.

use serde_json::{json, Map, Value};

use super::bootstrap::{seconds, EnvoyOptions};
use crate::config::{ApiKeyAuth, Auth, CredentialSource, Jwks, JwtAuth, JwtProvider};

/// The filters, in order, to put before ext_proc.
pub fn filters(auth: &Auth) -> Vec<Value> {
    let mut filters = Vec::new();
    if let Some(keys) = &auth.api_keys {
        filters.push(api_key_auth(keys));
    }
    if let Some(jwt) = &auth.jwt {
        filters.push(jwt_authn(jwt));
    }
    filters
}

fn api_key_auth(keys: &ApiKeyAuth) -> Value {
    let credentials: Vec<Value> = keys
        .credentials
        .iter()
        .map(|(client, key)| json!({"key": key.expose(), "client": client}))
        .collect();
    let sources: Vec<Value> = keys
        .sources
        .iter()
        .map(|s| match s {
            CredentialSource::Header(h) => json!({"header": h}),
            CredentialSource::Query(q) => json!({"query": q}),
            CredentialSource::Cookie(c) => json!({"cookie": c}),
        })
        .collect();
    let mut forwarding = json!({"hide_credentials": true});
    if let Some(h) = &keys.client_id_header {
        forwarding["header"] = json!(h);
    }
    json!({
        "name": "envoy.filters.http.api_key_auth",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
            "credentials": credentials,
            "key_sources": sources,
            "forwarding": forwarding
        }
    })
}

fn jwt_authn(jwt: &JwtAuth) -> Value {
    let mut providers = Map::new();
    for p in &jwt.providers {
        providers.insert(p.name.clone(), provider(p));
    }
    let mut requirements: Vec<Value> = jwt
        .providers
        .iter()
        .map(|p| json!({"provider_name": p.name}))
        .collect();
    if jwt.optional {
        requirements.push(json!({"allow_missing": {}}));
    }
    let requires = match <[Value; 1]>::try_from(requirements) {
        Ok([one]) => one,
        Err(many) => json!({"requires_any": {"requirements": many}}),
    };
    json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": providers,
            "rules": [{"match": {"prefix": "/"}, "requires": requires}]
        }
    })
}

fn provider(p: &JwtProvider) -> Value {
    let mut v = json!({
        // The token is removed once verified: it never reaches a provider.
        "forward": false,
        "claim_to_headers": p.claim_to_headers.iter()
            .map(|(header, claim)| json!({"header_name": header, "claim_name": claim}))
            .collect::<Vec<_>>(),
    });
    if let Some(issuer) = &p.issuer {
        v["issuer"] = json!(issuer);
    }
    if !p.audiences.is_empty() {
        v["audiences"] = json!(p.audiences);
    }
    if !p.from_headers.is_empty() {
        v["from_headers"] = p
            .from_headers
            .iter()
            .map(|(name, prefix)| match prefix {
                Some(prefix) => json!({"name": name, "value_prefix": prefix}),
                None => json!({"name": name}),
            })
            .collect();
    }
    if !p.from_params.is_empty() {
        v["from_params"] = json!(p.from_params);
    }
    if !p.from_cookies.is_empty() {
        v["from_cookies"] = json!(p.from_cookies);
    }
    match &p.jwks {
        Jwks::Local(set) => v["local_jwks"] = json!({"inline_string": set}),
        Jwks::Remote { uri, cache, .. } => {
            let mut remote = json!({
                "http_uri": {"uri": uri, "cluster": jwks_cluster(&p.name), "timeout": "5s"},
                // Fetched when Envoy starts, not on the first request.
                "async_fetch": {}
            });
            if let Some(cache) = cache {
                remote["cache_duration"] = json!(seconds(*cache));
            }
            v["remote_jwks"] = remote;
        }
    }
    v
}

fn jwks_cluster(provider: &str) -> String {
    format!("jwks_{provider}")
}

/// One cluster per remote key set.
pub fn clusters(auth: &Auth, options: &EnvoyOptions) -> Vec<Value> {
    let providers = auth.jwt.iter().flat_map(|j| &j.providers);
    providers
        .filter_map(|p| match &p.jwks {
            Jwks::Remote {
                host, port, tls, ..
            } => {
                let name = jwks_cluster(&p.name);
                let kind = if host.parse::<std::net::IpAddr>().is_ok() {
                    "STATIC"
                } else {
                    "LOGICAL_DNS"
                };
                let mut c = json!({
                    "name": name,
                    "type": kind,
                    "connect_timeout": "5s",
                    "dns_lookup_family": "V4_PREFERRED",
                    "load_assignment": {
                        "cluster_name": name,
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                            "socket_address": {"address": host, "port_value": port}
                        }}}]}]
                    }
                });
                if *tls {
                    c["transport_socket"] = json!({
                        "name": "envoy.transport_sockets.tls",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                            "sni": host,
                            "common_tls_context": {"validation_context": {
                                "trusted_ca": {"filename": options.system_ca_file},
                                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": host}}]
                            }}
                        }
                    });
                }
                Some(c)
            }
            Jwks::Local(_) => None,
        })
        .collect()
}
