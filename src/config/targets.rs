//! What an Envoy Gateway policy (`targetRefs`, or the older singular `targetRef`) applies to,
//! as ai-extproc serves it: the Gateway (every route), or an HTTPRoute, which Envoy AI Gateway
//! names after its AIGatewayRoute. A target that names nothing ai-extproc serves is an error.

use super::error::{ConfigError, Location};
use super::raw::ObjectRefSpec;

/// One resolved target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Gateway,
    /// The AIGatewayRoute, `namespace/name`.
    Route(String),
}

/// The targets of a policy in namespace `ns` at `loc`; `is_route` says whether a
/// `namespace/name` is an AIGatewayRoute. Every problem goes to `errors`.
pub fn resolve(
    loc: &Location,
    ns: &str,
    refs: &[ObjectRefSpec],
    single: Option<&ObjectRefSpec>,
    is_route: impl Fn(&str) -> bool,
    errors: &mut Vec<ConfigError>,
) -> Vec<Target> {
    let refs: Vec<&ObjectRefSpec> = refs.iter().chain(single).collect();
    if refs.is_empty() {
        errors.push(ConfigError::new(
            loc,
            "spec.targetRefs",
            "required (the Gateway, or an HTTPRoute named after an AIGatewayRoute)",
        ));
    }
    let mut targets = Vec::new();
    for (i, t) in refs.iter().enumerate() {
        let name = format!("{}/{}", t.namespace.as_deref().unwrap_or(ns), t.name);
        match t.kind.as_deref() {
            Some("Gateway") => targets.push(Target::Gateway),
            Some("HTTPRoute") if is_route(&name) => targets.push(Target::Route(name)),
            kind => errors.push(ConfigError::new(
                loc,
                format!("spec.targetRefs[{i}]"),
                format!(
                    "{} {name:?} is nothing ai-extproc serves (target the Gateway, or an HTTPRoute named after an AIGatewayRoute)",
                    kind.unwrap_or("(no kind)")
                ),
            )),
        }
    }
    targets
}
