//! Invalid traffic: clicks past the per-address and per-user thresholds, clicks on expired
//! impression tokens, and serves past the per-address rate are answered as usual but counted
//! as suspicious: never billed, never spending a cap, not in CTR.

use std::time::Duration;

use reklama::main_app::Settings;
use serde_json::{Value, json};

use crate::helpers::{BROWSER, TestApp, TestEnv, metric, spawn_app_with};
use crate::serving::create;

/// `reklama_suspicious_clicks_total{reason}` from `/metrics`.
async fn suspicious_clicks_metric(app: &TestApp, reason: &str) -> Option<f64> {
    let text = app.get_text("/metrics").await;
    metric(
        &text,
        "reklama_suspicious_clicks_total",
        &[("reason", reason)],
    )
}

/// Waits until at least `margin` seconds remain of the current window of `window` seconds, so
/// that a test's requests fall in one window.
async fn clear_of_window_end(window: u64, margin: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = window - now % window;
    if left < margin {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

/// The `(clicks, suspicious_clicks, impressions, suspicious_impressions)` of a report.
fn counts(report: &Value) -> (u64, u64, u64, u64) {
    let n = |field: &str| {
        report[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field}: {report}"))
    };
    (
        n("clicks"),
        n("suspicious_clicks"),
        n("impressions"),
        n("suspicious_impressions"),
    )
}

/// The click URL of the card `user` is served now.
async fn click_url(app: &TestApp, user: &str, advert: i64) -> String {
    let cards = app.cards(&format!("user_id={user}")).await;
    assert_eq!(cards.len(), 1, "{user}");
    assert_eq!(cards[0]["advert_id"], advert);
    cards[0]["click_url"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn clicks_from_one_address_past_the_hourly_threshold_are_suspicious_and_spend_no_click_cap() {
    clear_of_window_end(3600, 30).await;
    let app = spawn_app_with(TestEnv::new(), None, |s: &mut Settings| {
        s.tracking.max_billable_clicks_per_address_per_hour = 2;
        s.tracking.duplicate_window_secs = 0;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let advert = create(&app, &key, "travel", json!({ "max_clicks": 3 })).await;
    // Six users, one address: each a genuine token, each a click.
    for n in 0..6 {
        let url = click_url(&app, &format!("user-{n}"), advert).await;
        let response = app.follow(&url).await;
        assert_eq!(response.status(), 302, "every click is redirected");
        assert_eq!(
            response.headers()["location"],
            "https://example.com/offers/sochi?utm_source=reklama"
        );
    }
    // Two billable; the rest never reached max_clicks, so the advert is still served.
    let served = app.cards("user_id=someone-else").await;
    assert_eq!(
        served.len(),
        1,
        "max_clicks = 3 is not reached by suspicious clicks"
    );
    let report = app.report(&key, advert).await;
    assert_eq!(counts(&report), (2, 4, 7, 0), "{report}");
    assert_eq!(report["ctr"], json!(0.2857), "{report}");
    // The customer's advert page shows them apart from the billable ones.
    let page = app
        .dashboard_page(&key, &format!("/dashboard/adverts/{advert}"))
        .await;
    assert!(page.contains(r#"<dd id="total-clicks">2</dd>"#), "{page}");
    assert!(
        page.contains(r#"<dd id="total-suspicious-clicks">4</dd>"#),
        "{page}"
    );
    // Operators see why.
    assert_eq!(
        suspicious_clicks_metric(&app, "address_threshold").await,
        Some(4.0)
    );
    assert_eq!(
        suspicious_clicks_metric(&app, "user_threshold").await,
        Some(0.0)
    );
    // Another advert has an allowance of its own.
    let other = create(&app, &key, "finance", json!({})).await;
    let cards = app.cards("user_id=user-x&genres=finance").await;
    assert_eq!(cards[0]["advert_id"], other);
    app.follow(cards[0]["click_url"].as_str().unwrap()).await;
    assert_eq!(counts(&app.report(&key, other).await).0, 1);
    app.stop().await;
}

#[tokio::test]
async fn clicks_of_one_user_past_the_hourly_threshold_are_suspicious_whatever_the_address() {
    clear_of_window_end(3600, 30).await;
    let app = spawn_app_with(TestEnv::new(), None, |s: &mut Settings| {
        s.tracking.max_billable_clicks_per_user_per_hour = 2;
        s.tracking.duplicate_window_secs = 0;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let advert = create(&app, &key, "travel", json!({})).await;
    // One user served three times (the frequency cap), each card clicked.
    let mut urls = Vec::new();
    for _ in 0..3 {
        urls.push(click_url(&app, "heavy-clicker", advert).await);
    }
    // Replaying a token counts against the same user too.
    urls.push(urls[0].clone());
    for url in &urls {
        assert_eq!(app.follow(url).await.status(), 302);
    }
    // Another user from the same address is not held back by the first one's clicks.
    let url = click_url(&app, "light-clicker", advert).await;
    assert_eq!(app.follow(&url).await.status(), 302);
    let report = app.report(&key, advert).await;
    assert_eq!(counts(&report), (3, 2, 4, 0), "{report}");
    assert_eq!(
        suspicious_clicks_metric(&app, "user_threshold").await,
        Some(2.0)
    );
    app.stop().await;
}

#[tokio::test]
async fn a_click_on_an_expired_impression_token_is_redirected_but_not_billable() {
    let app = spawn_app_with(TestEnv::new(), None, |s: &mut Settings| {
        s.serving.token_ttl_secs = 1;
        s.tracking.duplicate_window_secs = 0;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let advert = create(&app, &key, "travel", json!({ "max_clicks": 1 })).await;
    let old = click_url(&app, "user-1", advert).await;
    let t = old.split("t=").nth(1).unwrap();
    assert_eq!(t.len(), 47, "a token with its issue time and creative");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let response = app.follow(&old).await;
    assert_eq!(response.status(), 302);
    // The expired click neither billed nor reached max_clicks = 1: the advert is still served.
    let fresh = click_url(&app, "user-2", advert).await;
    let response = app.follow(&fresh).await;
    assert_eq!(response.status(), 302);
    let report = app.report(&key, advert).await;
    assert_eq!(counts(&report), (1, 1, 2, 0), "{report}");
    assert_eq!(
        suspicious_clicks_metric(&app, "expired_token").await,
        Some(1.0)
    );
    app.stop().await;
}

#[tokio::test]
async fn serves_from_one_address_past_the_rate_are_answered_with_suspicious_impressions() {
    clear_of_window_end(60, 20).await;
    let app = spawn_app_with(TestEnv::new(), None, |s: &mut Settings| {
        s.serving.max_serves_per_address_per_minute = 3;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let advert = create(&app, &key, "travel", json!({ "max_impressions": 4 })).await;
    for n in 0..8 {
        let cards = app.cards(&format!("user_id=user-{n}")).await;
        assert_eq!(cards.len(), 1, "serve {n} is answered");
        assert_eq!(cards[0]["advert_id"], advert);
    }
    let report = app.report(&key, advert).await;
    assert_eq!(counts(&report), (0, 0, 3, 5), "{report}");
    let text = app.get_text("/metrics").await;
    assert_eq!(
        metric(&text, "reklama_suspicious_serves_total", &[]),
        Some(5.0)
    );
    assert_eq!(report["ctr"], json!(0.0), "no clicks: {report}");
    app.stop().await;
}

#[tokio::test]
async fn the_thresholds_are_per_address_through_trusted_proxies_only() {
    clear_of_window_end(60, 20).await;
    let app = spawn_app_with(TestEnv::new(), None, |s: &mut Settings| {
        s.serving.max_serves_per_address_per_minute = 1;
        s.limits.trusted_proxies = vec!["127.0.0.1/32".into()];
    })
    .await;
    let key = app.customer_key("Acme").await;
    let advert = create(&app, &key, "travel", json!({})).await;
    let serve_for = |client: &'static str, user: usize| {
        app.client
            .get(app.url(&format!("/api/v1/serve?user_id=u{user}")))
            .header("x-forwarded-for", client)
            .header("user-agent", BROWSER)
            .send()
    };
    // Two clients behind the proxy: one serve each is within the rate; the third is not.
    for (n, client) in ["203.0.113.7", "2001:db8:1:2::1", "2001:db8:1:2::99"]
        .into_iter()
        .enumerate()
    {
        assert_eq!(serve_for(client, n).await.unwrap().status(), 200);
    }
    let report = app.report(&key, advert).await;
    assert_eq!(
        counts(&report),
        (0, 0, 2, 1),
        "an IPv6 /64 is one address: {report}"
    );
    app.stop().await;
}

#[tokio::test]
async fn suspicious_counts_travel_through_redis_and_reach_the_report() {
    clear_of_window_end(60, 20).await;
    let prefix = format!("reklama-test-{}:", crate::helpers::random_suffix());
    let app = spawn_app_with(TestEnv::new(), None, |s: &mut Settings| {
        crate::helpers::manual_flush(s);
        s.redis.url = crate::helpers::redis_url();
        s.redis.prefix = prefix.clone();
        s.serving.max_serves_per_address_per_minute = 1;
        s.tracking.max_billable_clicks_per_address_per_hour = 1;
        s.tracking.duplicate_window_secs = 0;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let advert = create(&app, &key, "travel", json!({})).await;
    let mut urls = Vec::new();
    for n in 0..3 {
        urls.push(click_url(&app, &format!("user-{n}"), advert).await);
    }
    for url in &urls {
        assert_eq!(app.follow(url).await.status(), 302);
    }
    // Pushed to Redis within a push interval; the report drains Redis into the database.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = app.report(&key, advert).await;
    assert_eq!(counts(&report), (1, 2, 1, 2), "{report}");
    app.stop().await;
    crate::helpers::empty_redis(&prefix).await;
}
