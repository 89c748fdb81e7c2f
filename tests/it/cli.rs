//! The binary's own behaviour: `check`, config errors, `envoy-config`, no secret in output.

use std::process::Command;

use crate::harness::root;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ai-extproc"));
    c.current_dir(root());
    c
}

#[test]
fn check_prints_the_route_table() {
    let out = bin()
        .args([
            "check",
            "examples/basic.yaml",
            "examples/fireworks.yaml",
            "--secret-env",
            "envoy-ai-gateway-fireworks-apikey=FIREWORKS_API_KEY",
        ])
        .env("FIREWORKS_API_KEY", "fw_never_printed_anywhere")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("x-ai-eg-model=qwen-instruct\tdefault/envoy-ai-gateway-fireworks (weight 1)\taccounts/fireworks/models/qwen3-vl-235b-a22b-instruct\tdefault/envoy-ai-gateway-fireworks api.fireworks.ai:443/inference/v1"), "{stdout}");
    assert!(
        stdout.contains(
            "x-ai-eg-model=gpt-5\tdefault/envoy-ai-gateway-fireworks (weight 1)\t(as requested)"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("fw_never_printed") && !stderr.contains("fw_never_printed"));
}

#[test]
fn config_errors_are_all_reported_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    let yaml = std::fs::read_to_string(root().join("examples/fireworks.yaml"))
        .unwrap()
        .replace("type: Exact", "type: Prefix")
        .replace(
            "name: envoy-ai-gateway-fireworks-apikey\n      namespace: default",
            "name: missing-secret\n      namespace: default",
        );
    std::fs::write(&file, yaml).unwrap();
    let out = bin().arg("check").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("unknown match type \"Prefix\"").count(),
        4,
        "{stderr}"
    );
    assert!(
        stderr.contains("spec.apiKey.secretRef.name: no Secret default/missing-secret"),
        "{stderr}"
    );
    assert!(stderr.contains("bad.yaml (document 1, AIGatewayRoute default/envoy-ai-gateway-fireworks): spec.rules[0].matches[0].headers[0].type"), "{stderr}");
    assert!(!stderr.contains("fw_YOUR_FIREWORKS_API_KEY_HERE"));
}

#[test]
fn envoy_config_writes_what_the_library_renders() {
    let out = bin()
        .args([
            "envoy-config",
            "examples/basic.yaml",
            "examples/fireworks.yaml",
            "examples/fireworks-apis.yaml",
            "--system-ca-file",
            "/etc/ssl/certs/ca-certificates.crt",
            "--secret-env",
            "envoy-ai-gateway-fireworks-apikey=FIREWORKS_API_KEY",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(root().join("envoy/envoy.yaml")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);
}
