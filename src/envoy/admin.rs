//! A minimal client of Envoy's admin interface: `run` polls it while Envoy starts, and the
//! processor's `/readyz` asks it whether the Envoy beside it is serving (see `http_get`).

use std::net::SocketAddr;
use std::time::Duration;

use crate::http_get::{self, GetError};

/// How long one admin request may take.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Why Envoy's admin did not say 200.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("Envoy's admin: {0}")]
    Unreachable(GetError),
    #[error("Envoy's admin at {addr} answered {status_line:?}")]
    Status {
        addr: SocketAddr,
        status_line: String,
    },
}

/// GETs `path` from Envoy's admin; the whole response text when it is a 200.
pub async fn get(addr: SocketAddr, path: &str) -> Result<String, AdminError> {
    let answer = http_get::get(&addr.to_string(), path, TIMEOUT)
        .await
        .map_err(AdminError::Unreachable)?;
    if answer.status == 200 {
        Ok(answer.text)
    } else {
        Err(AdminError::Status {
            addr,
            status_line: answer.status_line().to_string(),
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
        assert!(matches!(
            ready(addr).await,
            Err(AdminError::Unreachable(GetError::Connect { .. }))
        ));
    }
}
