//! Serving the processor on TCP or a Unix socket.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessorServer;
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;

use super::service::Processor;
use crate::admin::HealthService;
use crate::usage::UsageExportService;

/// Largest ext_proc message accepted: a buffered body plus headers (vision bodies are ~10 MB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Where the processor listens: `host:port` or `unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(Listen::Unix(path.into()));
        }
        s.parse()
            .map(Listen::Tcp)
            .map_err(|e| format!("{s:?} is neither host:port nor unix:/path ({e})"))
    }
}

/// A bound listener (bind first, so callers can learn an ephemeral port).
pub enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listen {
    pub async fn bind(&self) -> std::io::Result<Bound> {
        match self {
            Listen::Tcp(addr) => Ok(Bound::Tcp(TcpListener::bind(addr).await?)),
            Listen::Unix(path) => {
                // A socket file left by a previous run would make bind fail.
                if path.exists() {
                    std::fs::remove_file(path)?;
                }
                Ok(Bound::Unix(UnixListener::bind(path)?, path.clone()))
            }
        }
    }
}

impl Bound {
    /// The TCP address, when TCP.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Bound::Tcp(l) => l.local_addr().ok(),
            Bound::Unix(..) => None,
        }
    }
}

/// Serves until `shutdown` completes.
pub async fn serve(
    bound: Bound,
    processor: Processor,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_with_health(bound, processor, None, shutdown).await
}

/// Serves ext_proc, the usage export API and (when given) `grpc.health.v1` until `shutdown`
/// completes, then waits for the streams in flight (graceful).
pub async fn serve_with_health(
    bound: Bound,
    processor: Processor,
    health: Option<HealthService>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    // The usage export API shares the listener: one gRPC endpoint per processor.
    let usage = processor
        .usage()
        .cloned()
        .map(|hub| UsageExportService::new(hub).into_server());
    let service = ExternalProcessorServer::new(processor)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let builder = Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(4 * 1024 * 1024))
        .initial_connection_window_size(Some(16 * 1024 * 1024))
        .add_service(service)
        .add_optional_service(usage)
        .add_optional_service(health);
    match bound {
        Bound::Tcp(l) => {
            builder
                .serve_with_incoming_shutdown(TcpListenerStream::new(l), shutdown)
                .await
        }
        Bound::Unix(l, path) => {
            let result = builder
                .serve_with_incoming_shutdown(UnixListenerStream::new(l), shutdown)
                .await;
            let _ = std::fs::remove_file(path);
            result
        }
    }
}
