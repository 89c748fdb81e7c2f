//! Budgets counted in a real Redis (Debian's `redis-server`, started here on a free loopback
//! port): two gateways (each its own Envoy and processor) enforce one budget, counters expire
//! with their window, and a Redis that hangs or dies neither hangs nor crashes a request:
//! fail-open admits it unchecked, fail-closed answers 503 in OpenAI's shape.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ai_extproc::app::BudgetStore;
use ai_extproc::budget::{OnFailure, RedisOptions};

use crate::budgets::{chat, records, start_with};
use crate::harness::free_port;

/// A `redis-server` of our own, stopped when dropped.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server; .ci/run does)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn store(&self, on_failure: OnFailure) -> BudgetStore {
        BudgetStore::Redis(RedisOptions {
            url: self.url(),
            timeout: Duration::from_millis(100),
            on_failure,
        })
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal}");
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A stopped (SIGSTOP) server must be able to die.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_one_redis_enforce_one_budget() {
    let redis = RedisServer::start(free_port().port());
    let (a, _da) = start_with(12, redis.store(OnFailure::Open)).await;
    let (b, _db) = start_with(12, redis.store(OnFailure::Open)).await;
    let alice = [("x-user-id", "alice")];
    // 5 tokens through A, 5 through B: each sees what the other reserved and charged.
    let r = a
        .post("/v1/chat/completions", &chat(5, false), &alice)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("7"));
    records(&a, 1).await;
    let r = b.post("/v1/chat/completions", &chat(5, true), &alice).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("2"));
    records(&b, 1).await;
    // One counter (used + reserved) for Alice's hour, in Redis, with both charges.
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("ai-extproc:budget:default/budgets#0\u{1f}alice@*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "one counter for alice's hour: {keys:?}");
    let value: u64 = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, 10);
    // The counter expires when its window (an hour, aligned on the hour) ends.
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=3600).contains(&ttl), "ttl {ttl}");
    // 2 left: A admits (anything left admits), then B refuses.
    let r = a
        .post("/v1/chat/completions", &chat(5, false), &alice)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = b
        .post("/v1/chat/completions", &chat(5, false), &alice)
        .await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.json()["error"]["type"], "rate_limit_exceeded");

    // 20 concurrent streams, 10 through each gateway, against one budget of 50 for Dave:
    // together they cannot spend more than 50.
    let (c, _dc) = start_with(50, redis.store(OnFailure::Open)).await;
    let (d, _dd) = start_with(50, redis.store(OnFailure::Open)).await;
    let dave = [("x-user-id", "dave")];
    let body = chat(10, true);
    let replies = futures_util::future::join_all((0..20).map(|i| {
        let gw = if i % 2 == 0 { &c } else { &d };
        gw.post("/v1/chat/completions", &body, &dave)
    }))
    .await;
    let ok_c = replies
        .iter()
        .step_by(2)
        .filter(|r| r.status == 200)
        .count();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(replies.iter().filter(|r| r.status == 429).count() + ok, 20);
    let ok_d = ok - ok_c;
    let mut charged = 0;
    for (gw, n) in [(&c, ok_c), (&d, ok_d)] {
        if n > 0 {
            charged += records(gw, n)
                .await
                .iter()
                .map(|r| r["budget_charges"]["default/budgets#0"].as_u64().unwrap())
                .sum::<u64>();
        }
    }
    assert!(ok >= 1 && charged <= 50, "{ok} admitted, charged {charged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_hangs_or_dies_fails_open_or_closed_and_no_request_hangs() {
    let port = free_port().port();
    let mut redis = RedisServer::start(port);
    // Under 64 units: no lease (see the next test), every request asks Redis.
    let (open, _do) = start_with(63, redis.store(OnFailure::Open)).await;
    let (closed, _dc) = start_with(63, redis.store(OnFailure::Closed)).await;
    let erin = [("x-user-id", "erin")];
    for gw in [&open, &closed] {
        let r = gw
            .post("/v1/chat/completions", &chat(5, false), &erin)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.header("x-ratelimit-remaining-tokens").is_some());
    }
    // Gina reserves 40 and uses less: the settlement (in the background, batched) brings her
    // counter down to what she used.
    let gina = [("x-user-id", "gina")];
    let r = open
        .post("/v1/chat/completions", &chat(40, false), &gina)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("23"));
    let used = records(&open, 2).await[1]["budget_charges"]["default/budgets#0"]
        .as_u64()
        .unwrap();
    assert!((1..40).contains(&used), "{used}");
    let mut conn = redis.connection().await;
    let key: Vec<String> = redis::cmd("KEYS")
        .arg("ai-extproc:budget:default/budgets#0\u{1f}gina@*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value: u64 = redis::cmd("GET")
            .arg(&key[0])
            .query_async(&mut conn)
            .await
            .unwrap();
        if value == used {
            break;
        }
        assert!(Instant::now() < deadline, "counter {value}, used {used}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Redis hangs (SIGSTOP), then dies: each request waits at most the timeout (100 ms).
    for phase in ["hangs", "dies"] {
        if phase == "hangs" {
            redis.signal("-STOP");
        } else {
            redis.signal("-CONT");
            redis.stop();
        }
        let started = Instant::now();
        let r = open
            .post("/v1/chat/completions", &chat(5, false), &erin)
            .await;
        assert_eq!(r.status, 200, "{phase}: {}", r.text);
        assert!(
            r.header("x-ratelimit-remaining-tokens").is_none(),
            "{phase}: unchecked"
        );
        let r = closed
            .post("/v1/chat/completions", &chat(5, false), &erin)
            .await;
        assert_eq!(r.status, 503, "{phase}: {}", r.text);
        let e = r.json();
        assert_eq!(e["error"]["type"], "service_unavailable", "{e}");
        assert_eq!(e["error"]["code"], "rate_limit_unavailable", "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{phase}: {:?}",
            started.elapsed()
        );
    }
    for gw in [&open, &closed] {
        let metrics = gw.metrics().await;
        let errors = metrics
            .lines()
            .find_map(|l| l.strip_prefix(r#"ai_extproc_budget_store_errors_total{op="admit"} "#))
            .and_then(|n| n.parse::<u64>().ok());
        assert_eq!(errors, Some(2), "{metrics}");
    }
    // Redis back (empty): budgets are enforced again once the gateway has reconnected.
    let _redis = RedisServer::start(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = closed
            .post("/v1/chat/completions", &chat(5, false), &erin)
            .await;
        if r.status == 200 {
            assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("58"));
            break;
        }
        assert_eq!(r.status, 503, "{}", r.text);
        assert!(Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `Local` budgets stay in each gateway (as Envoy Gateway's local rate limits are per Envoy),
/// `Global` ones are shared through Redis; a request admitted by a local budget and refused by
/// a global one gives its local charge back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_budgets_stay_in_each_gateway_and_are_given_back_when_redis_refuses() {
    use ai_extproc::budget::{Budgets, Claim, Telemetry, Verdict};
    let redis = RedisServer::start(free_port().port());
    let BudgetStore::Redis(options) = redis.store(OnFailure::Closed) else {
        unreachable!()
    };
    let a = Budgets::redis(options.clone(), Telemetry::default()).unwrap();
    let b = Budgets::redis(options, Telemetry::default()).unwrap();
    let claim = |name: &str, limit: u64, global: bool| Claim {
        budget: name.into(),
        key: format!("{name}\u{1f}frank"),
        limit,
        window: Duration::from_secs(3600),
        request_cost: 1,
        estimate: 0,
        tokens: false,
        global,
    };
    let local = claim("default/local#0", 10, false);
    let global = claim("default/global#0", 2, true);
    let now = std::time::SystemTime::now();
    let remaining = |v: Verdict| match v {
        Verdict::Admitted { standing, .. } => standing.map(|s| s.remaining),
        other => panic!("{other:?}"),
    };
    // Through A: both budgets charged; B shares the global one only.
    assert_eq!(
        remaining(a.admit(&[local.clone(), global.clone()], now).await),
        Some(1)
    );
    assert_eq!(
        remaining(b.admit(std::slice::from_ref(&local), now).await),
        Some(9)
    );
    assert_eq!(
        remaining(b.admit(std::slice::from_ref(&global), now).await),
        Some(0)
    );
    // The global budget is spent: A refuses, and its local budget gets its request back.
    match a.admit(&[local.clone(), global.clone()], now).await {
        Verdict::Refused { budget, .. } => assert_eq!(budget, "default/global#0"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        remaining(a.admit(std::slice::from_ref(&local), now).await),
        Some(8)
    );
}

/// A large budget is leased: a gateway's request to Redis also reserves 1/64 of the budget for
/// it, the next requests are admitted from that lease without a Redis call, what they do not
/// use returns to the lease, and a lease idle for a second goes back to Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_budgets_are_leased_and_idle_leases_go_back() {
    use ai_extproc::budget::{Budgets, Claim, Telemetry, Verdict};
    let redis = RedisServer::start(free_port().port());
    let BudgetStore::Redis(options) = redis.store(OnFailure::Closed) else {
        unreachable!()
    };
    let a = Budgets::redis(options.clone(), Telemetry::default()).unwrap();
    let b = Budgets::redis(options, Telemetry::default()).unwrap();
    let claim = Claim {
        budget: "default/big#0".into(),
        key: "default/big#0\u{1f}hana".into(),
        limit: 6400,
        window: Duration::from_secs(3600),
        request_cost: 0,
        estimate: 10,
        tokens: true,
        global: true,
    };
    let now = std::time::SystemTime::now();
    let admitted = |v: Verdict| match v {
        Verdict::Admitted {
            reservations,
            standing,
        } => (reservations, standing.unwrap().remaining),
        other => panic!("{other:?}"),
    };
    let conn = redis.connection().await;
    let counter = || {
        let mut conn = conn.clone();
        async move {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("ai-extproc:budget:default/big#0*")
                .query_async(&mut conn)
                .await
                .unwrap();
            let value: u64 = redis::cmd("GET")
                .arg(&keys[0])
                .query_async(&mut conn)
                .await
                .unwrap();
            value
        }
    };
    // A: its 10 and a lease of 100 reserved in Redis. B sees them spent.
    let (ra1, left) = admitted(a.admit(std::slice::from_ref(&claim), now).await);
    assert_eq!((left, counter().await), (6400 - 10, 110));
    let (rb, left) = admitted(b.admit(std::slice::from_ref(&claim), now).await);
    assert_eq!((left, counter().await), (6400 - 220 + 100, 220));
    // A's next request comes from its lease: Redis is not called.
    let (ra2, _) = admitted(a.admit(std::slice::from_ref(&claim), now).await);
    assert_eq!(counter().await, 220);
    // Each used 4: what they did not use returns to the leases; idle, the leases go back.
    a.settle(&ra1, &[4]);
    a.settle(&ra2, &[4]);
    b.settle(&rb, &[4]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while counter().await != 12 {
        assert!(Instant::now() < deadline, "counter {}", counter().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
