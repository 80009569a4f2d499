//! Conversions: the signed click id the redirect appends (`rk_click`) or fills into
//! `{click_id}`, conversions reported back with it, and the reports that count them; the URL
//! macros filled in at the redirect.

use std::time::Duration;

use reklama::domain::AdvertId;
use reklama::domain::targeting::Viewer;
use reklama::modules::tracking::Click;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::serving::create;

/// Nothing reaches the database unless a report asks, and every click counts as billable.
fn quiet(s: &mut reklama::main_app::Settings) {
    manual_flush(s);
    s.tracking.duplicate_window_secs = 0;
}

/// `POST /api/v1/conversions` as `key`: the status and JSON.
async fn convert(app: &TestApp, key: &str, body: &Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/api/v1/conversions"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Follows a card's click URL; the redirect's `Location`.
async fn location_of(app: &TestApp, click_url: &str) -> String {
    let response = app.follow(click_url).await;
    assert_eq!(response.status(), 302);
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// The `rk_click` value of a location.
fn rk_click(location: &str) -> String {
    let url = url::Url::parse(location).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == "rk_click")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no rk_click in {location}"))
}

/// A generic card of `id` served to a new user.
async fn card_of(app: &TestApp, id: i64) -> Value {
    let cards = app
        .cards(&format!("user_id=u-{}&count=10", random_suffix()))
        .await;
    cards
        .into_iter()
        .find(|c| c["advert_id"] == id)
        .expect("the advert is served")
}

#[tokio::test]
async fn a_tracked_click_carries_a_signed_id_and_its_conversions_count_once_per_event() {
    let app = spawn_app_with(TestEnv::new(), None, quiet).await;
    let key = app.customer_key("Acme").await;
    let id = create(
        &app,
        &key,
        "travel",
        json!({"conversion_tracking": true, "target_url": "https://example.com/land?src=rk#top"}),
    )
    .await;
    let (_, advert) = app.get_json(&format!("/api/v1/adverts/{id}"), &key).await;
    assert_eq!(advert["conversion_tracking"], true);

    let card = card_of(&app, id).await;
    let location = location_of(&app, card["click_url"].as_str().unwrap()).await;
    let click_id = rk_click(&location);
    assert_eq!(
        location,
        format!("https://example.com/land?src=rk&rk_click={click_id}#top"),
        "the target's query and fragment are kept"
    );
    // Every click has its own id.
    let again = rk_click(&location_of(&app, card["click_url"].as_str().unwrap()).await);
    assert_ne!(again, click_id);

    let purchase =
        json!({"click_id": click_id, "event": "purchase", "value": 19.99, "currency": "EUR"});
    let (status, body) = convert(&app, &key, &purchase).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body,
        json!({"advert_id": id, "event": "purchase", "duplicate": false})
    );
    // The same (click, event) again: taken, changes nothing, even with another value.
    let mut repeat = purchase.clone();
    repeat["value"] = json!(1000);
    let (status, body) = convert(&app, &key, &repeat).await;
    assert_eq!((status, body["duplicate"].clone()), (202, json!(true)));
    // Another event of the same click counts on its own; no event is `conversion`.
    let (status, body) = convert(
        &app,
        &key,
        &json!({"click_id": click_id, "event": "sign_up"}),
    )
    .await;
    assert_eq!((status, body["duplicate"].clone()), (202, json!(false)));
    let (status, body) = convert(&app, &key, &json!({"click_id": again})).await;
    assert_eq!((status, body["event"].clone()), (202, json!("conversion")));

    let report = app.report(&key, id).await;
    assert_eq!(report["clicks"], 2);
    assert_eq!(report["conversions"], 3);
    assert_eq!(report["conversion_value"], 19.99);
    assert_eq!(report["cvr"], 1.5);
    assert_eq!(report["currencies"], json!(["EUR"]));
    let series = report["series"].as_array().unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0]["conversions"], 3);
    assert_eq!(series[0]["cvr"], 1.5);

    // By creative: the creative the card showed has them.
    let by_creative = app.report_with_query(&key, id, "by=creative").await;
    let shown = card["creative_id"].clone();
    let share = by_creative["creatives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["creative_id"] == shown)
        .unwrap_or_else(|| panic!("creative {shown} in {by_creative}"));
    assert_eq!(share["conversions"], 3);
    assert_eq!(share["conversion_value"], 19.99);

    // CSV carries the three columns.
    let csv = app
        .client
        .get(app.url(&format!(
            "/api/v1/adverts/{id}/report?format=csv&granularity=day"
        )))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].ends_with(",conversions,conversion_value,cvr"),
        "{csv}"
    );
    assert!(lines[1].ends_with(",3,19.99,1.5"), "{csv}");

    // The advert's page shows them (all time).
    let page = app
        .dashboard_page(&key, &format!("/dashboard/adverts/{id}"))
        .await;
    for shown in [
        r#"<dd id="total-conversions">3</dd>"#,
        r#"<dd id="total-conversion-value">19.99 EUR</dd>"#,
        r#"<dd id="total-cvr">150.00 %</dd>"#,
    ] {
        assert!(page.contains(shown), "{shown} not on the page");
    }
    assert!(page.contains(r#"<dd id="conversion-tracking">On"#));

    // The key is shared through the database: ids issued before a restart still verify.
    let env = app.stop().await;
    let app = spawn_app_with(env, None, quiet).await;
    let (status, body) = convert(
        &app,
        &key,
        &json!({"click_id": click_id, "event": "refund"}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(app.report(&key, id).await["conversions"], 4);
    // The customer's summary of every advert carries them too.
    let (status, summary) = app.get_json("/api/v1/reports", &key).await;
    assert_eq!(status, 200);
    let row = &summary["adverts"][0];
    assert_eq!(row["advert_id"], id);
    assert_eq!(
        (
            row["conversions"].clone(),
            row["conversion_value"].clone(),
            row["cvr"].clone()
        ),
        (json!(4), json!(19.99), json!(2.0))
    );
    app.stop().await;
}

#[tokio::test]
async fn foreign_forged_malformed_and_expired_click_ids_are_refused_with_a_code() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        quiet(s);
        s.tracking.attribution_window_days = 7;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let other = app.customer_key("Other").await;
    let id = create(&app, &key, "travel", json!({"conversion_tracking": true})).await;
    let card = card_of(&app, id).await;
    let click_id = rk_click(&location_of(&app, card["click_url"].as_str().unwrap()).await);

    let (status, body) = convert(&app, &other, &json!({"click_id": click_id})).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (403, json!("foreign_click_id"))
    );

    // One character changed in the middle: the signature no longer matches.
    let mut forged = click_id.clone().into_bytes();
    let middle = forged.len() / 2;
    forged[middle] = if forged[middle] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let (status, body) = convert(&app, &key, &json!({"click_id": forged})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_click_id");
    assert_eq!(field_codes(&body), pairs(&[("click_id", "forged")]));
    let (status, body) = convert(&app, &key, &json!({"click_id": "not-an-id"})).await;
    assert_eq!(
        (status, field_codes(&body)),
        (422, pairs(&[("click_id", "malformed")]))
    );

    // Issued with the instance's own key, eight days ago: past the 7-day window.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let issue = |days_ago: i64| {
        app.handles.tracking.click_ids().issue(&Click {
            advert: AdvertId(id),
            clicked_at: now - days_ago * 86_400,
            placement: None,
            creative: None,
            viewer: Viewer::default(),
        })
    };
    let (status, body) = convert(&app, &key, &json!({"click_id": issue(8)})).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (410, json!("click_expired"))
    );
    let (status, _) = convert(&app, &key, &json!({"click_id": issue(6)})).await;
    assert_eq!(status, 202, "six days ago is within the window");

    // Bad fields, all named at once; no key at all.
    let (status, body) = convert(
        &app,
        &key,
        &json!({"event": "two words", "value": -5, "currency": "euro", "extra": 1}),
    )
    .await;
    assert_eq!(status, 422);
    let mut codes = field_codes(&body);
    codes.sort();
    assert_eq!(
        codes,
        pairs(&[
            ("click_id", "required"),
            ("currency", "invalid"),
            ("event", "invalid"),
            ("extra", "unknown_field"),
            ("value", "out_of_range"),
        ])
    );
    let response = app
        .client
        .post(app.url("/api/v1/conversions"))
        .json(&json!({"click_id": click_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Nothing refused reached the report.
    assert_eq!(app.report(&key, id).await["conversions"], 1);
    app.stop().await;
}

#[tokio::test]
async fn conversion_tracking_is_off_by_default_and_a_patch_turns_it_on_at_once() {
    let app = spawn_app_with(TestEnv::new(), None, quiet).await;
    let key = app.customer_key("Acme").await;
    let (id, path) = app
        .advert_with_link(&key, "https://example.com/plain?a=1")
        .await;
    let response = app.click(&path, BROWSER).await;
    assert_eq!(
        response.headers()["location"],
        "https://example.com/plain?a=1"
    );

    for (bad, code) in [
        (json!("yes"), "invalid_type"),
        (json!(null), "invalid_type"),
    ] {
        let (status, body) = app
            .patch_advert(&key, id, &json!({"conversion_tracking": bad}))
            .await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(field_codes(&body), pairs(&[("conversion_tracking", code)]));
    }
    let (status, body) = app
        .patch_advert(&key, id, &json!({"conversion_tracking": true}))
        .await;
    assert_eq!(
        (status, body["conversion_tracking"].clone()),
        (200, json!(true))
    );
    let location = app.click(&path, BROWSER).await.headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        location.starts_with("https://example.com/plain?a=1&rk_click="),
        "{location}"
    );
    // A link followed without a token still gets an id, without placement or creative.
    let (status, _) = convert(&app, &key, &json!({"click_id": rk_click(&location)})).await;
    assert_eq!(status, 202);

    app.patch_advert(&key, id, &json!({"conversion_tracking": false}))
        .await;
    let response = app.click(&path, BROWSER).await;
    assert_eq!(
        response.headers()["location"],
        "https://example.com/plain?a=1"
    );

    // A form's checkbox turns it on too; a JSON string does not.
    let form = reqwest::multipart::Form::new()
        .text("title", "Weekend offer")
        .text("text", "Two nights")
        .text("genre", "travel")
        .text("target_url", "https://example.com/weekend")
        .text("conversion_tracking", "on")
        .part("image", file_part(png(64, 64), "a.png", "image/png"));
    let response = app.post_advert_form(&key, form).await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.json::<Value>().await.unwrap()["conversion_tracking"],
        true
    );
    let mut body = advert_json(&png(64, 64));
    body["conversion_tracking"] = json!("true");
    let response = app.post_advert(&key, &body).await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        field_codes(&body),
        pairs(&[("conversion_tracking", "invalid_type")])
    );
    app.stop().await;
}

#[tokio::test]
async fn macros_are_filled_in_per_click_url_encoded_and_checked_at_intake() {
    let app = spawn_app_with(TestEnv::new(), None, quiet).await;
    let key = app.customer_key("Acme").await;
    let target =
        "https://example.com/{placement}/land?ad={advert_id}&cr={creative_id}&c={click_id}";
    let id = create(&app, &key, "travel", json!({"target_url": target})).await;
    let (_, advert) = app.get_json(&format!("/api/v1/adverts/{id}"), &key).await;
    assert_eq!(advert["target_url"], target, "stored as written");

    let card = card_of(&app, id).await;
    let location = location_of(&app, card["click_url"].as_str().unwrap()).await;
    let url = url::Url::parse(&location).unwrap();
    let query: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(
        url.path(),
        "//land",
        "the generic card has no placement: {location}"
    );
    assert_eq!(query["ad"], id.to_string());
    assert_eq!(query["cr"], card["creative_id"].to_string());
    assert!(
        !location.contains("rk_click"),
        "no conversion_tracking, no rk_click"
    );
    // The filled-in click id is a real one.
    let (status, body) = convert(&app, &key, &json!({"click_id": query["c"]})).await;
    assert_eq!(status, 202, "{body}");

    // Followed without a token: no placement, no creative.
    let path = advert["tracked_url"]
        .as_str()
        .unwrap()
        .strip_prefix(&app.address)
        .unwrap()
        .to_owned();
    let location = app.click(&path, BROWSER).await.headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        location.starts_with(&format!("https://example.com//land?ad={id}&cr=&c=")),
        "{location}"
    );

    for (bad, code) in [
        ("https://example.com/?c={clickid}", "unknown_macro"),
        ("https://example.com/?c={click_id", "unknown_macro"),
        ("https://example.com/?c={}", "unknown_macro"),
    ] {
        let mut body = advert_json(&png(64, 64));
        body["target_url"] = json!(bad);
        let response = app.post_advert(&key, &body).await;
        assert_eq!(response.status(), 422, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(field_codes(&body), pairs(&[("target_url", code)]), "{bad}");
        let allowed = &body["error"]["fields"][0]["allowed"];
        assert_eq!(
            allowed,
            &json!(["{advert_id}", "{placement}", "{creative_id}", "{click_id}"])
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_placement_cards_click_fills_its_placement_and_counts_its_conversion_there() {
    let app = spawn_app_with(TestEnv::new(), None, quiet).await;
    let key = app.customer_key("Acme").await;
    let id = crate::variants::create(
        &app,
        &key,
        "Summer in Sochi",
        &crate::variants::photo(1200, 800),
    )
    .await;
    crate::variants::rendered(&app, &key, id).await;
    let (status, _) = app
        .patch_advert(&key, id, &json!({"conversion_tracking": true}))
        .await;
    assert_eq!(status, 200);
    let card = eventually(Duration::from_secs(5), "placement card", || async {
        app.cards("user_id=reader&placement=medium_rectangle")
            .await
            .first()
            .cloned()
            .filter(|c| c["placement"] == "medium_rectangle")
    })
    .await;
    let click_id = rk_click(&location_of(&app, card["click_url"].as_str().unwrap()).await);
    let (status, _) = convert(&app, &key, &json!({"click_id": click_id, "value": 5})).await;
    assert_eq!(status, 202);
    let report = app.report_with_query(&key, id, "by=placement").await;
    let placements = report["placements"].as_array().unwrap();
    let share = placements
        .iter()
        .find(|p| p["placement"] == "medium_rectangle")
        .unwrap();
    assert_eq!(share["conversions"], 1);
    assert_eq!(share["conversion_value"], 5.0);
    assert_eq!(share["cvr"], 1.0);
    assert!(
        placements
            .iter()
            .filter(|p| p["placement"] != "medium_rectangle")
            .all(|p| p["conversions"] == 0),
        "{report}"
    );
    app.stop().await;
}
