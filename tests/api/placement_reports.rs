//! Reports split by placement: a card served for a placement counts its impression, and the click
//! on its tracked link, under that placement, through the journal or Redis, while the totals stay
//! what they were.

use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, TestEnv, empty_redis, eventually, random_suffix, redis_conn, redis_url, spawn_app_with,
};
use crate::variants::{create, photo, rendered};

/// Nothing reaches the database unless a report asks, and every click counts as billable.
fn manual_flush(s: &mut reklama::main_app::Settings) {
    crate::helpers::manual_flush(s);
    s.tracking.duplicate_window_secs = 0;
}

/// An advert with its placement variants rendered and served by this instance.
async fn advert_with_variants(app: &TestApp, key: &str) -> i64 {
    let id = create(app, key, "Summer in Sochi", &photo(1200, 800)).await;
    rendered(app, key, id).await;
    id
}

/// Serves `user` one card for `placement`, waiting for the change poll to pick the variant up.
async fn placement_card(app: &TestApp, user: &str, placement: &str) -> Value {
    let query = format!("user_id={user}&placement={placement}");
    let card = eventually(Duration::from_secs(5), "variant served", || async {
        app.cards(&query).await.first().cloned()
    })
    .await;
    assert_eq!(card["placement"], placement);
    card
}

/// `(placement, clicks, impressions)` of each entry of a `placements` list.
fn shares(list: &Value) -> Vec<(Value, u64, u64)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["placement"].clone(),
                p["clicks"].as_u64().unwrap(),
                p["impressions"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_placement_card_and_its_click_are_reported_under_that_placement_and_generic_apart() {
    let app = spawn_app_with(TestEnv::new(), None, manual_flush).await;
    let key = app.customer_key("Acme").await;
    let id = advert_with_variants(&app, &key).await;
    let card = placement_card(&app, "reader-1", "medium_rectangle").await;
    let generic = app.cards("user_id=reader-2").await;
    assert_eq!(generic.len(), 1);
    assert!(generic[0].get("placement").is_none());
    assert_eq!(
        app.follow(card["click_url"].as_str().unwrap())
            .await
            .status(),
        302
    );

    let body = app.report_with_query(&key, id, "by=placement").await;
    let expected = vec![(Value::Null, 0, 1), (json!("medium_rectangle"), 1, 1)];
    assert_eq!(shares(&body["placements"]), expected);
    assert_eq!(body["series"].as_array().unwrap().len(), 1);
    assert_eq!(shares(&body["series"][0]["placements"]), expected);
    // The totals are those of the report without a split, which has no placements at all.
    let plain = app.report_with_query(&key, id, "").await;
    assert_eq!(
        (body["clicks"].as_u64(), body["impressions"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(plain["clicks"], body["clicks"]);
    assert_eq!(plain["impressions"], body["impressions"]);
    assert_eq!(plain["ctr"], body["ctr"]);
    assert!(plain.get("placements").is_none());
    assert!(plain["series"][0].get("placements").is_none());
    // Without Redis, the counts travelled through the local journal.
    assert!(
        app.handles
            .tracking
            .stats()
            .journal_appends
            .load(Ordering::Relaxed)
            > 0
    );

    // CSV: a row per bucket and placement, the generic card's placement empty.
    let response = app
        .client
        .get(app.url(&format!(
            "/api/v1/adverts/{id}/report?by=placement&format=csv&granularity=day"
        )))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let csv = response.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "bucket,placement,clicks,bot_clicks,duplicate_clicks,impressions,suspicious_clicks,\
         suspicious_impressions,conversions,conversion_value,cvr"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].ends_with("T00:00:00Z,,0,0,0,1,0,0,0,0,0"), "{csv}");
    assert!(
        lines[2].ends_with("T00:00:00Z,medium_rectangle,1,0,0,1,0,0,0,0,0"),
        "{csv}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_token_whose_placement_was_changed_is_not_attributed_to_any_placement() {
    let app = spawn_app_with(TestEnv::new(), None, manual_flush).await;
    let key = app.customer_key("Acme").await;
    let id = advert_with_variants(&app, &key).await;
    let card = placement_card(&app, "reader-1", "medium_rectangle").await;
    let (base, token) = card["click_url"]
        .as_str()
        .unwrap()
        .split_once("?t=")
        .unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(token).unwrap();
    assert_eq!(
        bytes.len(),
        35,
        "user, advert, placement, issue time, creative and MAC"
    );
    // Claim the card was a large rectangle (the next placement of the catalogue).
    bytes[16] += 1;
    let forged = format!("{base}?t={}", URL_SAFE_NO_PAD.encode(&bytes));
    assert_eq!(app.follow(&forged).await.status(), 302);

    let body = app.report_with_query(&key, id, "by=placement").await;
    // Still a click (the redirect counts it), but the generic card's, like a click without token.
    assert_eq!(body["clicks"], 1);
    assert_eq!(
        shares(&body["placements"]),
        vec![(Value::Null, 1, 0), (json!("medium_rectangle"), 0, 1)]
    );
    app.stop().await;
}

#[tokio::test]
async fn placements_travel_through_redis_shared_by_two_instances() {
    let env = TestEnv::new();
    let prefix = format!("reklama-test-{}:", random_suffix());
    let shared = |journal: &'static str| {
        let prefix = prefix.clone();
        let dir = env.dir.path().join(journal);
        move |s: &mut reklama::main_app::Settings| {
            manual_flush(s);
            s.redis.url = redis_url();
            s.redis.prefix = prefix;
            s.serving.token_secret = "shared-secret-of-this-deployment".into();
            s.tracking.journal_dir = dir.display().to_string();
        }
    };
    let a = spawn_app_with(env.clone(), None, shared("journal-a")).await;
    let b = spawn_app_with(env.clone(), None, shared("journal-b")).await;
    let key = a.customer_key("Acme").await;
    let id = advert_with_variants(&a, &key).await;
    // Served by A, clicked through B.
    let card = placement_card(&a, "reader-1", "large_rectangle").await;
    assert_eq!(
        b.follow(card["click_url"].as_str().unwrap()).await.status(),
        302
    );
    let generic = a.cards("user_id=reader-2").await;
    assert_eq!(
        b.follow(generic[0]["click_url"].as_str().unwrap())
            .await
            .status(),
        302
    );
    // Give the last micro-batches the push interval to reach Redis.
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Each instance journals locally only what Redis did not take, and reads only its own
    // journal: B can see A's impressions, and A B's clicks, only through Redis.
    for app in [&b, &a] {
        let body = app.report_with_query(&key, id, "by=placement").await;
        assert_eq!(
            shares(&body["placements"]),
            vec![(Value::Null, 1, 1), (json!("large_rectangle"), 1, 1)]
        );
        assert_eq!(
            (body["clicks"].as_u64(), body["impressions"].as_u64()),
            (Some(2), Some(2))
        );
    }
    a.stop().await;
    b.stop().await;
    empty_redis(&prefix).await;
}

#[tokio::test]
async fn counts_left_in_redis_by_an_earlier_version_are_the_generic_cards() {
    let prefix = format!("reklama-test-{}:", random_suffix());
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        manual_flush(s);
        s.redis.url = redis_url();
        s.redis.prefix = prefix.clone();
    })
    .await;
    let key = app.customer_key("Acme").await;
    let id = advert_with_variants(&app, &key).await;
    placement_card(&app, "reader-1", "square").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // What an earlier version pushed: totals per advert, hour and metric, no placement.
    let bucket = time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .div_euclid(3600)
        * 3600;
    let mut conn = redis_conn().await;
    let _: () = redis::cmd("HINCRBY")
        .arg(format!("{prefix}{{counters}}:pending"))
        .arg(format!("{id}:{bucket}:3"))
        .arg(4)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("HINCRBY")
        .arg(format!("{prefix}{{counters}}:pending"))
        .arg(format!("{id}:{bucket}:0"))
        .arg(2)
        .query_async(&mut conn)
        .await
        .unwrap();

    let body = app.report_with_query(&key, id, "by=placement").await;
    assert_eq!(
        shares(&body["placements"]),
        vec![(Value::Null, 2, 4), (json!("square"), 0, 1)]
    );
    assert_eq!(
        (body["clicks"].as_u64(), body["impressions"].as_u64()),
        (Some(2), Some(5))
    );
    app.stop().await;
    empty_redis(&prefix).await;
}

#[tokio::test]
async fn a_journal_segment_left_by_an_earlier_version_is_the_generic_cards() {
    let env = TestEnv::new();
    let journal = env.dir.path().join("journal");
    let app = spawn_app_with(env.clone(), None, manual_flush).await;
    let key = app.customer_key("Acme").await;
    let id = advert_with_variants(&app, &key).await;
    placement_card(&app, "reader-1", "medium_rectangle").await;
    // A closed segment in the format of earlier versions: six numbers a line.
    let bucket = time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .div_euclid(3600)
        * 3600;
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::write(
        journal.join("seg-1000000000-earlier0-00000001.log"),
        format!("{id} {bucket} 3 1 0 9\n"),
    )
    .unwrap();

    let body = app.report_with_query(&key, id, "by=placement").await;
    assert_eq!(
        shares(&body["placements"]),
        vec![(Value::Null, 3, 9), (json!("medium_rectangle"), 0, 1)]
    );
    assert_eq!(body["bot_clicks"], 1);
    assert_eq!(body["placements"][0]["bot_clicks"], 1);
    app.stop().await;
}

#[tokio::test]
async fn the_dashboard_advert_page_lists_the_counts_per_placement() {
    let app = spawn_app_with(TestEnv::new(), None, manual_flush).await;
    let key = app.customer_key("Acme").await;
    let id = advert_with_variants(&app, &key).await;
    let card = placement_card(&app, "reader-1", "medium_rectangle").await;
    assert_eq!(
        app.follow(card["click_url"].as_str().unwrap())
            .await
            .status(),
        302
    );
    app.cards("user_id=reader-2").await;
    let html = app
        .dashboard_page(&key, &format!("/dashboard/adverts/{id}"))
        .await;
    let table = html
        .split("<table id=\"placement-counts\">")
        .nth(1)
        .and_then(|rest| rest.split("</table>").next())
        .unwrap_or_else(|| panic!("no placement table in {html}"));
    let row = |placement: &str| {
        table
            .split(&format!("<tr data-placement=\"{placement}\">"))
            .nth(1)
            .and_then(|rest| rest.split("</tr>").next())
            .unwrap_or_else(|| panic!("no row {placement:?} in {table}"))
            .to_owned()
    };
    let rectangle = row("medium_rectangle");
    assert!(
        rectangle.contains("<td class=\"num impressions\">1</td>"),
        "{rectangle}"
    );
    assert!(
        rectangle.contains("<td class=\"num clicks\">1</td>"),
        "{rectangle}"
    );
    let generic = row("");
    assert!(generic.contains("Generic card"), "{generic}");
    assert!(
        generic.contains("<td class=\"num impressions\">1</td>"),
        "{generic}"
    );
    assert!(
        generic.contains("<td class=\"num clicks\">0</td>"),
        "{generic}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_split_is_refused_naming_the_parameter() {
    let app = spawn_app_with(TestEnv::new(), None, manual_flush).await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "Summer in Sochi", &photo(400, 300)).await;
    let (status, body) = app
        .get_json(&format!("/api/v1/adverts/{id}/report?by=genre"), &key)
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed");
    assert_eq!(body["error"]["fields"][0]["field"], "by");
    assert_eq!(
        body["error"]["fields"][0]["allowed"],
        json!(["placement", "creative", "device", "country"])
    );
    app.stop().await;
}
