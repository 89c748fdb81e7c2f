//! The committed bootstrap in `envoy/` is what the renderer produces, and Envoy 1.40 accepts it
//! (and the variants `run` and the tests render).

use std::path::PathBuf;
use std::process::Command;

use ai_extproc::config::{self, CompileOptions};
use ai_extproc::envoy::{
    render_yaml, BackendOverride, Credentials, EnvoyOptions, ProcessorAddress,
};

use crate::harness::{envoy_bin, examples, root};

/// The options `make envoy-config` renders `envoy/envoy.yaml` with.
fn committed_options() -> EnvoyOptions {
    EnvoyOptions {
        system_ca_file: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
        credentials: Credentials::EnvoyEnv,
        ..EnvoyOptions::default()
    }
}

/// The examples as `make envoy-config` loads them (`--secret-env` as in the Makefile).
pub(crate) fn examples_config() -> config::Config {
    let options = CompileOptions {
        secret_env: vec![(
            "envoy-ai-gateway-fireworks-apikey".into(),
            "FIREWORKS_API_KEY".into(),
        )],
        ..CompileOptions::default()
    };
    // What `make run` and docker-compose load: the guide's files and the other APIs'.
    let mut files = examples();
    files.push(crate::harness::root().join("examples/fireworks-apis.yaml"));
    config::load(&files, &options).unwrap()
}

/// Has the real Envoy validate a bootstrap.
pub(crate) fn validate(yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("envoy.yaml");
    std::fs::write(&file, yaml).unwrap();
    // Keys Envoy injects itself are read from the environment.
    let out = Command::new(envoy_bin())
        .args(["--mode", "validate", "--log-level", "error", "-c"])
        .arg(&file)
        .env("FIREWORKS_API_KEY", "fw_validate")
        .output()
        .expect("run envoy (make envoy installs it)");
    assert!(
        out.status.success(),
        "envoy rejected the bootstrap:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn committed_bootstrap_matches_the_renderer() {
    let rendered = render_yaml(&examples_config(), &committed_options());
    let committed = std::fs::read_to_string(root().join("envoy/envoy.yaml")).unwrap_or_default();
    assert!(
        committed == rendered,
        "envoy/envoy.yaml drifted from `ai-extproc envoy-config`; run `make envoy-config` and commit"
    );
}

#[test]
fn envoy_accepts_the_committed_bootstrap() {
    validate(&std::fs::read_to_string(root().join("envoy/envoy.yaml")).unwrap());
}

#[test]
fn envoy_accepts_unix_socket_and_override_variants() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(
        &ca,
        ai_extproc::upstreams::TestCa::generate(&["api.fireworks.ai"])
            .unwrap()
            .ca_pem,
    )
    .unwrap();
    let options = EnvoyOptions {
        processor: ProcessorAddress::Unix(dir.path().join("p.sock")),
        overrides: vec![BackendOverride {
            backend: "envoy-ai-gateway-fireworks".into(),
            address: Some("127.0.0.1:8443".parse().unwrap()),
            ca_file: Some(ca),
        }],
        ..committed_options()
    };
    let yaml = render_yaml(&examples_config(), &options);
    assert!(yaml.contains("sni: api.fireworks.ai"));
    assert!(yaml.contains("host_rewrite_literal: api.fireworks.ai"));
    validate(&yaml);
}
