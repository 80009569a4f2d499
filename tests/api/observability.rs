//! What operators see: `/metrics` (requests per route with latency histograms, cache hits and
//! misses per tier, pool usage, pending counts) and the request id, from the answer's header to
//! the log lines of the background jobs the request caused.

use std::time::Duration;

use serde_json::Value;

use crate::faults::{Server, add_customer};
use crate::helpers::{TestEnv, advert_json, eventually, metric, png, spawn_app_with};

#[tokio::test]
async fn metrics_count_requests_per_route_cache_lookups_per_tier_and_pool_usage() {
    // Counts stay pending until asked for, so the pending figure is known exactly.
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        s.tracking.flush_interval_secs = 3600;
        s.tracking.flush_threshold = 1_000_000_000;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let advert = app.create_advert(&key).await;
    let tracked = advert["tracked_url"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        let answer = app.client.get(&tracked).send().await.unwrap();
        assert_eq!(answer.status(), 302);
    }
    let missing = app
        .client
        .get(app.url("/no/such/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let unknown_code = app
        .client
        .get(app.url("/r/zzzzzzzzzzzz"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_code.status(), 404);

    // The three clicks reach the journal with the next push (every 10 ms).
    let text = eventually(Duration::from_secs(5), "three pending clicks", || async {
        let text = app.get_text("/metrics").await;
        (metric(&text, "reklama_counter_pending_clicks", &[]) == Some(3.0)).then_some(text)
    })
    .await;

    // Requests per route pattern (never per path), method and status.
    let redirects = [("method", "GET"), ("route", "/r/{code}"), ("status", "302")];
    assert_eq!(
        metric(&text, "reklama_http_requests_total", &redirects),
        Some(3.0),
        "{text}"
    );
    let unknown = [("route", "/r/{code}"), ("status", "404")];
    assert_eq!(
        metric(&text, "reklama_http_requests_total", &unknown),
        Some(1.0)
    );
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert_eq!(
        metric(&text, "reklama_http_requests_total", &unmatched),
        Some(1.0)
    );
    let created = [("method", "POST"), ("route", "/api/v1/adverts")];
    assert_eq!(
        metric(&text, "reklama_http_requests_total", &created),
        Some(1.0)
    );
    assert!(
        !text.contains("/no/such/page") && !text.contains("zzzz"),
        "paths never become labels"
    );
    // Latency as a histogram: four answers on the redirect route, all in the +Inf bucket.
    let route = [("method", "GET"), ("route", "/r/{code}")];
    assert_eq!(
        metric(&text, "reklama_http_request_duration_seconds_count", &route),
        Some(4.0)
    );
    let all = [("route", "/r/{code}"), ("le", "+Inf")];
    assert_eq!(
        metric(&text, "reklama_http_request_duration_seconds_bucket", &all),
        Some(4.0)
    );
    assert!(metric(&text, "reklama_http_request_duration_seconds_sum", &route).unwrap() > 0.0);

    // The link cache: the first redirect missed memory (then read the database), the next two
    // hit; the unknown code missed once. Without Redis there is no Redis tier to count.
    let lookups = |tier: &str, result: &str| {
        metric(
            &text,
            "reklama_cache_lookups_total",
            &[("cache", "links"), ("tier", tier), ("result", result)],
        )
    };
    assert_eq!(lookups("memory", "hit"), Some(2.0), "{text}");
    assert_eq!(lookups("memory", "miss"), Some(2.0));
    assert_eq!(lookups("redis", "hit").unwrap_or(0.0), 0.0);
    assert_eq!(lookups("redis", "miss").unwrap_or(0.0), 0.0);

    // Pool usage: the test settings allow four database connections.
    let pool = |state: &str| {
        metric(
            &text,
            "reklama_pool_connections",
            &[("pool", "database"), ("state", state)],
        )
    };
    assert_eq!(pool("max"), Some(4.0));
    assert!((1.0..=4.0).contains(&pool("open").unwrap()));
    assert!(pool("idle").unwrap() <= pool("open").unwrap());
    app.stop().await;
}

#[tokio::test]
async fn a_request_id_is_answered_and_reaches_the_logs_of_the_jobs_the_request_caused() {
    let env = TestEnv::new();
    let key = add_customer(&env, "Acme");
    let server = Server::start_with(
        &env,
        "observed",
        &[("REKLAMA__LOG__FORMAT", "json"), ("RUST_LOG", "info")],
    )
    .await;
    let client = reqwest::Client::new();

    // A usable id is kept; an unusable one is replaced; none gets one made.
    let health = |id: Option<&'static str>| {
        let mut request = client.get(format!("{}/healthz", server.address));
        if let Some(id) = id {
            request = request.header("X-Request-Id", id);
        }
        async move {
            let answer = request.send().await.unwrap();
            answer.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(health(Some("lb-7f3a.1")).await, "lb-7f3a.1");
    for id in [health(Some("two words")).await, health(None).await] {
        assert_eq!(id.len(), 16, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }

    let created = client
        .post(format!("{}/api/v1/adverts", server.address))
        .bearer_auth(&key)
        .header("X-Request-Id", "intake-4711")
        .json(&advert_json(&png(64, 64)))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["x-request-id"], "intake-4711");

    // Intake enqueued the cloud clone and the placement variants; each job's "job done" line
    // carries the id of the request that caused it.
    let kinds = eventually(Duration::from_secs(20), "both jobs logged as done", || {
        let log = server.log();
        async move {
            let kinds: Vec<String> = log
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|line| line["fields"]["message"] == "job done")
                .filter(|line| line["span"]["request_id"] == "intake-4711")
                .filter_map(|line| line["span"]["kind"].as_str().map(str::to_owned))
                .collect();
            (kinds.len() >= 2).then_some(kinds)
        }
    })
    .await;
    assert!(kinds.contains(&"advert.offload".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"advert.variants".to_owned()), "{kinds:?}");
}

/// Hash reads (profiles) and string reads (frequency histories) asked for at once share one
/// pipeline, and each caller gets its own key's answer in its own type.
#[tokio::test]
async fn concurrent_reads_of_new_users_share_one_redis_pipeline_and_each_gets_its_own_answer() {
    use reklama::platform::redis::{Redis, RedisSettings, SharedReads};

    let prefix = format!("reklama-test-{}:", crate::helpers::random_suffix());
    let redis = Redis::from_settings(&RedisSettings {
        url: std::env::var("REKLAMA_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        prefix: prefix.clone(),
        pool_size: 4,
        timeout_ms: 5_000,
    })
    .expect("redis settings")
    .expect("a redis url");
    // Even keys hashes, odd keys strings; every tenth never written.
    let keys: Vec<String> = (0..200).map(|i| redis.key(&format!("k:{i}"))).collect();
    let string_of = |i: usize| vec![u8::try_from(i % 256).unwrap(); i % 7 + 1];
    let mut pipe = redis::pipe();
    for (i, key) in keys.iter().enumerate().filter(|(i, _)| i % 10 != 0) {
        if i % 2 == 0 {
            pipe.cmd("HSET")
                .arg(key)
                .arg("n")
                .arg(i)
                .arg("twice")
                .arg(i * 2)
                .ignore();
        } else {
            pipe.cmd("SET").arg(key).arg(string_of(i)).ignore();
        }
    }
    redis
        .with(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
        .await
        .expect("seed the keys");

    let round_trips = || {
        let text = reklama::platform::telemetry::prometheus().render();
        metric(&text, "reklama_redis_round_trips_total", &[]).unwrap_or(0.0)
    };
    let reads = SharedReads::new(redis.clone());
    let before = round_trips();
    // All 200 reads are asked for before this (single-threaded) test yields, as a burst of new
    // users' requests would be: the first starts a batch, the rest join it.
    let (hashes, strings) = tokio::join!(
        futures_util::future::join_all(keys.iter().step_by(2).map(|key| reads.hash(key.clone()))),
        futures_util::future::join_all(
            keys.iter()
                .skip(1)
                .step_by(2)
                .map(|key| reads.bytes(key.clone()))
        ),
    );
    let used = round_trips() - before;
    assert_eq!(used, 1.0, "200 reads took {used} round trips");
    for (i, answer) in (0..).step_by(2).zip(hashes) {
        let mut fields = answer.expect("read");
        fields.sort();
        if i % 10 == 0 {
            assert!(fields.is_empty(), "hash {i} was never written: {fields:?}");
        } else {
            let expected = vec![
                ("n".to_owned(), i.to_string()),
                ("twice".to_owned(), (i * 2).to_string()),
            ];
            assert_eq!(fields, expected, "hash {i}");
        }
    }
    for (i, answer) in (1..).step_by(2).zip(strings) {
        let bytes = answer.expect("read");
        assert_eq!(bytes, (i % 10 != 0).then(|| string_of(i)), "string {i}");
    }
    // A lone read later (the batch finished) starts a new one.
    let lone = reads.hash(keys[2].clone()).await.expect("lone read");
    assert_eq!(lone.len(), 2);
    assert_eq!(round_trips() - before, 2.0);
    // A key of another type is that caller's error, not its batch's.
    let wrong = reads.bytes(keys[2].clone()).await;
    assert!(wrong.is_err(), "{wrong:?}");

    let mut conn = redis.connection().await.expect("redis");
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .expect("clean up");
}
