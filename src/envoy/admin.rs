//! A minimal client of Envoy's admin interface: `run` polls it while Envoy starts, and the
//! processor's `/readyz` asks it whether the Envoy beside it is serving. Plain HTTP/1.1 on a
//! loopback socket, bounded in time; no HTTP client stack for two GETs.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one admin request may take.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Why Envoy's admin did not say 200.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("cannot connect to Envoy's admin at {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("Envoy's admin at {addr} did not answer within {TIMEOUT:?}")]
    Timeout { addr: SocketAddr },
    #[error("Envoy's admin at {addr} answered {status_line:?}")]
    Status {
        addr: SocketAddr,
        status_line: String,
    },
}

/// GETs `path` from Envoy's admin; the whole response text when it is a 200. (The admin refuses
/// HTTP/1.0 with 426, hence 1.1 with `Connection: close`.)
pub async fn get(addr: SocketAddr, path: &str) -> Result<String, AdminError> {
    let exchange = async {
        let mut s =
            tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| AdminError::Connect {
                    addr,
                    reason: e.to_string(),
                })?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: envoy-admin\r\nConnection: close\r\n\r\n");
        let mut buf = Vec::new();
        // A reset after a partial answer still leaves the status line to judge by.
        if s.write_all(request.as_bytes()).await.is_ok() {
            let _ = s.read_to_end(&mut buf).await;
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| AdminError::Timeout { addr })??;
    if text.starts_with("HTTP/1.1 200") {
        Ok(text)
    } else {
        Err(AdminError::Status {
            addr,
            status_line: text.lines().next().unwrap_or_default().to_string(),
        })
    }
}

/// Envoy's own readiness (`/ready`: 200 once its listeners serve, 503 while it starts or drains).
pub async fn ready(addr: SocketAddr) -> Result<(), AdminError> {
    get(addr, "/ready").await.map(|_| ())
}

/// The `restart_epoch` that `/server_info` reports, when Envoy is ready.
pub async fn restart_epoch(addr: SocketAddr) -> Option<u32> {
    let text = get(addr, "/server_info").await.ok()?;
    let at = text.find("\"restart_epoch\":")?;
    text[at + "\"restart_epoch\":".len()..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert!(matches!(ready(addr).await, Err(AdminError::Connect { .. })));
    }
}
