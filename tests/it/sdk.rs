//! The real client SDKs (`make sdk` installs them into `.venv`) against the gateway: what their
//! documentation tells users to write must work through it.

use crate::harness::{root, Gateway};

/// Runs `tests/sdk/<script>` with the venv's Python; panics with its output unless it passes.
pub async fn python(script: &str, args: &[&str]) -> String {
    let python = root().join(".venv/bin/python");
    let out = tokio::process::Command::new(&python)
        .arg(root().join("tests/sdk").join(script))
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{}: {e} (run `make sdk`)", python.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} failed:\n{text}");
    text
}

#[tokio::test]
async fn openai_sdk_streaming_loop_works_for_both_kinds_of_provider() {
    let gw = Gateway::start().await;
    // The test upstream reports stream usage only when asked (the gateway asks and hides it);
    // Fireworks reports it unasked (nothing is added).
    for model in ["some-cool-self-hosted-model", "qwen-instruct"] {
        let out = python("openai_stream.py", &[&gw.base, model]).await;
        assert!(out.starts_with("ok:"), "{model}: {out}");
    }
}
