//! Token and request budgets (BackendTrafficPolicy `rateLimit` rules), enforced in the phases
//! the processor already has: no call per request beyond the counters themselves.
//!
//! Each admitted request **reserves** an estimate of its cost, capped at what is left, and what
//! is reserved counts as spent for the requests that come after it; when the response's usage
//! is known, the reservation is **settled** to the real cost. Sequential traffic behaves as in
//! Envoy AI Gateway (admitted while anything is left, charged the real cost at the end), and
//! concurrent requests cannot together spend more than the budget plus one request's estimation
//! error. Counters are fixed windows aligned on the unit (a minute budget starts again at every
//! minute), and disappear when their window ends.
//!
//! The counters live in this process ([`MemoryStore`], one gateway) or in Redis
//! ([`RedisStore`], shared by replicas); both apply the same rules.

mod lease;
mod memory;
mod redis;
mod telemetry;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use memory::MemoryStore;
pub use redis::{OnFailure, RedisOptions, RedisSetupError, RedisStore};
pub use telemetry::Telemetry;

/// What one request asks of one budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The budget's name (`namespace/policy#rule`).
    pub budget: String,
    /// The bucket: the budget's name and the values of its `Distinct` headers.
    pub key: String,
    pub limit: u64,
    pub window: Duration,
    /// Charged at admission, whatever the response.
    pub request_cost: u64,
    /// Reserved at admission (capped at what is left), settled to the real cost at the end.
    pub estimate: u64,
    /// Whether the budget is charged by tokens (a response cost) or by requests: the response
    /// headers say which.
    pub tokens: bool,
    /// `type: Global`: shared by replicas (in Redis when configured); `Local`: this gateway's.
    pub global: bool,
}

/// A claim admitted: what to settle at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub claim: Claim,
    /// The counter it was charged to (the bucket in its window).
    pub counter: String,
    /// The request cost charged (capped at what was left).
    pub charged: u64,
    /// What was reserved beyond the request cost.
    pub reserved: u64,
}

/// What the client is told of its tightest budget (OpenAI's `x-ratelimit-*` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub limit: u64,
    pub remaining: u64,
    /// Until the window starts again.
    pub reset: Duration,
    pub tokens: bool,
}

/// The answer to a request's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Admitted {
        reservations: Vec<Reservation>,
        standing: Option<Standing>,
    },
    /// A budget has nothing left: nothing was charged.
    Refused { budget: String, standing: Standing },
    /// The store could not answer and the gateway fails closed.
    Unavailable,
}

/// The budgets' counters and metrics. `Local` budgets, and every budget without Redis, are
/// counted in this process; `Global` ones in Redis when it is configured.
#[derive(Debug)]
pub struct Budgets {
    memory: MemoryStore,
    redis: Option<RedisStore>,
    telemetry: Telemetry,
}

impl Default for Budgets {
    fn default() -> Self {
        Self::memory(Telemetry::default())
    }
}

impl Budgets {
    pub fn memory(telemetry: Telemetry) -> Self {
        Self {
            memory: MemoryStore::default(),
            redis: None,
            telemetry,
        }
    }

    /// Counters in Redis; connects lazily (see [`RedisStore::new`]).
    pub fn redis(options: RedisOptions, telemetry: Telemetry) -> Result<Self, RedisSetupError> {
        Ok(Self {
            memory: MemoryStore::default(),
            redis: Some(RedisStore::new(options, telemetry.clone())?),
            telemetry,
        })
    }

    /// Admits a request's claims at `now`, all or none.
    pub async fn admit(&self, claims: &[Claim], now: SystemTime) -> Verdict {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let (secs, sub) = (since.as_secs(), sub_second(since));
        let Some(redis) = &self.redis else {
            return self.memory.admit(claims, secs, sub);
        };
        let (global, local): (Vec<Claim>, Vec<Claim>) =
            claims.iter().cloned().partition(|c| c.global);
        if local.is_empty() {
            return redis.admit(&global, secs, sub, &self.telemetry).await;
        }
        // Local first (no wait); taken back if Redis then refuses.
        let (mut reservations, standing) = match self.memory.admit(&local, secs, sub) {
            Verdict::Admitted {
                reservations,
                standing,
            } => (reservations, standing),
            refused => return refused,
        };
        if global.is_empty() {
            return Verdict::Admitted {
                reservations,
                standing,
            };
        }
        match redis.admit(&global, secs, sub, &self.telemetry).await {
            Verdict::Admitted {
                reservations: more,
                standing: other,
            } => {
                reservations.extend(more);
                Verdict::Admitted {
                    reservations,
                    standing: tightest(standing, other),
                }
            }
            refused => {
                for r in &reservations {
                    self.memory.release(r);
                }
                refused
            }
        }
    }

    /// Settles a request's reservations to its real costs (beyond the request costs), in
    /// the order of the reservations. Never waits on the store.
    pub fn settle(&self, reservations: &[Reservation], costs: &[u64]) {
        for (r, cost) in reservations.iter().zip(costs) {
            self.telemetry.settled(r, *cost);
        }
        let Some(redis) = &self.redis else {
            for (r, cost) in reservations.iter().zip(costs) {
                self.memory.settle(r, *cost);
            }
            return;
        };
        let mut global = (Vec::new(), Vec::new());
        for (r, cost) in reservations.iter().zip(costs) {
            if r.claim.global {
                global.0.push(r.clone());
                global.1.push(*cost);
            } else {
                self.memory.settle(r, *cost);
            }
        }
        if !global.0.is_empty() {
            redis.settle(&global.0, &global.1, &self.telemetry);
        }
    }
}

/// The standing with less left.
fn tightest(a: Option<Standing>, b: Option<Standing>) -> Option<Standing> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.remaining < a.remaining { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn sub_second(d: Duration) -> Duration {
    Duration::from_nanos(u64::from(d.subsec_nanos()))
}

/// The start of the window containing `now` (seconds since the epoch), and its end.
pub fn window_of(now_unix: u64, window: Duration) -> (u64, u64) {
    let w = window.as_secs().max(1);
    let start = now_unix - now_unix % w;
    (start, start + w)
}

/// `counter` names the bucket in its window.
pub fn counter_name(key: &str, window_start: u64) -> String {
    format!("{key}@{window_start}")
}

/// A duration as OpenAI writes `x-ratelimit-reset-*`: `1h2m3s`, `6m0s`, `20s`.
pub fn reset_header(d: Duration) -> String {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_align_on_their_unit() {
        let minute = Duration::from_secs(60);
        assert_eq!(window_of(125, minute), (120, 180));
        assert_eq!(window_of(120, minute), (120, 180));
        assert_eq!(window_of(3_601, Duration::from_secs(3600)), (3600, 7200));
    }

    #[test]
    fn reset_is_written_as_openai_does() {
        assert_eq!(reset_header(Duration::from_secs(20)), "20s");
        assert_eq!(reset_header(Duration::from_millis(19_001)), "20s");
        assert_eq!(reset_header(Duration::from_secs(360)), "6m0s");
        assert_eq!(reset_header(Duration::from_secs(3723)), "1h2m3s");
    }
}
