//! Reports split by the viewer's device and country (`by=device`, `by=country`), for
//! impressions, clicks and conversions, in JSON and CSV, through the journal and through Redis.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::serving::create;

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const DESKTOP: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const COUNTRY_HEADER: &str = "CF-IPCountry";

/// Every click billable, nothing flushed unless a report asks, countries from a CDN's header.
fn settings(s: &mut reklama::main_app::Settings) {
    manual_flush(s);
    s.tracking.duplicate_window_secs = 0;
    s.serving.country_header = COUNTRY_HEADER.into();
}

/// Serves one card to a new user with these query parameters and headers; the card.
async fn serve(app: &TestApp, query: &str, headers: &[(&str, &str)]) -> Value {
    let mut request = app.client.get(app.url(&format!(
        "/api/v1/serve?user_id=u-{}&{query}",
        random_suffix()
    )));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body: Value = request.send().await.unwrap().json().await.unwrap();
    body["adverts"][0].clone()
}

/// `(key, impressions, clicks, conversions)` of each share of a split list.
fn shares(list: &Value, key: &str) -> Vec<(Value, u64, u64, u64)> {
    list.as_array()
        .unwrap_or_else(|| panic!("no list: {list}"))
        .iter()
        .map(|s| {
            (
                s[key].clone(),
                s["impressions"].as_u64().unwrap(),
                s["clicks"].as_u64().unwrap(),
                s["conversions"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The report's CSV with `query`.
async fn csv(app: &TestApp, key: &str, id: i64, query: &str) -> String {
    let response = app
        .client
        .get(app.url(&format!("/api/v1/adverts/{id}/report?format=csv&{query}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The serves and the click every test here makes: 3 mobile serves in DE by parameter, 2 by an
/// iPhone's User-Agent in FR by header, one desktop serve with no country, one serve that says
/// nothing; a click on a desktop in DE, and its conversion. Returns the advert's id.
async fn traffic(serving: &TestApp, clicking: &TestApp, key: &str) -> i64 {
    let id = create(serving, key, "travel", json!({"conversion_tracking": true})).await;
    for _ in 0..3 {
        serve(serving, "device=mobile&country=de", &[]).await;
    }
    for _ in 0..2 {
        serve(
            serving,
            "",
            &[("user-agent", IPHONE), (COUNTRY_HEADER, "FR")],
        )
        .await;
    }
    let card = serve(serving, "", &[("user-agent", DESKTOP)]).await;
    serve(serving, "", &[]).await;
    let response = clicking
        .client
        .get(card["click_url"].as_str().unwrap())
        .header("user-agent", DESKTOP)
        .header(COUNTRY_HEADER, "de")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    let click_id = location
        .query_pairs()
        .find(|(k, _)| k == "rk_click")
        .unwrap()
        .1
        .into_owned();
    let response = clicking
        .client
        .post(clicking.url("/api/v1/conversions"))
        .bearer_auth(key)
        .json(&json!({"click_id": click_id, "value": 12.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    id
}

fn expected_devices() -> Vec<(Value, u64, u64, u64)> {
    vec![
        (Value::Null, 1, 0, 0),
        (json!("desktop"), 1, 1, 1),
        (json!("mobile"), 5, 0, 0),
    ]
}

fn expected_countries() -> Vec<(Value, u64, u64, u64)> {
    vec![
        (Value::Null, 2, 0, 0),
        (json!("DE"), 3, 1, 1),
        (json!("FR"), 2, 0, 0),
    ]
}

#[tokio::test]
async fn reports_split_by_device_and_country_for_impressions_clicks_and_conversions() {
    let app = spawn_app_with(TestEnv::new(), None, settings).await;
    let key = app.customer_key("Acme").await;
    let id = traffic(&app, &app, &key).await;

    let body = app.report_with_query(&key, id, "by=device").await;
    assert_eq!(
        (body["impressions"].clone(), body["clicks"].clone()),
        (json!(7), json!(1))
    );
    assert_eq!(shares(&body["devices"], "device"), expected_devices());
    assert!(body.get("countries").is_none());
    let desktop = &body["devices"][1];
    assert_eq!(desktop["ctr"], 1.0);
    assert_eq!(desktop["cvr"], 1.0);
    assert_eq!(desktop["conversion_value"], 12.5);
    // Every series point splits the same way.
    assert_eq!(
        shares(&body["series"][0]["devices"], "device"),
        expected_devices()
    );

    let body = app.report_with_query(&key, id, "by=country").await;
    assert_eq!(shares(&body["countries"], "country"), expected_countries());

    let both = app
        .report_with_query(&key, id, "by=device,country&granularity=day")
        .await;
    assert_eq!(shares(&both["devices"], "device"), expected_devices());
    assert_eq!(shares(&both["countries"], "country"), expected_countries());

    let text = csv(&app, &key, id, "by=device").await;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("bucket,device,clicks,"), "{text}");
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[1].contains("Z,,0,0,0,1,0,0,0,0,0"), "{text}");
    assert!(
        lines[2].contains("Z,desktop,1,0,0,1,0,0,1,12.5,1"),
        "{text}"
    );
    assert!(lines[3].contains("Z,mobile,0,0,0,5,0,0,0,0,0"), "{text}");
    let text = csv(&app, &key, id, "by=country").await;
    assert!(text.starts_with("bucket,country,clicks,"), "{text}");
    assert!(text.contains("Z,FR,0,0,0,2,0,0,0,0,0\n"), "{text}");

    for (query, code) in [
        ("by=browser", "invalid"),
        ("by=device,country&format=csv", "one_split_in_csv"),
    ] {
        let (status, error) = app
            .get_json(&format!("/api/v1/adverts/{id}/report?{query}"), &key)
            .await;
        assert_eq!(status, 422, "{query}");
        assert_eq!(field_codes(&error), pairs(&[("by", code)]), "{query}");
    }
    let (_, error) = app
        .get_json(&format!("/api/v1/adverts/{id}/report?by=browser"), &key)
        .await;
    assert_eq!(
        error["error"]["fields"][0]["allowed"],
        json!(["placement", "creative", "device", "country"])
    );

    // The advert's page shows both splits.
    let page = app
        .dashboard_page(&key, &format!("/dashboard/adverts/{id}"))
        .await;
    assert!(
        page.contains(r#"<tr data-device="mobile">"#),
        "no device row"
    );
    assert!(page.contains(r#"<tr data-country="FR">"#), "no country row");

    // A restart reads the shares back from the journal or the database alike.
    let env = app.stop().await;
    let app = spawn_app_with(env, None, settings).await;
    let body = app.report_with_query(&key, id, "by=device,country").await;
    assert_eq!(shares(&body["devices"], "device"), expected_devices());
    assert_eq!(shares(&body["countries"], "country"), expected_countries());
    app.stop().await;
}

#[tokio::test]
async fn device_and_country_shares_travel_through_redis_shared_by_two_instances() {
    let env = TestEnv::new();
    let prefix = format!("reklama-test-{}:", random_suffix());
    let shared = |journal: &'static str| {
        let prefix = prefix.clone();
        let dir = env.dir.path().join(journal);
        move |s: &mut reklama::main_app::Settings| {
            settings(s);
            s.redis.url = redis_url();
            s.redis.prefix = prefix;
            s.serving.token_secret = "shared-secret-of-this-deployment".into();
            s.tracking.journal_dir = dir.display().to_string();
        }
    };
    let a = spawn_app_with(env.clone(), None, shared("journal-a")).await;
    let b = spawn_app_with(env.clone(), None, shared("journal-b")).await;
    let key = a.customer_key("Acme").await;
    // Served by A, clicked and converted through B.
    let id = traffic(&a, &b, &key).await;
    // Give the last micro-batches the push interval to reach Redis.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for app in [&b, &a] {
        let body = app.report_with_query(&key, id, "by=device,country").await;
        assert_eq!(shares(&body["devices"], "device"), expected_devices());
        assert_eq!(shares(&body["countries"], "country"), expected_countries());
    }
    a.stop().await;
    b.stop().await;
    empty_redis(&prefix).await;
}
