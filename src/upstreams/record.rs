//! What an upstream received.

use std::collections::VecDeque;
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

/// Requests kept, at most: the fakes also serve `make run` and `make bench` for hours, so they
/// remember the latest ones only (tests look at a few hundred at most).
const MAX_KEPT: usize = 4096;
/// Body bytes kept, at most (9 MB vision bodies add up fast).
const MAX_KEPT_BYTES: usize = 64 * 1024 * 1024;

/// Shared log of received requests: how many came, and the latest of them.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Log>>);

#[derive(Debug, Default)]
struct Log {
    total: usize,
    kept: VecDeque<Recorded>,
    bytes: usize,
}

impl Recorder {
    pub fn push(&self, r: Recorded) {
        if let Ok(mut log) = self.0.lock() {
            log.total += 1;
            log.bytes += r.body.len();
            log.kept.push_back(r);
            while log.kept.len() > MAX_KEPT || (log.bytes > MAX_KEPT_BYTES && log.kept.len() > 1) {
                if let Some(old) = log.kept.pop_front() {
                    log.bytes -= old.body.len();
                }
            }
        }
    }

    /// The requests kept, oldest first (all of them unless more than the bounds came).
    pub fn all(&self) -> Vec<Recorded> {
        self.0
            .lock()
            .map(|log| log.kept.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn last(&self) -> Option<Recorded> {
        self.0.lock().ok().and_then(|log| log.kept.back().cloned())
    }

    /// How many requests came.
    pub fn len(&self) -> usize {
        self.0.lock().map(|log| log.total).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_requests_are_kept_and_every_one_counted() {
        let r = Recorder::default();
        for i in 0..MAX_KEPT + 10 {
            r.push(Recorded {
                sni: None,
                method: "POST".into(),
                path: format!("/{i}"),
                headers: Vec::new(),
                body: Bytes::new(),
            });
        }
        assert_eq!(r.len(), MAX_KEPT + 10);
        let all = r.all();
        assert_eq!(all.len(), MAX_KEPT);
        assert_eq!(all[0].path, "/10");
        let big = Bytes::from(vec![0u8; MAX_KEPT_BYTES / 2 + 1]);
        for _ in 0..3 {
            r.push(Recorded {
                sni: None,
                method: "POST".into(),
                path: "/big".into(),
                headers: Vec::new(),
                body: big.clone(),
            });
        }
        let kept: usize = r.all().iter().map(|x| x.body.len()).sum();
        assert!(kept <= MAX_KEPT_BYTES, "{kept}");
        assert_eq!(r.last().unwrap().path, "/big");
    }
}
