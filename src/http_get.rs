//! One plain HTTP/1.1 GET over TCP, bounded in time: what `run` and `/readyz` ask Envoy's admin,
//! and what `healthcheck` asks a probe endpoint. No HTTP client stack for a status line. (HTTP/1.1
//! with `Connection: close`, since Envoy's admin refuses HTTP/1.0 with 426.)

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a GET gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetError {
    #[error("cannot connect to {authority}: {reason}")]
    Connect { authority: String, reason: String },
    #[error("{authority} did not answer within {timeout:?}")]
    Timeout {
        authority: String,
        timeout: Duration,
    },
}

/// An answer: its status (0 when the first line is not an HTTP status line) and whole text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub text: String,
}

impl Answer {
    /// The status line, for messages.
    pub fn status_line(&self) -> &str {
        self.text.lines().next().unwrap_or_default()
    }
}

/// GETs `path` from `authority` (`host:port`) within `timeout`.
pub async fn get(authority: &str, path: &str, timeout: Duration) -> Result<Answer, GetError> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| GetError::Connect {
                authority: authority.to_string(),
                reason: e.to_string(),
            })?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        let mut buf = Vec::new();
        // A reset after a partial answer still leaves the status line to judge by.
        if s.write_all(request.as_bytes()).await.is_ok() {
            let _ = s.read_to_end(&mut buf).await;
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| GetError::Timeout {
            authority: authority.to_string(),
            timeout,
        })??;
    Ok(Answer {
        status: status_of(&text),
        text,
    })
}

/// The status code of an `HTTP/1.x NNN ...` first line; 0 otherwise.
fn status_of(text: &str) -> u16 {
    let mut parts = text.split(' ');
    match (parts.next(), parts.next()) {
        (Some("HTTP/1.1" | "HTTP/1.0"), Some(code)) if code.len() == 3 => code.parse().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_of("HTTP/1.1 200 OK\r\n\r\n"), 200);
        assert_eq!(status_of("HTTP/1.0 503 Service Unavailable\r\n"), 503);
        assert_eq!(status_of("HTTP/2 200\r\n"), 0);
        assert_eq!(status_of("HTTP/1.1 20 OK"), 0);
        assert_eq!(status_of(""), 0);
    }

    #[tokio::test]
    async fn answers_and_failures() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            s.write_all(b"HTTP/1.1 503 Nope\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            request
        });
        let answer = get(&addr, "/ready", Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            (answer.status, answer.status_line()),
            (503, "HTTP/1.1 503 Nope")
        );
        let request = server.await.unwrap();
        assert!(request.starts_with("GET /ready HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("Connection: close\r\n"), "{request}");

        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap().to_string();
        let err = get(&silent_addr, "/", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, GetError::Timeout { .. }), "{err}");
        drop(silent);

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let err = get(&closed_addr, "/", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, GetError::Connect { .. }), "{err}");
    }
}
