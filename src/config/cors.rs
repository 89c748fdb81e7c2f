//! Envoy Gateway `SecurityPolicy` objects -> the one CORS policy of the gateway.
//!
//! ai-extproc serves every route on one virtual host, and a browser's preflight carries no body
//! (so no model, so no route): a CORS policy necessarily applies to every route. It may target
//! the Gateway or any AIGatewayRoute (as Envoy AI Gateway's HTTPRoute of the same name); two
//! policies with CORS are an error. `apiKeyAuth` and `jwt` are compiled by `compile/auth.rs`;
//! every other SecurityPolicy feature is an error naming its field: ai-extproc does not apply
//! it, and must not look as if it did.

use super::error::{ConfigError, Location};
use super::load::Obj;
use super::raw::{AIGatewayRouteSpec, CorsSpec, SecurityPolicySpec};
use super::runtime::Cors;
use super::targets;

/// The gateway's CORS policy, if a SecurityPolicy sets one; every problem goes to `errors`.
pub fn compile(
    policies: &[&Obj<SecurityPolicySpec>],
    routes: &[&Obj<AIGatewayRouteSpec>],
    errors: &mut Vec<ConfigError>,
) -> Option<Cors> {
    let mut cors: Option<(Cors, &Location)> = None;
    for policy in policies {
        let loc = &policy.location;
        let spec = &policy.spec;
        for (field, set) in [
            ("targetSelectors", spec.target_selectors.is_some()),
            ("oidc", spec.oidc.is_some()),
            ("basicAuth", spec.basic_auth.is_some()),
            ("extAuth", spec.ext_auth.is_some()),
            ("authorization", spec.authorization.is_some()),
        ] {
            if set {
                errors.push(ConfigError::new(
                    loc,
                    format!("spec.{field}"),
                    "not applied by ai-extproc (of a SecurityPolicy it applies cors, apiKeyAuth and jwt)",
                ));
            }
        }
        let ns = policy.meta.namespace.as_deref().unwrap_or("default");
        let is_route = |name: &str| {
            routes.iter().any(|r| {
                format!(
                    "{}/{}",
                    r.meta.namespace.as_deref().unwrap_or("default"),
                    r.meta.name
                ) == name
            })
        };
        // CORS applies to every route whatever the targets: only their validity matters.
        targets::resolve(
            loc,
            ns,
            &spec.target_refs,
            spec.target_ref.as_ref(),
            is_route,
            errors,
        );
        let Some(spec) = &spec.cors else {
            continue;
        };
        let Some(compiled) = policy_cors(spec, loc, errors) else {
            continue;
        };
        match &cors {
            Some((_, first)) => errors.push(ConfigError::new(
                loc,
                "spec.cors",
                format!("a CORS policy is already set ({first}); ai-extproc serves every route on one virtual host, so one CORS policy applies to all"),
            )),
            None => cors = Some((compiled, loc)),
        }
    }
    cors.map(|(c, _)| c)
}

fn policy_cors(spec: &CorsSpec, loc: &Location, errors: &mut Vec<ConfigError>) -> Option<Cors> {
    let before = errors.len();
    if spec.allow_origins.is_empty() {
        errors.push(ConfigError::new(
            loc,
            "spec.cors.allowOrigins",
            "at least one origin is required",
        ));
    }
    let mut allow_origins = Vec::new();
    for (i, origin) in spec.allow_origins.iter().enumerate() {
        match origin_regex(origin) {
            Ok(re) => allow_origins.push(re),
            Err(e) => errors.push(ConfigError::new(
                loc,
                format!("spec.cors.allowOrigins[{i}]"),
                e,
            )),
        }
    }
    let max_age = spec
        .max_age
        .as_deref()
        .and_then(|t| match humantime::parse_duration(t) {
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(ConfigError::new(
                    loc,
                    "spec.cors.maxAge",
                    format!("invalid duration {t:?}: {e}"),
                ));
                None
            }
        });
    (errors.len() == before).then(|| Cors {
        allow_origins,
        allow_methods: spec.allow_methods.clone(),
        allow_headers: spec.allow_headers.clone(),
        expose_headers: spec.expose_headers.clone(),
        max_age,
        allow_credentials: spec.allow_credentials.unwrap_or(false),
    })
}

/// An origin (`https://app.example`, `https://*.example`, `*`) as a whole-value regex, as
/// Envoy Gateway translates it: the text quoted, each `*` any run of characters.
fn origin_regex(origin: &str) -> Result<String, String> {
    if origin.is_empty() || origin.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{origin:?} is not an origin"));
    }
    Ok(origin
        .split('*')
        .map(regex::escape)
        .collect::<Vec<_>>()
        .join(".*"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_become_anchored_patterns() {
        let re =
            |o: &str| regex::Regex::new(&format!("^(?:{})$", origin_regex(o).unwrap())).unwrap();
        assert!(re("*").is_match("https://anything.example"));
        let wild = re("https://*.example.com");
        assert!(wild.is_match("https://app.example.com"));
        assert!(!wild.is_match("https://app.example.com.evil"));
        assert!(!wild.is_match("http://app.example.com"));
        let exact = re("https://app.example");
        assert!(exact.is_match("https://app.example"));
        assert!(!exact.is_match("https://appxexample"), "dots are literal");
        assert!(origin_regex("a b").is_err());
    }
}
