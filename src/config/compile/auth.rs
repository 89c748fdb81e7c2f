//! A SecurityPolicy's `apiKeyAuth` and `jwt`, as the client authentication Envoy's own filters
//! (`api_key_auth`, `jwt_authn`) check before the processor sees the request.
//!
//! Authentication runs before the body is read, so before the route is known: a policy applies
//! to every route, and must target the Gateway or every AIGatewayRoute (a policy on some routes
//! would look as if the others were open, or closed, when they are not). One policy per
//! gateway. What Envoy Gateway offers and ai-extproc does not render is an error naming it.

use super::{ref_key, secret_value, Compiler};
use crate::config::error::Location;
use crate::config::load::Obj;
use crate::config::raw::{ApiKeyAuthSpec, JwtProviderSpec, JwtSpec, SecurityPolicySpec};
use crate::config::runtime::{ApiKeyAuth, Auth, CredentialSource, Jwks, JwtAuth, JwtProvider};
use crate::config::secret::SecretString;
use crate::config::targets::{self, Target};

impl Compiler<'_> {
    /// The gateway's client authentication, if a SecurityPolicy sets one.
    pub(super) fn auth(&mut self) {
        let policies = self.index.security_policies.clone();
        let mut first: Option<String> = None;
        for policy in policies {
            let spec = &policy.spec;
            if spec.api_key_auth.is_none() && spec.jwt.is_none() {
                continue;
            }
            let loc = &policy.location;
            let name = format!("{}/{}", super::ns(policy), policy.meta.name);
            if let Some(first) = &first {
                self.err(
                    loc,
                    "spec",
                    format!("client authentication is already set by SecurityPolicy {first}; it runs before the route is known, so one policy applies to every request"),
                );
                continue;
            }
            first = Some(name.clone());
            self.auth_targets(policy);
            let auth = Auth {
                policy: name,
                api_keys: spec
                    .api_key_auth
                    .as_deref()
                    .and_then(|a| self.api_keys(loc, policy, a)),
                jwt: spec.jwt.as_deref().and_then(|j| self.jwt(loc, policy, j)),
            };
            self.config.auth = Some(auth);
        }
    }

    /// The policy must cover every route: the Gateway, or each AIGatewayRoute.
    fn auth_targets(&mut self, policy: &Obj<SecurityPolicySpec>) {
        let routes: Vec<String> = self.config.routes.iter().map(|r| r.name.clone()).collect();
        let mut errors = Vec::new();
        let targets = targets::resolve(
            &policy.location,
            super::ns(policy),
            &policy.spec.target_refs,
            policy.spec.target_ref.as_ref(),
            |name| routes.iter().any(|r| r == name),
            &mut errors,
        );
        self.errors.extend(errors);
        if targets.is_empty() || targets.contains(&Target::Gateway) {
            return;
        }
        let missing: Vec<&String> = routes
            .iter()
            .filter(|r| !targets.contains(&Target::Route((*r).clone())))
            .collect();
        if !missing.is_empty() {
            self.err(
                &policy.location,
                "spec.targetRefs",
                format!("authentication runs before the request body picks a route, so it applies to every route: target the Gateway, or every AIGatewayRoute (missing: {})", missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")),
            );
        }
    }

    fn api_keys(
        &mut self,
        loc: &Location,
        policy: &Obj<SecurityPolicySpec>,
        spec: &ApiKeyAuthSpec,
    ) -> Option<ApiKeyAuth> {
        let before = self.errors.len();
        if spec.sanitize == Some(false) {
            self.err(
                loc,
                "spec.apiKeyAuth.sanitize",
                "false is not honoured: the client's key never goes past the gateway (omit it or set true)",
            );
        }
        let mut credentials = Vec::new();
        if spec.credential_refs.is_empty() {
            self.err(
                loc,
                "spec.apiKeyAuth.credentialRefs",
                "at least one Secret is required",
            );
        }
        for (i, r) in spec.credential_refs.iter().enumerate() {
            let field = format!("spec.apiKeyAuth.credentialRefs[{i}]");
            if r.kind.as_deref().is_some_and(|k| k != "Secret") {
                self.err(loc, &field, "only Secrets hold API keys");
                continue;
            }
            let k = ref_key(r, super::ns(policy));
            let Some(secret) = self.index.secrets.get(&k).copied() else {
                self.err(loc, &field, format!("Secret {}/{} not found", k.0, k.1));
                continue;
            };
            let entries: Vec<&String> = secret
                .spec
                .data
                .keys()
                .chain(secret.spec.string_data.keys())
                .collect();
            if entries.is_empty() {
                self.err(
                    &secret.location,
                    "data",
                    "no client ids: each entry is `client id: key`",
                );
            }
            for client in entries {
                match secret_value(&secret.spec, client) {
                    Ok(Some(key)) if !key.trim().is_empty() => {
                        credentials.push((client.clone(), SecretString::new(key.trim())));
                    }
                    Ok(_) => self.err(
                        &secret.location,
                        format!("data.{client}"),
                        "the key is empty",
                    ),
                    Err(e) => self.err(&secret.location, format!("data.{client}"), e),
                }
            }
        }
        let mut sources = Vec::new();
        for (i, from) in spec.extract_from.iter().enumerate() {
            let field = format!("spec.apiKeyAuth.extractFrom[{i}]");
            sources.extend(
                from.headers
                    .iter()
                    .map(|h| CredentialSource::Header(h.to_ascii_lowercase())),
            );
            sources.extend(
                from.params
                    .iter()
                    .map(|p| CredentialSource::Query(p.clone())),
            );
            sources.extend(
                from.cookies
                    .iter()
                    .map(|c| CredentialSource::Cookie(c.clone())),
            );
            if from.headers.is_empty() && from.params.is_empty() && from.cookies.is_empty() {
                self.err(loc, field, "name at least one header, param or cookie");
            }
        }
        if spec.extract_from.is_empty() {
            self.err(
                loc,
                "spec.apiKeyAuth.extractFrom",
                "at least one place to read the key is required",
            );
        }
        for (i, s) in sources.iter().enumerate() {
            if let CredentialSource::Header(h) = s {
                self.check_header(loc, &format!("spec.apiKeyAuth.extractFrom (header {i})"), h);
            }
        }
        let client_id_header = spec.forward_client_id_header.as_ref().map(|h| {
            let h = h.to_ascii_lowercase();
            self.check_header(loc, "spec.apiKeyAuth.forwardClientIDHeader", &h);
            h
        });
        (self.errors.len() == before).then_some(ApiKeyAuth {
            credentials,
            sources,
            client_id_header,
        })
    }

    fn jwt(
        &mut self,
        loc: &Location,
        policy: &Obj<SecurityPolicySpec>,
        spec: &JwtSpec,
    ) -> Option<JwtAuth> {
        let before = self.errors.len();
        if spec.providers.is_empty() {
            self.err(
                loc,
                "spec.jwt.providers",
                "at least one provider is required",
            );
        }
        let mut providers = Vec::new();
        for (i, p) in spec.providers.iter().enumerate() {
            let field = format!("spec.jwt.providers[{i}]");
            if providers.iter().any(|q: &JwtProvider| q.name == p.name) || p.name.is_empty() {
                self.err(
                    loc,
                    format!("{field}.name"),
                    "names must be unique and non-empty",
                );
            }
            if let Some(provider) = self.jwt_provider(loc, policy, &field, p) {
                providers.push(provider);
            }
        }
        (self.errors.len() == before).then_some(JwtAuth {
            providers,
            optional: spec.optional.unwrap_or(false),
        })
    }

    fn jwt_provider(
        &mut self,
        loc: &Location,
        policy: &Obj<SecurityPolicySpec>,
        field: &str,
        p: &JwtProviderSpec,
    ) -> Option<JwtProvider> {
        if p.recompute_route.is_some() {
            self.err(
                loc,
                format!("{field}.recomputeRoute"),
                "not applied: the route is chosen from the request body, after authentication",
            );
        }
        let jwks = match (&p.local_jwks, &p.remote_jwks) {
            (Some(local), None) => self.local_jwks(loc, policy, field, local)?,
            (None, Some(remote)) => {
                for (set, name) in [
                    (remote.backend_refs.is_some(), "backendRefs"),
                    (remote.backend_settings.is_some(), "backendSettings"),
                ] {
                    if set {
                        self.err(
                            loc,
                            format!("{field}.remoteJWKS.{name}"),
                            "not applied by ai-extproc (the key set is fetched from the uri's host directly)",
                        );
                    }
                }
                let cache = match remote
                    .cache_duration
                    .as_deref()
                    .map(humantime::parse_duration)
                {
                    None => None,
                    Some(Ok(d)) => Some(d),
                    Some(Err(e)) => {
                        self.err(
                            loc,
                            format!("{field}.remoteJWKS.cacheDuration"),
                            e.to_string(),
                        );
                        None
                    }
                };
                match remote_uri(&remote.uri) {
                    Ok((host, port, tls)) => Jwks::Remote {
                        uri: remote.uri.clone(),
                        host,
                        port,
                        tls,
                        cache,
                    },
                    Err(e) => {
                        self.err(loc, format!("{field}.remoteJWKS.uri"), e);
                        return None;
                    }
                }
            }
            _ => {
                self.err(
                    loc,
                    field,
                    "exactly one of localJWKS and remoteJWKS is required",
                );
                return None;
            }
        };
        let mut claim_to_headers = Vec::new();
        for (i, c) in p.claim_to_headers.iter().enumerate() {
            let h = c.header.to_ascii_lowercase();
            self.check_header(loc, &format!("{field}.claimToHeaders[{i}].header"), &h);
            claim_to_headers.push((h, c.claim.clone()));
        }
        let from = p.extract_from.clone().unwrap_or_default();
        let from_headers = from
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value_prefix.clone()))
            .collect();
        Some(JwtProvider {
            name: p.name.clone(),
            issuer: p.issuer.clone(),
            audiences: p.audiences.clone(),
            jwks,
            claim_to_headers,
            from_headers,
            from_params: from.params,
            from_cookies: from.cookies,
        })
    }

    fn local_jwks(
        &mut self,
        loc: &Location,
        policy: &Obj<SecurityPolicySpec>,
        field: &str,
        local: &crate::config::raw::LocalJwksSpec,
    ) -> Option<Jwks> {
        let field = format!("{field}.localJWKS");
        let text = match (local.kind.as_deref(), &local.inline, &local.value_ref) {
            (Some("Inline") | None, Some(inline), None) => inline.clone(),
            (Some("ValueRef") | None, None, Some(r)) => {
                let k = ref_key(r, super::ns(policy));
                let found = match r.kind.as_deref() {
                    Some("ConfigMap") | None => self.index.config_maps.get(&k).copied(),
                    Some(_) => None,
                };
                let Some(map) = found else {
                    self.err(
                        loc,
                        format!("{field}.valueRef"),
                        format!("ConfigMap {}/{} not found", k.0, k.1),
                    );
                    return None;
                };
                // A ConfigMap's data is text (a Secret's would be base64).
                let Some(v) = map.spec.data.get("jwks") else {
                    self.err(&map.location, "data.jwks", "required: the key set");
                    return None;
                };
                v.clone()
            }
            _ => {
                self.err(
                    loc,
                    field,
                    "type Inline with inline, or type ValueRef with valueRef (a ConfigMap)",
                );
                return None;
            }
        };
        let keys = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("keys").and_then(|k| k.as_array()).map(Vec::len));
        match keys {
            Some(n) if n > 0 => Some(Jwks::Local(text)),
            _ => {
                self.err(
                    loc,
                    field,
                    "not a JSON Web Key Set (a JSON object with a non-empty `keys` array)",
                );
                None
            }
        }
    }

    fn check_header(&mut self, loc: &Location, field: &str, name: &str) {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            self.err(loc, field, format!("{name:?} is not a header name"));
        }
    }
}

/// `(host, port, tls)` of a key set's `http(s)://host[:port]/path`.
fn remote_uri(uri: &str) -> Result<(String, u16, bool), String> {
    let parsed: http::Uri = uri.parse().map_err(|_| format!("{uri:?} is not a URI"))?;
    let tls = match parsed.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{uri:?}: http or https is required")),
    };
    let host = parsed
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{uri:?} has no host"))?;
    let port = parsed.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok((host.trim_matches(['[', ']']).to_string(), port, tls))
}
