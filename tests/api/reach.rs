//! Unique reach: distinct users served, per UTC day and over a report's range, estimated with
//! HyperLogLog sketches that instances fold into the database.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::serving::create;

/// Serves `advert` (the only one) to each of `users`.
async fn serve_users(app: &TestApp, users: impl Iterator<Item = u32>) {
    for user in users {
        let cards = app.cards(&format!("user_id=reader-{user}")).await;
        assert_eq!(cards.len(), 1, "user {user}");
    }
}

fn within(estimate: u64, truth: u64, tolerance: f64) -> bool {
    (estimate as f64 - truth as f64).abs() <= truth as f64 * tolerance
}

#[tokio::test]
async fn reach_counts_each_user_once_per_day_and_over_the_range() {
    let app = spawn_app_with(TestEnv::new(), None, manual_flush).await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "travel", json!({})).await;
    serve_users(&app, 0..300).await;
    // Served again: the same users.
    serve_users(&app, 0..100).await;
    let report = app.report_with_query(&key, id, "granularity=day").await;
    assert_eq!(report["impressions"], 400);
    let reach = report["reach"].as_u64().unwrap();
    assert!(within(reach, 300, 0.01), "reach {reach} of 300 users");
    let today = report["series"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(today["reach"], json!(reach), "{today}");
    // Hourly points have no reach of their own; the range's is there.
    let hourly = app.report_with_query(&key, id, "granularity=hour").await;
    assert_eq!(hourly["reach"], json!(reach));
    assert!(
        hourly["series"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p.get("reach").is_none())
    );
    // The advert's page shows it (all time).
    let page = app
        .dashboard_page(&key, &format!("/dashboard/adverts/{id}"))
        .await;
    assert!(
        page.contains(&format!(r#"<dd id="total-reach">{reach}</dd>"#)),
        "{page}"
    );
    // Another advert's reach is its own.
    let other = create(&app, &key, "food", json!({})).await;
    let report = app.report(&key, other).await;
    assert_eq!(report["reach"], 0);
    app.stop().await;
}

#[tokio::test]
async fn reach_across_a_restart_is_the_union_of_the_users_served() {
    let app = spawn_app_with(TestEnv::new(), None, manual_flush).await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "travel", json!({})).await;
    serve_users(&app, 0..200).await;
    // A graceful stop merges what this instance served; the next one adds to it.
    let env = app.stop().await;
    let app = spawn_app_with(env, None, manual_flush).await;
    serve_users(&app, 100..300).await;
    let report = app.report(&key, id).await;
    let reach = report["reach"].as_u64().unwrap();
    assert!(
        within(reach, 300, 0.01),
        "reach {reach}, 300 distinct users of 400 serves"
    );
    // A report merges what is pending; asking again changes nothing.
    let again = app.report(&key, id).await;
    assert_eq!(again["reach"], json!(reach));
    app.stop().await;
}

/// 100 000 synthetic users through the counting path (serving's keyed user hashes are
/// uniform; these come from a 64-bit mixer), merged in several rounds.
#[tokio::test]
async fn reach_of_100_000_users_is_within_2_percent() {
    let app = spawn_app_with(TestEnv::new(), None, manual_flush).await;
    let key = app.customer_key("Acme").await;
    let id = create(&app, &key, "travel", json!({})).await;
    let advert = reklama::domain::AdvertId(id);
    let mix = |i: u64| {
        let mut z = i
            .wrapping_add(0x9E37_79B9_7F4A_7C15)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for round in 0..4u64 {
        for i in 0..25_000u64 {
            app.handles.tracking.served(advert, mix(round * 25_000 + i));
        }
        // Some users come back in the next round: they are not counted twice.
        for i in 0..1_000u64 {
            app.handles.tracking.served(advert, mix(i));
        }
        let report: Value = app.report(&key, id).await;
        let truth = (round + 1) * 25_000;
        let reach = report["reach"].as_u64().unwrap();
        assert!(
            within(reach, truth, 0.02),
            "round {round}: reach {reach} of {truth}"
        );
    }
    app.stop().await;
}
