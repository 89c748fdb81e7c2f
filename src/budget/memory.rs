//! Budgets counted in this process: one lock over every counter, so a request's claims on
//! several budgets are admitted (or refused) together.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::{counter_name, window_of, Claim, Reservation, Standing, Verdict};

/// Counters swept once this many exist (expired windows are dropped then).
const SWEEP_AT: usize = 4096;

#[derive(Debug, Default, Clone, Copy)]
struct Counter {
    /// Charged for good: request costs and settled costs.
    used: u64,
    /// Held by requests not yet settled.
    reserved: u64,
    /// When the window ends (seconds since the epoch).
    ends: u64,
}

/// The counters.
#[derive(Debug, Default)]
pub struct MemoryStore {
    counters: Mutex<HashMap<String, Counter>>,
}

impl MemoryStore {
    /// Admits `claims` at `now_unix` (seconds since the epoch), all or none.
    pub fn admit(&self, claims: &[Claim], now_unix: u64, now_sub: Duration) -> Verdict {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        if counters.len() >= SWEEP_AT {
            counters.retain(|_, c| c.ends > now_unix);
        }
        let mut plan = Vec::with_capacity(claims.len());
        for claim in claims {
            let (start, end) = window_of(now_unix, claim.window);
            let name = counter_name(&claim.key, start);
            let c = counters.get(&name).copied().unwrap_or_default();
            let left = claim.limit.saturating_sub(c.used + c.reserved);
            let reset = Duration::from_secs(end - now_unix).saturating_sub(now_sub);
            if left == 0 {
                return Verdict::Refused {
                    budget: claim.budget.clone(),
                    standing: Standing {
                        limit: claim.limit,
                        remaining: 0,
                        reset,
                        tokens: claim.tokens,
                    },
                };
            }
            plan.push((name, end, left, reset));
        }
        let mut reservations = Vec::with_capacity(claims.len());
        let mut standing: Option<Standing> = None;
        for (claim, (name, end, left, reset)) in claims.iter().zip(plan) {
            let charged = claim.request_cost.min(left);
            let reserved = claim.estimate.min(left - charged);
            let c = counters.entry(name.clone()).or_default();
            c.used += charged;
            c.reserved += reserved;
            c.ends = end;
            let remaining = left - charged - reserved;
            if standing.is_none_or(|s| remaining < s.remaining) {
                standing = Some(Standing {
                    limit: claim.limit,
                    remaining,
                    reset,
                    tokens: claim.tokens,
                });
            }
            reservations.push(Reservation {
                claim: claim.clone(),
                counter: name,
                charged,
                reserved,
            });
        }
        Verdict::Admitted {
            reservations,
            standing,
        }
    }

    /// Settles a reservation to `cost` (the real cost beyond the request cost).
    pub fn settle(&self, reservation: &Reservation, cost: u64) {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        // A counter swept meanwhile had its window end: nothing to settle.
        if let Some(c) = counters.get_mut(&reservation.counter) {
            c.reserved = c.reserved.saturating_sub(reservation.reserved);
            c.used = c.used.saturating_add(cost);
        }
    }

    /// Takes back what `reservation` charged and reserved: its request was admitted here and
    /// then refused by another store.
    pub fn release(&self, reservation: &Reservation) {
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = counters.get_mut(&reservation.counter) {
            c.reserved = c.reserved.saturating_sub(reservation.reserved);
            c.used = c.used.saturating_sub(reservation.charged);
        }
    }

    /// `(used, reserved)` of a bucket's counter in the window of `now_unix`.
    pub fn peek(&self, key: &str, window: Duration, now_unix: u64) -> (u64, u64) {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let name = counter_name(key, window_of(now_unix, window).0);
        counters.get(&name).map_or((0, 0), |c| (c.used, c.reserved))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(limit: u64, request_cost: u64, estimate: u64) -> Claim {
        Claim {
            budget: "default/p#0".into(),
            key: "default/p#0|alice".into(),
            limit,
            window: Duration::from_secs(60),
            request_cost,
            estimate,
            tokens: true,
            global: true,
        }
    }

    fn admitted(v: Verdict) -> (Vec<Reservation>, Standing) {
        match v {
            Verdict::Admitted {
                reservations,
                standing,
            } => (reservations, standing.unwrap()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reservations_count_as_spent_until_settled() {
        let store = MemoryStore::default();
        let c = claim(1000, 0, 400);
        let (r1, s1) = admitted(store.admit(std::slice::from_ref(&c), 65, Duration::ZERO));
        assert_eq!((s1.remaining, s1.reset), (600, Duration::from_secs(55)));
        let (r2, _) = admitted(store.admit(std::slice::from_ref(&c), 65, Duration::ZERO));
        // Capped at what is left.
        let (r3, s3) = admitted(store.admit(std::slice::from_ref(&c), 66, Duration::ZERO));
        assert_eq!((r3[0].reserved, s3.remaining), (200, 0));
        // Nothing left: refused, nothing charged.
        assert!(matches!(
            store.admit(std::slice::from_ref(&c), 66, Duration::ZERO),
            Verdict::Refused {
                standing: Standing { remaining: 0, .. },
                ..
            }
        ));
        assert_eq!(store.peek(&c.key, c.window, 66), (0, 1000));
        // Settled to the real cost: what was over-reserved is free again.
        store.settle(&r1[0], 100);
        store.settle(&r2[0], 450);
        assert_eq!(store.peek(&c.key, c.window, 66), (550, 200));
        store.settle(&r3[0], 150);
        assert_eq!(store.peek(&c.key, c.window, 66), (700, 0));
        let (_, s) = admitted(store.admit(std::slice::from_ref(&c), 67, Duration::ZERO));
        assert_eq!(s.remaining, 0);
        // The next window starts again.
        let (_, s) = admitted(store.admit(std::slice::from_ref(&c), 120, Duration::ZERO));
        assert_eq!(s.remaining, 600);
    }

    #[test]
    fn every_claim_or_none() {
        let store = MemoryStore::default();
        let small = Claim {
            key: "k2".into(),
            budget: "default/p#1".into(),
            ..claim(1, 1, 0)
        };
        let big = claim(1000, 0, 10);
        admitted(store.admit(&[big.clone(), small.clone()], 5, Duration::ZERO));
        match store.admit(&[big.clone(), small.clone()], 5, Duration::ZERO) {
            Verdict::Refused { budget, .. } => assert_eq!(budget, "default/p#1"),
            other => panic!("{other:?}"),
        }
        // The refused request reserved nothing on the budget that had room.
        assert_eq!(store.peek(&big.key, big.window, 5), (0, 10));
        // A request budget: its cost charged at once.
        assert_eq!(store.peek(&small.key, small.window, 5), (1, 0));
    }
}
