//! Leases: a slice of a large Redis budget held by one gateway, so that most requests are
//! admitted without a Redis call.
//!
//! When a request goes to Redis, each of its claims also asks for a lease of `limit / 64`
//! (nothing for budgets under 64 units: small budgets always count in Redis, exactly). What
//! Redis grants beyond the request's own reservation is reserved there like any reservation (it
//! counts as spent for every other gateway and request: no overshoot) and held here. The next
//! requests whose claims all fit in their leases are admitted from them at once; settlements
//! return what a request did not use to its lease, or take what it used beyond its reservation
//! from it (the rest goes to Redis). A lease unused for a second, or whose window ended, is
//! given back. So a gateway holds at most 1/64 of a budget beyond what its requests reserved,
//! for at most a second after its last request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A claim's lease is this fraction of its limit.
const LEASE_FRACTION: u64 = 64;

#[derive(Debug, Clone, Copy)]
struct Lease {
    /// Reserved in Redis for this gateway and not yet used.
    available: u64,
    /// What Redis said was left for everyone else when it last answered for this counter.
    remaining: u64,
    /// When the counter's window ends (seconds since the epoch).
    ends: u64,
    used_at: Instant,
}

/// One claim's part in a lease lookup.
#[derive(Debug, Clone)]
pub struct Need<'a> {
    pub counter: &'a str,
    /// Its request cost and estimate.
    pub units: u64,
}

/// The leases of one gateway, by counter.
#[derive(Debug)]
pub struct Leases {
    leases: Mutex<HashMap<String, Lease>>,
    idle: Duration,
}

impl Leases {
    pub fn new(idle: Duration) -> Self {
        Self {
            leases: Mutex::new(HashMap::new()),
            idle,
        }
    }

    /// What a claim on a budget of `limit` asks for beyond its own estimate.
    pub fn chunk(limit: u64) -> u64 {
        limit / LEASE_FRACTION
    }

    /// Takes every need from its lease, or nothing when one does not fit; returns what each
    /// claim's client is told is left (Redis's last word plus what the lease still holds).
    pub fn take(&self, needs: &[Need<'_>], now_unix: u64, now: Instant) -> Option<Vec<u64>> {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        // The same counter twice in one request needs both from one lease.
        let mut wanted: HashMap<&str, u64> = HashMap::new();
        for n in needs {
            *wanted.entry(n.counter).or_default() += n.units;
        }
        let fits = wanted.iter().all(|(counter, units)| {
            leases
                .get(*counter)
                .is_some_and(|l| l.ends > now_unix && l.available >= *units)
        });
        if !fits {
            return None;
        }
        let mut left = Vec::with_capacity(needs.len());
        for n in needs {
            let l = leases.get_mut(n.counter)?;
            l.available -= n.units;
            l.used_at = now;
            left.push(l.remaining.saturating_add(l.available));
        }
        Some(left)
    }

    /// Redis granted `extra` beyond a request's reservation on `counter`, and said `remaining`
    /// was left; returns what the lease now holds.
    pub fn grant(&self, counter: &str, extra: u64, remaining: u64, ends: u64, now: Instant) -> u64 {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let l = leases.entry(counter.to_string()).or_insert(Lease {
            available: 0,
            remaining,
            ends,
            used_at: now,
        });
        l.available = l.available.saturating_add(extra);
        l.remaining = remaining;
        l.used_at = now;
        l.available
    }

    /// Settles `delta` (real cost - reserved) of a reservation on `counter` against its lease:
    /// what was not used goes back to the lease, what was used beyond comes from it. Returns
    /// what is left to send to Redis (0: nothing).
    pub fn settle(&self, counter: &str, delta: i64) -> i64 {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let Some(l) = leases.get_mut(counter) else {
            return delta;
        };
        if delta <= 0 {
            l.available = l.available.saturating_add(delta.unsigned_abs());
            return 0;
        }
        let taken = l.available.min(delta.unsigned_abs());
        l.available -= taken;
        delta - i64::try_from(taken).unwrap_or(0)
    }

    /// Removes the leases idle for longer than the idle time or whose window ended; returns
    /// what to give back to Redis (`counter`, units) for those whose window goes on.
    pub fn expire(&self, now_unix: u64, now: Instant) -> Vec<(String, u64)> {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let mut back = Vec::new();
        leases.retain(|counter, l| {
            let ended = l.ends <= now_unix;
            if !ended && now.duration_since(l.used_at) < self.idle {
                return true;
            }
            if !ended && l.available > 0 {
                back.push((counter.clone(), l.available));
            }
            false
        });
        back
    }

    /// What the lease of `counter` holds (tests).
    #[cfg(test)]
    pub fn available(&self, counter: &str) -> u64 {
        let leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        leases.get(counter).map_or(0, |l| l.available)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_fit_in_leases_settle_against_them_and_idle_leases_go_back() {
        let leases = Leases::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let need = |units| {
            [Need {
                counter: "c@0",
                units,
            }]
        };
        assert_eq!(Leases::chunk(6400), 100);
        assert_eq!(Leases::chunk(63), 0, "small budgets count in Redis exactly");
        assert!(leases.take(&need(1), 10, t0).is_none(), "no lease yet");
        assert_eq!(leases.grant("c@0", 100, 5000, 60, t0), 100);
        assert_eq!(leases.take(&need(30), 10, t0), Some(vec![5070]));
        assert!(
            leases.take(&need(71), 10, t0).is_none(),
            "does not fit: nothing taken"
        );
        assert_eq!(leases.available("c@0"), 70);
        // Used 10 of 30: 20 back. Used 50 of 30: 20 more from the lease. Beyond it: to Redis.
        assert_eq!(leases.settle("c@0", -20), 0);
        assert_eq!(leases.settle("c@0", 20), 0);
        assert_eq!(leases.available("c@0"), 70);
        assert_eq!(leases.settle("c@0", 100), 30);
        assert_eq!(leases.available("c@0"), 0);
        assert_eq!(leases.settle("other@0", -5), -5, "no lease: all to Redis");
        // Idle: given back (what it holds); window ended: dropped, nothing to give back.
        leases.grant("c@0", 40, 5000, 60, t0);
        leases.grant("d@0", 40, 5000, 20, t0);
        assert!(leases.expire(10, t0).is_empty());
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(leases.expire(30, later), vec![("c@0".to_string(), 40)]);
        assert_eq!(leases.available("c@0"), 0);
    }

    #[test]
    fn a_request_with_two_claims_on_one_counter_needs_both() {
        let leases = Leases::new(Duration::from_secs(1));
        let t0 = Instant::now();
        leases.grant("c@0", 50, 0, 60, t0);
        let two = [
            Need {
                counter: "c@0",
                units: 30,
            },
            Need {
                counter: "c@0",
                units: 30,
            },
        ];
        assert!(leases.take(&two, 10, t0).is_none());
        assert_eq!(leases.available("c@0"), 50);
    }
}
