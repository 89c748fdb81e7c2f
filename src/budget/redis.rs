//! Budgets counted in Redis, so that several gateway replicas enforce one budget.
//!
//! One Lua script admits a request's claims, all or none, atomically (the same semantics as
//! the memory store: admitted while anything is left, each claim reserving its estimate capped
//! at what is left); another settles reservations. A counter is a hash (`used`, `reserved`)
//! named after its bucket and window start, expiring when its window ends: a replica whose
//! clock is a little behind counts in the previous window's key, never in a wrong one.
//!
//! Redis unreachable or slow past the timeout: the request is admitted unchecked (fail-open,
//! as envoyproxy/ratelimit does) or refused with 503 (fail-closed); either way it is counted
//! in `ai_extproc_budget_store_errors_total` and never waits longer than the timeout.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::{counter_name, window_of, Claim, Reservation, Standing, Telemetry, Verdict};

/// Prefix of every key the gateway writes.
const PREFIX: &str = "ai-extproc:budget:";

/// KEYS: the claims' counters. ARGV: per claim `limit, request_cost, estimate, expire_at`.
/// Returns `{-i}` when claim `i` (1-based) has nothing left (nothing is charged then), else
/// per claim `{reserved, remaining}`.
const ADMIT: &str = r"
local left = {}
for i = 1, #KEYS do
  local limit = tonumber(ARGV[(i - 1) * 4 + 1])
  local c = redis.call('HMGET', KEYS[i], 'used', 'reserved')
  local l = limit - (tonumber(c[1]) or 0) - (tonumber(c[2]) or 0)
  if l <= 0 then return {-i} end
  left[i] = l
end
local out = {}
for i = 1, #KEYS do
  local b = (i - 1) * 4
  local charged = math.min(tonumber(ARGV[b + 2]), left[i])
  local reserved = math.min(tonumber(ARGV[b + 3]), left[i] - charged)
  redis.call('HINCRBY', KEYS[i], 'used', charged)
  redis.call('HINCRBY', KEYS[i], 'reserved', reserved)
  redis.call('EXPIREAT', KEYS[i], ARGV[b + 4])
  out[#out + 1] = reserved
  out[#out + 1] = left[i] - charged - reserved
end
return out
";

/// KEYS: the reservations' counters. ARGV: per reservation `reserved, cost`. A counter whose
/// window ended (expired) is not brought back.
const SETTLE: &str = r"
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local r = redis.call('HINCRBY', KEYS[i], 'reserved', -tonumber(ARGV[(i - 1) * 2 + 1]))
    if r < 0 then redis.call('HSET', KEYS[i], 'reserved', 0) end
    redis.call('HINCRBY', KEYS[i], 'used', ARGV[(i - 1) * 2 + 2])
  end
end
return 0
";

// Scripts are loaded once (EVALSHA, falling back to EVAL after a Redis restart).
static ADMIT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ADMIT));
static SETTLE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SETTLE));

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

/// The counters, in Redis.
pub struct RedisStore {
    connection: ConnectionManager,
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
    /// reconnects when it comes back. Must be called inside a Tokio runtime.
    pub fn new(options: RedisOptions) -> Result<Self, RedisSetupError> {
        let client = redis::Client::open(options.url.as_str())
            // Never echo the URL: it may hold a password.
            .map_err(|e| RedisSetupError(format!("not a Redis URL ({:?})", e.kind())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            // Reconnection is retried on the next request, not in a loop that requests wait on.
            .set_number_of_retries(1)
            .set_max_delay(options.timeout);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| RedisSetupError(e.to_string()))?;
        Ok(Self {
            connection,
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
        let mut invocation = ADMIT_SCRIPT.prepare_invoke();
        let mut windows = Vec::with_capacity(claims.len());
        for claim in claims {
            let (start, end) = window_of(now_unix, claim.window);
            let counter = counter_name(&claim.key, start);
            invocation
                .key(format!("{PREFIX}{counter}"))
                .arg(claim.limit)
                .arg(claim.request_cost)
                .arg(claim.estimate)
                .arg(end);
            let reset = Duration::from_secs(end - now_unix).saturating_sub(now_sub);
            windows.push((counter, reset));
        }
        let mut connection = self.connection.clone();
        let answer = tokio::time::timeout(
            self.options.timeout,
            invocation.invoke_async::<Vec<i64>>(&mut connection),
        )
        .await;
        let answer = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return self.failed(telemetry, &e.to_string()),
            Err(_) => return self.failed(telemetry, "timed out"),
        };
        if let [refused] = answer[..] {
            // `-i`: claim `i` (1-based) has nothing left.
            let i = refused
                .checked_neg()
                .and_then(|i| usize::try_from(i).ok())
                .unwrap_or(0);
            let Some((claim, (_, reset))) = i
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
        if answer.len() != claims.len() * 2 {
            return self.failed(telemetry, "an answer of the wrong length");
        }
        let mut reservations = Vec::with_capacity(claims.len());
        let mut standing: Option<Standing> = None;
        for ((claim, (counter, reset)), pair) in claims.iter().zip(windows).zip(answer.chunks(2)) {
            let reserved = u64::try_from(pair[0]).unwrap_or(0);
            let remaining = u64::try_from(pair[1]).unwrap_or(0);
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
        match self.options.on_failure {
            OnFailure::Open => {
                tracing::warn!(
                    error,
                    "Redis did not answer; admitting the request unchecked (fail-open)"
                );
                Verdict::Admitted {
                    reservations: Vec::new(),
                    standing: None,
                }
            }
            OnFailure::Closed => {
                tracing::warn!(
                    error,
                    "Redis did not answer; refusing the request (fail-closed)"
                );
                Verdict::Unavailable
            }
        }
    }

    /// Settles in the background: the request has ended, nobody waits for this.
    pub fn settle(&self, reservations: &[Reservation], costs: &[u64], telemetry: &Telemetry) {
        let mut invocation = SETTLE_SCRIPT.prepare_invoke();
        for (r, cost) in reservations.iter().zip(costs) {
            invocation
                .key(format!("{PREFIX}{}", r.counter))
                .arg(r.reserved)
                .arg(*cost);
        }
        let mut connection = self.connection.clone();
        let timeout = self.options.timeout;
        let telemetry = telemetry.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            telemetry.store_error("settle");
            return;
        };
        runtime.spawn(async move {
            let done =
                tokio::time::timeout(timeout, invocation.invoke_async::<i64>(&mut connection))
                    .await;
            if !matches!(done, Ok(Ok(_))) {
                // The reservation stays counted until its window ends: never an overshoot.
                telemetry.store_error("settle");
                tracing::warn!(
                    "Redis did not settle a reservation; it stays held until its window ends"
                );
            }
        });
    }
}
