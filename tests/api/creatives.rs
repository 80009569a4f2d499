//! Responsive adverts: several titles and texts, a creative per combination, the customer's
//! say over each, and serving that learns which one wins.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    TestApp, TestEnv, advert_json, b64, eventually, field_codes, file_part, manual_flush, png,
    random_suffix, redis_url, spawn_app, spawn_app_with,
};

/// A travel advert with these titles and texts; returns its JSON.
async fn responsive(app: &TestApp, key: &str, titles: &[&str], texts: &[&str]) -> Value {
    responsive_with(app, key, titles, texts, &png(64, 64)).await
}

/// As [`responsive`], with this image.
async fn responsive_with(
    app: &TestApp,
    key: &str,
    titles: &[&str],
    texts: &[&str],
    image: &[u8],
) -> Value {
    let mut body = advert_json(image);
    let object = body.as_object_mut().unwrap();
    object.remove("title");
    object.remove("text");
    body["titles"] = json!(titles);
    body["texts"] = json!(texts);
    let response = app.post_advert(key, &body).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn creatives(app: &TestApp, key: &str, id: i64) -> Vec<Value> {
    let (status, body) = app
        .get_json(&format!("/api/v1/adverts/{id}/creatives"), key)
        .await;
    assert_eq!(status, 200, "{body}");
    body["creatives"].as_array().unwrap().clone()
}

/// (creative_id, title, text, status) of each creative.
fn summary(creatives: &[Value]) -> Vec<(i64, String, String, String)> {
    creatives
        .iter()
        .map(|c| {
            (
                c["creative_id"].as_i64().unwrap(),
                c["title"].as_str().unwrap().to_owned(),
                c["text"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn row(id: i64, title: &str, text: &str, status: &str) -> (i64, String, String, String) {
    (id, title.into(), text.into(), status.into())
}

async fn set_status(
    app: &TestApp,
    key: &str,
    id: i64,
    creative: i64,
    status: &str,
) -> (u16, Value) {
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/adverts/{id}/creatives/{creative}")))
        .bearer_auth(key)
        .json(&json!({ "status": status }))
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    (code, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_responsive_advert_has_a_creative_for_every_title_and_text() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let advert = responsive(
        &app,
        &key,
        &["Sochi", "Sea"],
        &["Seven nights", "By the sea", "Fly"],
    )
    .await;
    assert_eq!(advert["title"], "Sochi");
    assert_eq!(advert["text"], "Seven nights");
    assert_eq!(advert["titles"], json!(["Sochi", "Sea"]));
    assert_eq!(
        advert["texts"],
        json!(["Seven nights", "By the sea", "Fly"])
    );
    let id = advert["id"].as_i64().unwrap();
    assert_eq!(
        summary(&creatives(&app, &key, id).await),
        [
            row(1, "Sochi", "Seven nights", "active"),
            row(2, "Sochi", "By the sea", "active"),
            row(3, "Sochi", "Fly", "active"),
            row(4, "Sea", "Seven nights", "active"),
            row(5, "Sea", "By the sea", "active"),
            row(6, "Sea", "Fly", "active"),
        ]
    );
    // The one-value forms make one creative, as before.
    let single = app.create_advert(&key).await;
    assert_eq!(single["titles"], json!([single["title"]]));
    let single_id = single["id"].as_i64().unwrap();
    assert_eq!(creatives(&app, &key, single_id).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn each_title_and_text_is_checked_and_a_problem_names_its_index() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let mut body = advert_json(&png(64, 64));
    body.as_object_mut().unwrap().remove("title");
    body.as_object_mut().unwrap().remove("text");
    body["titles"] = json!(["Fine", "Also fine", "x".repeat(91), "ok\u{200b}title"]);
    body["texts"] = json!(["1", "2", "3", "4", "5", "6"]);
    let response = app.post_advert(&key, &body).await;
    assert_eq!(response.status(), 422);
    let errors = field_codes(&response.json().await.unwrap());
    for expected in [
        ("titles[2]", "too_long"),
        ("titles[3]", "invisible_character"),
        ("texts", "too_many"),
    ] {
        assert!(
            errors.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} in {errors:?}"
        );
    }

    let mut both = advert_json(&png(64, 64));
    both["titles"] = json!(["Another"]);
    let response = app.post_advert(&key, &both).await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        field_codes(&response.json().await.unwrap()),
        [("titles".to_owned(), "conflict".to_owned())]
    );

    let mut empty = advert_json(&png(64, 64));
    empty.as_object_mut().unwrap().remove("title");
    empty["titles"] = json!([]);
    let response = app.post_advert(&key, &empty).await;
    assert_eq!(response.status(), 422);
    assert_eq!(
        field_codes(&response.json().await.unwrap()),
        [("titles".to_owned(), "required".to_owned())]
    );
    app.stop().await;
}

#[tokio::test]
async fn repeated_title_parts_of_a_form_make_a_responsive_advert() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let form = reqwest::multipart::Form::new()
        .text("title", "First")
        .text("title", "Second")
        .text("text", "Only text")
        .text("genre", "travel")
        .text("target_url", "https://example.com/")
        .part("image", file_part(png(64, 64), "a.png", "image/png"));
    let response = app.post_advert_form(&key, form).await;
    assert_eq!(response.status(), 201);
    let advert: Value = response.json().await.unwrap();
    assert_eq!(advert["titles"], json!(["First", "Second"]));
    assert_eq!(advert["texts"], json!(["Only text"]));
    app.stop().await;
}

#[tokio::test]
async fn a_changed_title_retires_its_creatives_and_the_others_keep_their_numbers() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let advert = responsive(&app, &key, &["A", "B"], &["x"]).await;
    let id = advert["id"].as_i64().unwrap();
    assert_eq!(set_status(&app, &key, id, 1, "paused").await.0, 200);
    let (status, body) = app
        .patch_advert(&key, id, &json!({ "titles": ["A", "C"], "texts": ["x"] }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["titles"], json!(["A", "C"]));
    assert_eq!(
        summary(&creatives(&app, &key, id).await),
        [
            row(1, "A", "x", "paused"),
            row(2, "B", "x", "retired"),
            row(3, "C", "x", "active"),
        ]
    );
    // Words that would leave only paused creatives are refused, and nothing changes.
    let (status, body) = app
        .patch_advert(&key, id, &json!({ "titles": ["A"] }))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("last_creative"))
    );
    let (_, unchanged) = app.get_json(&format!("/api/v1/adverts/{id}"), &key).await;
    assert_eq!(unchanged["titles"], json!(["A", "C"]));
    // B comes back under its old number; `title` alone replaces every title with one.
    let (status, _) = app
        .patch_advert(&key, id, &json!({ "titles": ["B", "C"] }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        summary(&creatives(&app, &key, id).await),
        [
            row(1, "A", "x", "retired"),
            row(2, "B", "x", "active"),
            row(3, "C", "x", "active"),
        ]
    );
    let (status, body) = app.patch_advert(&key, id, &json!({ "title": "C" })).await;
    assert_eq!(status, 200);
    assert_eq!(body["titles"], json!(["C"]));
    let (status, body) = app
        .patch_advert(&key, id, &json!({ "title": "C", "titles": ["D"] }))
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        field_codes(&body),
        [("titles".to_owned(), "conflict".to_owned())]
    );
    app.stop().await;
}

/// The first card of `n` serves, each to a new user (`query` makes serve `i`'s query); waits
/// for serving to pick up new variants with its change poll.
async fn first_cards(app: &TestApp, n: usize, query: impl Fn(usize) -> String) -> Vec<Value> {
    let mut cards = Vec::with_capacity(n);
    for i in 0..n {
        let served = eventually(Duration::from_secs(10), "a card", || async {
            let served = app.cards(&query(i)).await;
            (!served.is_empty()).then_some(served)
        })
        .await;
        cards.push(served[0].clone());
    }
    cards
}

/// The titles of `n` serves of the advert, each to a new user.
async fn served_titles(app: &TestApp, n: usize, tag: &str) -> Vec<(String, String)> {
    first_cards(app, n, |i| format!("user_id={tag}-{i}&genres=travel"))
        .await
        .iter()
        .map(|card| {
            (
                card["title"].as_str().unwrap().to_owned(),
                card["click_url"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn paused_creatives_are_never_served_and_pinned_ones_are_the_only_ones() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let advert = responsive(&app, &key, &["A", "B", "C"], &["x"]).await;
    let id = advert["id"].as_i64().unwrap();
    let seen = |titles: Vec<(String, String)>| {
        let mut seen: Vec<String> = titles.into_iter().map(|(t, _)| t).collect();
        seen.sort();
        seen.dedup();
        seen
    };
    assert_eq!(seen(served_titles(&app, 60, "all").await), ["A", "B", "C"]);

    let (status, body) = set_status(&app, &key, id, 2, "paused").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "paused");
    assert_eq!(body["title"], "B");
    assert_eq!(seen(served_titles(&app, 60, "paused").await), ["A", "C"]);

    assert_eq!(set_status(&app, &key, id, 3, "pinned").await.0, 200);
    assert_eq!(seen(served_titles(&app, 30, "pinned").await), ["C"]);

    // Pausing the last servable creative would leave nothing to serve.
    assert_eq!(set_status(&app, &key, id, 1, "paused").await.0, 200);
    let (status, body) = set_status(&app, &key, id, 3, "paused").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("last_creative"))
    );
    let (status, body) = set_status(&app, &key, id, 9, "active").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = set_status(&app, &key, id, 1, "retired").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        field_codes(&body),
        [("status".to_owned(), "invalid".to_owned())]
    );
    // A retired creative cannot be set.
    app.patch_advert(&key, id, &json!({ "titles": ["A", "C"] }))
        .await;
    let (status, body) = set_status(&app, &key, id, 2, "active").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("retired"))
    );
    app.stop().await;
}

/// Users click every card with title "B" and no other; how often B is served afterwards.
async fn learn_from_clicks(app: &TestApp, serves: usize, tag: &str) {
    for (title, click_url) in served_titles(app, serves, tag).await {
        if title == "B" {
            assert_eq!(app.follow(&click_url).await.status(), 302);
        }
    }
}

fn share_of(titles: &[(String, String)], wanted: &str) -> f64 {
    titles.iter().filter(|(t, _)| t == wanted).count() as f64 / titles.len() as f64
}

fn unthrottled(s: &mut reklama::main_app::Settings) {
    // One test client is one address and makes every click.
    s.tracking.max_billable_clicks_per_address_per_hour = 0;
    s.tracking.max_billable_clicks_per_user_per_hour = 0;
}

#[tokio::test]
async fn serving_moves_to_the_title_users_click() {
    let app = spawn_app_with(TestEnv::new(), None, unthrottled).await;
    let key = app.customer_key("Acme").await;
    responsive(&app, &key, &["A", "B", "C"], &["x"]).await;
    learn_from_clicks(&app, 150, "learn").await;
    let after = served_titles(&app, 100, "after").await;
    let share = share_of(&after, "B");
    assert!(share >= 0.6, "B served in {share} of serves after learning");
    app.stop().await;
}

/// Two instances of one deployment: one Redis prefix and token secret, a journal each.
async fn two_instances() -> (TestApp, TestApp) {
    let env = TestEnv::new();
    let prefix = format!("reklama-test-{}:", random_suffix());
    let shared = |journal: &'static str| {
        let prefix = prefix.clone();
        let dir = env.dir.path().join(journal);
        move |s: &mut reklama::main_app::Settings| {
            manual_flush(s);
            unthrottled(s);
            s.redis.url = redis_url();
            s.redis.prefix = prefix;
            s.serving.token_secret = "shared-secret-of-this-deployment".into();
            s.tracking.journal_dir = dir.display().to_string();
        }
    };
    let a = spawn_app_with(env.clone(), None, shared("journal-a")).await;
    let b = spawn_app_with(env.clone(), None, shared("journal-b")).await;
    (a, b)
}

#[tokio::test]
async fn instances_sharing_redis_learn_from_each_others_clicks() {
    let (a, b) = two_instances().await;
    let key = a.customer_key("Acme").await;
    let advert = responsive(&a, &key, &["A", "B", "C"], &["x"]).await;
    b.handles
        .serving
        .inventory()
        .refresh(reklama::domain::AdvertId(advert["id"].as_i64().unwrap()))
        .await
        .unwrap();
    learn_from_clicks(&a, 150, "a").await;
    a.synced().await;
    // B has served the advert only a few times itself; its next sync reads A's counts.
    let first = served_titles(&b, 5, "b-first").await;
    assert_eq!(first.len(), 5);
    b.synced().await;
    let after = served_titles(&b, 100, "b").await;
    let share = share_of(&after, "B");
    assert!(
        share >= 0.6,
        "B served by the other instance in {share} of serves"
    );
    let counts: HashMap<&str, usize> = after.iter().fold(HashMap::new(), |mut m, (t, _)| {
        *m.entry(t.as_str()).or_default() += 1;
        m
    });
    assert!(counts.len() <= 3, "{counts:?}");
    a.stop().await;
    b.stop().await;
}

/// Serves `n` cards of the advert, clicks the ones `click` picks (by title), and returns what
/// each title was shown and clicked: (impressions, clicks) by title.
async fn serve_and_click(
    serving: &TestApp,
    clicking: &TestApp,
    n: usize,
    tag: &str,
    click: impl Fn(&str, usize) -> bool,
) -> HashMap<String, (u64, u64)> {
    let mut seen: HashMap<String, (u64, u64)> = HashMap::new();
    for (i, (title, url)) in served_titles(serving, n, tag).await.into_iter().enumerate() {
        let entry = seen.entry(title.clone()).or_default();
        entry.0 += 1;
        if click(&title, i) {
            assert_eq!(clicking.follow(&url).await.status(), 302);
            entry.1 += 1;
        }
    }
    seen
}

/// (creative_id, clicks, impressions) of each creative share in `list`.
fn creative_shares(list: &Value) -> Vec<(Value, u64, u64)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["creative_id"].clone(),
                c["clicks"].as_u64().unwrap(),
                c["impressions"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn expected_shares(seen: &HashMap<String, (u64, u64)>) -> Vec<(Value, u64, u64)> {
    // Creative 1 is title A, creative 2 title B (one text).
    ["A", "B"]
        .iter()
        .enumerate()
        .filter_map(|(i, title)| {
            let (shown, clicked) = seen.get(*title).copied()?;
            Some((json!(i + 1), clicked, shown))
        })
        .collect()
}

#[tokio::test]
async fn reports_split_impressions_and_clicks_by_creative_in_json_and_csv() {
    let app = spawn_app_with(TestEnv::new(), None, unthrottled).await;
    let key = app.customer_key("Acme").await;
    let advert = responsive(&app, &key, &["A", "B"], &["x"]).await;
    let id = advert["id"].as_i64().unwrap();
    let seen = serve_and_click(&app, &app, 40, "r", |title, i| title == "B" || i % 5 == 0).await;
    assert_eq!(seen.len(), 2, "both creatives are explored: {seen:?}");
    let body = app.report_with_query(&key, id, "by=creative").await;
    assert_eq!(body["impressions"], 40);
    assert_eq!(creative_shares(&body["creatives"]), expected_shares(&seen));
    let (shown, clicked) = seen["B"];
    let ctr = body["creatives"][1]["ctr"].as_f64().unwrap();
    assert!((ctr - clicked as f64 / shown as f64).abs() < 1e-3, "{ctr}");
    // Every series point is split too; here one hour holds everything.
    assert_eq!(
        creative_shares(&body["series"][0]["creatives"]),
        expected_shares(&seen)
    );
    let csv = app
        .client
        .get(app.url(&format!(
            "/api/v1/adverts/{id}/report?by=creative&format=csv"
        )))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "bucket,creative_id,clicks,bot_clicks,duplicate_clicks,impressions,suspicious_clicks,suspicious_impressions,conversions,conversion_value,cvr"
        )
    );
    let rows: Vec<(String, u64, u64)> = lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            (
                f[1].to_owned(),
                f[2].parse().unwrap(),
                f[5].parse().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64, u64)> = expected_shares(&seen)
        .into_iter()
        .map(|(c, clicks, shown)| (c.to_string(), clicks, shown))
        .collect();
    assert_eq!(rows, expected);
    let (status, body) = app
        .get_json(&format!("/api/v1/adverts/{id}/report?by=title"), &key)
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        field_codes(&body),
        [("by".to_owned(), "invalid".to_owned())]
    );
    app.stop().await;
}

#[tokio::test]
async fn creatives_are_counted_across_instances_sharing_redis() {
    let (a, b) = two_instances().await;
    let key = a.customer_key("Acme").await;
    let advert = responsive(&a, &key, &["A", "B"], &["x"]).await;
    let id = advert["id"].as_i64().unwrap();
    // Served by A, clicked through B: each instance holds a part of every creative's counts.
    let seen = serve_and_click(&a, &b, 30, "two", |title, i| title == "A" || i % 3 == 0).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for app in [&b, &a] {
        let body = app.report_with_query(&key, id, "by=creative").await;
        assert_eq!(
            creative_shares(&body["creatives"]),
            expected_shares(&seen),
            "{seen:?}"
        );
    }
    a.stop().await;
    b.stop().await;
}

/// A responsive advert with a photograph large enough for every placement; its id.
async fn responsive_photo(app: &TestApp, key: &str, titles: &[&str], texts: &[&str]) -> i64 {
    let photo = crate::variants::photo(1600, 1000);
    responsive_with(app, key, titles, texts, &photo).await["id"]
        .as_i64()
        .unwrap()
}

/// The size of the image at `url`, which must answer 200.
async fn image_size(app: &TestApp, url: &str) -> (u32, u32) {
    let response = app.client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let img = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    (img.width(), img.height())
}

/// The leaderboard's (a composed placement of the standard catalogue) drawn creatives, once
/// `drawn` says they are the wanted ones: (creative_id, image_url, title).
async fn leaderboard_creatives(
    app: &TestApp,
    key: &str,
    id: i64,
    wanted: &[i64],
) -> Vec<(i64, String, String)> {
    eventually(Duration::from_secs(30), "leaderboard drawn", || async {
        let list = crate::variants::rendered(app, key, id).await;
        let leaderboard = list.iter().find(|v| v["placement"] == "leaderboard")?;
        assert_eq!(leaderboard["status"], "ready", "{leaderboard}");
        let drawn: Vec<(i64, String, String)> = leaderboard["images"]
            .as_array()?
            .iter()
            .map(|c| {
                (
                    c["creative_id"].as_i64().unwrap(),
                    c["image_url"].as_str().unwrap().to_owned(),
                    c["title"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let ids: Vec<i64> = drawn.iter().map(|(c, ..)| *c).collect();
        (ids == wanted).then_some(drawn)
    })
    .await
}

/// `n` serves of `placement` to new users: (creative_id, image_url, title, click_url).
async fn placement_serves(
    app: &TestApp,
    placement: &str,
    n: usize,
    tag: &str,
) -> Vec<(i64, String, String, String)> {
    first_cards(app, n, |i| {
        format!("user_id={tag}-{i}&placement={placement}")
    })
    .await
    .iter()
    .map(|card| {
        (
            card["creative_id"].as_i64().unwrap(),
            card["image_url"].as_str().unwrap().to_owned(),
            card["title"].as_str().unwrap().to_owned(),
            card["click_url"].as_str().unwrap().to_owned(),
        )
    })
    .collect()
}

#[tokio::test]
async fn composed_placements_draw_a_bounded_number_of_creatives_each_with_its_own_image() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    // 5 titles: 5 creatives (the leaderboard draws a title only, so they all look different).
    let titles = ["Sochi", "Sea", "Sun", "Sand", "Surf"];
    let id = responsive_photo(&app, &key, &titles, &["Seven nights"]).await;
    // Nothing counted yet: the first three.
    let drawn = leaderboard_creatives(&app, &key, id, &[1, 2, 3]).await;
    let mut urls: Vec<&String> = drawn.iter().map(|(_, url, _)| url).collect();
    urls.sort();
    urls.dedup();
    assert_eq!(urls.len(), 3, "each creative its own image: {drawn:?}");
    for (creative, url, _) in &drawn {
        assert_eq!(
            image_size(&app, url).await,
            (728, 90),
            "creative {creative}"
        );
    }
    // The advert's page previews each of them.
    let page = app
        .dashboard_page(&key, &format!("/dashboard/adverts/{id}"))
        .await;
    for (creative, url, _) in &drawn {
        let path = &url[url.find("/media/").unwrap()..];
        assert!(
            page.contains(path),
            "creative {creative}'s {path} not on the page"
        );
    }

    // Served for the leaderboard: only the drawn creatives, each with its own image, and the
    // learner tries all three.
    let served = placement_serves(&app, "leaderboard", 60, "drawn").await;
    let mut seen: Vec<i64> = Vec::new();
    for (creative, url, title, _) in &served {
        let (_, drawn_url, drawn_title) = drawn
            .iter()
            .find(|(c, ..)| c == creative)
            .unwrap_or_else(|| panic!("creative {creative} served but not drawn"));
        assert_eq!((url, title), (drawn_url, drawn_title));
        seen.push(*creative);
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, [1, 2, 3]);
    // A cropped placement shows every creative, all with the one picture.
    let served = placement_serves(&app, "medium_rectangle", 80, "crop").await;
    let mut seen: Vec<i64> = served.iter().map(|(c, ..)| *c).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, [1, 2, 3, 4, 5]);
    assert!(served.iter().all(|(_, url, ..)| *url == served[0].1));

    // Pausing a drawn creative draws the placement for the next one; its image is gone.
    assert_eq!(set_status(&app, &key, id, 2, "paused").await.0, 200);
    let redrawn = leaderboard_creatives(&app, &key, id, &[1, 3, 4]).await;
    let retired_url = &drawn[1].1;
    assert!(redrawn.iter().all(|(_, url, _)| url != retired_url));
    let served = eventually(Duration::from_secs(10), "serving follows", || async {
        let served = placement_serves(&app, "leaderboard", 30, "redrawn").await;
        served
            .iter()
            .all(|(c, url, ..)| redrawn.iter().any(|(d, u, _)| d == c && u == url))
            .then_some(served)
    })
    .await;
    assert!(served.iter().all(|(c, ..)| *c != 2));
    app.stop().await;
}

#[tokio::test]
async fn composed_placements_are_drawn_again_for_the_creatives_counts_favour() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        unthrottled(s);
        manual_flush(s);
    })
    .await;
    let key = app.customer_key("Acme").await;
    let id = responsive_photo(&app, &key, &["A", "B", "C", "D"], &["x"]).await;
    leaderboard_creatives(&app, &key, id, &[1, 2, 3]).await;
    // Users click every leaderboard card of B (creative 2), and no other.
    let mut shown: HashMap<i64, u32> = HashMap::new();
    for (creative, _, _, click_url) in placement_serves(&app, "leaderboard", 150, "ab").await {
        *shown.entry(creative).or_default() += 1;
        if creative == 2 {
            assert_eq!(app.follow(&click_url).await.status(), 302);
        }
    }
    assert!(shown.get(&2).is_some_and(|n| *n > 0), "{shown:?}");
    app.handles.tracking.flush().await.unwrap();
    // The next rendering ranks by those counts: D, never shown, gets its trial; B has the best
    // click rate; of A and C, shown and never clicked, the one shown less has the better
    // estimate (the lower number on a tie).
    let (a, c) = (shown.get(&1).copied(), shown.get(&3).copied());
    let third = if c.unwrap_or(0) < a.unwrap_or(0) {
        3
    } else {
        1
    };
    let mut wanted = vec![2, 4, third];
    wanted.sort_unstable();
    reklama::modules::intake::queue_variants_rebuild(&app.handles.db, 3)
        .await
        .unwrap();
    app.handles.jobs.enqueuer().waker.wake();
    leaderboard_creatives(&app, &key, id, &wanted).await;
    app.stop().await;
}

/// Three different photographs, large enough for every placement.
fn three_photos() -> Vec<Vec<u8>> {
    vec![
        crate::variants::photo(1600, 1000),
        crate::variants::photo(1200, 900),
        crate::variants::photo(900, 1200),
    ]
}

/// Each creative's image position, by creative number.
async fn image_of_creatives(app: &TestApp, key: &str, id: i64) -> HashMap<i64, usize> {
    creatives(app, key, id)
        .await
        .iter()
        .filter(|c| c["status"] != "retired")
        .map(|c| {
            (
                c["creative_id"].as_i64().unwrap(),
                c["image_index"].as_u64().unwrap() as usize,
            )
        })
        .collect()
}

#[tokio::test]
async fn an_advert_with_three_images_serves_each_creative_with_its_own() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let photos = three_photos();
    let mut body = advert_json(&photos[0]);
    let object = body.as_object_mut().unwrap();
    object.remove("image_base64");
    object.remove("title");
    body["titles"] = json!(["Sochi", "Sea"]);
    body["images_base64"] = json!(photos.iter().map(|p| b64(p)).collect::<Vec<_>>());
    let response = app.post_advert(&key, &body).await;
    assert_eq!(response.status(), 201);
    let advert: Value = response.json().await.unwrap();
    let id = advert["id"].as_i64().unwrap();
    let images: Vec<String> = advert["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image_url"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(images.len(), 3, "{advert}");
    assert_eq!(advert["image_url"], json!(images[0]));
    for url in &images {
        let response = app.client.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(response.headers()["content-type"], "image/jpeg");
    }
    let page = app
        .dashboard_page(&key, &format!("/dashboard/adverts/{id}"))
        .await;
    for url in &images {
        assert!(page.contains(&url[url.find("/media/").unwrap()..]), "{url}");
    }
    // 3 images × 2 titles × 1 text, image by image.
    let of = image_of_creatives(&app, &key, id).await;
    let mut positions: Vec<(i64, usize)> = of.iter().map(|(c, i)| (*c, *i)).collect();
    positions.sort_unstable();
    assert_eq!(positions, [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (6, 2)]);

    // Plain cards show each creative's own image.
    let mut shown = std::collections::HashSet::new();
    for i in 0..60 {
        let cards = app.cards(&format!("user_id=img-{i}&genres=travel")).await;
        let card = &cards[0];
        let image = of[&card["creative_id"].as_i64().unwrap()];
        assert_eq!(card["image_url"], json!(images[image]), "{card}");
        shown.insert(image);
    }
    assert_eq!(shown.len(), 3, "the learner tries every image");

    // A cropped placement has a variant per image; its cards show the creative's. Three
    // images are three times the rendering of one.
    let list = crate::variants::rendered_within(&app, &key, id, Duration::from_secs(90)).await;
    let rectangle = list
        .iter()
        .find(|v| v["placement"] == "medium_rectangle")
        .unwrap();
    let variants: HashMap<usize, String> = rectangle["images"]
        .as_array()
        .unwrap_or_else(|| panic!("{rectangle}"))
        .iter()
        .map(|v| {
            (
                v["image_index"].as_u64().unwrap() as usize,
                v["image_url"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(variants.len(), 3, "{rectangle}");
    for url in variants.values() {
        assert_eq!(image_size(&app, url).await, (300, 250), "{url}");
    }
    for (creative, url, ..) in placement_serves(&app, "medium_rectangle", 30, "rect").await {
        assert_eq!(url, variants[&of[&creative]], "creative {creative}");
    }
    app.stop().await;
}

#[tokio::test]
async fn images_are_checked_and_a_problem_names_its_index() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let good = b64(&png(64, 64));
    let submit = |images: Value, with_single: bool| {
        let mut body = advert_json(&png(64, 64));
        if !with_single {
            body.as_object_mut().unwrap().remove("image_base64");
        }
        body["images_base64"] = images;
        body
    };
    let cases = [
        (
            submit(json!([good, good, good, good]), false),
            422,
            "images_base64",
            "too_many",
        ),
        (submit(json!([]), false), 422, "images_base64", "required"),
        (
            submit(json!([good]), true),
            422,
            "images_base64",
            "conflict",
        ),
        (
            submit(json!([good, "%%%"]), false),
            422,
            "images_base64[1]",
            "invalid_base64",
        ),
        (
            submit(json!([good, 7]), false),
            422,
            "images_base64[1]",
            "invalid_type",
        ),
        (
            submit(json!("one"), false),
            422,
            "images_base64",
            "invalid_type",
        ),
        (
            submit(json!([good, good, b64(b"plain text, no image")]), false),
            415,
            "images_base64[2]",
            "unsupported_format",
        ),
    ];
    for (body, status, field, code) in cases {
        let response = app.post_advert(&key, &body).await;
        assert_eq!(response.status(), status, "{field} {code}");
        let answer: Value = response.json().await.unwrap();
        assert!(
            field_codes(&answer).contains(&(field.to_owned(), code.to_owned())),
            "{field} {code}: {answer}"
        );
    }
    // In a form, repeated image parts; a fourth is refused.
    let form = |parts: usize| {
        let mut form = reqwest::multipart::Form::new()
            .text("title", "Sochi")
            .text("text", "Sea")
            .text("genre", "travel")
            .text("target_url", "https://example.com/");
        for i in 0..parts {
            let name = format!("{i}.png");
            form = form.part(
                "image",
                file_part(png(64 + i as u32, 64), &name, "image/png"),
            );
        }
        form
    };
    let response = app.post_advert_form(&key, form(2)).await;
    assert_eq!(response.status(), 201);
    let advert: Value = response.json().await.unwrap();
    assert_eq!(advert["images"].as_array().unwrap().len(), 2);
    let response = app.post_advert_form(&key, form(4)).await;
    assert_eq!(response.status(), 422);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        field_codes(&answer),
        [("image".to_owned(), "too_many".to_owned())]
    );
    app.stop().await;
}

#[tokio::test]
async fn new_images_replace_all_and_retire_the_creatives_of_those_gone() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let photos: Vec<Vec<u8>> = (0..3).map(|i| png(64 + i, 64)).collect();
    let mut body = advert_json(&photos[0]);
    body.as_object_mut().unwrap().remove("image_base64");
    body["images_base64"] = json!(photos.iter().map(|p| b64(p)).collect::<Vec<_>>());
    let response = app.post_advert(&key, &body).await;
    assert_eq!(response.status(), 201);
    let advert: Value = response.json().await.unwrap();
    let id = advert["id"].as_i64().unwrap();
    let third = advert["images"][2]["image_url"]
        .as_str()
        .unwrap()
        .to_owned();

    let two: Vec<String> = [png(80, 64), png(81, 64)].iter().map(|p| b64(p)).collect();
    let (status, patched) = app
        .patch_advert(&key, id, &json!({ "images_base64": two }))
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["images"].as_array().unwrap().len(), 2);
    assert_ne!(patched["image_url"], advert["image_url"]);
    assert_eq!(app.client.get(&third).send().await.unwrap().status(), 404);
    // Creatives keep their numbers by position; the third image's is retired.
    let statuses: Vec<(i64, String)> = creatives(&app, &key, id)
        .await
        .iter()
        .map(|c| {
            (
                c["creative_id"].as_i64().unwrap(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            (1, "active".to_owned()),
            (2, "active".to_owned()),
            (3, "retired".to_owned())
        ]
    );
    // Both forms at once, or none in the list, change nothing.
    let (status, body) = app
        .patch_advert(
            &key,
            id,
            &json!({ "images_base64": [b64(&png(90, 64))], "image_base64": b64(&png(91, 64)) }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        field_codes(&body),
        [("images_base64".to_owned(), "conflict".to_owned())]
    );
    let (status, body) = app
        .patch_advert(&key, id, &json!({ "images_base64": [] }))
        .await;
    assert_eq!(status, 422, "{body}");
    // The one-image form replaces them all with one.
    let (status, one) = app
        .patch_advert(&key, id, &json!({ "image_base64": b64(&png(95, 64)) }))
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["images"].as_array().unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn without_redis_the_learner_keeps_what_it_learned_across_a_restart() {
    let app = spawn_app_with(TestEnv::new(), None, unthrottled).await;
    assert!(app.handles.redis.is_none());
    let key = app.customer_key("Acme").await;
    responsive(&app, &key, &["A", "B", "C"], &["x"]).await;
    learn_from_clicks(&app, 150, "before").await;
    // A graceful stop saves what was learned since the last save.
    let env = app.stop().await;
    let app = spawn_app_with(env, None, unthrottled).await;
    let after = served_titles(&app, 100, "after-restart").await;
    let share = share_of(&after, "B");
    assert!(
        share >= 0.6,
        "B served in {share} of serves after a restart"
    );
    app.stop().await;
}
