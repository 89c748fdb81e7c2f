//! Starts the local gateway (the same code `make run` uses) on free ports, with Envoy's access
//! log in a temp dir, and gives tests a client and the upstreams' records.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use ai_extproc::envoy::{BackendOverride, EnvoyOptions};
use ai_extproc::local::{LocalGateway, LocalOptions};
use ai_extproc::upstreams::Recorder;

pub const FIREWORKS_BACKEND: &str = "envoy-ai-gateway-fireworks";
pub const TEST_BACKEND: &str = "envoy-ai-gateway-basic-testupstream";
pub const GUIDE_KEY: &str = "fw_YOUR_FIREWORKS_API_KEY_HERE";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn examples() -> Vec<PathBuf> {
    vec![
        root().join("examples/basic.yaml"),
        root().join("examples/fireworks.yaml"),
    ]
}

/// The Envoy binary: `$ENVOY_BIN`, else the repo's venv, else `envoy` on PATH.
pub fn envoy_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("ENVOY_BIN") {
        return bin.into();
    }
    let venv = root().join(".venv/bin/envoy");
    if venv.exists() {
        return venv;
    }
    "envoy".into()
}

pub fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// The local gateway the tests run: fresh ports, state in `dir`.
pub fn local_options(
    setup: &Setup,
    dir: &std::path::Path,
    access_log: &std::path::Path,
) -> LocalOptions {
    let envoy_options = EnvoyOptions {
        listen: free_port(),
        admin: free_port(),
        access_log: access_log.display().to_string(),
        overrides: setup.overrides.clone(),
        ..EnvoyOptions::default()
    };
    LocalOptions {
        config: setup.config.clone(),
        secret_env: setup.secret_env.clone(),
        envoy: envoy_bin(),
        state_dir: dir.to_path_buf(),
        envoy_options,
        fake_fireworks: setup.fake.then(|| FIREWORKS_BACKEND.into()),
        fake_fireworks_key: setup.fake_key.clone(),
        fake_stream_interval: setup.stream_interval,
        test_upstream: setup.test_upstream.then(|| TEST_BACKEND.into()),
        processor_listen: setup
            .processor_tcp
            .then(|| "127.0.0.1:0".parse().expect("listen")),
        envoy_log_level: std::env::var("ENVOY_LOG_LEVEL").unwrap_or_else(|_| "warning".into()),
        envoy_args: ["--file-flush-interval-msec", "100", "--concurrency", "1"]
            .map(String::from)
            .to_vec(),
        user_header: Some("x-user-id".into()),
        processor_admin: Some(if setup.processor_process {
            free_port()
        } else {
            "127.0.0.1:0".parse().expect("addr")
        }),
        processor_binary: setup
            .processor_process
            .then(|| env!("CARGO_BIN_EXE_ai-extproc").into()),
        processor_workers: setup
            .processor_process
            .then(|| std::num::NonZeroUsize::new(1).expect("1")),
        processor_global_args: setup.processor_global_args.clone(),
        output_estimate: ai_extproc::gateway::DEFAULT_OUTPUT_ESTIMATE,
        budget_store: setup.budget_store.clone(),
        reload_interval: setup.reload_interval,
        usage_log: Some(dir.join("usage.jsonl")),
    }
}

pub struct Gateway {
    pub inner: LocalGateway,
    pub base: String,
    pub access_log: PathBuf,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Start options a test can change before starting.
pub struct Setup {
    pub config: Vec<PathBuf>,
    /// Serve the Fireworks backend with the fake (else the real api.fireworks.ai).
    pub fake: bool,
    pub secret_env: Vec<(String, String)>,
    pub fake_key: Option<String>,
    pub stream_interval: Duration,
    /// Processor on TCP (for gRPC clients such as the usage export) instead of a Unix socket.
    pub processor_tcp: bool,
    /// Watch the config files for changes.
    pub reload_interval: Option<Duration>,
    /// Run the processor as a supervised child process (as `ai-extproc run` does).
    pub processor_process: bool,
    /// Serve the basic guide's backend with the test upstream (the config must have it).
    pub test_upstream: bool,
    /// Backends pointed at upstreams the test runs itself.
    pub overrides: Vec<BackendOverride>,
    /// Where budgets are counted.
    pub budget_store: ai_extproc::app::BudgetStore,
    /// Global flags for the processor process (`--otlp-endpoint`...; with `processor_process`).
    pub processor_global_args: Vec<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            config: examples(),
            fake: true,
            secret_env: Vec::new(),
            fake_key: None,
            stream_interval: Duration::ZERO,
            processor_tcp: false,
            reload_interval: None,
            processor_process: false,
            test_upstream: true,
            overrides: Vec::new(),
            budget_store: ai_extproc::app::BudgetStore::Memory,
            processor_global_args: Vec::new(),
        }
    }
}

impl Gateway {
    pub async fn start() -> Self {
        Self::start_with(Setup::default()).await
    }

    pub async fn start_with(setup: Setup) -> Self {
        // `free_port` releases the port it found, so a parallel test (or an outgoing
        // connection's ephemeral port) can take it before Envoy binds it, and Envoy exits.
        // Fresh ports and a fresh directory each try; a start that is really broken fails all.
        let mut last = None;
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let access_log = dir.path().join("access.log");
            match LocalGateway::start(local_options(&setup, dir.path(), &access_log)).await {
                Ok(inner) => return Self::ready(inner, access_log, dir),
                Err(e) => last = Some(e),
            }
        }
        panic!(
            "gateway did not start (is Envoy installed? `make envoy`): {}",
            last.map(|e| e.to_string()).unwrap_or_default()
        )
    }

    fn ready(inner: LocalGateway, access_log: PathBuf, dir: tempfile::TempDir) -> Self {
        let base = format!("http://{}", inner.listen);
        Self {
            inner,
            base,
            access_log,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// The processor's admin endpoint, `http://127.0.0.1:port`.
    pub fn admin_base(&self) -> String {
        format!("http://{}", self.inner.admin_addr.expect("admin endpoint"))
    }

    /// The processor's Prometheus metrics, as text.
    pub async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.admin_base());
        let r = self.http.get(url).send().await.expect("metrics");
        r.text().await.expect("metrics body")
    }

    /// The state directory of this gateway (`run`'s `.run/`).
    pub fn state_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The JSON-lines usage log written so far.
    pub fn inner_usage_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("usage.jsonl")).unwrap_or_default()
    }

    pub fn fireworks(&self) -> &Recorder {
        &self
            .inner
            .fireworks
            .as_ref()
            .expect("fake fireworks")
            .recorder
    }

    pub fn test_upstream(&self) -> &Recorder {
        &self
            .inner
            .test_upstream
            .as_ref()
            .expect("test upstream")
            .recorder
    }

    /// POSTs `body` verbatim as JSON with extra headers.
    pub async fn post(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        Reply::from(req.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        Reply::from(
            self.http
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .expect("request"),
        )
        .await
    }

    /// Access log entries whose `path` is `path`, waiting up to 5 s for `count` of them.
    pub async fn access_log_entries(&self, count: usize) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
            let entries: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if entries.len() >= count || tokio::time::Instant::now() > deadline {
                return entries;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    async fn from(r: reqwest::Response) -> Self {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        Self {
            status,
            headers,
            text,
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// GET `url`: status and body text (0 and empty when the connection fails).
pub async fn get(http: &reqwest::Client, url: &str) -> (u16, String) {
    match http.get(url).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

/// Polls until `url` answers 200: to a POST of `body`, or to a GET without one.
pub async fn wait_for_200(what: &str, http: &reqwest::Client, url: &str, body: Option<&str>) {
    wait_for_async(what, || async {
        let req = match body {
            Some(b) => http.post(url).body(b.to_string()),
            None => http.get(url),
        };
        req.send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
}

/// Polls `cond` every 50 ms for up to 10 s.
pub async fn wait_for_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Sends SIGTERM to `pid`.
pub fn terminate(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -TERM {pid}");
}

/// A raw HTTP/1.x exchange: what an HTTP client library would not send. Writes `request`, reads
/// until the server closes (or 5 s), and splits the answer.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> RawReply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    RawReply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// What [`raw_http`] read.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The OpenAI error object, or a panic saying what came instead.
    pub fn error(&self) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(self.body.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"));
        assert!(
            v["error"]["message"].is_string() && v["error"]["type"].is_string(),
            "not an OpenAI error: {self:?}"
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        v["error"].clone()
    }
}
