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

/// Two instances on one database, each with its own users and some users in common, merge the
/// same adverts' days at once: each advert's reach is the union of the users it was shown.
#[tokio::test]
async fn instances_merging_the_same_days_at_once_keep_the_union() {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    let env = TestEnv::new();
    let on = |name: &'static str| {
        let own = crate::serving::instance(&env, name, None);
        move |s: &mut reklama::main_app::Settings| {
            manual_flush(s);
            own(s);
        }
    };
    let a = spawn_app_with(env.clone(), None, on("a")).await;
    let b = spawn_app_with(env.clone(), None, on("b")).await;
    let key = a.customer_key("Acme").await;
    let mut ids = Vec::new();
    for genre in ["travel", "food", "games"] {
        ids.push(create(&a, &key, genre, json!({})).await);
    }
    // Who was shown which advert, on either instance.
    type Shown = Mutex<BTreeMap<i64, BTreeSet<String>>>;
    async fn serve(app: &TestApp, user: String, count: usize, shown: &Shown) -> BTreeSet<i64> {
        let cards = app.cards(&format!("user_id={user}&count={count}")).await;
        let ids: BTreeSet<i64> = cards
            .iter()
            .map(|c| c["advert_id"].as_i64().unwrap())
            .collect();
        for id in &ids {
            shown
                .lock()
                .unwrap()
                .entry(*id)
                .or_default()
                .insert(user.clone());
        }
        ids
    }
    let shown = Shown::default();
    // B learns of the adverts at its next catalogue poll.
    eventually(
        std::time::Duration::from_secs(5),
        "B serves all three",
        || async { (serve(&b, "probe".into(), 3, &shown).await.len() == 3).then_some(()) },
    )
    .await;
    for (app, users) in [(&a, 0..200), (&b, 100..300)] {
        for user in users {
            assert_eq!(
                serve(app, format!("reader-{user}"), 1, &shown).await.len(),
                1
            );
        }
    }
    let (first, second) = tokio::join!(a.report(&key, ids[0]), b.report(&key, ids[0]));
    assert!(first["reach"].is_u64() && second["reach"].is_u64());
    let shown = shown.into_inner().unwrap();
    for id in &ids {
        let truth = shown.get(id).map_or(0, BTreeSet::len) as u64;
        assert!(truth > 30, "advert {id} was shown to {truth} users");
        let reach = a.report(&key, *id).await["reach"].as_u64().unwrap();
        assert!(
            within(reach, truth, 0.02),
            "advert {id}: reach {reach} of {truth} users"
        );
    }
    a.stop().await;
    b.stop().await;
}
