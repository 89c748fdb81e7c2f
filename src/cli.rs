//! Command line: `serve`, `envoy-config`, `check`, `run`, `upstream`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::telemetry::{LogFormat, TraceFormat};

use crate::app::{App, AppOptions};
use crate::config::{self, CompileOptions, Config};
use crate::envoy::{
    render_yaml, BackendOverride, Credentials, EnvoyOptions, HostPort, ProcessorAddress,
};
use crate::extproc::Listen;
use crate::local::{LocalGateway, LocalOptions};
use crate::upstreams::{self, FireworksOptions, TestOptions, UpstreamKind};

/// Envoy external processor that makes Envoy an AI gateway for OpenAI-compatible providers.
///
/// It reads Envoy AI Gateway's YAML (AIGatewayRoute, AIServiceBackend, BackendSecurityPolicy,
/// Backend, BackendTLSPolicy, Secret), routes requests by their body's `model`, rewrites
/// model, path and credentials for the chosen backend, answers /v1/models, and writes token
/// usage into Envoy's dynamic metadata (namespace io.envoy.ai_gateway).
#[derive(Debug, Parser)]
#[command(name = "ai-extproc", version)]
pub struct Cli {
    /// Log filter (tracing syntax, e.g. `info,ai_extproc=debug`).
    #[arg(long, global = true, env = "AI_EXTPROC_LOG", default_value = "info")]
    pub log: String,
    /// Log format.
    #[arg(long, global = true, env = "AI_EXTPROC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Export traces over OTLP/gRPC to this endpoint, `http://` or `https://` (off when
    /// unset); W3C trace context is then handed on to the provider.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Attributes of the LLM spans: OpenInference's (Arize Phoenix...) or OpenTelemetry's GenAI
    /// semantic conventions. What they show of prompts and answers follows the
    /// OPENINFERENCE_HIDE_* variables (see the README).
    #[arg(long, global = true, env = "AI_EXTPROC_TRACE_FORMAT", value_enum, default_value_t = TraceFormat::OpenInference)]
    pub trace_format: TraceFormat,
    /// Most bytes of a streamed answer kept for its span (text, reasoning, tool calls); the
    /// rest is cut with a marker.
    #[arg(long, global = true, env = "AI_EXTPROC_TRACE_MAX_OUTPUT_BYTES", default_value_t = crate::telemetry::DEFAULT_MAX_OUTPUT_BYTES)]
    pub trace_max_output_bytes: usize,
    /// Runtime worker threads (default: one per core). Beside Envoy on a small machine, 1 often
    /// serves best: no cross-thread wake-ups per ext_proc message.
    #[arg(long, global = true, env = "AI_EXTPROC_WORKERS")]
    pub workers: Option<std::num::NonZeroUsize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the ext_proc gRPC service for an Envoy that is already running.
    Serve(ServeArgs),
    /// Print the Envoy bootstrap for the config.
    EnvoyConfig(EnvoyConfigArgs),
    /// Validate the config and print the route table; exit 1 on errors.
    Check(ConfigArgs),
    /// Run locally: processor + Envoy (+ offline upstreams), supervised together. Ctrl-C stops all.
    Run(Box<RunArgs>),
    /// Run an offline upstream alone.
    Upstream(UpstreamArgs),
    /// Exit 0 when TARGET is healthy (for container health checks): `http://...` answers 200,
    /// `tcp://host:port` accepts a connection, `file:///path` exists.
    Healthcheck {
        /// What to check.
        #[arg(env = "AI_EXTPROC_HEALTHCHECK_TARGET")]
        target: String,
    },
}

/// Config files and secret overrides.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// YAML files or directories (multi-document Kubernetes YAML).
    #[arg(required = true, env = "AI_EXTPROC_CONFIG", value_delimiter = ',')]
    pub config: Vec<PathBuf>,
    /// Take Secret NAME's apiKey from environment variable VAR when it is set and non-empty
    /// (repeatable). Without it, AI_EXTPROC_SECRET_<NAME> (upper case, `-` as `_`) is used.
    #[arg(long = "secret-env", env = "AI_EXTPROC_SECRET_ENV", value_delimiter = ',', value_name = "NAME=VAR", value_parser = parse_pair)]
    pub secret_env: Vec<(String, String)>,
}

/// Usage records.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Request header whose value names the user in usage records.
    #[arg(long, env = "AI_EXTPROC_USER_HEADER", default_value = "x-user-id")]
    pub user_header: String,
    /// Append one JSON usage record per finished request to FILE.
    #[arg(long, env = "AI_EXTPROC_USAGE_LOG")]
    pub usage_log: Option<PathBuf>,
}

/// Operating the processor.
#[derive(Debug, Args)]
pub struct OpsArgs {
    /// Admin HTTP address: /healthz, /readyz, /metrics.
    #[arg(long, env = "AI_EXTPROC_ADMIN", default_value = "127.0.0.1:9091")]
    pub admin: SocketAddr,
    /// How often config files are checked for changes (0s: never).
    #[arg(long, env = "AI_EXTPROC_RELOAD_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub reload_interval: Duration,
    /// On SIGTERM/Ctrl-C, how long to report NOT_SERVING while still serving, before closing.
    #[arg(long, env = "AI_EXTPROC_DRAIN_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub drain_grace: Duration,
    /// After the grace period, how long streams in flight may take to finish.
    #[arg(long, env = "AI_EXTPROC_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

impl OpsArgs {
    fn reload(&self) -> Option<Duration> {
        (!self.reload_interval.is_zero()).then_some(self.reload_interval)
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub usage: UsageArgs,
    #[command(flatten)]
    pub ops: OpsArgs,
    /// gRPC listen address: host:port or unix:/path.
    #[arg(long, env = "AI_EXTPROC_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: Listen,
    /// Envoy's admin address (host:port): /readyz then also requires that Envoy to be ready
    /// (`run` sets it for its processor).
    #[arg(long, env = "AI_EXTPROC_ENVOY_ADMIN")]
    pub envoy_admin: Option<SocketAddr>,
    /// Largest request body once decoded, in bytes (413 beyond); keep it equal to Envoy's
    /// buffer limit (`envoy-config --max-body-bytes`).
    #[arg(long, env = "AI_EXTPROC_MAX_BODY_BYTES", default_value_t = crate::contract::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: u32,
    #[command(flatten)]
    pub budgets: BudgetArgs,
    /// Who puts backend keys on requests: `processor` (a header mutation; beside Envoy Gateway),
    /// or `envoy` (its credential injector, with a bootstrap from `envoy-config`: keys then never
    /// show in Envoy's logs).
    #[arg(long, env = "AI_EXTPROC_CREDENTIALS", value_enum, default_value_t = CredentialsArg::Processor)]
    pub credentials: CredentialsArg,
}

/// Who puts backend keys on requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CredentialsArg {
    /// The processor, as a header mutation.
    Processor,
    /// Envoy, with its credential injector (from the environment variable that overrides each
    /// key's Secret, for `envoy-config`).
    Envoy,
}

/// Where budgets are counted and how requests are estimated (`serve` and `run`).
#[derive(Debug, Args)]
pub struct BudgetArgs {
    /// Output tokens a request without `max_tokens` (or `max_completion_tokens`,
    /// `max_output_tokens`) is estimated to use: what it reserves on token budgets until its
    /// usage is known.
    #[arg(long, env = "AI_EXTPROC_BUDGET_OUTPUT_ESTIMATE", default_value_t = crate::gateway::DEFAULT_OUTPUT_ESTIMATE)]
    pub budget_output_estimate: u64,
    /// Keep budget counters in Redis (`redis://[user:password@]host:port[/db]`), so that every
    /// replica enforces one budget; without it they live in this process.
    #[arg(long, env = "AI_EXTPROC_RATE_LIMIT_REDIS", value_name = "URL")]
    pub rate_limit_redis: Option<String>,
    /// The longest a request waits for Redis before `--rate-limit-failure` decides.
    #[arg(long, env = "AI_EXTPROC_RATE_LIMIT_REDIS_TIMEOUT", default_value = "100ms", value_parser = parse_duration)]
    pub rate_limit_redis_timeout: Duration,
    /// When Redis cannot answer: `open` admits the request unchecked (a warning and
    /// `ai_extproc_budget_store_errors_total`), `closed` refuses it with 503.
    #[arg(long, env = "AI_EXTPROC_RATE_LIMIT_FAILURE", value_enum, default_value_t = FailureArg::Open)]
    pub rate_limit_failure: FailureArg,
}

/// What budgets do when their store (Redis) cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailureArg {
    Open,
    Closed,
}

impl BudgetArgs {
    fn store(&self) -> crate::app::BudgetStore {
        match &self.rate_limit_redis {
            None => crate::app::BudgetStore::Memory,
            Some(url) => crate::app::BudgetStore::Redis(crate::budget::RedisOptions {
                url: url.clone(),
                timeout: self.rate_limit_redis_timeout,
                on_failure: match self.rate_limit_failure {
                    FailureArg::Open => crate::budget::OnFailure::Open,
                    FailureArg::Closed => crate::budget::OnFailure::Closed,
                },
            }),
        }
    }
}

/// Envoy rendering flags shared by `envoy-config` and `run`.
#[derive(Debug, Args)]
pub struct EnvoyArgs {
    /// Envoy's client-facing listener.
    #[arg(
        long,
        env = "AI_EXTPROC_ENVOY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen_address: SocketAddr,
    /// Envoy's admin interface.
    #[arg(
        long,
        env = "AI_EXTPROC_ENVOY_ADMIN_ADDRESS",
        default_value = "127.0.0.1:9901"
    )]
    pub admin_address: SocketAddr,
    /// Envoy's access log file.
    #[arg(
        long,
        env = "AI_EXTPROC_ENVOY_ACCESS_LOG",
        default_value = "/dev/stdout"
    )]
    pub access_log: String,
    /// Largest body Envoy buffers, in bytes (413 beyond).
    #[arg(long, env = "AI_EXTPROC_MAX_BODY_BYTES", default_value_t = crate::contract::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: u32,
    /// Send Backend NAME's traffic to HOST:PORT, an IP or a DNS name (like curl --resolve; SNI,
    /// certificate check and Host keep the Backend's name).
    #[arg(long = "backend-address", env = "AI_EXTPROC_BACKEND_ADDRESS", value_delimiter = ',', value_name = "NAME=HOST:PORT", value_parser = parse_pair)]
    pub backend_address: Vec<(String, String)>,
    /// Trust the CA bundle FILE for Backend NAME instead of its BackendTLSPolicy's.
    #[arg(long = "backend-ca", env = "AI_EXTPROC_BACKEND_CA", value_delimiter = ',', value_name = "NAME=FILE", value_parser = parse_pair)]
    pub backend_ca: Vec<(String, String)>,
    /// CA bundle used for `wellKnownCACertificates: System` (default: the first usual path found).
    #[arg(long, env = "AI_EXTPROC_SYSTEM_CA_FILE")]
    pub system_ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EnvoyConfigArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub envoy: EnvoyArgs,
    /// Where Envoy reaches the processor: host:port (a DNS name works) or unix:/path.
    #[arg(
        long,
        env = "AI_EXTPROC_PROCESSOR_ADDRESS",
        default_value = "127.0.0.1:50051"
    )]
    pub processor_address: String,
    /// Who puts backend keys on requests: `envoy` (its credential injector reads each key from
    /// the environment variable that overrides its Secret; pair with `serve --credentials
    /// envoy`), or `processor` (pair with `serve`).
    #[arg(long, env = "AI_EXTPROC_ENVOY_CREDENTIALS", value_enum, default_value_t = CredentialsArg::Envoy)]
    pub credentials: CredentialsArg,
    /// Write to FILE instead of standard output.
    #[arg(long, short, env = "AI_EXTPROC_ENVOY_CONFIG_OUTPUT")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub usage: UsageArgs,
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub envoy: EnvoyArgs,
    #[command(flatten)]
    pub budgets: BudgetArgs,
    /// Envoy binary.
    #[arg(long, env = "ENVOY_BIN", default_value = "envoy")]
    pub envoy_bin: PathBuf,
    /// Envoy's log level.
    #[arg(long, env = "AI_EXTPROC_ENVOY_LOG_LEVEL", default_value = "warning")]
    pub envoy_log_level: String,
    /// Directory for the rendered bootstrap, the processor socket and test CA files.
    #[arg(long, env = "AI_EXTPROC_STATE_DIR", default_value = ".run")]
    pub state_dir: PathBuf,
    /// Serve Backend NAME with the built-in fake Fireworks (HTTPS, test CA).
    #[arg(long, env = "AI_EXTPROC_FAKE_FIREWORKS", value_name = "NAME")]
    pub fake_fireworks: Option<String>,
    /// Serve Backend NAME with the built-in test upstream.
    #[arg(long, env = "AI_EXTPROC_TEST_UPSTREAM", value_name = "NAME")]
    pub test_upstream: Option<String>,
    /// Processor listen address (default: unix socket in the state directory).
    #[arg(long, env = "AI_EXTPROC_PROCESSOR_LISTEN")]
    pub processor_listen: Option<Listen>,
    /// Runtime workers of the processor. One (a current-thread runtime) serves best beside
    /// Envoy on a few cores: `make bench` measured ~30% less processor CPU per request than
    /// one worker per core, and more requests per second.
    #[arg(long, env = "AI_EXTPROC_PROCESSOR_WORKERS", default_value = "1")]
    pub processor_workers: std::num::NonZeroUsize,
}

#[derive(Debug, Args)]
pub struct UpstreamArgs {
    /// Which upstream.
    #[arg(value_enum, env = "AI_EXTPROC_UPSTREAM")]
    pub kind: UpstreamChoice,
    /// Listen address.
    #[arg(
        long,
        env = "AI_EXTPROC_UPSTREAM_LISTEN",
        default_value = "127.0.0.1:8443"
    )]
    pub listen: SocketAddr,
    /// API key the fake Fireworks accepts.
    #[arg(
        long,
        env = "FAKE_FIREWORKS_API_KEY",
        default_value = "fw_YOUR_FIREWORKS_API_KEY_HERE"
    )]
    pub api_key: String,
    /// Write the fake Fireworks' CA certificate here.
    #[arg(
        long,
        env = "AI_EXTPROC_UPSTREAM_CA_OUT",
        default_value = "fake-fireworks-ca.pem"
    )]
    pub ca_out: PathBuf,
    /// Milliseconds between streamed events.
    #[arg(
        long,
        env = "AI_EXTPROC_UPSTREAM_STREAM_INTERVAL_MS",
        default_value_t = 20
    )]
    pub stream_interval_ms: u64,
    /// Content events per stream (test upstream).
    #[arg(long, env = "AI_EXTPROC_UPSTREAM_STREAM_EVENTS", default_value_t = 8)]
    pub stream_events: usize,
}

/// Offline upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UpstreamChoice {
    /// The basic guide's test upstream (HTTP).
    Test,
    /// The fake Fireworks API (HTTPS).
    Fireworks,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

/// Exit code and message of a failed command.
#[derive(Debug)]
pub struct Failure(pub String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

fn load(args: &ConfigArgs) -> Result<Config, Failure> {
    Ok(config::load(
        &args.config,
        &CompileOptions::from_env(args.secret_env.clone()),
    )?)
}

impl EnvoyArgs {
    fn options(&self) -> Result<EnvoyOptions, Failure> {
        let mut options = EnvoyOptions {
            listen: self.listen_address,
            admin: self.admin_address,
            access_log: self.access_log.clone(),
            max_body_bytes: self.max_body_bytes,
            ..EnvoyOptions::default()
        };
        if let Some(f) = &self.system_ca_file {
            options.system_ca_file = f.clone();
        }
        for (backend, addr) in &self.backend_address {
            let address: HostPort = addr
                .parse()
                .map_err(|e| Failure(format!("--backend-address {backend}={addr}: {e}")))?;
            options.overrides.push(BackendOverride {
                backend: backend.clone(),
                address: Some(address),
                ca_file: None,
            });
        }
        for (backend, file) in &self.backend_ca {
            match options.overrides.iter_mut().find(|o| &o.backend == backend) {
                Some(o) => o.ca_file = Some(file.into()),
                None => options.overrides.push(BackendOverride {
                    backend: backend.clone(),
                    address: None,
                    ca_file: Some(file.into()),
                }),
            }
        }
        Ok(options)
    }
}

fn processor_address(s: &str) -> Result<ProcessorAddress, Failure> {
    if let Some(path) = s.strip_prefix("unix:") {
        return Ok(ProcessorAddress::Unix(path.into()));
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(|| {
        Failure(format!(
            "--processor-address {s:?}: expected host:port or unix:/path"
        ))
    })?;
    let port = port
        .parse()
        .map_err(|_| Failure(format!("--processor-address {s:?}: bad port")))?;
    Ok(ProcessorAddress::Tcp {
        host: host.trim_matches(['[', ']']).to_string(),
        port,
    })
}

impl Cli {
    /// The global flags as arguments, for a child `ai-extproc` that must behave like this one
    /// (the processor `run` starts).
    pub fn global_args(&self) -> Vec<String> {
        let mut args = vec![
            "--log".to_string(),
            self.log.clone(),
            "--log-format".to_string(),
            self.log_format.as_arg().to_string(),
        ];
        if let Some(url) = &self.otlp_endpoint {
            args.extend(["--otlp-endpoint".to_string(), url.clone()]);
        }
        args.extend([
            "--trace-format".to_string(),
            self.trace_format.as_arg().to_string(),
            "--trace-max-output-bytes".to_string(),
            self.trace_max_output_bytes.to_string(),
        ]);
        args
    }
}

/// Runs a command to completion; `global_args` are the global flags it was given (see
/// [`Cli::global_args`]).
pub async fn run(command: Command, global_args: Vec<String>) -> Result<(), Failure> {
    match command {
        Command::Serve(args) => {
            let bound = args.listen.bind().await?;
            let mut app = App::start(
                bound,
                AppOptions {
                    config: args.config.config.clone(),
                    secret_env: args.config.secret_env.clone(),
                    admin: Some(args.ops.admin),
                    envoy_admin: args.envoy_admin,
                    max_body_bytes: args.max_body_bytes,
                    output_estimate: args.budgets.budget_output_estimate,
                    budget_store: args.budgets.store(),
                    inject_keys: args.credentials == CredentialsArg::Processor,
                    user_header: Some(args.usage.user_header.to_ascii_lowercase()),
                    usage_log: args.usage.usage_log.clone(),
                    reload_interval: args.ops.reload(),
                },
            )
            .await?;
            tracing::info!(listen = ?args.listen, admin = %args.ops.admin, "ai-extproc serving ext_proc, usage export and health");
            let died = tokio::select! {
                _ = shutdown_signal() => None,
                why = app.server_stopped() => Some(why),
            };
            if let Some(why) = died {
                // Exit, so that whatever supervises this process starts a working one.
                return Err(Failure(format!("the ext_proc server stopped: {why}")));
            }
            app.drain(args.ops.drain_grace, args.ops.drain_timeout)
                .await;
            Ok(())
        }
        Command::EnvoyConfig(args) => {
            let config = load(&args.config)?;
            let mut options = args.envoy.options()?;
            options.processor = processor_address(&args.processor_address)?;
            options.credentials = match args.credentials {
                CredentialsArg::Processor => Credentials::Processor,
                CredentialsArg::Envoy => Credentials::EnvoyEnv,
            };
            let yaml = render_yaml(&config, &options);
            match args.output {
                Some(path) => std::fs::write(path, yaml)?,
                None => print!("{yaml}"),
            }
            Ok(())
        }
        Command::Check(args) => {
            let config = load(&args)?;
            print!("{}", route_table(&config));
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            Ok(())
        }
        Command::Run(args) => run_local(*args, global_args).await,
        Command::Upstream(args) => run_upstream(args).await,
        Command::Healthcheck { target } => healthcheck(&target).await,
    }
}

/// `model match -> backend -> provider model` lines.
pub fn route_table(config: &Config) -> String {
    let mut out = String::from("MATCH\tBACKEND\tPROVIDER MODEL\tCLUSTER\n");
    for rule in &config.rules {
        let matches: Vec<String> = rule
            .matches
            .iter()
            .map(|m| {
                let parts: Vec<String> = m
                    .headers
                    .iter()
                    .map(|h| match h {
                        config::HeaderMatch::Exact { name, value } => format!("{name}={value}"),
                        config::HeaderMatch::Regex { name, regex } => {
                            format!("{name}~{}", regex.as_str())
                        }
                    })
                    .collect();
                if parts.is_empty() {
                    "*".to_string()
                } else {
                    parts.join(",")
                }
            })
            .collect();
        for target in &rule.backends {
            let backend = &config.backends[target.backend];
            let provider = target
                .model_name_override
                .as_deref()
                .unwrap_or("(as requested)");
            let cluster = &config.clusters[backend.cluster];
            // Priorities only where they matter (a rule that fails over).
            let weight = if rule.fails_over() {
                format!("weight {}, priority {}", target.weight, target.priority)
            } else {
                format!("weight {}", target.weight)
            };
            out.push_str(&format!(
                "{}\t{} ({weight})\t{}\t{} {}{}\n",
                matches.join(" | "),
                backend.name,
                provider,
                cluster.name,
                match &cluster.endpoint {
                    config::Endpoint::Fqdn { hostname, port } => format!("{hostname}:{port}"),
                    config::Endpoint::Ip { address, port } => format!("{address}:{port}"),
                },
                backend.prefix,
            ));
        }
    }
    out
}

async fn run_local(args: RunArgs, global_args: Vec<String>) -> Result<(), Failure> {
    let options = LocalOptions {
        config: args.config.config.clone(),
        secret_env: args.config.secret_env.clone(),
        envoy: args.envoy_bin.clone(),
        state_dir: args.state_dir.clone(),
        envoy_options: args.envoy.options()?,
        fake_fireworks: args.fake_fireworks.clone(),
        fake_fireworks_key: None,
        fake_stream_interval: Duration::from_millis(20),
        test_upstream: args.test_upstream.clone(),
        processor_listen: args.processor_listen.clone(),
        envoy_log_level: args.envoy_log_level.clone(),
        envoy_args: Vec::new(),
        processor_admin: Some(args.ops.admin),
        reload_interval: args.ops.reload(),
        // The processor runs as a child of this binary, restarted if it dies.
        processor_binary: std::env::current_exe().ok(),
        processor_workers: Some(args.processor_workers),
        processor_global_args: global_args,
        user_header: Some(args.usage.user_header.to_ascii_lowercase()),
        usage_log: args.usage.usage_log.clone(),
        output_estimate: args.budgets.budget_output_estimate,
        budget_store: args.budgets.store(),
    };
    let gateway = LocalGateway::start(options).await?;
    if args.fake_fireworks.is_some() {
        tracing::warn!("Fireworks traffic goes to the built-in fake (offline); set FIREWORKS_API_KEY to use api.fireworks.ai");
    }
    println!(
        "ai-extproc gateway ready on http://{} (Ctrl-C stops it)",
        gateway.listen
    );
    print!("{}", route_table(&gateway.config.snapshot()));
    // Envoy and the processor are restarted by their supervisors if they die; only a signal
    // stops the gateway.
    shutdown_signal().await;
    tracing::info!("stopping");
    Ok(())
}

async fn run_upstream(args: UpstreamArgs) -> Result<(), Failure> {
    let kind = match args.kind {
        UpstreamChoice::Test => UpstreamKind::Test(TestOptions {
            stream_events: args.stream_events,
            stream_interval: Duration::from_millis(args.stream_interval_ms),
        }),
        UpstreamChoice::Fireworks => UpstreamKind::Fireworks(FireworksOptions {
            api_key: args.api_key.clone(),
            stream_interval: Duration::from_millis(args.stream_interval_ms),
            ..FireworksOptions::default()
        }),
    };
    let up = upstreams::spawn(kind, args.listen).await?;
    if let Some(pem) = &up.ca_pem {
        std::fs::write(&args.ca_out, pem)?;
        println!(
            "fake Fireworks on https://{} (CA: {})",
            up.addr,
            args.ca_out.display()
        );
    } else {
        println!("test upstream on http://{}", up.addr);
    }
    shutdown_signal().await;
    Ok(())
}

async fn healthcheck(target: &str) -> Result<(), Failure> {
    let timeout = Duration::from_secs(3);
    if let Some(path) = target.strip_prefix("file://") {
        return std::path::Path::new(path)
            .exists()
            .then_some(())
            .ok_or_else(|| Failure(format!("{path} does not exist")));
    }
    if let Some(addr) = target.strip_prefix("tcp://") {
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await??;
        return Ok(());
    }
    let rest = target
        .strip_prefix("http://")
        .ok_or_else(|| Failure(format!("{target:?}: expected http://, tcp:// or file://")))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let answer = crate::http_get::get(authority, &path, timeout)
        .await
        .map_err(|e| Failure(format!("{target}: {e}")))?;
    if answer.status == 200 {
        Ok(())
    } else {
        Err(Failure(format!("{target}: {}", answer.status_line())))
    }
}

/// Set by `run` in the environment of the processor it starts: `run`'s pid.
pub const PARENT_PID_ENV: &str = "AI_EXTPROC_PARENT_PID";

/// Ctrl-C or SIGTERM, or (for the processor `run` started) `run` gone: a `run` killed with
/// SIGKILL cannot stop its children, and an orphaned processor would hold its socket and its
/// log pipe forever.
pub async fn shutdown_signal() {
    let orphaned = async {
        let parent = std::env::var(PARENT_PID_ENV)
            .ok()
            .and_then(|p| p.parse::<u32>().ok());
        match parent {
            Some(pid) => {
                while std::os::unix::process::parent_id() == pid {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                tracing::warn!(
                    parent = pid,
                    "the run that started this processor is gone; stopping"
                );
            }
            None => std::future::pending().await,
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
        _ = orphaned => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README says every flag has an environment variable: hold it to that.
    #[test]
    fn every_flag_of_every_command_has_an_environment_variable() {
        use clap::CommandFactory;
        fn check(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") || arg.get_env().is_some() {
                    continue;
                }
                missing.push(format!("{path} {id}"));
            }
            for sub in cmd.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        check(&Cli::command(), "ai-extproc", &mut missing);
        assert!(
            missing.is_empty(),
            "flags without an environment variable: {missing:?}"
        );
    }

    #[test]
    fn global_flags_reach_the_processor_run_starts() {
        let cli = Cli::try_parse_from([
            "ai-extproc",
            "--log",
            "debug",
            "--log-format",
            "json",
            "--otlp-endpoint",
            "http://127.0.0.1:4317",
            "run",
            "a.yaml",
        ])
        .expect("parses");
        assert_eq!(
            cli.global_args(),
            [
                "--log",
                "debug",
                "--log-format",
                "json",
                "--otlp-endpoint",
                "http://127.0.0.1:4317",
                "--trace-format",
                "openinference",
                "--trace-max-output-bytes",
                "65536"
            ]
        );
    }

    #[test]
    fn run_starts_its_processor_with_one_worker_and_workers_must_be_positive() {
        let cli = Cli::try_parse_from(["ai-extproc", "run", "a.yaml"]).expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("not run: {:?}", cli.command)
        };
        assert_eq!(args.processor_workers.get(), 1);
        assert!(
            cli.workers.is_none(),
            "serve's runtime: one worker per core"
        );
        let cli = Cli::try_parse_from(["ai-extproc", "serve", "a.yaml", "--workers", "3"])
            .expect("parses");
        assert_eq!(cli.workers.map(std::num::NonZeroUsize::get), Some(3));
        assert!(Cli::try_parse_from(["ai-extproc", "--workers", "0", "serve", "a.yaml"]).is_err());
    }
}
