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
    // Settling is in the background: wait until Redis has both charges.
    let mut conn = redis.connection().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("ai-extproc:budget:default/budgets#0\u{1f}alice@*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "one counter for alice's hour: {keys:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (used, reserved): (u64, u64) = redis::cmd("HMGET")
            .arg(&keys[0])
            .arg("used")
            .arg("reserved")
            .query_async(&mut conn)
            .await
            .unwrap();
        if (used, reserved) == (10, 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "used {used}, reserved {reserved}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    let (open, _do) = start_with(1_000, redis.store(OnFailure::Open)).await;
    let (closed, _dc) = start_with(1_000, redis.store(OnFailure::Closed)).await;
    let erin = [("x-user-id", "erin")];
    for gw in [&open, &closed] {
        let r = gw
            .post("/v1/chat/completions", &chat(5, false), &erin)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.header("x-ratelimit-remaining-tokens").is_some());
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
            assert_eq!(r.header("x-ratelimit-remaining-tokens"), Some("995"));
            break;
        }
        assert_eq!(r.status, 503, "{}", r.text);
        assert!(Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
