//! The attempts Envoy made for a rule that fails over, as the rule's per-attempt filter reports
//! them on the response (`contract::ATTEMPTS_HEADER`): which backend served, how many attempts
//! it took, and why the earlier ones failed.

use crate::usage::FailedAttempt;

/// Most attempts read from the header (Envoy's retries are bounded far lower).
const MAX_ATTEMPTS: usize = 32;
/// Longest backend name read (`namespace/name` of Kubernetes objects is at most 316 bytes).
const MAX_NAME: usize = 320;

/// One attempt: the AIServiceBackend it went to, and the status it got (none: no answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub backend: String,
    pub status: Option<u16>,
}

/// Attempts in order; the last one's answer is the response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempts(Vec<Attempt>);

impl Attempts {
    /// Reads `ns/a=503;ns/b=;ns/c=200` on a response of `status`; malformed entries are skipped,
    /// the list is bounded. The last attempt is the one that answered: without a status of its
    /// own, it has the response's.
    pub fn parse(value: &str, status: u16) -> Self {
        let mut attempts: Vec<Attempt> = value
            .split(';')
            .filter_map(|entry| {
                let (backend, status) = entry.trim().rsplit_once('=')?;
                if backend.is_empty() || backend.len() > MAX_NAME {
                    return None;
                }
                Some(Attempt {
                    backend: backend.to_string(),
                    status: status.parse().ok(),
                })
            })
            .take(MAX_ATTEMPTS)
            .collect();
        if let Some(last) = attempts.last_mut() {
            last.status.get_or_insert(status);
        }
        Self(attempts)
    }

    /// The backend whose answer the response is, if one answered.
    pub fn served(&self) -> Option<&str> {
        self.0
            .last()
            .filter(|a| a.status.is_some())
            .map(|a| a.backend.as_str())
    }

    /// Every attempt in order.
    pub fn list(&self) -> &[Attempt] {
        &self.0
    }

    /// How many attempts Envoy made (0 when none was reported).
    pub fn count(&self) -> usize {
        self.0.len()
    }

    /// The attempts before the last, with why each failed (its status, or `no answer`).
    pub fn failures(&self) -> Vec<FailedAttempt> {
        let earlier = &self.0[..self.0.len().saturating_sub(1)];
        earlier
            .iter()
            .map(|a| FailedAttempt {
                backend: a.backend.clone(),
                reason: a
                    .status
                    .map_or_else(|| "no answer".to_string(), |s| s.to_string()),
            })
            .collect()
    }

    /// [`Attempts::failures`] as one line: `ns/a: 503, ns/b: no answer`.
    pub fn failures_line(&self) -> String {
        self.failures()
            .iter()
            .map(|f| format!("{}: {}", f.backend, f.reason))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_filter_writes() {
        let a = Attempts::parse("default/a=503;default/b=;default/c=200;", 200);
        assert_eq!(a.count(), 3);
        assert_eq!(a.served(), Some("default/c"));
        assert_eq!(a.failures_line(), "default/a: 503, default/b: no answer");
        assert_eq!(
            a.failures()[1],
            FailedAttempt {
                backend: "default/b".into(),
                reason: "no answer".into()
            }
        );
        // The last attempt is the response's: a status of its own, or the response's.
        let a = Attempts::parse("default/a=503;default/b=", 429);
        assert_eq!((a.count(), a.served()), (2, Some("default/b")));
        assert_eq!(a.failures_line(), "default/a: 503");
        assert_eq!(a.0[1].status, Some(429));
        let one = Attempts::parse("default/a=200", 500);
        assert_eq!((one.count(), one.served()), (1, Some("default/a")));
        assert_eq!(one.0[0].status, Some(200));
        assert!(one.failures().is_empty());
        // A first attempt the filters skipped, then answered.
        let skipped = Attempts::parse("default/a=", 200);
        assert_eq!((skipped.count(), skipped.served()), (1, Some("default/a")));
        assert_eq!(Attempts::parse("", 200), Attempts::default());
        assert_eq!(Attempts::default().failures_line(), "");
    }

    #[test]
    fn hostile_values_are_bounded() {
        let long = format!("{}=200", "x".repeat(MAX_NAME + 1));
        assert_eq!(Attempts::parse(&long, 200).count(), 0);
        let longest = format!("{}=200", "x".repeat(MAX_NAME));
        assert_eq!(Attempts::parse(&longest, 200).count(), 1);
        let many = "a=500;".repeat(1000);
        assert_eq!(Attempts::parse(&many, 200).count(), MAX_ATTEMPTS);
        assert_eq!(
            Attempts::parse("=200;noequals;a=x;b=", 200).0,
            [
                Attempt {
                    backend: "a".into(),
                    status: None
                },
                Attempt {
                    backend: "b".into(),
                    status: Some(200)
                }
            ]
        );
    }
}
