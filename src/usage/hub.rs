//! Fan-out of usage records to subscribers, each behind a bounded buffer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::pb;
use super::record::UsageRecord;

/// Records a subscriber may have waiting before new ones are dropped for it.
pub const SUBSCRIBER_BUFFER: usize = 1024;

struct Subscriber {
    tx: mpsc::Sender<pb::UsageRecord>,
    /// Dropped since the last record it got.
    missed: u64,
}

/// Sees every record (metrics).
pub type Observer = Arc<dyn Fn(&UsageRecord) + Send + Sync>;

#[derive(Default)]
struct Inner {
    observer: Mutex<Option<Observer>>,
    subscribers: Mutex<Vec<Subscriber>>,
    file: Mutex<Option<mpsc::Sender<UsageRecord>>>,
    emitted: AtomicU64,
    dropped: AtomicU64,
}

/// Where finished requests' usage goes. Cheap to clone; `emit` never waits.
#[derive(Clone, Default)]
pub struct UsageHub(Arc<Inner>);

impl std::fmt::Debug for UsageHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageHub")
            .field("emitted", &self.emitted())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl UsageHub {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new gRPC subscriber's receiving end.
    pub fn subscribe(&self, buffer: usize) -> mpsc::Receiver<pb::UsageRecord> {
        let (tx, rx) = mpsc::channel(buffer);
        if let Ok(mut subs) = self.0.subscribers.lock() {
            subs.push(Subscriber { tx, missed: 0 });
        }
        rx
    }

    /// Shows every record to `observer` first (synchronously: keep it cheap).
    pub fn set_observer(&self, observer: Observer) {
        if let Ok(mut o) = self.0.observer.lock() {
            *o = Some(observer);
        }
    }

    /// Sends records to a JSON-lines writer as well.
    pub fn set_file_sink(&self, tx: mpsc::Sender<UsageRecord>) {
        if let Ok(mut f) = self.0.file.lock() {
            *f = Some(tx);
        }
    }

    /// Hands a record to every consumer that has room; counts the ones that had none.
    pub fn emit(&self, record: UsageRecord) {
        self.0.emitted.fetch_add(1, Ordering::Relaxed);
        let observer = self.0.observer.lock().ok().and_then(|o| o.clone());
        if let Some(observe) = observer {
            observe(&record);
        }
        if let Ok(mut subs) = self.0.subscribers.lock() {
            subs.retain_mut(|s| match s.tx.try_send(record.to_proto(s.missed)) {
                Ok(()) => {
                    s.missed = 0;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.missed += 1;
                    self.count_drop("a usage subscriber is too slow");
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
        if let Ok(file) = self.0.file.lock() {
            if let Some(tx) = file.as_ref() {
                if tx.try_send(record).is_err() {
                    self.count_drop("the usage log file is behind");
                }
            }
        }
    }

    fn count_drop(&self, why: &str) {
        let n = self.0.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // The first drop and then one line per thousand: visible, not a log flood.
        if n == 1 || n.is_multiple_of(1000) {
            tracing::warn!(dropped_total = n, "usage record dropped: {why}");
        }
    }

    /// Records emitted since start.
    pub fn emitted(&self) -> u64 {
        self.0.emitted.load(Ordering::Relaxed)
    }

    /// Records some consumer did not get, since start.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    /// Live gRPC subscribers.
    pub fn subscribers(&self) -> usize {
        self.0
            .subscribers
            .lock()
            .map(|mut s| {
                s.retain(|s| !s.tx.is_closed());
                s.len()
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64) -> UsageRecord {
        UsageRecord {
            request_id: format!("r{i}"),
            input_tokens: i,
            ..UsageRecord::default()
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_records_and_is_told() {
        let hub = UsageHub::new();
        let mut slow = hub.subscribe(2);
        let mut fast = hub.subscribe(100);
        for i in 0..5 {
            hub.emit(record(i));
        }
        assert_eq!(hub.dropped(), 3);
        assert_eq!(slow.recv().await.unwrap().request_id, "r0");
        assert_eq!(slow.recv().await.unwrap().request_id, "r1");
        hub.emit(record(5));
        let next = slow.recv().await.unwrap();
        assert_eq!((next.request_id.as_str(), next.dropped_before), ("r5", 3));
        for i in 0..6 {
            assert_eq!(fast.recv().await.unwrap().input_tokens, i);
        }
        assert_eq!(hub.emitted(), 6);
    }

    #[tokio::test]
    async fn closed_subscribers_are_forgotten() {
        let hub = UsageHub::new();
        drop(hub.subscribe(1));
        hub.emit(record(0));
        assert_eq!(hub.subscribers(), 0);
        assert_eq!(hub.dropped(), 0);
    }
}
