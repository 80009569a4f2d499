//! Pacing: `asap` or `even` as the API stores and shows it, and even pacing under a burst of
//! traffic on one instance and on two sharing Redis (the line itself is held to ±10 % with a
//! test clock in the delivery unit tests).

use std::time::Instant;

use reqwest::multipart::Form;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::*;
use crate::serving::{create, two_instances};

/// An RFC 3339 time `secs` seconds from now (negative: in the past).
fn from_now(secs: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::seconds(secs))
        .format(&Rfc3339)
        .unwrap()
}

/// Serves `n` brand-new users on `app` at once (each asking for every advert it may see); how
/// many were shown each of `ids`.
async fn burst(app: &TestApp, ids: &[i64], n: usize) -> Vec<usize> {
    let requests = (0..n).map(|_| async {
        let (status, body) = app
            .serve(&format!("user_id=u-{}&count=10", random_suffix()))
            .await;
        assert_eq!(status, 200, "{body}");
        body["adverts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["advert_id"].as_i64().unwrap())
            .collect::<Vec<i64>>()
    });
    let served = futures_util::future::join_all(requests).await;
    ids.iter()
        .map(|id| served.iter().filter(|s| s.contains(id)).count())
        .collect()
}

/// What a line of `cap` over `period_secs` allows `elapsed_secs` into it: what is due, and the
/// one impression that may always go.
fn allowance(cap: u64, elapsed_secs: f64, period_secs: f64) -> usize {
    (cap as f64 * elapsed_secs / period_secs) as usize + 1
}

#[tokio::test]
async fn pacing_is_asap_unless_set_and_anything_else_is_422_naming_the_allowed_values() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let plain = create(&app, &key, "travel", json!({})).await;
    let (_, advert) = app
        .get_json(&format!("/api/v1/adverts/{plain}"), &key)
        .await;
    assert_eq!(advert["pacing"], "asap");

    let even = create(
        &app,
        &key,
        "travel",
        json!({ "daily_max_impressions": 100, "pacing": "even" }),
    )
    .await;
    let (_, advert) = app.get_json(&format!("/api/v1/adverts/{even}"), &key).await;
    assert_eq!(advert["pacing"], "even");

    let mut body = advert_json(&png(64, 64));
    body["pacing"] = json!("fast");
    let response = app.post_advert(&key, &body).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(field_codes(&problem), pairs(&[("pacing", "invalid")]));
    assert_eq!(
        problem["error"]["fields"][0]["allowed"],
        json!(["asap", "even"])
    );
    body["pacing"] = json!(1);
    let response = app.post_advert(&key, &body).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(field_codes(&problem), pairs(&[("pacing", "invalid_type")]));

    let (status, patched) = app
        .patch_advert(&key, plain, &json!({ "pacing": "Even" }))
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["pacing"], "even");
    for bad in [json!("slow"), json!(null)] {
        let (status, problem) = app
            .patch_advert(&key, plain, &json!({ "pacing": bad }))
            .await;
        assert_eq!(status, 422, "{bad}: {problem}");
        assert_eq!(problem["error"]["fields"][0]["field"], "pacing");
    }
    let (_, problem) = app
        .patch_advert(&key, plain, &json!({ "pacing": "slow" }))
        .await;
    assert_eq!(
        problem["error"]["fields"][0]["allowed"],
        json!(["asap", "even"])
    );
    let (_, advert) = app
        .get_json(&format!("/api/v1/adverts/{plain}"), &key)
        .await;
    assert_eq!(advert["pacing"], "even", "a refused change changes nothing");

    // The OpenAPI document names the values wherever the field is read or shown.
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Pacing"]["enum"], json!(["asap", "even"]));
    for schema in [
        "AdvertInput",
        "AdvertUpload",
        "AdvertPatchInput",
        "AdvertView",
    ] {
        assert!(
            schemas[schema]["properties"]["pacing"]
                .to_string()
                .contains("Pacing"),
            "{schema}: {}",
            schemas[schema]
        );
    }

    // The form sends it as a part, next to the caps, and the pages show it.
    let form = Form::new()
        .text("title", "Weekend offer")
        .text("text", "Two nights")
        .text("genre", "travel")
        .text("target_url", "https://example.com/weekend")
        .text("daily_max_impressions", "500")
        .text("pacing", "even")
        .part("image", file_part(png(64, 64), "a.png", "image/png"));
    let response = app.post_advert_form(&key, form).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["pacing"], "even");
    assert_eq!(created["daily_max_impressions"], 500);
    let page = app.get_text("/").await;
    assert!(
        page.contains(r#"<select id="pacing" name="pacing""#),
        "{page}"
    );
    assert!(page.contains(r#"<option value="even">"#), "{page}");
    // A form shown again keeps the pacing chosen, and names a bad one beside its input.
    for (pacing, expected) in [
        ("even", r#"<option value="even" selected>"#),
        ("fast", r#"id="pacing-error""#),
    ] {
        let form = Form::new()
            .text("api_key", key.clone())
            .text("title", " ")
            .text("text", "Two nights")
            .text("genre", "travel")
            .text("target_url", "https://example.com/weekend")
            .text("pacing", pacing)
            .part("image", file_part(png(64, 64), "a.png", "image/png"));
        let response = app.post_form_page(form).await;
        assert_eq!(response.status(), 422);
        let page = response.text().await.unwrap();
        assert!(page.contains(expected), "{pacing}: {page}");
    }
    let id = created["id"].as_i64().unwrap();
    let page = app
        .dashboard_page(&key, &format!("/dashboard/adverts/{id}"))
        .await;
    assert!(page.contains("<dt>Pacing</dt>"), "{page}");
    assert!(page.contains(r#"<dd id="pacing">even"#), "{page}");
    assert!(page.contains("500 impressions a day"), "{page}");
    app.stop().await;
}

#[tokio::test]
async fn a_burst_gets_only_what_is_due_of_an_even_advert_while_an_asap_one_takes_it_all() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    // Both may run 1000 impressions over a flight of 10 000 s: one every 10 s on the line.
    let flight = json!({
        "max_impressions": 1000, "starts_at": from_now(-2), "ends_at": from_now(9_998),
    });
    let mut even = flight.clone();
    even["pacing"] = json!("even");
    let started = Instant::now();
    let paced = create(&app, &key, "travel", even).await;
    let asap = create(&app, &key, "food", flight).await;
    let mut served = [0, 0];
    for _ in 0..3 {
        let got = burst(&app, &[paced, asap], 40).await;
        served[0] += got[0];
        served[1] += got[1];
    }
    let allowed = allowance(1000, started.elapsed().as_secs_f64() + 2.0, 10_000.0);
    assert!(
        (1..=allowed).contains(&served[0]),
        "even: {} served, at most {allowed} due",
        served[0]
    );
    assert_eq!(served[1], 120, "asap takes every request");

    // A change of pacing is served at once.
    let (status, _) = app
        .patch_advert(&key, paced, &json!({ "pacing": "asap" }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(burst(&app, &[paced], 20).await, [20]);
    let (status, _) = app
        .patch_advert(&key, paced, &json!({ "pacing": "even" }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        burst(&app, &[paced], 20).await,
        [0],
        "far past the line now"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_daily_cap_paced_evenly_spreads_over_what_is_left_of_the_day() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    // The day's active time is from its start to midnight (UTC).
    let now = OffsetDateTime::now_utc();
    let since_midnight =
        i64::from(now.hour()) * 3600 + i64::from(now.minute()) * 60 + i64::from(now.second());
    let left = (86_400 - since_midnight + 2) as f64;
    let started = Instant::now();
    let paced = create(
        &app,
        &key,
        "travel",
        json!({ "daily_max_impressions": 1000, "starts_at": from_now(-2), "pacing": "even" }),
    )
    .await;
    let served = burst(&app, &[paced], 60).await[0];
    let allowed = allowance(1000, started.elapsed().as_secs_f64() + 3.0, left);
    assert!(
        (1..=allowed).contains(&served),
        "{served} served, at most {allowed} due"
    );
    app.stop().await;
}

#[tokio::test]
async fn instances_sharing_redis_serve_an_even_advert_only_what_is_due_together() {
    let env = TestEnv::new();
    let prefix = format!("reklama-test-{}:", random_suffix());
    let (a, b) = two_instances(&env, &prefix, |_| {}).await;
    let key = a.customer_key("Acme").await;
    // 1000 impressions over 2000 s: one every 2 s on the line.
    let flight = json!({
        "max_impressions": 1000, "starts_at": from_now(-2), "ends_at": from_now(1_998),
    });
    let mut even = flight.clone();
    even["pacing"] = json!("even");
    let started = Instant::now();
    let paced = create(&a, &key, "travel", even).await;
    let asap = create(&a, &key, "food", flight).await;
    // B learns of both at its next catalogue poll.
    eventually(
        std::time::Duration::from_secs(5),
        "B serves the asap advert",
        || async { (burst(&b, &[asap], 1).await == [1]).then_some(()) },
    )
    .await;
    let both = [paced, asap];
    let mut served = [0, 0];
    for _ in 0..4 {
        let (on_a, on_b) = tokio::join!(burst(&a, &both, 30), burst(&b, &both, 30));
        served[0] += on_a[0] + on_b[0];
        served[1] += on_a[1] + on_b[1];
        a.synced().await;
        b.synced().await;
    }
    a.synced().await;
    b.synced().await;
    let allowed = allowance(1000, started.elapsed().as_secs_f64() + 2.0, 2_000.0);
    let delivered = a.report(&key, paced).await["impressions"].as_u64().unwrap() as usize;
    assert!(
        (1..=allowed).contains(&delivered) && served[0] <= delivered,
        "even on two instances: {delivered} delivered ({} in the bursts), at most {allowed} due",
        served[0]
    );
    assert!(
        served[1] >= 120,
        "asap takes what the bursts bring: {} of 240",
        served[1]
    );
    a.stop().await;
    b.stop().await;
    empty_redis(&prefix).await;
}
