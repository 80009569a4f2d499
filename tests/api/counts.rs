//! Counts under faults of the shared tier: Redis losing its data between two instances' pushes
//! and the database, and instances racing on the same drain. Every figure is exact.

use std::time::Duration;

use crate::helpers::{
    BROWSER, TestApp, TestEnv, empty_redis, eventually, keys_matching, manual_flush, random_suffix,
    redis_conn, redis_url, spawn_app_with,
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

/// Two instances sharing this test's Redis prefix, each with its own journal.
/// Two instances sharing Redis under `prefix`, each with its own journal, counting only when
/// asked and every click as billable.
pub(crate) async fn two_instances(prefix: &str) -> (TestApp, TestApp) {
    let env = TestEnv::new();
    let shared = |journal: &'static str| {
        let prefix = prefix.to_owned();
        let dir = env.dir.path().join(journal);
        move |s: &mut reklama::main_app::Settings| {
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
