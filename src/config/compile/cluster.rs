//! Envoy Gateway Backends (one Envoy cluster each) and their BackendTLSPolicies.

use super::{ns, ref_key, secret_value, Compiler, Key};
use crate::config::raw::ObjectRefSpec;
use crate::config::runtime::{CaSource, Cluster, ClusterId, Endpoint, Tls};

impl Compiler<'_> {
    pub(super) fn cluster(&mut self, k: &Key) -> Option<ClusterId> {
        if let Some(id) = self.cluster_ids.get(k) {
            return Some(*id);
        }
        let obj = *self.index.backends.get(k)?;
        let loc = &obj.location;
        let endpoint = match obj.spec.endpoints.as_slice() {
            [] => {
                self.err(loc, "spec.endpoints", "at least one endpoint is required");
                None
            }
            [e] => match (&e.fqdn, &e.ip) {
                (Some(f), None) => Some(Endpoint::Fqdn {
                    hostname: f.hostname.clone(),
                    port: f.port,
                }),
                (None, Some(ip)) => {
                    if ip.address.parse::<std::net::IpAddr>().is_err() {
                        self.err(
                            loc,
                            "spec.endpoints[0].ip.address",
                            format!("not an IP address: {:?}", ip.address),
                        );
                    }
                    Some(Endpoint::Ip {
                        address: ip.address.clone(),
                        port: ip.port,
                    })
                }
                _ => {
                    self.err(
                        loc,
                        "spec.endpoints[0]",
                        "exactly one of fqdn or ip is required",
                    );
                    None
                }
            },
            _ => {
                self.err(
                    loc,
                    "spec.endpoints",
                    "only one endpoint per Backend is supported",
                );
                None
            }
        };
        let tls = self.tls(k);
        let id = self.config.clusters.len();
        self.config.clusters.push(Cluster {
            name: format!("{}/{}", k.0, k.1),
            endpoint: endpoint.unwrap_or(Endpoint::Ip {
                address: "127.0.0.1".into(),
                port: 0,
            }),
            tls,
        });
        self.cluster_ids.insert(k.clone(), id);
        Some(id)
    }

    pub(super) fn tls(&mut self, k: &Key) -> Option<Tls> {
        let policy = self.index.tls_policies.iter().copied().find(|p| {
            p.spec.target_refs.iter().any(|t| {
                t.kind.as_deref() == Some("Backend")
                    && t.group.as_deref() == Some("gateway.envoyproxy.io")
                    && ref_key(t, ns(p)) == *k
            })
        })?;
        let loc = &policy.location;
        let v = &policy.spec.validation;
        let ca = match (
            v.well_known_ca_certificates.as_deref(),
            v.ca_certificate_refs.as_slice(),
        ) {
            (Some("System"), []) => CaSource::System,
            (Some(other), []) => {
                self.err(
                    loc,
                    "spec.validation.wellKnownCACertificates",
                    format!("unknown value {other:?} (expected System)"),
                );
                CaSource::System
            }
            (None, refs) if !refs.is_empty() => {
                let mut pem = String::new();
                for (i, r) in refs.iter().enumerate() {
                    match self.ca_ref(r, ns(policy)) {
                        Ok(text) => pem.push_str(&text),
                        Err(e) => {
                            self.err(loc, format!("spec.validation.caCertificateRefs[{i}]"), e)
                        }
                    }
                }
                CaSource::Pem(pem)
            }
            _ => {
                self.err(
                    loc,
                    "spec.validation",
                    "set exactly one of wellKnownCACertificates or caCertificateRefs",
                );
                CaSource::System
            }
        };
        let mut sans: Vec<String> = v
            .subject_alt_names
            .iter()
            .filter_map(|s| s.hostname.clone())
            .collect();
        if sans.is_empty() {
            sans.push(v.hostname.clone());
        }
        Some(Tls {
            hostname: v.hostname.clone(),
            subject_alt_names: sans,
            ca,
        })
    }

    pub(super) fn ca_ref(&self, r: &ObjectRefSpec, default_ns: &str) -> Result<String, String> {
        let k = ref_key(r, default_ns);
        let (obj, is_secret) = match r.kind.as_deref().unwrap_or("ConfigMap") {
            "ConfigMap" => (self.index.config_maps.get(&k), false),
            "Secret" => (self.index.secrets.get(&k), true),
            other => {
                return Err(format!(
                    "kind {other:?} is not supported (ConfigMap or Secret)"
                ))
            }
        };
        let obj = obj.ok_or_else(|| {
            format!(
                "no {} {}/{}",
                r.kind.as_deref().unwrap_or("ConfigMap"),
                k.0,
                k.1
            )
        })?;
        let value = if is_secret {
            secret_value(&obj.spec, "ca.crt")?
        } else {
            obj.spec.data.get("ca.crt").cloned()
        };
        value.ok_or_else(|| format!("{}/{} has no ca.crt entry", k.0, k.1))
    }
}
