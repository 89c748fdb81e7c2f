//! What an upstream received.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// TLS server name the client asked for (HTTPS only).
    pub sni: Option<String>,
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Shared log of received requests.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Recorded>>>);

impl Recorder {
    pub fn push(&self, r: Recorded) {
        if let Ok(mut v) = self.0.lock() {
            v.push(r);
        }
    }

    pub fn all(&self) -> Vec<Recorded> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn last(&self) -> Option<Recorded> {
        self.0.lock().ok().and_then(|v| v.last().cloned())
    }

    pub fn len(&self) -> usize {
        self.0.lock().map(|v| v.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
