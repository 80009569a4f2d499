//! Counts under faults of the shared tier: Redis losing its data between two instances' pushes
//! and the database, instances racing on the same drain, drains too large for one Redis call,
//! and a database that refuses drains for a while. Every figure is exact.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use diesel::{Connection, PgConnection, RunQueryDsl, SqliteConnection};
use reklama::main_app::Settings;

use crate::helpers::{
    BROWSER, TestApp, TestEnv, empty_redis, eventually, keys_matching, manual_flush, metric,
    random_suffix, redis_conn, redis_url, spawn_app_with,
};

/// Clicks waiting in Redis's pending hash.
async fn pending_in_redis(prefix: &str) -> u64 {
    let mut conn = redis_conn().await;
    let clicks: Option<u64> = redis::cmd("HGET")
        .arg(format!("{prefix}{{counters}}:pending"))
        .arg("_clicks")
        .query_async(&mut conn)
        .await
        .unwrap();
    clicks.unwrap_or(0)
}

/// Two instances sharing Redis under `prefix`, each with its own journal, counting only when
/// asked and every click as billable.
pub(crate) async fn two_instances(prefix: &str) -> (TestApp, TestApp) {
    let env = TestEnv::new();
    let shared = |journal: &'static str| {
        let prefix = prefix.to_owned();
        let dir = env.dir.path().join(journal);
        move |s: &mut Settings| {
            manual_flush(s);
            s.tracking.duplicate_window_secs = 0;
            s.redis.url = redis_url();
            s.redis.prefix = prefix;
            s.tracking.journal_dir = dir.display().to_string();
        }
    };
    let a = spawn_app_with(env.clone(), None, shared("journal-a")).await;
    let b = spawn_app_with(env.clone(), None, shared("journal-b")).await;
    (a, b)
}

/// A report's clicks, or `None` for a 503 (counts known to be incomplete); anything else fails.
async fn reported_clicks(app: &TestApp, key: &str, id: i64) -> Option<u64> {
    let (status, body) = app
        .get_json(&format!("/api/v1/adverts/{id}/report"), key)
        .await;
    assert!(status == 200 || status == 503, "{status}: {body}");
    (status == 200).then(|| body["clicks"].as_u64().unwrap())
}

#[tokio::test]
async fn redis_losing_its_data_loses_no_click_of_two_instances() {
    let prefix = format!("reklama-test-{}:", random_suffix());
    let (a, b) = two_instances(&prefix).await;
    let key = a.customer_key("Acme").await;
    let (id, path) = a.advert_with_link(&key, "https://example.com/").await;
    const BEFORE: u64 = 300;
    const AFTER: u64 = 200;
    for i in 0..BEFORE {
        let app = if i % 3 == 0 { &a } else { &b };
        assert_eq!(app.click(&path, BROWSER).await.status(), 302);
    }
    // Every click waits in Redis for the database, and nowhere else but in what each instance
    // keeps of its pushes.
    eventually(Duration::from_secs(10), "the clicks in redis", || async {
        (pending_in_redis(&prefix).await == BEFORE).then_some(())
    })
    .await;
    empty_redis(&prefix).await;
    for i in 0..AFTER {
        let app = if i % 2 == 0 { &a } else { &b };
        assert_eq!(app.click(&path, BROWSER).await.status(), 302);
    }
    // Both instances see the loss (one on its next push, the other when it checks the epoch)
    // and push their share again; until then a report may say 503, never a wrong figure.
    let total = eventually(
        Duration::from_secs(30),
        "a report of every click",
        || async {
            let clicks = reported_clicks(&b, &key, id).await?;
            assert!(clicks <= BEFORE + AFTER, "{clicks} clicks reported");
            (clicks == BEFORE + AFTER).then_some(clicks)
        },
    )
    .await;
    assert_eq!(total, BEFORE + AFTER);
    // Nothing comes back twice afterwards, on either instance.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(a.report(&key, id).await["clicks"].as_u64(), Some(total));
    assert_eq!(b.report(&key, id).await["clicks"].as_u64(), Some(total));
    a.stop().await;
    b.stop().await;
    empty_redis(&prefix).await;
}

#[tokio::test]
async fn abandoned_drains_raced_by_two_instances_are_applied_once_and_never_answer_500() {
    let prefix = format!("reklama-test-{}:", random_suffix());
    let (a, b) = two_instances(&prefix).await;
    let key = a.customer_key("Acme").await;
    let (id, _) = a.advert_with_link(&key, "https://example.com/").await;
    let bucket = time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .div_euclid(3600)
        * 3600;
    // Drains an instance moved out of Redis and died before applying (their ids start with a
    // time long past, as earlier versions' do): every instance's next flush takes them.
    const DRAINS: u64 = 8;
    let mut conn = redis_conn().await;
    for d in 0..DRAINS {
        let drain = format!("1000000000000-crashed{d}");
        let _: () = redis::cmd("HSET")
            .arg(format!("{prefix}{{counters}}:drain:{drain}"))
            .arg(format!("{id}:{bucket}:0"))
            .arg(10)
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = redis::cmd("SADD")
            .arg(format!("{prefix}{{counters}}:drains"))
            .arg(&drain)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    // Reports on both instances at once: both apply the same drains concurrently.
    let reports = (0..6).flat_map(|_| [&a, &b]).map(|app| {
        let key = key.clone();
        async move { reported_clicks(app, &key, id).await }
    });
    let answers = futures_util::future::join_all(reports).await;
    for clicks in answers.into_iter().flatten() {
        assert!(clicks <= DRAINS * 10, "{clicks} clicks reported");
    }
    assert_eq!(
        a.report(&key, id).await["clicks"].as_u64(),
        Some(DRAINS * 10)
    );
    assert_eq!(
        b.report(&key, id).await["clicks"].as_u64(),
        Some(DRAINS * 10)
    );
    let left: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{prefix}{{counters}}:drains"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    a.stop().await;
    b.stop().await;
    empty_redis(&prefix).await;
}

#[tokio::test]
async fn answered_push_ids_are_forgotten_by_the_next_push_and_kept_a_week_otherwise() {
    let prefix = format!("reklama-test-{}:", random_suffix());
    let (a, b) = two_instances(&prefix).await;
    let key = a.customer_key("Acme").await;
    let (id, path) = a.advert_with_link(&key, "https://example.com/").await;
    for round in 0..20u64 {
        assert_eq!(a.click(&path, BROWSER).await.status(), 302);
        eventually(Duration::from_secs(10), "the click in redis", || async {
            (pending_in_redis(&prefix).await == round + 1).then_some(())
        })
        .await;
    }
    let push_ids = keys_matching(&format!("{prefix}{{counters}}:push:*")).await;
    // Twenty pushes; each forgot the one before it, so only the last waits for its turn.
    assert_eq!(push_ids.len(), 1, "{push_ids:?}");
    let mut conn = redis_conn().await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(&push_ids[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 6 * 24 * 3600, "remembered for {ttl} s");
    assert_eq!(b.report(&key, id).await["clicks"].as_u64(), Some(20));
    a.stop().await;
    b.stop().await;
    empty_redis(&prefix).await;
}

#[tokio::test]
async fn a_report_includes_the_clicks_another_instance_is_moving_to_the_database_at_that_moment() {
    let prefix = format!("reklama-test-{}:", random_suffix());
    let (a, b) = two_instances(&prefix).await;
    let key = a.customer_key("Acme").await;
    let (id, path) = a.advert_with_link(&key, "https://example.com/").await;
    const CLICKS: u64 = 40;
    for _ in 0..CLICKS {
        assert_eq!(b.click(&path, BROWSER).await.status(), 302);
    }
    eventually(Duration::from_secs(10), "the clicks in redis", || async {
        (pending_in_redis(&prefix).await == CLICKS).then_some(())
    })
    .await;
    // Another instance's flush has just moved them out of Redis (what its drain script does)
    // and has not applied them yet.
    let mut conn = redis_conn().await;
    let epoch: String = redis::cmd("GET")
        .arg(format!("{prefix}{{counters}}:epoch"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let next: u64 = redis::cmd("INCR")
        .arg(format!("{prefix}{{counters}}:gen"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let drain = format!("{epoch}-{}", next - 1);
    let _: () = redis::pipe()
        .cmd("RENAME")
        .arg(format!("{prefix}{{counters}}:pending"))
        .arg(format!("{prefix}{{counters}}:drain:{drain}"))
        .cmd("SADD")
        .arg(format!("{prefix}{{counters}}:drains"))
        .arg(&drain)
        .cmd("HSET")
        .arg(format!("{prefix}{{counters}}:drain_started"))
        .arg(&drain)
        .arg(reklama::platform::db::now_ms())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(a.report(&key, id).await["clicks"].as_u64(), Some(CLICKS));
    // Whoever applies it again finds it applied.
    assert_eq!(b.report(&key, id).await["clicks"].as_u64(), Some(CLICKS));
    assert_eq!(a.report(&key, id).await["clicks"].as_u64(), Some(CLICKS));
    a.stop().await;
    b.stop().await;
    empty_redis(&prefix).await;
}

/// The start of the current UTC hour, in Unix seconds.
fn this_hour() -> i64 {
    time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .div_euclid(3600)
        * 3600
}

/// Drains waiting in Redis under `prefix`.
async fn drains_in_redis(prefix: &str) -> Vec<String> {
    let mut conn = redis_conn().await;
    redis::cmd("SMEMBERS")
        .arg(format!("{prefix}{{counters}}:drains"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_drain_too_large_for_one_redis_call_is_read_in_pages_and_applied_whole() {
    let prefix = format!("reklama-test-{}:", random_suffix());
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        manual_flush(s);
        s.redis.url = redis_url();
        s.redis.prefix = prefix.clone();
        // Redis and this debug build's client take longer than this to build and read one reply
        // of the whole drain below; a page of it takes Redis about a millisecond.
        s.redis.timeout_ms = 200;
        // A debug build on a busy machine may take longer than a request's deadline to write
        // the drain's 40 000 rows.
        s.server.request_deadline_ms = 60_000;
        s.database.call_timeout_ms = 60_000;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let (id, _) = app.advert_with_link(&key, "https://example.com/").await;
    // What a busy deployment's pushes leave in the pending hash: every metric of 40 000 hours,
    // 240 000 fields, written in commands small enough for the other tests sharing Redis.
    const HOURS: i64 = 40_000;
    let pending = format!("{prefix}{{counters}}:pending");
    let mut conn = redis_conn().await;
    let hours: Vec<i64> = (0..HOURS).map(|h| this_hour() - h * 3600).collect();
    for chunk in hours.chunks(1000) {
        let mut hset = redis::cmd("HSET");
        hset.arg(&pending);
        for hour in chunk {
            for metric in 0..6 {
                hset.arg(format!("{id}:{hour}:{metric}")).arg(1);
            }
        }
        let _: () = hset.query_async(&mut conn).await.unwrap();
    }
    let _: () = redis::cmd("HSET")
        .arg(&pending)
        .arg("_clicks")
        .arg(HOURS)
        .query_async(&mut conn)
        .await
        .unwrap();
    // A page may still meet a moment when the machine is busier than the deadline allows:
    // the report then says 503, and the next one, a second later, reads the same drain again.
    let mut answers = Vec::new();
    let body = loop {
        let (status, body) = app
            .get_json(
                &format!("/api/v1/adverts/{id}/report?granularity=day"),
                &key,
            )
            .await;
        answers.push(status);
        match status {
            200 => break body,
            503 if answers.len() < 10 => tokio::time::sleep(Duration::from_secs(1)).await,
            _ => panic!("no report of the drain; answers {answers:?}, last {body}"),
        }
    };
    for metric in ["clicks", "bot_clicks", "duplicate_clicks", "impressions"] {
        assert_eq!(
            body[metric].as_u64(),
            Some(HOURS as u64),
            "{metric}: {body}"
        );
    }
    assert!(drains_in_redis(&prefix).await.is_empty());
    assert!(
        keys_matching(&format!("{prefix}{{counters}}:drain:*"))
            .await
            .is_empty()
    );
    // Applied once: a second report reads the same figures.
    let again = app.report_with_query(&key, id, "granularity=day").await;
    assert_eq!(again["clicks"].as_u64(), Some(HOURS as u64));
    app.stop().await;
    empty_redis(&prefix).await;
}

/// Another writer holding the test's database: the instance's counter flushes wait for it
/// until their own deadline, then fail. Reads go on. Released when the sender is dropped.
fn hold_the_database(env: &TestEnv) -> (mpsc::Sender<()>, JoinHandle<()>) {
    let (release, released) = mpsc::channel::<()>();
    let (held, holding) = mpsc::channel();
    let url = env.database_url.clone();
    let holder = std::thread::spawn(move || {
        let wait = move || {
            held.send(()).unwrap();
            let _ = released.recv();
        };
        match url.strip_prefix("sqlite://") {
            Some(path) => {
                let mut writer = SqliteConnection::establish(path).unwrap();
                // The instance may be writing at this moment (a click's journal, a session):
                // wait for it rather than fail the take-over.
                diesel::sql_query("PRAGMA busy_timeout = 10000")
                    .execute(&mut writer)
                    .unwrap();
                diesel::sql_query("BEGIN IMMEDIATE")
                    .execute(&mut writer)
                    .unwrap();
                wait();
                diesel::sql_query("ROLLBACK").execute(&mut writer).unwrap();
            }
            None => {
                let mut writer = PgConnection::establish(&url).unwrap();
                diesel::sql_query("BEGIN").execute(&mut writer).unwrap();
                diesel::sql_query("LOCK TABLE counter_flushes IN EXCLUSIVE MODE")
                    .execute(&mut writer)
                    .unwrap();
                wait();
                diesel::sql_query("ROLLBACK").execute(&mut writer).unwrap();
            }
        }
    });
    holding.recv().unwrap();
    (release, holder)
}

/// One instance sharing Redis under `prefix`, counting only when asked and every click as
/// billable, whose flushes give up on a held database (`hold_the_database`) within a fraction
/// of a second; `tweak` sets the rest. With a customer's key, an advert and its tracked path.
async fn instance_giving_up_quickly(
    prefix: &str,
    tweak: impl FnOnce(&mut Settings),
) -> (TestApp, String, i64, String) {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        manual_flush(s);
        s.tracking.duplicate_window_secs = 0;
        s.redis.url = redis_url();
        s.redis.prefix = prefix.to_owned();
        s.database.statement_timeout_ms = 300;
        s.database.lock_timeout_ms = 200;
        tweak(s);
    })
    .await;
    let key = app.customer_key("Acme").await;
    let (id, path) = app.advert_with_link(&key, "https://example.com/").await;
    (app, key, id, path)
}

#[tokio::test]
async fn while_the_database_refuses_a_drain_it_stays_the_only_one_and_memory_stays_bounded() {
    let prefix = format!("reklama-test-{}:", random_suffix());
    let (app, key, id, path) = instance_giving_up_quickly(&prefix, |_| {}).await;
    let tracking = app.handles.tracking.clone();
    let mut clicks = 0;
    let (release, holder) = hold_the_database(&app.env);
    const ROUNDS: u64 = 5;
    for round in 0..ROUNDS {
        for _ in 0..10 {
            assert_eq!(app.click(&path, BROWSER).await.status(), 302);
            clicks += 1;
        }
        // The first flush moves the pending clicks to a drain; every later one retries that
        // drain and leaves the clicks since in the pending hash.
        let waiting = 10 * round.max(1);
        eventually(Duration::from_secs(10), "the clicks in redis", || async {
            (pending_in_redis(&prefix).await == waiting).then_some(())
        })
        .await;
        assert!(
            tracking.flush().await.is_err(),
            "round {round}: the database is held"
        );
        let drains = drains_in_redis(&prefix).await;
        assert_eq!(drains.len(), 1, "round {round}: {drains:?}");
        let pending = pending_in_redis(&prefix).await;
        assert_eq!(
            pending,
            if round == 0 { 0 } else { 10 * round },
            "round {round}"
        );
        // Kept against a loss of Redis: the drain's generation and the pending one.
        let (generations, bytes) = tracking.kept();
        assert!(
            generations <= 2,
            "round {round}: {generations} generations kept"
        );
        assert!(bytes > 0, "round {round}: the pushes are kept");
    }
    let text = app.get_text("/metrics").await;
    assert_eq!(
        metric(&text, "reklama_counter_redis_drains", &[]),
        Some(1.0),
        "{text}"
    );
    let kept = metric(&text, "reklama_counter_kept_generations", &[]).unwrap_or(0.0);
    assert!((1.0..=2.0).contains(&kept), "{kept} generations kept");
    drop(release);
    holder.join().unwrap();
    assert_eq!(app.report(&key, id).await["clicks"].as_u64(), Some(clicks));
    assert!(drains_in_redis(&prefix).await.is_empty());
    assert_eq!(tracking.kept().0, 0, "every kept push is in the database");
    assert_eq!(app.report(&key, id).await["clicks"].as_u64(), Some(clicks));
    app.stop().await;
    empty_redis(&prefix).await;
}

#[tokio::test]
async fn past_the_kept_bytes_bound_counts_go_to_the_journal_and_none_is_left_without_a_copy() {
    use std::sync::atomic::Ordering::Relaxed;

    let prefix = format!("reklama-test-{}:", random_suffix());
    // Any push kept at all is past the bound.
    let (app, key, id, path) =
        instance_giving_up_quickly(&prefix, |s| s.tracking.redis_kept_bytes = 1).await;
    let tracking = app.handles.tracking.clone();
    let (release, holder) = hold_the_database(&app.env);
    // The first clicks reach Redis and are kept; the database refuses their drain.
    assert_eq!(app.click(&path, BROWSER).await.status(), 302);
    eventually(Duration::from_secs(10), "the click in redis", || async {
        (pending_in_redis(&prefix).await == 1).then_some(())
    })
    .await;
    assert!(tracking.flush().await.is_err());
    let kept = tracking.kept();
    assert_eq!(kept.0, 1, "the drain's generation is kept");
    let pushes = tracking.stats().redis_pushes.load(Relaxed);
    // Past the bound, the next clicks go to the journal: nothing more to keep.
    for _ in 0..20 {
        assert_eq!(app.click(&path, BROWSER).await.status(), 302);
    }
    eventually(
        Duration::from_secs(10),
        "the clicks in the journal",
        || async { (tracking.journal_bytes() > 0).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(tracking.stats().redis_pushes.load(Relaxed), pushes);
    assert_eq!(tracking.kept(), kept, "nothing more kept in memory");
    assert_eq!(pending_in_redis(&prefix).await, 0);
    drop(release);
    holder.join().unwrap();
    // The database takes the drain and the journal; the next clicks go to Redis again.
    assert_eq!(app.report(&key, id).await["clicks"].as_u64(), Some(21));
    assert_eq!(tracking.kept().0, 0);
    assert_eq!(app.click(&path, BROWSER).await.status(), 302);
    eventually(Duration::from_secs(10), "a push to redis again", || async {
        (tracking.stats().redis_pushes.load(Relaxed) > pushes).then_some(())
    })
    .await;
    assert_eq!(app.report(&key, id).await["clicks"].as_u64(), Some(22));
    app.stop().await;
    empty_redis(&prefix).await;
}
