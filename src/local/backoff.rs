//! How long a supervisor waits before restarting a child that died: doubling from `min` to
//! `max`, and back to `min` once a child has stayed up for `stable` (a crash loop slows down,
//! a rare crash is restarted at once).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    stable: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration, stable: Duration) -> Self {
        Self {
            min,
            max,
            stable,
            next: min,
        }
    }

    /// The pause before the next restart of a child that ran for `uptime`.
    pub fn after(&mut self, uptime: Duration) -> Duration {
        if uptime >= self.stable {
            self.next = self.min;
        }
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }

    /// The pause after a restart that failed outright.
    pub fn after_failure(&mut self) -> Duration {
        self.after(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets_after_a_stable_run() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(Duration::from_millis(500), s(4), s(30));
        let pauses: Vec<Duration> = (0..5).map(|_| b.after(s(1))).collect();
        assert_eq!(
            pauses,
            [Duration::from_millis(500), s(1), s(2), s(4), s(4)],
            "a crash loop slows down, up to the cap"
        );
        assert_eq!(
            b.after(s(31)),
            Duration::from_millis(500),
            "a stable run resets it"
        );
        assert_eq!(b.after_failure(), s(1));
    }
}
