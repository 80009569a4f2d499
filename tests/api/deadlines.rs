//! Deadlines: a backend that hangs (connections open, nothing answers) costs a request at most
//! its bound, never a thread per request, and everything resumes exactly when it answers again.
//! The hang is a proxy in blackhole mode in front of the real PostgreSQL, moto or Redis.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use diesel::Connection;
use diesel::connection::SimpleConnection;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::faults::{
    app_with_database_behind_a_proxy, app_with_redis_behind_a_proxy, socket_address, through,
};
use crate::helpers::{
    BROWSER, TestApp, TestEnv, advert_json, eventually, manual_flush, metric, png, random_suffix,
    spawn_app_with,
};
use crate::isolation::sign_in;
use crate::proxy::{Mode, Proxy};

/// What the defaults promise: a request answers within 5 s of its arrival.
const REQUEST_BOUND: Duration = Duration::from_secs(5);

/// Runs `work` and says how long it took.
async fn timed<T>(work: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let value = work.await;
    (value, started.elapsed())
}

/// Asserts a 503 with Retry-After that came within the request bound.
fn assert_unavailable_in_time(what: &str, response: &reqwest::Response, took: Duration) {
    assert_eq!(response.status(), 503, "{what}");
    assert_eq!(response.headers()["retry-after"], "5", "{what}");
    assert!(took < REQUEST_BOUND, "{what} took {took:?}");
}

/// `GET path` with the key; the response and how long it took.
async fn get_timed(app: &TestApp, path: &str, key: &str) -> (reqwest::Response, Duration) {
    timed(async {
        app.client
            .get(app.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    })
    .await
}

/// `/readyz`'s body and how long it took.
async fn readiness(app: &TestApp) -> (Value, Duration) {
    let (response, took) = timed(app.client.get(app.url("/readyz")).send()).await;
    let response = response.unwrap();
    assert_eq!(response.status(), 200);
    (response.json().await.unwrap(), took)
}

/// `/readyz`'s body once `check` says `want`. Readiness is a state the instance refreshes each
/// second (each check bounded by 2 s), so a backend that just went away shows within about 3 s;
/// every call itself answers at once from that state.
async fn readiness_when(app: &TestApp, check: &str, want: &str) -> Value {
    eventually(Duration::from_secs(8), "readiness to follow", || async {
        let (ready, took) = readiness(app).await;
        assert!(took < Duration::from_secs(3), "readyz took {took:?}");
        (ready["checks"][check] == want).then_some(ready)
    })
    .await
}

async fn metrics_text(app: &TestApp) -> String {
    app.get_text("/metrics").await
}

// ---- the proxy's blackhole ------------------------------------------------------------------

/// A read that gets nothing, neither bytes nor a close, for `wait`.
async fn assert_silent(stream: &mut TcpStream, wait: Duration, what: &str) {
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(wait, stream.read(&mut buf)).await;
    assert!(read.is_err(), "{what}: got {read:?} while blackholed");
}

#[tokio::test]
async fn the_proxy_blackhole_keeps_connections_open_and_forwards_nothing_until_it_forwards_again() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_address = upstream.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        while let Ok((mut socket, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let (mut from, mut to) = socket.split();
                let _ = tokio::io::copy(&mut from, &mut to).await;
            });
        }
    });
    let proxy = Proxy::start(upstream_address).await;
    let mut old = TcpStream::connect(proxy.address()).await.unwrap();
    old.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    old.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");

    proxy.set_mode(Mode::Blackhole);
    old.write_all(b"held").await.unwrap();
    // A connection opened during the hang is accepted and goes nowhere either.
    let mut new = TcpStream::connect(proxy.address()).await.unwrap();
    new.write_all(b"late").await.unwrap();
    assert_silent(&mut old, Duration::from_millis(500), "open connection").await;
    assert_silent(&mut new, Duration::from_millis(100), "new connection").await;

    // Healed: what was sent meanwhile arrives, as TCP delivers it after a partition.
    proxy.set_mode(Mode::Forward);
    for (stream, sent) in [(&mut old, b"held"), (&mut new, b"late")] {
        let mut back = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut back))
            .await
            .expect("the held bytes arrive once the proxy forwards")
            .unwrap();
        assert_eq!(&back, sent);
    }
    // Down still cuts, from a blackhole too.
    proxy.set_mode(Mode::Blackhole);
    proxy.set_mode(Mode::Down);
    let mut buf = [0u8; 4];
    let read = tokio::time::timeout(Duration::from_secs(1), old.read(&mut buf))
        .await
        .expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    echo.abort();
}

// ---- the database hangs ---------------------------------------------------------------------

/// Calls that hang at once in the saturation part of the database test.
const HUNG_REQUESTS: usize = 50;

#[tokio::test]
async fn a_hung_database_answers_503_within_the_bound_holds_few_threads_and_loses_no_count() {
    if std::env::var("REKLAMA_TEST_DATABASE").as_deref() != Ok("postgres") {
        eprintln!(
            "skipped: an embedded SQLite file has no connection to hang (its lock wait is \
             bounded instead, see a_locked_sqlite_database_...); run with \
             REKLAMA_TEST_DATABASE=postgres"
        );
        return;
    }
    let (app, proxy) = app_with_database_behind_a_proxy(|_| {}).await;
    let cap = app.handles.db.in_flight().1;
    assert_eq!(cap, 8, "twice the tests' pool of 4");
    let key = app.customer_key("Acme").await;
    let (id, path) = app.advert_with_link(&key, "https://example.com/").await;
    let cookie = format!("reklama_session={}", sign_in(&app, &key).await.cookie);
    // Warm: the link and the card are in memory from now on.
    assert_eq!(app.click(&path, BROWSER).await.status(), 302);
    assert_eq!(app.cards("user_id=before").await.len(), 1);

    proxy.set_mode(Mode::Blackhole);
    let hang = Instant::now();

    // Redirects and serves answer from memory, at once.
    let (mut clicks, mut cards) = (1u64, 1u64);
    for i in 0..20 {
        let (answer, took) = timed(app.click(&path, BROWSER)).await;
        assert_eq!(answer.status(), 302, "click {i}");
        assert!(took < Duration::from_millis(500), "click {i} took {took:?}");
        clicks += 1;
        let (served, took) = timed(app.cards(&format!("user_id=hang-{i}"))).await;
        assert!(took < Duration::from_millis(500), "serve {i} took {took:?}");
        cards += served.len() as u64;
    }
    assert_eq!(cards, 21);

    // Everything that needs the database answers 503 within the bound (side by side, to keep
    // the test short).
    let report_path = format!("/api/v1/adverts/{id}/report");
    let intake_body = advert_json(&png(64, 64));
    let (
        (report, report_took),
        (intake, intake_took),
        (list, list_took),
        (dashboard, dashboard_took),
    ) = tokio::join!(
        get_timed(&app, &report_path, &key),
        timed(app.post_advert(&key, &intake_body)),
        get_timed(&app, "/api/v1/adverts", &key),
        timed(async {
            app.client
                .get(app.url("/dashboard"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap()
        }),
    );
    assert_unavailable_in_time("report", &report, report_took);
    assert_unavailable_in_time("intake", &intake, intake_took);
    assert_unavailable_in_time("the advert list", &list, list_took);
    assert_eq!(dashboard.status(), 503, "the dashboard");
    assert!(
        dashboard_took < REQUEST_BOUND,
        "the dashboard took {dashboard_took:?}"
    );

    // Fifty at once: each answers within the bound, and they hold `cap` blocking threads at
    // most, so another database route still answers within the bound beside them.
    let hung: Vec<_> = (0..HUNG_REQUESTS)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url("/api/v1/adverts");
            let key = key.clone();
            tokio::spawn(timed(async move {
                client.get(url).bearer_auth(key).send().await.unwrap()
            }))
        })
        .collect();
    let most_in_flight = {
        let db = app.handles.db.clone();
        tokio::spawn(async move {
            let mut most = 0;
            for _ in 0..40 {
                most = most.max(db.in_flight().0);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            most
        })
    };
    let (other, took) = get_timed(&app, &format!("/api/v1/adverts/{id}"), &key).await;
    assert_unavailable_in_time("another database route beside the hung ones", &other, took);
    for (n, call) in hung.into_iter().enumerate() {
        let (response, took) = call.await.unwrap();
        assert_unavailable_in_time(&format!("hung request {n}"), &response, took);
    }
    assert_eq!(
        most_in_flight.await.unwrap(),
        cap,
        "the hung database holds exactly the cap of blocking threads"
    );
    let outcomes = app.handles.db.outcomes();
    assert!(outcomes.saturated.load(Ordering::Relaxed) > 0);
    assert!(outcomes.timeouts.load(Ordering::Relaxed) > 0);

    // Readiness sees it, within its own bound.
    let ready = readiness_when(&app, "database", "down").await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    let text = metrics_text(&app).await;
    let timeouts = metric(
        &text,
        "reklama_backend_timeouts_total",
        &[("backend", "database")],
    )
    .unwrap_or(0.0);
    assert!(timeouts >= 1.0, "{text}");
    eprintln!(
        "{:?} of hang: {} timeouts, {} refused for want of a slot",
        hang.elapsed(),
        outcomes.timeouts.load(Ordering::Relaxed),
        outcomes.saturated.load(Ordering::Relaxed)
    );

    // The database answers again: everything resumes, without a restart, and the counts are
    // exact.
    proxy.set_mode(Mode::Forward);
    let back = Instant::now();
    let body = eventually(
        Duration::from_secs(20),
        "a report after the hang",
        || async {
            let (status, body) = app
                .get_json(&format!("/api/v1/adverts/{id}/report"), &key)
                .await;
            (status == 200).then_some(body)
        },
    )
    .await;
    eprintln!(
        "the first report came {:?} after the hang ended",
        back.elapsed()
    );
    assert_eq!(body["clicks"].as_u64(), Some(clicks), "{body}");
    assert_eq!(body["impressions"].as_u64(), Some(cards), "{body}");
    assert_eq!(body["duplicate_clicks"].as_u64(), Some(0), "{body}");
    let (created, took) = timed(app.post_advert(&key, &advert_json(&png(64, 64)))).await;
    assert_eq!(created.status(), 201);
    assert!(took < REQUEST_BOUND, "intake after the hang took {took:?}");
    let created = created.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    // The job workers went on polling through the hang: the new advert's offload runs.
    eventually(
        Duration::from_secs(10),
        "the offload after the hang",
        || async {
            let (_, advert) = app
                .get_json(&format!("/api/v1/adverts/{created}"), &key)
                .await;
            (advert["offload_status"] == "done").then_some(())
        },
    )
    .await;
    let (list, took) = get_timed(&app, "/api/v1/adverts", &key).await;
    assert_eq!(list.status(), 200);
    assert!(
        took < REQUEST_BOUND,
        "the list after the hang took {took:?}"
    );
    let listed: Value = list.json().await.unwrap();
    assert_eq!(
        listed["adverts"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    eventually(Duration::from_secs(10), "every thread released", || async {
        (app.handles.db.in_flight().0 == 0).then_some(())
    })
    .await;
    readiness_when(&app, "database", "up").await;
    app.stop().await;
}

#[tokio::test]
async fn a_link_whose_advert_changed_as_the_database_hung_still_redirects_at_once() {
    if std::env::var("REKLAMA_TEST_DATABASE").as_deref() != Ok("postgres") {
        eprintln!(
            "skipped: needs a database connection to hang; run with REKLAMA_TEST_DATABASE=postgres"
        );
        return;
    }
    let (app, proxy) = app_with_database_behind_a_proxy(|_| {}).await;
    let key = app.customer_key("Acme").await;
    let (id, path) = app.advert_with_link(&key, "https://example.com/").await;
    assert_eq!(app.click(&path, BROWSER).await.status(), 302);
    let code = path.rsplit('/').next().unwrap().to_owned();

    proxy.set_mode(Mode::Blackhole);
    // The advert changed just before the hang: its link is read again, and cannot be.
    let (_, took) = timed(app.handles.tracking.forget_link(&code)).await;
    assert!(took < REQUEST_BOUND, "forgetting took {took:?}");
    for i in 0..10 {
        let (answer, took) = timed(app.click(&path, BROWSER)).await;
        assert_eq!(answer.status(), 302, "click {i}");
        assert_eq!(answer.headers()["location"], "https://example.com/");
        assert!(took < Duration::from_millis(500), "click {i} took {took:?}");
    }

    proxy.set_mode(Mode::Forward);
    let report = eventually(Duration::from_secs(20), "a report", || async {
        let (status, body) = app
            .get_json(&format!("/api/v1/adverts/{id}/report"), &key)
            .await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(report["clicks"], 11);
    app.stop().await;
}

#[tokio::test]
async fn a_locked_sqlite_database_answers_503_within_the_bound_and_resumes() {
    if std::env::var("REKLAMA_TEST_DATABASE").as_deref() == Ok("postgres") {
        eprintln!("skipped: the SQLite lock wait; PostgreSQL hangs in a_hung_database_...");
        return;
    }
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        manual_flush(s);
        s.tracking.duplicate_window_secs = 0;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let (id, path) = app.advert_with_link(&key, "https://example.com/").await;
    assert_eq!(app.click(&path, BROWSER).await.status(), 302);

    // Another process holds the write lock: writers wait for busy_timeout
    // (database.statement_timeout_ms), below the call timeout, then answer 503.
    let file = app
        .env
        .database_url
        .strip_prefix("sqlite://")
        .unwrap()
        .to_owned();
    let mut holder = diesel::SqliteConnection::establish(&file).unwrap();
    // The holder waits out a write of the app's own (a job worker's) before it takes the lock.
    holder
        .batch_execute(
            "PRAGMA busy_timeout = 10000; BEGIN EXCLUSIVE; UPDATE customers SET name = name",
        )
        .unwrap();
    let (intake, took) = timed(app.post_advert(&key, &advert_json(&png(64, 64)))).await;
    assert_unavailable_in_time("intake while locked", &intake, took);
    let (report, took) = get_timed(&app, &format!("/api/v1/adverts/{id}/report"), &key).await;
    assert_unavailable_in_time("a report (it flushes first) while locked", &report, took);
    // Readers are not blocked by a writer (WAL), nor are redirects.
    let (list, took) = get_timed(&app, "/api/v1/adverts", &key).await;
    assert_eq!(list.status(), 200);
    assert!(took < REQUEST_BOUND);
    assert_eq!(app.click(&path, BROWSER).await.status(), 302);

    holder.batch_execute("COMMIT").unwrap();
    let created = app.post_advert(&key, &advert_json(&png(64, 64))).await;
    assert_eq!(created.status(), 201);
    let body = app.report(&key, id).await;
    assert_eq!(body["clicks"].as_u64(), Some(2), "{body}");
    app.stop().await;
}

// ---- the cloud store hangs ------------------------------------------------------------------

#[tokio::test]
async fn a_hung_cloud_store_leaves_intake_working_retries_the_offload_and_resumes() {
    let endpoint = std::env::var("REKLAMA_TEST_S3_ENDPOINT").expect(
        "REKLAMA_TEST_S3_ENDPOINT must point at an S3-compatible server (see scripts/start-services)",
    );
    let bucket = format!("reklama-{}", random_suffix());
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "create bucket");
    let direct = url::Url::parse(&endpoint).unwrap();
    let proxy = Proxy::start(socket_address(&direct, 80)).await;
    let proxied = through(&direct, &proxy);
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        s.cloud.url = format!("s3://{bucket}/archive");
        s.cloud.s3_endpoint = proxied.trim_end_matches('/').to_owned();
        s.cloud.s3_allow_http = true;
        s.cloud.s3_access_key_id = "test".into();
        s.cloud.s3_secret_access_key = "test".into();
        // Writes get a short deadline here so that several attempts fit in the test; reads
        // (the /full answer) keep the default.
        s.cloud.write_timeout_ms = 1000;
        s.jobs.max_attempts = 1000;
    })
    .await;
    let key = app.customer_key("Acme").await;

    proxy.set_mode(Mode::Blackhole);
    let (response, took) = timed(app.post_advert(&key, &advert_json(&png(64, 64)))).await;
    assert_eq!(response.status(), 201, "intake needs no cloud store");
    assert!(took < REQUEST_BOUND, "intake took {took:?}");
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let retried = &app.handles.jobs.stats().retried;
    eventually(
        Duration::from_secs(15),
        "two offload attempts timing out",
        || async { (retried.load(Ordering::SeqCst) >= 2).then_some(()) },
    )
    .await;
    let (_, advert) = app.get_json(&format!("/api/v1/adverts/{id}"), &key).await;
    assert_eq!(advert["offload_status"], "pending", "{advert}");
    assert_eq!(app.handles.jobs.stats().dead.load(Ordering::SeqCst), 0);

    let (full, took) = get_timed(&app, &format!("/api/v1/adverts/{id}/full"), &key).await;
    assert!(
        matches!(full.status().as_u16(), 409 | 503),
        "{}",
        full.status()
    );
    assert!(full.headers().contains_key("retry-after"));
    assert!(took < REQUEST_BOUND, "/full took {took:?}");
    let ready = readiness_when(&app, "cloud", "down").await;
    assert_eq!(ready["checks"]["database"], "up", "{ready}");
    let text = metrics_text(&app).await;
    let timeouts = metric(
        &text,
        "reklama_backend_timeouts_total",
        &[("backend", "cloud")],
    )
    .unwrap_or(0.0);
    assert!(timeouts >= 2.0, "{text}");

    proxy.set_mode(Mode::Forward);
    eventually(
        Duration::from_secs(20),
        "the offload after the hang",
        || async {
            let (_, advert) = app.get_json(&format!("/api/v1/adverts/{id}"), &key).await;
            (advert["offload_status"] == "done").then_some(())
        },
    )
    .await;
    let (status, record) = app
        .get_json(&format!("/api/v1/adverts/{id}/full"), &key)
        .await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["id"].as_i64(), Some(id), "{record}");
    app.stop().await;
}

// ---- Redis hangs ----------------------------------------------------------------------------

#[tokio::test]
async fn a_hung_redis_leaves_serves_and_redirects_within_twice_its_timeout_and_loses_no_count() {
    let (app, proxy) = app_with_redis_behind_a_proxy().await;
    let bound = Duration::from_millis(2 * app_redis_timeout_ms());
    let key = app.customer_key("Acme").await;
    let (id, path) = app.advert_with_link(&key, "https://example.com/").await;
    assert_eq!(app.click(&path, BROWSER).await.status(), 302);
    assert_eq!(app.cards("user_id=before").await.len(), 1);

    proxy.set_mode(Mode::Blackhole);
    let (mut clicks, mut cards) = (1u64, 1u64);
    // Users this instance has not seen are read from Redis: each read gives up in time.
    let serves: Vec<_> = (0..30)
        .map(|i| {
            let client = app.client.clone();
            let url = app.url(&format!("/api/v1/serve?user_id=new-{i}"));
            tokio::spawn(timed(async move { client.get(url).send().await.unwrap() }))
        })
        .collect();
    for (i, serve) in serves.into_iter().enumerate() {
        let (response, took) = serve.await.unwrap();
        assert_eq!(response.status(), 200, "serve {i}");
        assert!(took < bound, "serve {i} took {took:?}");
        let body: Value = response.json().await.unwrap();
        cards += body["adverts"].as_array().map_or(0, Vec::len) as u64;
    }
    for i in 0..30 {
        let (answer, took) = timed(app.click(&path, BROWSER)).await;
        assert_eq!(answer.status(), 302, "click {i}");
        assert!(took < bound, "click {i} took {took:?}");
        clicks += 1;
    }
    assert_eq!(cards, 31);
    readiness_when(&app, "redis", "down").await;

    proxy.set_mode(Mode::Forward);
    // A report drains Redis and the journal; pushes held by the hang may still be on their way,
    // so wait for the figure, then check that a later report does not count anything twice.
    let body = eventually(Duration::from_secs(20), "every count reported", || async {
        let (status, body) = app
            .get_json(&format!("/api/v1/adverts/{id}/report"), &key)
            .await;
        (status == 200 && body["clicks"].as_u64() == Some(clicks)).then_some(body)
    })
    .await;
    assert_eq!(body["impressions"].as_u64(), Some(cards), "{body}");
    let again = app.report(&key, id).await;
    assert_eq!(again["clicks"].as_u64(), Some(clicks), "{again}");
    assert_eq!(again["impressions"].as_u64(), Some(cards), "{again}");
    app.stop().await;
}

/// `redis.timeout_ms` as the tests run it (the default).
#[tokio::test]
async fn a_hung_redis_leaves_serves_of_capped_adverts_within_twice_its_timeout() {
    let (app, proxy) = app_with_redis_behind_a_proxy().await;
    let bound = Duration::from_millis(2 * app_redis_timeout_ms());
    let key = app.customer_key("Acme").await;
    let mut body = advert_json(&png(64, 64));
    body["max_impressions"] = serde_json::json!(1000);
    assert_eq!(app.post_advert(&key, &body).await.status(), 201);
    // Served once: the advert is tracked, and its lease is spent or given back when idle.
    eventually(
        Duration::from_secs(5),
        "the capped advert served",
        || async {
            (app.cards(&format!("user_id=warm-{}", random_suffix()))
                .await
                .len()
                == 1)
                .then_some(())
        },
    )
    .await;

    proxy.set_mode(Mode::Blackhole);
    // New users (a Redis read each) wanting a capped advert this instance holds no lease for
    // (a lease call each), while the background round is stuck on the same Redis.
    for round in 0..3 {
        let serves: Vec<_> = (0..20)
            .map(|i| {
                let client = app.client.clone();
                let url = app.url(&format!("/api/v1/serve?user_id=hung-{round}-{i}&count=3"));
                tokio::spawn(timed(async move { client.get(url).send().await.unwrap() }))
            })
            .collect();
        for (i, serve) in serves.into_iter().enumerate() {
            let (response, took) = serve.await.unwrap();
            assert_eq!(response.status(), 200, "round {round}, serve {i}");
            assert!(took < bound, "round {round}, serve {i} took {took:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    proxy.set_mode(Mode::Forward);
    app.stop().await;
}

fn app_redis_timeout_ms() -> u64 {
    reklama::main_app::Settings::load_with(None, Vec::new())
        .unwrap()
        .redis
        .timeout_ms
}
