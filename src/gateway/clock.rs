//! Where the data path reads the time. The stream's timings (time to first token, the gap
//! between tokens, the request's duration) come from here, so a test can set the time by hand
//! and assert them exactly.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A source of `Instant`s: the system's, or a hand-set one.
#[derive(Clone, Debug)]
pub struct Clock(Source);

#[derive(Clone, Debug)]
enum Source {
    System,
    /// The set instant, and when (by both clocks) the manual clock was made.
    Manual(Arc<Mutex<Instant>>, Instant, SystemTime),
}

impl Default for Clock {
    fn default() -> Self {
        Self(Source::System)
    }
}

impl Clock {
    /// A clock that stands still until [`Clock::advance`] moves it.
    pub fn manual() -> Self {
        let now = Instant::now();
        Self(Source::Manual(
            Arc::new(Mutex::new(now)),
            now,
            SystemTime::now(),
        ))
    }

    pub fn now(&self) -> Instant {
        match &self.0 {
            Source::System => Instant::now(),
            Source::Manual(t, ..) => *t.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// The wall-clock time (budget windows start on the unit since the epoch).
    pub fn wall(&self) -> SystemTime {
        match &self.0 {
            Source::System => SystemTime::now(),
            Source::Manual(_, start, wall) => *wall + self.now().saturating_duration_since(*start),
        }
    }

    /// Moves a manual clock on (a system clock moves by itself).
    pub fn advance(&self, by: Duration) {
        if let Source::Manual(t, ..) = &self.0 {
            *t.lock().unwrap_or_else(|e| e.into_inner()) += by;
        }
    }
}
