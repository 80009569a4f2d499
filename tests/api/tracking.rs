//! The tracked-link redirect and the counter pipeline, end to end.

use std::time::Duration;

use diesel::prelude::*;
use futures_util::future::join_all;
use reklama::domain::AdvertId;
use reklama::platform::db::DbError;
use reklama::platform::db::schema::advert_stats;

use crate::helpers::{
    BROWSER, TestApp, TestEnv, eventually, manual_flush, random_suffix, spawn_app_with,
};

const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// Counts in the database right now: (clicks, bot_clicks, duplicate_clicks, impressions).
async fn stored_counts(app: &TestApp, advert: i64) -> (i64, i64, i64, i64) {
    let rows: Vec<(i64, i64, i64, i64)> = app
        .handles
        .db
        .run(move |conn| {
            advert_stats::table
                .filter(advert_stats::advert_id.eq(advert))
                .select((
                    advert_stats::clicks,
                    advert_stats::bot_clicks,
                    advert_stats::duplicate_clicks,
                    advert_stats::impressions,
                ))
                .load(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    rows.iter().fold((0, 0, 0, 0), |a, r| {
        (a.0 + r.0, a.1 + r.1, a.2 + r.2, a.3 + r.3)
    })
}

#[tokio::test]
async fn the_redirect_sends_the_stored_target_byte_for_byte_and_is_never_cached() {
    let app = spawn_app_with(TestEnv::new(), None, manual_flush).await;
    let key = app.customer_key("Acme").await;
    let target = "https://Example.com/Landing/%7Esale?utm_source=reklama&x=%2F#Top";
    let (_, path) = app.advert_with_link(&key, target).await;
    let response = app.click(&path, BROWSER).await;
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"].as_bytes(), target.as_bytes());
    assert_eq!(response.headers()["cache-control"], "private, no-store");
    assert_eq!(
        response.headers()["referrer-policy"],
        "strict-origin-when-cross-origin"
    );
    // Query strings on the tracked link never change where it leads.
    let response = app
        .click(&format!("{path}?next=https://evil.example"), BROWSER)
        .await;
    assert_eq!(response.headers()["location"].as_bytes(), target.as_bytes());
    app.stop().await;
}

#[tokio::test]
async fn unknown_codes_are_404_and_cacheable_briefly() {
    let app = spawn_app_with(TestEnv::new(), None, manual_flush).await;
    for path in [
        "/r/AAAAAAAAAAAA",
        "/r/not-a-code",
        "/r/%00",
        &format!("/r/{}", "x".repeat(300)),
    ] {
        let response = app.click(path, BROWSER).await;
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(
            response.headers()["cache-control"],
            "public, max-age=60",
            "{path}"
        );
    }
    // Paths that are no tracked link at all get the API's 404 answer.
    for path in ["/r", "/r/", "/r/a/b", "/rAAAA"] {
        let response = app.click(path, BROWSER).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    // A tracked link takes GET and HEAD only, and says so.
    let post = app
        .client
        .post(app.url("/r/AAAAAAAAAAAA"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    app.stop().await;
}

#[tokio::test]
async fn redirect_status_can_be_307() {
    let app = spawn_app_with(TestEnv::new(), None, |s| s.tracking.redirect_status = 307).await;
    let key = app.customer_key("Acme").await;
    let (_, path) = app.advert_with_link(&key, "https://example.com/").await;
    assert_eq!(app.click(&path, BROWSER).await.status(), 307);
    app.stop().await;
}

#[tokio::test]
async fn head_and_prefetch_requests_redirect_without_counting() {
    let app = spawn_app_with(TestEnv::new(), None, manual_flush).await;
    let key = app.customer_key("Acme").await;
    let (id, path) = app.advert_with_link(&key, "https://example.com/").await;
    let head = app
        .client
        .head(app.url(&path))
        .header("user-agent", BROWSER)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 302);
    assert_eq!(head.headers()["location"], "https://example.com/");
    let prefetch = app
        .client
        .get(app.url(&path))
        .header("user-agent", BROWSER)
        .header("sec-purpose", "prefetch")
        .send()
        .await
        .unwrap();
    assert_eq!(prefetch.status(), 302);
    assert_eq!(app.click(&path, BROWSER).await.status(), 302);
    let body = app.report(&key, id).await;
    assert_eq!(
        (body["clicks"].as_u64(), body["bot_clicks"].as_u64()),
        (Some(1), Some(0))
    );
    app.stop().await;
}

#[tokio::test]
async fn concurrent_clicks_are_counted_exactly_and_bots_apart() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        manual_flush(s);
        s.tracking.duplicate_window_secs = 0;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let (id, path) = app.advert_with_link(&key, "https://example.com/").await;
    let clients = 32;
    let per_client = 60;
    let answered = join_all((0..clients).map(|c| {
        let app = &app;
        let path = path.clone();
        async move {
            let mut found = 0u64;
            for i in 0..per_client {
                let ua = if (c * per_client + i) % 10 == 0 {
                    GOOGLEBOT
                } else {
                    BROWSER
                };
                if app.click(&path, ua).await.status() == 302 {
                    found += 1;
                }
            }
            found
        }
    }))
    .await;
    let total: u64 = answered.iter().sum();
    assert_eq!(total, (clients * per_client) as u64);
    let body = app.report(&key, id).await;
    assert_eq!(body["bot_clicks"].as_u64(), Some(total / 10));
    assert_eq!(body["clicks"].as_u64(), Some(total - total / 10));
    assert_eq!(body["duplicate_clicks"].as_u64(), Some(0));
    app.stop().await;
}

#[tokio::test]
async fn repeat_clicks_within_the_window_are_duplicates() {
    let app = spawn_app_with(TestEnv::new(), None, manual_flush).await;
    let key = app.customer_key("Acme").await;
    let (id, path) = app.advert_with_link(&key, "https://example.com/").await;
    for _ in 0..5 {
        assert_eq!(app.click(&path, BROWSER).await.status(), 302);
    }
    // Another browser on the same address is another visitor.
    assert_eq!(
        app.click(&path, "Mozilla/5.0 (Macintosh) Safari/605.1.15")
            .await
            .status(),
        302
    );
    let body = app.report(&key, id).await;
    assert_eq!(body["clicks"].as_u64(), Some(2));
    assert_eq!(body["duplicate_clicks"].as_u64(), Some(4));
    app.stop().await;
}

#[tokio::test]
async fn a_report_flushes_pending_clicks_to_the_database_first() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        manual_flush(s);
        s.tracking.duplicate_window_secs = 0;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let (id, path) = app.advert_with_link(&key, "https://example.com/").await;
    for _ in 0..25 {
        app.click(&path, BROWSER).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        stored_counts(&app, id).await,
        (0, 0, 0, 0),
        "nothing flushed yet"
    );
    let body = app.report(&key, id).await;
    assert_eq!(body["clicks"].as_u64(), Some(25));
    assert_eq!(stored_counts(&app, id).await, (25, 0, 0, 0));
    app.stop().await;
}

#[tokio::test]
async fn the_flush_interval_moves_clicks_without_a_report() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        manual_flush(s);
        s.tracking.flush_interval_secs = 1;
        s.tracking.duplicate_window_secs = 0;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let (id, path) = app.advert_with_link(&key, "https://example.com/").await;
    for _ in 0..7 {
        app.click(&path, BROWSER).await;
    }
    eventually(Duration::from_secs(5), "interval flush", || async {
        (stored_counts(&app, id).await == (7, 0, 0, 0)).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn the_flush_threshold_moves_clicks_without_a_report() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        manual_flush(s);
        s.tracking.flush_threshold = 40;
        s.tracking.duplicate_window_secs = 0;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let (id, path) = app.advert_with_link(&key, "https://example.com/").await;
    for _ in 0..39 {
        app.click(&path, BROWSER).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stored_counts(&app, id).await,
        (0, 0, 0, 0),
        "below the threshold"
    );
    app.click(&path, BROWSER).await;
    eventually(Duration::from_secs(5), "threshold flush", || async {
        (stored_counts(&app, id).await == (40, 0, 0, 0)).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_graceful_stop_flushes_every_click_and_a_restart_reports_them() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        manual_flush(s);
        s.tracking.duplicate_window_secs = 0;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let (id, path) = app.advert_with_link(&key, "https://example.com/").await;
    for _ in 0..30 {
        app.click(&path, BROWSER).await;
    }
    let env = app.stop().await;
    let app = spawn_app_with(env, None, manual_flush).await;
    assert_eq!(stored_counts(&app, id).await, (30, 0, 0, 0));
    assert_eq!(app.report(&key, id).await["clicks"].as_u64(), Some(30));
    app.stop().await;
}

#[tokio::test]
async fn reports_are_for_the_owner_only_and_come_as_csv_too() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        manual_flush(s);
        s.tracking.duplicate_window_secs = 0;
    })
    .await;
    let alice = app.customer_key("Alice").await;
    let bob = app.customer_key("Bob").await;
    let (id, path) = app.advert_with_link(&alice, "https://example.com/").await;
    for _ in 0..3 {
        app.click(&path, BROWSER).await;
    }
    let (status, _) = app
        .get_json(&format!("/api/v1/adverts/{id}/report"), &bob)
        .await;
    assert_eq!(status, 404);
    let (status, _) = app
        .get_json(&format!("/api/v1/adverts/{id}/report"), "rk_nope")
        .await;
    assert_eq!(status, 401);

    let body = app.report(&alice, id).await;
    assert_eq!(body["advert_id"].as_i64(), Some(id));
    assert_eq!(body["impressions"].as_u64(), Some(0));
    assert_eq!(body["ctr"].as_f64(), Some(0.0));
    let series = body["series"].as_array().unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0]["clicks"].as_u64(), Some(3));
    assert!(series[0]["bucket"].as_str().unwrap().ends_with(":00:00Z"));

    let csv = app
        .client
        .get(app.url(&format!(
            "/api/v1/adverts/{id}/report?format=csv&granularity=day"
        )))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "bucket,clicks,bot_clicks,duplicate_clicks,impressions,suspicious_clicks,\
         suspicious_impressions,conversions,conversion_value,cvr"
    );
    assert_eq!(lines.len(), 2);
    assert!(
        lines[1].ends_with("T00:00:00Z,3,0,0,0,0,0,0,0,0"),
        "{}",
        lines[1]
    );

    let (status, error) = app
        .get_json(
            &format!("/api/v1/adverts/{id}/report?granularity=week&from=soon"),
            &alice,
        )
        .await;
    assert_eq!(status, 422);
    let fields: Vec<&str> = error["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["from", "granularity"]);
    // A range that ends before the clicks holds none of them.
    let (_, early) = app
        .get_json(
            &format!("/api/v1/adverts/{id}/report?from=2020-01-01&to=2020-01-02"),
            &alice,
        )
        .await;
    assert_eq!(early["clicks"].as_u64(), Some(0));
    assert!(early["series"].as_array().unwrap().is_empty());

    let (status, summary) = app.get_json("/api/v1/reports", &alice).await;
    assert_eq!(status, 200);
    let adverts = summary["adverts"].as_array().unwrap();
    assert_eq!(adverts.len(), 1);
    assert_eq!(adverts[0]["advert_id"].as_i64(), Some(id));
    assert_eq!(adverts[0]["clicks"].as_u64(), Some(3));
    let (_, empty) = app.get_json("/api/v1/reports", &bob).await;
    assert!(empty["adverts"].as_array().unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn two_instances_sharing_redis_report_the_sum_exactly() {
    let prefix = format!("reklama-test-{}:", random_suffix());
    let (a, b) = crate::counts::two_instances(&prefix).await;
    let key = a.customer_key("Acme").await;
    let (id, path) = a.advert_with_link(&key, "https://example.com/").await;
    for i in 0..100 {
        let app = if i % 3 == 0 { &a } else { &b };
        assert_eq!(app.click(&path, BROWSER).await.status(), 302);
    }
    // Give instance A's last micro-batch the push interval to reach Redis, then ask B.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(b.report(&key, id).await["clicks"].as_u64(), Some(100));
    for _ in 0..10 {
        b.click(&path, BROWSER).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.report(&key, id).await["clicks"].as_u64(), Some(110));
    assert_eq!(stored_counts(&a, id).await.0, 110);
    assert!(
        a.handles
            .tracking
            .stats()
            .redis_pushes
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn without_a_reachable_redis_counting_goes_on_locally() {
    // Nothing listens on port 1: every Redis call fails at once.
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        manual_flush(s);
        s.tracking.flush_interval_secs = 1;
        s.tracking.duplicate_window_secs = 0;
        s.redis.url = "redis://127.0.0.1:1".into();
        s.redis.prefix = format!("reklama-test-{}:", random_suffix());
    })
    .await;
    let key = app.customer_key("Acme").await;
    let (id, path) = app.advert_with_link(&key, "https://example.com/").await;
    for _ in 0..20 {
        assert_eq!(app.click(&path, BROWSER).await.status(), 302);
    }
    // The local journal takes the clicks and the background flush moves them to the database.
    eventually(
        Duration::from_secs(5),
        "journaled clicks in the database",
        || async { (stored_counts(&app, id).await == (20, 0, 0, 0)).then_some(()) },
    )
    .await;
    assert!(
        app.handles
            .tracking
            .stats()
            .journal_appends
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    // A report cannot vouch for clicks other instances may have left in Redis: it says so.
    let response = app
        .client
        .get(app.url(&format!("/api/v1/adverts/{id}/report")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    app.stop().await;
}

#[tokio::test]
async fn impressions_recorded_by_serving_appear_in_reports_with_ctr() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        manual_flush(s);
        s.tracking.duplicate_window_secs = 0;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let (id, path) = app.advert_with_link(&key, "https://example.com/").await;
    for _ in 0..8 {
        app.handles.tracking.record(
            AdvertId(id),
            reklama::modules::tracking::Metric::Impression,
            None,
            None,
            Default::default(),
        );
    }
    for _ in 0..2 {
        app.click(&path, BROWSER).await;
    }
    let body = app.report(&key, id).await;
    assert_eq!(body["impressions"].as_u64(), Some(8));
    assert_eq!(body["ctr"].as_f64(), Some(0.25));
    app.stop().await;
}

/// The embedded database's counter tables are stored in key order (WITHOUT ROWID) from
/// `counters_without_rowid` on: counts stored before it come through the rebuild, and back
/// through its revert, row for row.
mod counter_tables {
    use diesel::sql_types::{BigInt, Text};
    use diesel::{Connection, SqliteConnection};
    use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

    use super::*;

    const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
    /// Each table with its third key column (`''` for the totals, which have none).
    const TABLES: [(&str, &str); 5] = [
        ("advert_stats", "''"),
        ("advert_placement_stats", "placement"),
        ("advert_creative_stats", "CAST(creative AS TEXT)"),
        ("advert_device_stats", "device"),
        ("advert_country_stats", "country"),
    ];

    #[derive(Debug, Clone, PartialEq, QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        advert_id: i64,
        #[diesel(sql_type = BigInt)]
        bucket: i64,
        #[diesel(sql_type = Text)]
        share: String,
        #[diesel(sql_type = BigInt)]
        clicks: i64,
        #[diesel(sql_type = BigInt)]
        impressions: i64,
        #[diesel(sql_type = BigInt)]
        suspicious_clicks: i64,
    }

    fn rows(conn: &mut SqliteConnection) -> Vec<(&'static str, Vec<Row>)> {
        TABLES
            .iter()
            .map(|(table, share)| {
                let sql = format!(
                    "SELECT advert_id, bucket, {share} AS share, clicks, impressions, \
                     suspicious_clicks FROM {table} ORDER BY advert_id, bucket, share"
                );
                (*table, diesel::sql_query(sql).load(conn).unwrap())
            })
            .collect()
    }

    /// Whether each table still has a rowid (a WITHOUT ROWID table has none to select).
    fn rowids(conn: &mut SqliteConnection) -> Vec<bool> {
        TABLES
            .iter()
            .map(|(table, _)| {
                diesel::sql_query(format!("SELECT rowid FROM {table} LIMIT 1"))
                    .execute(conn)
                    .is_ok()
            })
            .collect()
    }

    fn is_rebuild(name: &dyn std::fmt::Display) -> bool {
        name.to_string().ends_with("_counters_without_rowid")
    }

    #[test]
    fn counts_stored_before_the_tables_are_rebuilt_are_kept_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reklama.db");
        let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        for migration in conn.pending_migrations(SQLITE).unwrap() {
            if is_rebuild(&migration.name()) {
                break;
            }
            conn.run_migration(&*migration).unwrap();
        }
        // Written out of key order, so that the rebuilt tables' order is theirs, not the input's.
        for (n, (advert, bucket)) in [(7, 7200), (3, 3600), (7, 3600), (3, 0)].iter().enumerate() {
            let n = n as i64 + 1;
            let counts = format!("{n}, {}, {}", n * 10, n * 100);
            let columns = "clicks, impressions, suspicious_clicks";
            for sql in [
                format!(
                    "INSERT INTO advert_stats (advert_id, bucket, {columns}) VALUES ({advert}, {bucket}, {counts})"
                ),
                format!(
                    "INSERT INTO advert_placement_stats (advert_id, bucket, placement, {columns}) VALUES ({advert}, {bucket}, 'sidebar', {counts}), ({advert}, {bucket}, 'banner', {counts})"
                ),
                format!(
                    "INSERT INTO advert_creative_stats (advert_id, bucket, creative, {columns}) VALUES ({advert}, {bucket}, 2, {counts}), ({advert}, {bucket}, 1, {counts})"
                ),
                format!(
                    "INSERT INTO advert_device_stats (advert_id, bucket, device, {columns}) VALUES ({advert}, {bucket}, 'mobile', {counts})"
                ),
                format!(
                    "INSERT INTO advert_country_stats (advert_id, bucket, country, {columns}) VALUES ({advert}, {bucket}, 'DE', {counts})"
                ),
            ] {
                diesel::sql_query(sql).execute(&mut conn).unwrap();
            }
        }
        let before = rows(&mut conn);
        assert_eq!(before[0].1.len(), 4);
        assert_eq!(before[1].1.len(), 8);
        assert_eq!(rowids(&mut conn), [true; 5]);

        let rebuild =
            diesel::migration::MigrationSource::<diesel::sqlite::Sqlite>::migrations(&SQLITE)
                .unwrap()
                .into_iter()
                .find(|m| is_rebuild(&m.name()))
                .unwrap();
        let applied = conn.run_pending_migrations(SQLITE).unwrap();
        assert!(applied.contains(&rebuild.name().version()), "{applied:?}");
        assert_eq!(rows(&mut conn), before, "every count through the rebuild");
        assert_eq!(rowids(&mut conn), [false; 5], "stored in key order");
        // Still additive upserts on the same keys.
        diesel::sql_query(
            "INSERT INTO advert_stats (advert_id, bucket, clicks) VALUES (3, 0, 5) \
             ON CONFLICT (advert_id, bucket) DO UPDATE SET clicks = advert_stats.clicks + excluded.clicks",
        )
        .execute(&mut conn)
        .unwrap();
        let after = rows(&mut conn);
        assert_eq!(
            after[0].1[0],
            Row {
                clicks: 9,
                ..before[0].1[0].clone()
            },
            "{after:?}"
        );

        conn.revert_migration(&*rebuild).unwrap();
        assert_eq!(rows(&mut conn), after, "and back");
        assert_eq!(rowids(&mut conn), [true; 5]);
    }
}
