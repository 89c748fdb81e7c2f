//! The built-in offline upstreams standing in for configured Backends (`--test-upstream`,
//! `--fake-fireworks`): started on loopback, with Envoy pointed at them by backend overrides.

use std::net::SocketAddr;

use super::{absolute, io, LocalError, LocalOptions};
use crate::config::Config;
use crate::envoy::BackendOverride;
use crate::upstreams::{self, FireworksOptions, TestOptions, Upstream, UpstreamKind};

fn is_backend(cluster_name: &str, backend: &str) -> bool {
    cluster_name == backend
        || cluster_name
            .split_once('/')
            .is_some_and(|(_, n)| n == backend)
}

fn matching_backend(config: &Config, backend: &str) -> Result<(), LocalError> {
    if config.clusters.iter().any(|c| is_backend(&c.name, backend)) {
        Ok(())
    } else {
        Err(LocalError::UnknownBackend(backend.to_string()))
    }
}

pub(super) async fn start_test_upstream(
    config: &Config,
    backend: &str,
    options: &mut LocalOptions,
) -> Result<Upstream, LocalError> {
    matching_backend(config, backend)?;
    let up = upstreams::spawn(
        UpstreamKind::Test(TestOptions::default()),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .map_err(io("starting the test upstream"))?;
    tracing::info!(%backend, addr = %up.addr, "backend served by the built-in test upstream");
    options.envoy_options.overrides.push(BackendOverride {
        backend: backend.to_string(),
        address: Some(up.addr.into()),
        ca_file: None,
    });
    Ok(up)
}

pub(super) async fn start_fake_fireworks(
    config: &Config,
    backend: &str,
    options: &mut LocalOptions,
) -> Result<Upstream, LocalError> {
    matching_backend(config, backend)?;
    // The fake accepts the key the config sends to that backend (the guide's placeholder if unset).
    let configured = config
        .backends
        .iter()
        .filter(|b| is_backend(&config.clusters[b.cluster].name, backend))
        .find_map(|b| b.api_key.as_ref().map(|k| k.expose().to_string()))
        .unwrap_or_default();
    let api_key = options.fake_fireworks_key.clone().unwrap_or(configured);
    let kind = UpstreamKind::Fireworks(FireworksOptions {
        api_key,
        stream_interval: options.fake_stream_interval,
        ..FireworksOptions::default()
    });
    let up = upstreams::spawn(kind, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(io("starting the fake Fireworks"))?;
    let ca_file = absolute(&options.state_dir.join("fake-fireworks-ca.pem"));
    std::fs::write(&ca_file, up.ca_pem.clone().unwrap_or_default())
        .map_err(io("writing the test CA"))?;
    tracing::info!(%backend, addr = %up.addr, ca = %ca_file.display(), "backend served by the built-in fake Fireworks");
    options.envoy_options.overrides.push(BackendOverride {
        backend: backend.to_string(),
        address: Some(up.addr.into()),
        ca_file: Some(ca_file),
    });
    Ok(up)
}
