//! Budgets counted in Redis, so that several gateway replicas enforce one budget.
//!
//! One Lua script does everything, atomically: it admits each request's claims all or none
//! (the memory store's rules: admitted while anything is left, each claim reserving its
//! estimate capped at what is left) and settles ended requests. Requests do not call Redis one
//! by one: a batcher sends whatever is waiting (admissions and settlements of many requests) in
//! one script call, so under load a call serves several requests and a settlement rides along
//! with the next admission instead of costing a call of its own. Large budgets are mostly not
//! called at all: a request that goes to Redis also leases a slice of each budget for this
//! gateway, and the next requests are admitted from it (see `lease.rs`). A counter is a number
//! (used plus reserved) named after its bucket and window start, expiring when its window
//! ends: a replica whose clock is a little behind counts in the previous window's key, never
//! in a wrong one.
//!
//! Redis unreachable or slow past the timeout: the request is admitted unchecked (fail-open,
//! as envoyproxy/ratelimit does) or refused with 503 (fail-closed); either way it is counted
//! in `ai_extproc_budget_store_errors_total` and never waits longer than the timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio::sync::{mpsc, oneshot};

use super::lease::{Leases, Need};
use super::{counter_name, window_of, Claim, Reservation, Standing, Telemetry, Verdict};

/// Prefix of every key the gateway writes.
const PREFIX: &str = "ai-extproc:budget:";

/// Operations per script call, at most.
const MAX_BATCH: usize = 64;

/// A lease unused this long is given back.
const LEASE_IDLE: Duration = Duration::from_secs(1);

/// ARGV is a program run in order, each operation taking the next KEYS:
/// - `S, delta`: settle one reservation (add `delta` = real cost - reserved; a counter whose
///   window ended is not brought back);
/// - `A, n, n × (limit, request_cost, estimate, expire_at)`: admit one request's `n` claims.
///
/// Returns, for each `A` in order, a count then that many numbers: `1, -i` when claim `i`
/// (1-based) has nothing left (nothing is charged then), else `3n` numbers, per claim
/// `charged, reserved, remaining`.
const BATCH: &str = r"
local out = {}
local k, a = 1, 1
while a <= #ARGV do
  if ARGV[a] == 'S' then
    if redis.call('EXISTS', KEYS[k]) == 1 then
      if redis.call('INCRBY', KEYS[k], ARGV[a + 1]) < 0 then
        redis.call('SET', KEYS[k], 0, 'KEEPTTL')
      end
    end
    k, a = k + 1, a + 2
  else
    local n = tonumber(ARGV[a + 1])
    a = a + 2
    local left, refused = {}, 0
    for i = 0, n - 1 do
      local l = tonumber(ARGV[a + i * 4]) - (tonumber(redis.call('GET', KEYS[k + i])) or 0)
      if l <= 0 and refused == 0 then refused = i + 1 end
      left[i] = l
    end
    if refused > 0 then
      out[#out + 1] = 1
      out[#out + 1] = -refused
    else
      out[#out + 1] = n * 3
      for i = 0, n - 1 do
        local b = a + i * 4
        local charged = math.min(tonumber(ARGV[b + 1]), left[i])
        local reserved = math.min(tonumber(ARGV[b + 2]), left[i] - charged)
        if redis.call('INCRBY', KEYS[k + i], charged + reserved) == charged + reserved then
          redis.call('EXPIREAT', KEYS[k + i], ARGV[b + 3])
        end
        out[#out + 1] = charged
        out[#out + 1] = reserved
        out[#out + 1] = left[i] - charged - reserved
      end
    end
    k, a = k + n, a + n * 4
  end
end
return out
";

// Loaded once (EVALSHA, falling back to EVAL after a Redis restart).
static BATCH_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(BATCH));

/// What to do with a request when Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Admit it unchecked (and count the error).
    Open,
    /// Refuse it with 503.
    Closed,
}

/// How the gateway uses Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`).
    pub url: String,
    /// The longest a request waits for Redis (connecting included).
    pub timeout: Duration,
    pub on_failure: OnFailure,
}

/// One request's part of a script call.
enum Op {
    /// Counter keys and `[limit, request_cost, estimate, expire_at]` per claim; the answer.
    Admit {
        claims: Vec<(String, [u64; 4])>,
        reply: oneshot::Sender<Vec<i64>>,
    },
    /// Counter keys and `real cost - reserved`.
    Settle(Vec<(String, i64)>),
}

/// The counters, in Redis.
pub struct RedisStore {
    ops: mpsc::UnboundedSender<Op>,
    leases: Arc<Leases>,
    /// When the last warning was logged (seconds since the epoch): at most one a second, not
    /// one per request while Redis is down.
    warned_at: AtomicU64,
    options: RedisOptions,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("RedisStore")
            .field("on_failure", &self.options.on_failure)
            .finish_non_exhaustive()
    }
}

/// Why the store could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("--rate-limit-redis: {0}")]
pub struct RedisSetupError(String);

impl RedisStore {
    /// Connects lazily: the gateway starts (and fails open or closed) with Redis down, and
    /// reconnects when it comes back. Must be called inside a Tokio runtime (the batcher is a
    /// task of it).
    pub fn new(options: RedisOptions, telemetry: Telemetry) -> Result<Self, RedisSetupError> {
        let client = redis::Client::open(options.url.as_str())
            // Never echo the URL: it may hold a password.
            .map_err(|e| RedisSetupError(format!("not a Redis URL ({:?})", e.kind())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            // Reconnection is retried on the next call, not in a loop that requests wait on.
            .set_number_of_retries(1)
            .set_max_delay(options.timeout);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| RedisSetupError(e.to_string()))?;
        let (ops, rx) = mpsc::unbounded_channel();
        let leases = Arc::new(Leases::new(LEASE_IDLE));
        tokio::spawn(batcher(
            rx,
            connection,
            options.timeout,
            leases.clone(),
            telemetry,
        ));
        Ok(Self {
            ops,
            leases,
            warned_at: AtomicU64::new(0),
            options,
        })
    }

    pub async fn admit(
        &self,
        claims: &[Claim],
        now_unix: u64,
        now_sub: Duration,
        telemetry: &Telemetry,
    ) -> Verdict {
        let mut windows = Vec::with_capacity(claims.len());
        for claim in claims {
            let (start, end) = window_of(now_unix, claim.window);
            let reset = Duration::from_secs(end - now_unix).saturating_sub(now_sub);
            windows.push((counter_name(&claim.key, start), reset, end));
        }
        let now = Instant::now();
        let needs: Vec<Need<'_>> = claims
            .iter()
            .zip(&windows)
            .map(|(c, (counter, ..))| Need {
                counter,
                units: c.request_cost.saturating_add(c.estimate),
            })
            .collect();
        if let Some(left) = self.leases.take(&needs, now_unix, now) {
            return admitted_from_leases(claims, windows, &left);
        }
        let args = claims
            .iter()
            .zip(&windows)
            .map(|(c, (counter, _, end))| {
                let asked = c.estimate.saturating_add(Leases::chunk(c.limit));
                (
                    format!("{PREFIX}{counter}"),
                    [c.limit, c.request_cost, asked, *end],
                )
            })
            .collect();
        let (reply, answer) = oneshot::channel();
        if self
            .ops
            .send(Op::Admit {
                claims: args,
                reply,
            })
            .is_err()
        {
            return self.failed(telemetry, "the batcher stopped");
        }
        let answer = match tokio::time::timeout(self.options.timeout, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => return self.failed(telemetry, "Redis failed"),
            Err(_) => return self.failed(telemetry, "timed out"),
        };
        if let [refused] = answer[..] {
            // `-i`: claim `i` (1-based) has nothing left.
            let i = refused
                .checked_neg()
                .and_then(|i| usize::try_from(i).ok())
                .unwrap_or(0);
            let Some((claim, (_, reset, _))) = i
                .checked_sub(1)
                .and_then(|i| claims.get(i).zip(windows.get(i)))
            else {
                return self.failed(telemetry, "an answer out of range");
            };
            return Verdict::Refused {
                budget: claim.budget.clone(),
                standing: Standing {
                    limit: claim.limit,
                    remaining: 0,
                    reset: *reset,
                    tokens: claim.tokens,
                },
            };
        }
        if answer.len() != claims.len() * 3 {
            return self.failed(telemetry, "an answer of the wrong length");
        }
        let mut reservations = Vec::with_capacity(claims.len());
        let mut standing: Option<Standing> = None;
        for ((claim, (counter, reset, end)), got) in
            claims.iter().zip(windows).zip(answer.chunks(3))
        {
            let [charged, granted, mut remaining] =
                [got[0], got[1], got[2]].map(|n| u64::try_from(n).unwrap_or(0));
            // The request's own reservation first; the rest is this gateway's lease.
            let reserved = granted.min(claim.estimate);
            if granted > reserved {
                let held = self
                    .leases
                    .grant(&counter, granted - reserved, remaining, end, now);
                remaining = remaining.saturating_add(held);
            }
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
                counter,
                charged,
                reserved,
            });
        }
        Verdict::Admitted {
            reservations,
            standing,
        }
    }

    fn failed(&self, telemetry: &Telemetry, error: &str) -> Verdict {
        telemetry.store_error("admit");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let warn = self.warned_at.swap(now, Ordering::Relaxed) != now;
        match self.options.on_failure {
            OnFailure::Open => {
                if warn {
                    tracing::warn!(error, "Redis did not answer; admitting requests unchecked (fail-open; ai_extproc_budget_store_errors_total counts them)");
                }
                Verdict::Admitted {
                    reservations: Vec::new(),
                    standing: None,
                }
            }
            OnFailure::Closed => {
                if warn {
                    tracing::warn!(error, "Redis did not answer; refusing requests with 503 (fail-closed; ai_extproc_budget_store_errors_total counts them)");
                }
                Verdict::Unavailable
            }
        }
    }

    /// Queues the settlement for the next script call: the request has ended, nobody waits.
    pub fn settle(&self, reservations: &[Reservation], costs: &[u64], telemetry: &Telemetry) {
        let items: Vec<(String, i64)> = reservations
            .iter()
            .zip(costs)
            .filter_map(|(r, cost)| {
                let delta = i128::from(*cost) - i128::from(r.reserved);
                let delta =
                    i64::try_from(delta).unwrap_or(if delta < 0 { i64::MIN } else { i64::MAX });
                // Against this gateway's lease first; what is left goes to Redis.
                let rest = self.leases.settle(&r.counter, delta);
                (rest != 0).then(|| (format!("{PREFIX}{}", r.counter), rest))
            })
            .collect();
        if !items.is_empty() && self.ops.send(Op::Settle(items)).is_err() {
            telemetry.store_error("settle");
        }
    }
}

/// Sends whatever is waiting in one script call, one call at a time; gives idle leases back.
async fn batcher(
    mut rx: mpsc::UnboundedReceiver<Op>,
    mut connection: ConnectionManager,
    timeout: Duration,
    leases: Arc<Leases>,
    telemetry: Telemetry,
) {
    let mut sweep = tokio::time::interval(LEASE_IDLE / 2);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            op = rx.recv() => match op {
                Some(op) => op,
                None => return,
            },
            _ = sweep.tick() => {
                let now_unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let back = leases.expire(now_unix, Instant::now());
                if back.is_empty() {
                    continue;
                }
                Op::Settle(
                    back.into_iter()
                        .map(|(counter, units)| {
                            let units = i64::try_from(units).unwrap_or(i64::MAX);
                            (format!("{PREFIX}{counter}"), -units)
                        })
                        .collect(),
                )
            }
        };
        let mut ops = vec![first];
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        // A request that stopped waiting (timed out) must not be charged now.
        ops.retain(|op| !matches!(op, Op::Admit { reply, .. } if reply.is_closed()));
        let mut invocation = BATCH_SCRIPT.prepare_invoke();
        let mut replies = Vec::new();
        let mut settles = 0u64;
        for op in ops {
            match op {
                Op::Settle(items) => {
                    settles += 1;
                    for (key, delta) in items {
                        invocation.key(key).arg("S").arg(delta);
                    }
                }
                Op::Admit { claims, reply } => {
                    invocation.arg("A").arg(claims.len());
                    for (key, [limit, cost, estimate, expire]) in claims {
                        invocation
                            .key(key)
                            .arg(limit)
                            .arg(cost)
                            .arg(estimate)
                            .arg(expire);
                    }
                    replies.push(reply);
                }
            }
        }
        let answer = tokio::time::timeout(
            timeout,
            invocation.invoke_async::<Vec<i64>>(&mut connection),
        )
        .await;
        let Ok(Ok(answer)) = answer else {
            // Admissions see their reply dropped (and fail open or closed); settlements stay
            // held until their window ends: never an overshoot.
            for _ in 0..settles {
                telemetry.store_error("settle");
            }
            continue;
        };
        let mut rest = &answer[..];
        for reply in replies {
            let Some((&n, tail)) = rest.split_first() else {
                break;
            };
            let n = usize::try_from(n).unwrap_or(0).min(tail.len());
            let _ = reply.send(tail[..n].to_vec());
            rest = &tail[n..];
        }
    }
}

/// A request admitted from this gateway's leases, without a Redis call.
fn admitted_from_leases(
    claims: &[Claim],
    windows: Vec<(String, Duration, u64)>,
    left: &[u64],
) -> Verdict {
    let mut reservations = Vec::with_capacity(claims.len());
    let mut standing: Option<Standing> = None;
    for ((claim, (counter, reset, _)), &remaining) in claims.iter().zip(windows).zip(left) {
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
            counter,
            charged: claim.request_cost,
            reserved: claim.estimate,
        });
    }
    Verdict::Admitted {
        reservations,
        standing,
    }
}
