//! Targeting: who and when an advert is shown to (devices, countries, weekdays and hours in its
//! time zone), as the API stores it and as serving applies it, by parameter and by header.

use std::time::Duration;

use reqwest::multipart::Form;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::serving::create;

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1";
const DESKTOP: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// A decision's advert ids (sorted) for a new user, with these request headers.
async fn served(app: &TestApp, query: &str, headers: &[(&str, &str)]) -> Vec<i64> {
    let mut request = app.client.get(app.url(&format!(
        "/api/v1/serve?user_id=u-{}&count=10&{query}",
        random_suffix()
    )));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{query}");
    let body: Value = response.json().await.unwrap();
    let mut ids: Vec<i64> = body["adverts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["advert_id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

/// A travel advert with this targeting; its id.
async fn targeted(app: &TestApp, key: &str, targeting: Value) -> i64 {
    create(app, key, "travel", json!({ "targeting": targeting })).await
}

/// A form for an advert with an image: the fields every advert needs, then `parts`.
fn advert_form(parts: &[(&str, &str)]) -> Form {
    let mut form = Form::new()
        .text("title", "Weekend offer")
        .text("text", "Two nights")
        .text("genre", "travel")
        .text("target_url", "https://example.com/weekend");
    for (name, value) in parts {
        form = form.text(name.to_string(), value.to_string());
    }
    form.part("image", file_part(png(64, 64), "a.png", "image/png"))
}

fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn targeting_is_stored_canonical_shown_replaced_and_cleared() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let id = targeted(
        &app,
        &key,
        json!({
            "devices": ["Tablet", "mobile", "mobile"],
            "countries": ["at", "DE"],
            "days": ["sun", "sat"],
            "hours": [23, 9, 10, 9],
            "timezone": "europe/berlin"
        }),
    )
    .await;
    let (status, advert) = app.get_json(&format!("/api/v1/adverts/{id}"), &key).await;
    assert_eq!(status, 200);
    assert_eq!(
        advert["targeting"],
        json!({"devices": ["mobile", "tablet"], "countries": ["AT", "DE"], "days": ["sat", "sun"],
               "hours": [9, 10, 23], "timezone": "Europe/Berlin"})
    );
    // A PATCH replaces the whole targeting: the keys it leaves out target every value again.
    let (status, patched) = app
        .patch_advert(&key, id, &json!({"targeting": {"countries": ["FR"]}}))
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        patched["targeting"],
        json!({"countries": ["FR"], "timezone": "UTC"})
    );
    let (status, cleared) = app
        .patch_advert(&key, id, &json!({"targeting": null}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(cleared["targeting"], json!({"timezone": "UTC"}));
    // An advert created without targeting shows the default.
    let plain = create(&app, &key, "travel", json!({})).await;
    let (_, advert) = app
        .get_json(&format!("/api/v1/adverts/{plain}"), &key)
        .await;
    assert_eq!(advert["targeting"], json!({"timezone": "UTC"}));

    // A form sends one part per key: lists separated by commas or spaces, repeated parts (check
    // boxes) adding to them, hours as ranges that may wrap past midnight; blank parts are left out.
    let form = advert_form(&[
        ("targeting.devices", "mobile"),
        ("targeting.devices", "tablet"),
        ("targeting.countries", "de, at fr"),
        ("targeting.days", ""),
        ("targeting.hours", "22-1, 12"),
        ("targeting.timezone", "Asia/Tokyo"),
    ]);
    let response = app.post_advert_form(&key, form).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert_eq!(
        created["targeting"],
        json!({"devices": ["mobile", "tablet"], "countries": ["AT", "DE", "FR"],
               "hours": [0, 1, 12, 22, 23], "timezone": "Asia/Tokyo"})
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_targeting_names_each_value_with_the_allowed_set() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let mut body = advert_json(&png(64, 64));
    body["targeting"] = json!({
        "devices": ["watch"],
        "countries": ["DE", "UK"],
        "days": [],
        "hours": [7, 24],
        "timezone": "Europe/Atlantis",
        "age": [18]
    });
    let response = app.post_advert(&key, &body).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        sorted_codes(&problem),
        pairs(&[
            ("targeting.age", "unknown_field"),
            ("targeting.countries[1]", "invalid"),
            ("targeting.days", "required"),
            ("targeting.devices[0]", "invalid"),
            ("targeting.hours[1]", "out_of_range"),
            ("targeting.timezone", "invalid"),
        ])
    );
    let allowed = |field: &str| -> Vec<String> {
        problem["error"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["field"] == field)
            .unwrap()["allowed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        allowed("targeting.devices[0]"),
        ["desktop", "mobile", "tablet"]
    );
    let countries = allowed("targeting.countries[1]");
    assert!(countries.contains(&"GB".to_owned()) && !countries.contains(&"UK".to_owned()));
    assert_eq!(allowed("targeting.hours[1]").len(), 24);
    assert!(allowed("targeting.timezone").contains(&"Europe/Berlin".to_owned()));

    // Not an object; a PATCH is checked the same way and changes nothing.
    body["targeting"] = json!(["mobile"]);
    let response = app.post_advert(&key, &body).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        sorted_codes(&problem),
        pairs(&[("targeting", "invalid_type")])
    );
    let id = targeted(&app, &key, json!({"devices": ["mobile"]})).await;
    let (status, problem) = app
        .patch_advert(&key, id, &json!({"targeting": {"countries": ["ZZ"]}}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        sorted_codes(&problem),
        pairs(&[("targeting.countries[0]", "invalid")])
    );
    let (_, advert) = app.get_json(&format!("/api/v1/adverts/{id}"), &key).await;
    assert_eq!(
        advert["targeting"],
        json!({"devices": ["mobile"], "timezone": "UTC"})
    );
    // A form's bad hour is named by its place in the list it made.
    let form = advert_form(&[("targeting.hours", "9-11 noon")]);
    let response = app.post_advert_form(&key, form).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        sorted_codes(&problem),
        pairs(&[("targeting.hours[3]", "invalid_type")])
    );
    app.stop().await;
}

fn sorted_codes(problem: &Value) -> Vec<(String, String)> {
    let mut codes = field_codes(problem);
    codes.sort();
    codes
}

#[tokio::test]
async fn devices_and_countries_filter_serving_by_parameter_and_by_header() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        s.serving.country_header = "CF-IPCountry".into();
    })
    .await;
    let key = app.customer_key("Acme").await;
    let mobile = targeted(&app, &key, json!({"devices": ["mobile"]})).await;
    let german = targeted(&app, &key, json!({"countries": ["DE"]})).await;
    let both = targeted(
        &app,
        &key,
        json!({"devices": ["mobile", "tablet"], "countries": ["DE", "AT"]}),
    )
    .await;
    let everyone = create(&app, &key, "travel", json!({})).await;

    // By parameter; an unknown device or country reaches only adverts that do not target by it.
    for (query, expected) in [
        ("", vec![everyone]),
        ("device=mobile", vec![mobile, everyone]),
        ("device=desktop", vec![everyone]),
        ("device=tablet&country=at", vec![both, everyone]),
        ("country=DE", vec![german, everyone]),
        (
            "country=de&device=Mobile",
            vec![mobile, german, both, everyone],
        ),
        ("country=US&device=mobile", vec![mobile, everyone]),
        ("device=&country=", vec![everyone]),
    ] {
        assert_eq!(served(&app, query, &[]).await, sorted(expected), "{query}");
    }
    // By User-Agent and by the CDN's header; a parameter wins over either.
    for (query, headers, expected) in [
        ("", vec![("User-Agent", IPHONE)], vec![mobile, everyone]),
        ("", vec![("User-Agent", DESKTOP)], vec![everyone]),
        (
            "",
            vec![("User-Agent", IPAD), ("CF-IPCountry", "AT")],
            vec![both, everyone],
        ),
        ("", vec![("CF-IPCountry", "DE")], vec![german, everyone]),
        ("", vec![("CF-IPCountry", "XX")], vec![everyone]),
        (
            "",
            vec![("CF-IPCountry", "T1"), ("User-Agent", IPHONE)],
            vec![mobile, everyone],
        ),
        ("country=FR", vec![("CF-IPCountry", "DE")], vec![everyone]),
        (
            "device=desktop",
            vec![("User-Agent", IPHONE)],
            vec![everyone],
        ),
        (
            "",
            vec![("User-Agent", IPHONE), ("CF-IPCountry", "de")],
            vec![mobile, german, both, everyone],
        ),
    ] {
        assert_eq!(
            served(&app, query, &headers).await,
            sorted(expected),
            "{query} {headers:?}"
        );
    }
    // Bad parameters are refused with the allowed values.
    let (status, problem) = app.serve("user_id=u1&device=watch&country=UK").await;
    assert_eq!(status, 422);
    let mut codes = field_codes(&problem);
    codes.sort();
    assert_eq!(
        codes,
        pairs(&[("country", "invalid"), ("device", "invalid")])
    );
    let fields = problem["error"]["fields"].as_array().unwrap();
    assert!(
        fields
            .iter()
            .all(|f| f["allowed"].as_array().is_some_and(|a| !a.is_empty()))
    );

    // Targeting changed by PATCH reaches serving at once.
    let (status, _) = app
        .patch_advert(
            &key,
            mobile,
            &json!({"targeting": {"devices": ["desktop"]}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        served(&app, "device=desktop", &[]).await,
        sorted(vec![mobile, everyone])
    );
    app.stop().await;
}

#[tokio::test]
async fn without_a_country_header_configured_the_header_is_not_read() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let german = targeted(&app, &key, json!({"countries": ["DE"]})).await;
    assert!(served(&app, "", &[("CF-IPCountry", "DE")]).await.is_empty());
    assert_eq!(served(&app, "country=DE", &[]).await, [german]);
    app.stop().await;
}

/// The weekday (`mon`…) and hour it is in `zone` at `at`.
fn local(zone: &str, at: jiff::Timestamp) -> (String, i8) {
    let zoned = at.to_zoned_datetime(jiff::tz::TimeZone::get(zone).unwrap());
    let day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        [usize::try_from(zoned.weekday().to_monday_zero_offset()).unwrap()];
    (day.to_owned(), zoned.hour())
}

#[tokio::test]
async fn weekdays_and_hours_are_those_of_the_advert_time_zone() {
    // Kiritimati is 14 hours ahead of UTC and Pago Pago 11 behind: at any moment one of them is
    // on another date than UTC, so the test always crosses midnight.
    let now = jiff::Timestamp::now();
    let utc = local("UTC", now);
    let zone = ["Pacific/Kiritimati", "Pacific/Pago_Pago"]
        .into_iter()
        .find(|z| local(z, now).0 != utc.0)
        .unwrap();
    // Far enough from the next hour that it does not turn during the test.
    let into_hour = now.as_second().rem_euclid(3600);
    if into_hour > 3600 - 30 {
        tokio::time::sleep(Duration::from_secs(
            u64::try_from(3600 - into_hour).unwrap() + 1,
        ))
        .await;
    }
    let now = jiff::Timestamp::now();
    let (utc_day, utc_hour) = local("UTC", now);
    let (day, hour) = local(zone, now);
    let next_hour = (hour + 1) % 24;
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let now_there = targeted(
        &app,
        &key,
        json!({"days": [day], "hours": [hour], "timezone": zone}),
    )
    .await;
    // Now in UTC, but not there: the time zone is what counts.
    let utc_now = targeted(
        &app,
        &key,
        json!({"days": [utc_day], "hours": [utc_hour], "timezone": zone}),
    )
    .await;
    let _later = targeted(&app, &key, json!({"hours": [next_hour], "timezone": zone})).await;
    let other_days: Vec<&str> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .into_iter()
        .filter(|d| *d != day)
        .collect();
    let _every_other_day =
        targeted(&app, &key, json!({"days": other_days, "timezone": zone})).await;
    assert_eq!(served(&app, "", &[]).await, [now_there], "{zone}");
    // In UTC the second one is due now.
    let (status, _) = app
        .patch_advert(
            &key,
            utc_now,
            &json!({"targeting": {"days": [utc_day], "hours": [utc_hour]}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        served(&app, "", &[]).await,
        sorted(vec![now_there, utc_now])
    );
    app.stop().await;
}

#[tokio::test]
async fn a_daily_cap_counts_the_day_of_the_advert_time_zone_across_a_restart() {
    let env = TestEnv::new();
    let app = spawn_app_with(env.clone(), None, manual_flush).await;
    let key = app.customer_key("Acme").await;
    // The time zone whose day began longest ago: every impression of the test falls in it.
    let now = jiff::Timestamp::now();
    let zone = ["Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC"]
        .into_iter()
        .max_by_key(|z| {
            let zoned = now.to_zoned_datetime(jiff::tz::TimeZone::get(z).unwrap());
            i32::from(zoned.hour()) * 60 + i32::from(zoned.minute())
        })
        .unwrap();
    let id = create(
        &app,
        &key,
        "travel",
        json!({"daily_max_impressions": 3, "targeting": {"timezone": zone}}),
    )
    .await;
    let mut shown = 0;
    for _ in 0..6 {
        shown += served(&app, "", &[]).await.len();
    }
    assert_eq!(shown, 3);
    app.handles.tracking.flush().await.unwrap();
    let env = app.stop().await;
    // A new instance reads today's impressions of that time zone's day from the database.
    let app = spawn_app_with(env, None, manual_flush).await;
    assert_eq!(
        served(&app, "", &[]).await,
        Vec::<i64>::new(),
        "advert {id} is capped for the day"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_dashboard_form_takes_targeting_and_the_advert_page_shows_it() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let form_page = app.get_text("/").await;
    for input in [
        r#"name="targeting.devices" value="mobile""#,
        r#"name="targeting.days" value="sat""#,
        r#"name="targeting.countries""#,
        r#"name="targeting.hours""#,
        r#"name="targeting.timezone""#,
    ] {
        assert!(form_page.contains(input), "{input}");
    }
    let form = advert_form(&[
        ("api_key", &key),
        ("targeting.devices", "mobile"),
        ("targeting.days", "sat"),
        ("targeting.days", "sun"),
        ("targeting.countries", "DE AT"),
        ("targeting.hours", "9-12"),
        ("targeting.timezone", "Europe/Berlin"),
    ]);
    let response = app.post_form_page(form).await;
    assert_eq!(response.status(), 201);
    let page = response.text().await.unwrap();
    for shown in [
        "mobile",
        "Sat, Sun",
        "AT, DE",
        "09:00–13:00",
        "Europe/Berlin",
    ] {
        assert!(page.contains(shown), "{shown} on the advert page");
    }
    // A mistake comes back on the form beside its field, with what was typed kept.
    let form = advert_form(&[
        ("api_key", &key),
        ("targeting.countries", "DE, Narnia"),
        ("targeting.days", "sat"),
    ]);
    let response = app.post_form_page(form).await;
    assert_eq!(response.status(), 422);
    let page = response.text().await.unwrap();
    assert!(page.contains(r#"id="targeting.countries-error""#), "{page}");
    assert!(page.contains("DE, NARNIA") || page.contains("DE, Narnia"));
    assert!(page.contains(r#"value="sat" checked"#));
    app.stop().await;
}
