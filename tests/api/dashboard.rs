//! The customer dashboard: sign-in with the API key, the session cookie, CSRF and origin checks,
//! the list of adverts with pause/resume, each advert's page (QR code, chart, CSV) and escaping.

use std::time::{SystemTime, UNIX_EPOCH};

use diesel::prelude::*;
use reklama::platform::db::DbError;
use reklama::platform::db::schema::advert_stats;
use reqwest::header::HeaderMap;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::helpers::{BROWSER, TestApp, advert_json, png, spawn_app, spawn_app_with};

const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

struct Page {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Page {
    async fn from(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap();
        Self {
            status,
            headers,
            body,
        }
    }

    fn location(&self) -> &str {
        self.headers
            .get("location")
            .map(|v| v.to_str().unwrap())
            .unwrap_or_default()
    }

    fn set_cookie(&self) -> Option<&str> {
        self.headers.get("set-cookie").map(|v| v.to_str().unwrap())
    }

    /// The CSRF token of the page's first form that has one.
    fn csrf(&self) -> String {
        let marker = r#"name="csrf_token" value=""#;
        let at = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no CSRF token in {}", self.body))
            + marker.len();
        self.body[at..at + self.body[at..].find('"').unwrap()].to_owned()
    }
}

async fn get(app: &TestApp, path: &str, cookie: Option<&str>) -> Page {
    let mut request = app.client.get(app.url(path));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    Page::from(request.send().await.unwrap()).await
}

async fn post_form(
    app: &TestApp,
    path: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
    fields: &[(&str, &str)],
) -> Page {
    let mut request = app.client.post(app.url(path)).form(fields);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    Page::from(request.send().await.unwrap()).await
}

/// Signs in with `key` and returns the `Cookie` header value to send.
async fn sign_in(app: &TestApp, key: &str) -> String {
    let page = post_form(app, "/login", None, Some(&app.address), &[("api_key", key)]).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.location(), "/dashboard");
    let set = page.set_cookie().expect("a session cookie");
    set.split(';').next().unwrap().trim().to_owned()
}

fn assert_html_security_headers(headers: &HeaderMap) {
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("form-action 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers.contains_key("referrer-policy"));
}

/// The advert's status as the API reports it.
async fn api_status(app: &TestApp, key: &str, id: i64) -> String {
    let (status, advert) = app.get_json(&format!("/api/v1/adverts/{id}"), key).await;
    assert_eq!(status, 200);
    advert["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn signing_in_sets_a_signed_session_cookie_and_signing_out_clears_it() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme Travel").await;

    let login = get(&app, "/login", None).await;
    assert_eq!(login.status, 200);
    assert_html_security_headers(&login.headers);
    assert!(
        login
            .body
            .contains(r#"<form method="post" action="/login">"#)
    );
    assert!(login.body.contains(r#"type="password" name="api_key""#));

    // Not signed in: the dashboard sends the browser to the sign-in form.
    let page = get(&app, "/dashboard", None).await;
    assert_eq!((page.status, page.location()), (303, "/login"));

    let response = app
        .client
        .post(app.url("/login"))
        .form(&[("api_key", key.as_str())])
        .send()
        .await
        .unwrap();
    let page = Page::from(response).await;
    assert_eq!((page.status, page.location()), (303, "/dashboard"));
    let set = page.set_cookie().unwrap();
    let attributes: Vec<&str> = set.split(';').map(str::trim).collect();
    for expected in ["Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=43200"] {
        assert!(attributes.contains(&expected), "{expected} missing: {set}");
    }
    assert!(!attributes.contains(&"Secure"), "plain HTTP: {set}");
    // The cookie names the key by its public id and never carries its secret.
    let (key_id, secret) = key.strip_prefix("rk_").unwrap().split_once('_').unwrap();
    let cookie = attributes[0];
    assert!(cookie.starts_with("reklama_session=v1."), "{cookie}");
    assert!(cookie.contains(key_id), "{cookie}");
    assert!(!cookie.contains(secret), "{cookie}");
    let cookie = cookie.to_owned();

    let dashboard = get(&app, "/dashboard", Some(&cookie)).await;
    assert_eq!(dashboard.status, 200, "{}", dashboard.body);
    assert_html_security_headers(&dashboard.headers);
    assert!(
        dashboard
            .body
            .contains("Signed in as <strong>Acme Travel</strong>")
    );
    assert!(dashboard.body.contains("You have no adverts yet."));
    // Signed in, the sign-in form goes straight to the dashboard.
    let again = get(&app, "/login", Some(&cookie)).await;
    assert_eq!((again.status, again.location()), (303, "/dashboard"));

    let csrf = dashboard.csrf();
    let out = post_form(
        &app,
        "/logout",
        Some(&cookie),
        Some(&app.address),
        &[("csrf_token", &csrf)],
    )
    .await;
    assert_eq!((out.status, out.location()), (303, "/login"));
    let cleared = out.set_cookie().unwrap();
    assert!(cleared.starts_with("reklama_session=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // A browser without the cookie is signed out.
    let page = get(&app, "/dashboard", None).await;
    assert_eq!((page.status, page.location()), (303, "/login"));
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_key_shows_the_sign_in_form_again_with_401_and_the_error_beside_the_field() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let mut forged = key.clone();
    forged.pop();
    forged.push(if key.ends_with('a') { 'b' } else { 'a' });
    for wrong in [forged.as_str(), "not-a-key", ""] {
        let page = post_form(&app, "/login", None, None, &[("api_key", wrong)]).await;
        assert_eq!(page.status, 401, "{wrong:?}: {}", page.body);
        assert_html_security_headers(&page.headers);
        assert!(page.set_cookie().is_none());
        let error =
            r#"<p class="field-error" id="api_key-error">This API key is unknown or revoked.</p>"#;
        assert!(page.body.contains(error), "{}", page.body);
        // Beside the field: right after its control, which points at it.
        let control_at = page.body.find(r#"<input id="api_key""#).unwrap();
        let control =
            &page.body[control_at..control_at + page.body[control_at..].find('>').unwrap()];
        assert!(control.contains(r#"aria-invalid="true""#), "{control}");
        assert!(
            control.contains(r#"aria-describedby="api_key-error""#),
            "{control}"
        );
        assert!(page.body[control_at..].find(error).unwrap() < 300);
        // The key typed is never echoed back.
        assert!(wrong.is_empty() || !page.body.contains(wrong));
    }
    app.stop().await;
}

#[tokio::test]
async fn revoking_the_key_signs_the_browser_out_and_a_forged_cookie_is_nobody() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let cookie = sign_in(&app, &key).await;
    assert_eq!(get(&app, "/dashboard", Some(&cookie)).await.status, 200);

    // A cookie edited to name another customer, or to last longer, fails its signature.
    let other = app.customer_key("Other").await;
    let other_cookie = sign_in(&app, &other).await;
    let value = cookie.strip_prefix("reklama_session=").unwrap();
    let parts: Vec<&str> = value.split('.').collect();
    let other_parts: Vec<&str> = other_cookie.split('.').collect();
    assert_eq!(
        parts.len(),
        6,
        "v1.customer.key_id.expiry.nonce.mac: {value}"
    );
    let with = |index: usize, replacement: String| {
        let mut forged = parts.clone();
        forged[index] = &replacement;
        format!("reklama_session={}", forged.join("."))
    };
    let as_other = with(1, other_parts[1].to_owned());
    let longer = with(3, (parts[3].parse::<i64>().unwrap() + 86_400).to_string());
    for forged in [
        as_other.as_str(),
        longer.as_str(),
        "reklama_session=garbage",
    ] {
        let page = get(&app, "/dashboard", Some(forged)).await;
        assert_eq!((page.status, page.location()), (303, "/login"), "{forged}");
        // The stale cookie is dropped.
        assert!(page.set_cookie().unwrap().contains("Max-Age=0"));
    }

    assert_eq!(app.handles.customers.revoke("Acme").await.unwrap(), 1);
    let page = get(&app, "/dashboard", Some(&cookie)).await;
    assert_eq!((page.status, page.location()), (303, "/login"));
    assert!(page.set_cookie().unwrap().contains("Max-Age=0"));
    let page = get(&app, "/", Some(&cookie)).await;
    assert!(page.body.contains(r#"name="api_key""#), "signed out");
    // Other customers stay signed in.
    assert_eq!(
        get(&app, "/dashboard", Some(&other_cookie)).await.status,
        200
    );
    // And the revoked key cannot sign in again.
    let page = post_form(&app, "/login", None, None, &[("api_key", &key)]).await;
    assert_eq!(page.status, 401);
    app.stop().await;
}

#[tokio::test]
async fn state_changing_posts_need_the_sessions_csrf_token_and_our_origin() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let advert = app.create_advert(&key).await;
    let id = advert["id"].as_i64().unwrap();
    let status_path = format!("/dashboard/adverts/{id}/status");
    let cookie = sign_in(&app, &key).await;
    let csrf = get(&app, "/dashboard", Some(&cookie)).await.csrf();
    // A second sign-in (another browser) has its own token.
    let second_cookie = sign_in(&app, &key).await;
    let second_csrf = get(&app, "/dashboard", Some(&second_cookie)).await.csrf();
    assert_ne!(csrf, second_csrf);

    let refusals = vec![
        ("missing token", vec![("status", "paused")], None),
        (
            "wrong token",
            vec![("status", "paused"), ("csrf_token", "AAAAAAAAAAAAAAAA")],
            None,
        ),
        (
            "another session's token",
            vec![("status", "paused"), ("csrf_token", &second_csrf)],
            None,
        ),
        (
            "foreign origin",
            vec![("status", "paused"), ("csrf_token", &csrf)],
            Some("https://evil.example"),
        ),
        (
            "opaque origin",
            vec![("status", "paused"), ("csrf_token", &csrf)],
            Some("null"),
        ),
    ];
    for (what, fields, origin) in &refusals {
        let page = post_form(&app, &status_path, Some(&cookie), *origin, fields).await;
        assert_eq!(page.status, 403, "{what}: {}", page.body);
        assert_html_security_headers(&page.headers);
        assert!(page.body.contains("<h1>Request refused</h1>"), "{what}");
        assert_eq!(api_status(&app, &key, id).await, "active", "{what}");
    }

    // Sign-out and sign-in are guarded too.
    let page = post_form(&app, "/logout", Some(&cookie), None, &[]).await;
    assert_eq!(page.status, 403);
    assert!(page.set_cookie().is_none());
    let page = post_form(
        &app,
        "/login",
        None,
        Some("https://evil.example"),
        &[("api_key", &key)],
    )
    .await;
    assert_eq!(page.status, 403);
    assert!(page.set_cookie().is_none());

    // The signed-in advert form: no token, no advert.
    let form = signed_in_form(None, "No token");
    let page = Page::from(
        app.client
            .post(app.url("/dashboard/adverts"))
            .header("cookie", &cookie)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, 403, "{}", page.body);
    let (_, list) = app.get_json("/api/v1/adverts", &key).await;
    assert_eq!(list["adverts"].as_array().unwrap().len(), 1);

    // The same request with the token and our own origin goes through.
    let page = post_form(
        &app,
        &status_path,
        Some(&cookie),
        Some(&app.address),
        &[("status", "paused"), ("csrf_token", &csrf)],
    )
    .await;
    assert_eq!((page.status, page.location()), (303, "/dashboard"));
    assert_eq!(api_status(&app, &key, id).await, "paused");
    app.stop().await;
}

#[tokio::test]
async fn pause_and_resume_from_the_dashboard_change_the_advert() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let first = app.create_advert(&key).await;
    let second = app.create_advert(&key).await;
    let id = second["id"].as_i64().unwrap();
    let tracked = second["tracked_url"].as_str().unwrap();
    let cookie = sign_in(&app, &key).await;

    let dashboard = get(&app, "/dashboard", Some(&cookie)).await;
    assert_eq!(dashboard.status, 200);
    // Newest first, each with its page, status, counts and a pause button.
    let first_row = dashboard
        .body
        .find(&format!(r#"<tr data-advert="{}">"#, first["id"]))
        .unwrap();
    let second_row = dashboard
        .body
        .find(&format!(r#"<tr data-advert="{id}">"#))
        .unwrap();
    assert!(second_row < first_row);
    let row = &dashboard.body[second_row..first_row];
    assert!(row.contains(&format!(
        r#"<a href="/dashboard/adverts/{id}">Summer in Sochi</a>"#
    )));
    assert!(
        row.contains(r#"<span class="status status-active">active</span>"#),
        "{row}"
    );
    assert!(
        row.contains(r#"<td class="num impressions">0</td>"#),
        "{row}"
    );
    assert!(row.contains(r#"<td class="num clicks">0</td>"#), "{row}");
    assert!(row.contains(r#"<td class="num ctr">—</td>"#), "{row}");
    assert!(row.contains(&format!(r#"action="/dashboard/adverts/{id}/status""#)));
    assert!(row.contains(r#"name="status" value="paused""#), "{row}");
    assert!(row.contains(">Pause</button>"), "{row}");
    let csrf = dashboard.csrf();

    let page = post_form(
        &app,
        &format!("/dashboard/adverts/{id}/status"),
        Some(&cookie),
        Some(&app.address),
        &[
            ("csrf_token", &csrf),
            ("status", "paused"),
            ("return_to", "/dashboard"),
        ],
    )
    .await;
    assert_eq!((page.status, page.location()), (303, "/dashboard"));
    assert_eq!(api_status(&app, &key, id).await, "paused");
    assert_eq!(
        api_status(&app, &key, first["id"].as_i64().unwrap()).await,
        "active"
    );
    // A paused advert's link answers 410 at once.
    let path = tracked.strip_prefix(&app.address).unwrap();
    let response = app
        .client
        .get(app.url(path))
        .header("user-agent", BROWSER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 410);
    let dashboard = get(&app, "/dashboard", Some(&cookie)).await;
    assert!(
        dashboard
            .body
            .contains(r#"<span class="status status-paused">paused</span>"#)
    );
    assert!(dashboard.body.contains(">Resume</button>"));

    // Resume from the advert's own page, which is where it comes back to. An address outside
    // the dashboard is never followed.
    let here = format!("/dashboard/adverts/{id}");
    let page = post_form(
        &app,
        &format!("/dashboard/adverts/{id}/status"),
        Some(&cookie),
        None,
        &[
            ("csrf_token", &csrf),
            ("status", "active"),
            ("return_to", &here),
        ],
    )
    .await;
    assert_eq!((page.status, page.location()), (303, here.as_str()));
    assert_eq!(api_status(&app, &key, id).await, "active");
    let page = post_form(
        &app,
        &format!("/dashboard/adverts/{id}/status"),
        Some(&cookie),
        None,
        &[
            ("csrf_token", &csrf),
            ("status", "paused"),
            ("return_to", "https://evil.example/"),
        ],
    )
    .await;
    assert_eq!((page.status, page.location()), (303, "/dashboard"));
    // Only active and paused can be asked for.
    let page = post_form(
        &app,
        &format!("/dashboard/adverts/{id}/status"),
        Some(&cookie),
        None,
        &[("csrf_token", &csrf), ("status", "deleted")],
    )
    .await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert_eq!(api_status(&app, &key, id).await, "paused");
    app.stop().await;
}

#[tokio::test]
async fn another_customers_advert_is_a_404_page() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let other_key = app.customer_key("Other").await;
    let theirs = app.create_advert(&other_key).await;
    let id = theirs["id"].as_i64().unwrap();
    let cookie = sign_in(&app, &key).await;
    let csrf = get(&app, "/dashboard", Some(&cookie)).await.csrf();

    for path in [
        format!("/dashboard/adverts/{id}"),
        format!("/dashboard/adverts/{id}/report.csv"),
        format!("/dashboard/adverts/{}", id + 1000),
        "/dashboard/adverts/abc".to_owned(),
    ] {
        let page = get(&app, &path, Some(&cookie)).await;
        assert_eq!(page.status, 404, "{path}: {}", page.body);
        assert_html_security_headers(&page.headers);
        assert!(page.body.contains("<h1>Not found</h1>"), "{path}");
        assert!(!page.body.contains("Summer in Sochi"), "{path}");
    }
    let page = post_form(
        &app,
        &format!("/dashboard/adverts/{id}/status"),
        Some(&cookie),
        None,
        &[("csrf_token", &csrf), ("status", "paused")],
    )
    .await;
    assert_eq!(page.status, 404);
    assert_eq!(api_status(&app, &other_key, id).await, "active");
    // Its owner sees it.
    let owner = sign_in(&app, &other_key).await;
    let page = get(&app, &format!("/dashboard/adverts/{id}"), Some(&owner)).await;
    assert_eq!(page.status, 200);
    app.stop().await;
}

fn now_secs() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// `(bucket, clicks, impressions)` of each `<g class="point" ...>` in the page's chart.
fn chart_points(page: &str) -> Vec<(String, u64, u64)> {
    let attribute = |tag: &str, name: &str| {
        let marker = format!(" {name}=\"");
        let at = tag.find(&marker).unwrap() + marker.len();
        tag[at..at + tag[at..].find('"').unwrap()].to_owned()
    };
    page.match_indices(r#"<g class="point""#)
        .map(|(at, _)| {
            let tag = &page[at..at + page[at..].find('>').unwrap()];
            (
                attribute(tag, "data-bucket"),
                attribute(tag, "data-clicks").parse().unwrap(),
                attribute(tag, "data-impressions").parse().unwrap(),
            )
        })
        .collect()
}

/// The `<svg class="chart" ...>...</svg>` element of a page.
fn chart_svg(page: &str) -> &str {
    let start = page
        .find(r#"<svg class="chart""#)
        .unwrap_or_else(|| panic!("no chart in {page}"));
    &page[start..start + page[start..].find("</svg>").unwrap() + 6]
}

#[tokio::test]
async fn the_chart_has_one_point_per_bucket_with_data_and_its_values() {
    let app = spawn_app_with(crate::helpers::TestEnv::new(), None, |s| {
        // Every click from the test's one address counts.
        s.tracking.duplicate_window_secs = 0;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let advert = app.create_advert(&key).await;
    let id = advert["id"].as_i64().unwrap();
    let path = advert["tracked_url"]
        .as_str()
        .unwrap()
        .strip_prefix(&app.address)
        .unwrap()
        .to_owned();
    let hour = now_secs() / 3600 * 3600;

    for (user_agent, times) in [(BROWSER, 3), (GOOGLEBOT, 2)] {
        for _ in 0..times {
            let response = app
                .client
                .get(app.url(&path))
                .header("user-agent", user_agent)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 302);
        }
    }
    for user in 0..5 {
        let served: Value = app
            .client
            .get(app.url(&format!(
                "/api/v1/serve?user_id=chart-{user}&genres=travel&count=1"
            )))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(served["adverts"][0]["advert_id"], json!(id), "{served}");
    }
    // Five hours earlier: 7 clicks and 40 impressions, straight into the table the counters
    // flush to.
    let earlier = hour - 5 * 3600;
    app.handles
        .db
        .run(move |conn| {
            diesel::insert_into(advert_stats::table)
                .values((
                    advert_stats::advert_id.eq(id),
                    advert_stats::bucket.eq(earlier),
                    advert_stats::clicks.eq(7_i64),
                    advert_stats::bot_clicks.eq(0_i64),
                    advert_stats::duplicate_clicks.eq(0_i64),
                    advert_stats::impressions.eq(40_i64),
                ))
                .execute(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    let cookie = sign_in(&app, &key).await;
    let page = get(&app, &format!("/dashboard/adverts/{id}"), Some(&cookie)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let svg = chart_svg(&page.body);
    assert!(svg.contains(r#"role="img" aria-labelledby="chart-title chart-desc""#));
    assert!(svg.contains(
        r#"<title id="chart-title">Clicks and impressions per hour, the last 48 hours (UTC)</title>"#
    ));
    assert!(svg.contains(r#"<desc id="chart-desc">45 impressions and 10 clicks in the last 48 hours, in 2 hours with any."#), "{svg}");
    assert!(svg.contains(r#"data-buckets="48""#));
    assert!(svg.contains("Impressions (left axis)") && svg.contains("Clicks (right axis)"));
    assert!(svg.contains(">Hour (UTC)</text>"));
    let points = chart_points(svg);
    assert_eq!(
        points,
        vec![(rfc3339(earlier), 7, 40), (rfc3339(hour), 3, 5)],
        "{svg}"
    );
    // Each point's tooltips say its values; the lines run through every bucket of the window.
    assert!(svg.contains(": 7 clicks</title>") && svg.contains(": 40 impressions</title>"));
    assert!(svg.contains(": 3 clicks</title>") && svg.contains(": 5 impressions</title>"));
    for series in ["series-impressions", "series-clicks"] {
        let at = svg.find(&format!(r#"class="series {series}""#)).unwrap();
        let tag = &svg[at..at + svg[at..].find('>').unwrap()];
        let points_at = tag.find(r#"points=""#).unwrap() + 8;
        let points = &tag[points_at..points_at + tag[points_at..].find('"').unwrap()];
        assert_eq!(points.split(' ').count(), 48, "{series}: {points}");
    }
    // Axes: impressions up to 40 (ticks of 10), clicks up to 8 (ticks of 2).
    assert!(svg.contains(">40</text>") && svg.contains(">10</text>"));
    assert!(svg.contains(">8</text>") && svg.contains(">2</text>"));

    // The same numbers as a table, and all-time totals (bots apart).
    let table_at = page.body.find(r#"<table id="chart-data">"#).unwrap();
    let table = &page.body[table_at..table_at + page.body[table_at..].find("</table>").unwrap()];
    assert_eq!(table.matches("<tr data-bucket=").count(), 2, "{table}");
    assert!(table.contains(&format!(r#"<tr data-bucket="{}">"#, rfc3339(hour))));
    assert!(table.contains(r#"<td class="num impressions">5</td><td class="num clicks">3</td><td class="num ctr">60.00 %</td>"#), "{table}");
    assert!(table.contains(r#"<td class="num impressions">40</td><td class="num clicks">7</td><td class="num ctr">17.50 %</td>"#), "{table}");
    assert!(page.body.contains(r#"<dd id="total-clicks">10</dd>"#));
    assert!(page.body.contains(r#"<dd id="total-impressions">45</dd>"#));
    assert!(page.body.contains("<dt>Bot clicks</dt><dd>2</dd>"));

    // Daily: the same counts in one or two days.
    let page = get(
        &app,
        &format!("/dashboard/adverts/{id}?granularity=day"),
        Some(&cookie),
    )
    .await;
    assert_eq!(page.status, 200);
    let svg = chart_svg(&page.body);
    assert!(svg.contains(r#"data-buckets="30""#));
    assert!(svg.contains(">Day (UTC)</text>"));
    let points = chart_points(svg);
    let same_day = earlier / 86_400 == hour / 86_400;
    assert_eq!(points.len(), if same_day { 1 } else { 2 }, "{svg}");
    assert_eq!(points.iter().map(|p| p.1).sum::<u64>(), 10);
    assert_eq!(points.iter().map(|p| p.2).sum::<u64>(), 45);
    assert_eq!(points.last().unwrap().0, rfc3339(hour / 86_400 * 86_400));
    let page = get(
        &app,
        &format!("/dashboard/adverts/{id}?granularity=week"),
        Some(&cookie),
    )
    .await;
    assert_eq!(page.status, 400);

    // The dashboard's list has the totals and CTR.
    let dashboard = get(&app, "/dashboard", Some(&cookie)).await;
    assert!(dashboard.body.contains(r#"<td class="num impressions">45</td><td class="num clicks">10</td><td class="num ctr">22.22 %</td>"#), "{}", dashboard.body);

    // CSV, with the session only.
    let response = app
        .client
        .get(app.url(&format!("/dashboard/adverts/{id}/report.csv")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment;")
    );
    let csv = response.text().await.unwrap();
    assert_eq!(
        csv,
        format!(
            "bucket,clicks,bot_clicks,duplicate_clicks,impressions,suspicious_clicks,\
             suspicious_impressions,conversions,conversion_value,cvr\n\
             {},7,0,0,40,0,0,0,0,0\n{},3,2,0,5,0,0,0,0,0\n",
            rfc3339(earlier),
            rfc3339(hour)
        )
    );
    let page = get(&app, &format!("/dashboard/adverts/{id}/report.csv"), None).await;
    assert_eq!((page.status, page.location()), (303, "/login"));
    app.stop().await;
}

#[tokio::test]
async fn the_advert_page_has_the_creative_the_link_and_a_qr_code_that_encodes_it() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let advert = app.create_advert(&key).await;
    let id = advert["id"].as_i64().unwrap();
    let tracked = advert["tracked_url"].as_str().unwrap().to_owned();
    let cookie = sign_in(&app, &key).await;
    let page = get(&app, &format!("/dashboard/adverts/{id}"), Some(&cookie)).await;
    assert_eq!(page.status, 200);

    // The creative from our own origin, the advert's fields, and the link as selectable text with
    // a copy button that only the script reveals.
    let image_url = advert["image_url"].as_str().unwrap();
    let image_path = image_url.strip_prefix(&app.address).unwrap();
    assert!(
        page.body
            .contains(&format!(r#"<img class="creative" src="{image_path}""#))
    );
    assert!(
        page.body
            .contains("<dd>Seven nights by the sea, flights included.</dd>")
    );
    assert!(page.body.contains("<dd>Travel / Путешествия</dd>"));
    assert!(
        page.body
            .contains("<dd>https://example.com/offers/sochi?utm_source=reklama</dd>")
    );
    assert!(page.body.contains(&format!(
        r#"<code class="link" id="tracked-link">{tracked}</code>"#
    )));
    assert!(page.body.contains(
        r#"<button class="secondary" type="button" hidden data-copy="tracked-link" data-status="copy-status">Copy link</button>"#
    ));
    assert!(
        page.body
            .contains(r#"<script src="/assets/dashboard.js" defer></script>"#)
    );
    let script = app
        .client
        .get(app.url("/assets/dashboard.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(script.text().await.unwrap().contains("data-copy"));

    // The QR code: the SVG qrcode makes for the tracked link, modules and all.
    let code = qrcode::QrCode::new(tracked.as_bytes()).unwrap();
    let expected = code
        .render::<qrcode::render::svg::Color>()
        .quiet_zone(true)
        .module_dimensions(1, 1)
        .build();
    let path_of = |svg: &str| {
        let at = svg.find("<path ").unwrap();
        svg[at..at + svg[at..].find("/>").unwrap()].to_owned()
    };
    let qr_at = page.body.find(r#"<figure class="qr">"#).unwrap();
    let figure = &page.body[qr_at..qr_at + page.body[qr_at..].find("</figure>").unwrap()];
    let side = code.width() + 8;
    assert!(
        figure.contains(&format!(r#"viewBox="0 0 {side} {side}""#)),
        "{figure}"
    );
    assert_eq!(path_of(figure), path_of(&expected));
    assert!(figure.contains(r#"role="img" aria-labelledby="qr-caption""#));
    assert!(figure.contains(&format!("QR code of the tracked link {tracked}")));
    // One dark square a module: as many as qrcode's own modules are dark.
    let dark = code
        .to_colors()
        .iter()
        .filter(|c| **c == qrcode::Color::Dark)
        .count();
    let drawn: u32 = path_of(figure)
        .split('M')
        .skip(1)
        .map(|run| {
            let h = run.split('h').nth(1).unwrap();
            h.split('v').next().unwrap().parse::<u32>().unwrap()
        })
        .sum();
    assert_eq!(drawn as usize, dark);

    // Links to the CSV and between the pages.
    assert!(page.body.contains(&format!(
        r#"href="/dashboard/adverts/{id}/report.csv?granularity=hour""#
    )));
    assert!(
        page.body
            .contains(r#"<a href="/dashboard">Your adverts</a>"#)
    );
    assert!(page.body.contains(r#"<a href="/">Submit an advert</a>"#));
    app.stop().await;
}

#[tokio::test]
async fn the_advert_page_alone_may_run_our_script_and_every_page_has_the_security_headers() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let advert = app.create_advert(&key).await;
    let id = advert["id"].as_i64().unwrap();
    let cookie = sign_in(&app, &key).await;
    let advert_page = get(&app, &format!("/dashboard/adverts/{id}"), Some(&cookie)).await;
    assert_html_security_headers(&advert_page.headers);
    let csp = advert_page.headers["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    for (path, cookie) in [
        ("/dashboard", Some(cookie.as_str())),
        ("/", Some(cookie.as_str())),
        ("/dashboard/adverts/999999", Some(cookie.as_str())),
        ("/login", None),
    ] {
        let page = get(&app, path, cookie).await;
        assert_html_security_headers(&page.headers);
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(!csp.contains("script-src"), "{path}: {csp}");
        assert!(!page.body.contains("<script"), "{path}");
    }
    app.stop().await;
}

const XSS: &str = "<script>alert(1)</script>";

#[tokio::test]
async fn markup_in_a_title_or_a_name_is_escaped_on_every_page() {
    let app = spawn_app().await;
    let key = app
        .customer_key("<b>Acme</b><script>alert(2)</script>")
        .await;
    let mut body = advert_json(&png(64, 64));
    body["title"] = json!(XSS);
    body["text"] = json!("Nice\"><img src=x onerror=alert(1)>");
    let response = app.post_advert(&key, &body).await;
    assert_eq!(response.status(), 201);
    let advert: Value = response.json().await.unwrap();
    let id = advert["id"].as_i64().unwrap();
    let cookie = sign_in(&app, &key).await;
    let csrf = get(&app, "/dashboard", Some(&cookie)).await.csrf();
    let refused = post_form(
        &app,
        &format!("/dashboard/adverts/{id}/status"),
        Some(&cookie),
        None,
        &[("status", "paused")],
    )
    .await;
    let invalid = Page::from(
        app.client
            .post(app.url("/dashboard/adverts"))
            .header("cookie", &cookie)
            .multipart(signed_in_form(Some(&csrf), XSS).text("genre", XSS))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(invalid.status, 422, "{}", invalid.body);
    let mut pages = vec![("refused", refused), ("invalid form", invalid)];
    for path in [
        "/dashboard".to_owned(),
        format!("/dashboard/adverts/{id}"),
        format!("/dashboard/adverts/{id}?granularity=day"),
        "/".to_owned(),
        "/dashboard/adverts/0".to_owned(),
    ] {
        pages.push(("get", get(&app, &path, Some(&cookie)).await));
    }
    for (what, page) in &pages {
        let body = &page.body;
        assert!(!body.contains("<script>"), "{what}: {body}");
        assert!(!body.contains("<b>Acme"), "{what}: {body}");
        assert!(!body.contains("<img src=x"), "{what}: {body}");
        assert!(
            body.contains("&lt;b&gt;Acme&lt;/b&gt;&lt;script&gt;alert(2)&lt;/script&gt;"),
            "{what}: the name, escaped: {body}"
        );
        // Our own script tag is the only one, on the advert page only.
        assert!(body.matches("<script").count() <= 1, "{what}");
    }
    let advert_page = &pages[3].1.body;
    assert!(advert_page.contains("<h1>&lt;script&gt;alert(1)&lt;/script&gt;</h1>"));
    assert!(advert_page.contains("<title>&lt;script&gt;alert(1)&lt;/script&gt; · reklama</title>"));
    assert!(advert_page.contains(r#"alt="&lt;script&gt;alert(1)&lt;/script&gt;""#));
    assert!(advert_page.contains("<dd>Nice&quot;&gt;&lt;img src=x onerror=alert(1)&gt;</dd>"));
    let dashboard = &pages[2].1.body;
    assert!(dashboard.contains(&format!(
        r#"<a href="/dashboard/adverts/{id}">&lt;script&gt;alert(1)&lt;/script&gt;</a>"#
    )));
    assert!(dashboard.contains(r#"aria-label="Pause &lt;script&gt;alert(1)&lt;/script&gt;""#));
    app.stop().await;
}

/// The advert form as a signed-in browser sends it (no API key; the token first when given).
fn signed_in_form(csrf: Option<&str>, title: &str) -> Form {
    let mut form = Form::new();
    if let Some(csrf) = csrf {
        form = form.text("csrf_token", csrf.to_owned());
    }
    form.text("title", title.to_owned())
        .text("text", "Seven nights by the sea.")
        .text("target_url", "https://example.com/sochi")
        .text("lang", "")
        .part(
            "image",
            Part::bytes(png(320, 240))
                .file_name("banner.png")
                .mime_str("image/png")
                .unwrap(),
        )
}

#[tokio::test]
async fn signed_in_the_form_needs_no_key_and_links_to_the_dashboard() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;

    // Not signed in: the key field, and a way to the dashboard.
    let anonymous = get(&app, "/", None).await;
    assert!(
        anonymous
            .body
            .contains(r#"<form method="post" action="/adverts" enctype="multipart/form-data">"#)
    );
    assert!(anonymous.body.contains(r#"name="api_key""#));
    assert!(
        anonymous
            .body
            .contains(r#"<a href="/dashboard">Your adverts</a>"#)
    );
    assert!(anonymous.body.contains(r#"<a href="/login">Sign in</a>"#));
    assert!(!anonymous.body.contains("csrf_token"));

    let cookie = sign_in(&app, &key).await;
    let page = get(&app, "/", Some(&cookie)).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"<form method="post" action="/dashboard/adverts" enctype="multipart/form-data"><input type="hidden" name="csrf_token""#), "{}", page.body);
    assert!(!page.body.contains(r#"name="api_key""#));
    assert!(page.body.contains("Signed in as <strong>Acme</strong>"));
    let csrf = page.csrf();

    // A field missing: the form again, still without the key field, values kept.
    let form = signed_in_form(Some(&csrf), "Summer in Sochi");
    let invalid = Page::from(
        app.client
            .post(app.url("/dashboard/adverts"))
            .header("cookie", &cookie)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(invalid.status, 422, "{}", invalid.body);
    assert!(
        invalid
            .body
            .contains(r#"<p class="field-error" id="genre-error">"#)
    );
    assert!(invalid.body.contains(r#"value="Summer in Sochi""#));
    assert!(!invalid.body.contains(r#"name="api_key""#));
    assert_eq!(invalid.csrf(), csrf);

    let form = signed_in_form(Some(&csrf), "Summer in Sochi").text("genre", "travel");
    let created = Page::from(
        app.client
            .post(app.url("/dashboard/adverts"))
            .header("cookie", &cookie)
            .header("origin", &app.address)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(created.status, 303, "{}", created.body);
    let (_, list) = app.get_json("/api/v1/adverts", &key).await;
    let adverts = list["adverts"].as_array().unwrap();
    assert_eq!(adverts.len(), 1);
    let id = adverts[0]["id"].as_i64().unwrap();
    assert_eq!(
        created.location(),
        format!("/dashboard/adverts/{id}?created=1")
    );
    let page = get(&app, created.location(), Some(&cookie)).await;
    assert!(page.body.contains("Your advert is stored and live."));

    // The key form keeps working for people who are not signed in.
    let form = Form::new()
        .text("api_key", key.clone())
        .text("title", "By key")
        .text("text", "Typed with the key.")
        .text("genre", "food")
        .text("target_url", "https://example.com/")
        .part(
            "image",
            Part::bytes(png(64, 64))
                .file_name("a.png")
                .mime_str("image/png")
                .unwrap(),
        );
    let response = app.post_form_page(form).await;
    assert_eq!(response.status(), 201);
    let (_, list) = app.get_json("/api/v1/adverts", &key).await;
    assert_eq!(list["adverts"].as_array().unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_responsive_adverts_page_lists_its_creatives_with_counts_and_pauses_one() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let mut body = advert_json(&png(64, 64));
    body.as_object_mut().unwrap().remove("title");
    body["titles"] = serde_json::json!(["Summer in Sochi", "Sochi for less"]);
    let response = app.post_advert(&key, &body).await;
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    // One card, and a click on it.
    let cards = app.cards("user_id=reader-1&genres=travel").await;
    assert_eq!(
        app.follow(cards[0]["click_url"].as_str().unwrap())
            .await
            .status(),
        302
    );
    let clicked = cards[0]["creative_id"].as_i64().unwrap();

    let cookie = sign_in(&app, &key).await;
    let path = format!("/dashboard/adverts/{id}");
    let page = get(&app, &path, Some(&cookie)).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains(r#"<h2 id="creatives-heading">Creatives</h2>"#)
    );
    assert!(
        page.body.contains("<li>Sochi for less</li>"),
        "titles are listed"
    );
    let row = |body: &str, n: i64| -> String {
        let start = body.find(&format!(r#"<tr data-creative="{n}">"#)).unwrap();
        body[start..start + body[start..].find("</tr>").unwrap()].to_owned()
    };
    let first = row(&page.body, clicked);
    assert!(
        first.contains(r#"<td class="num impressions">1</td>"#),
        "{first}"
    );
    assert!(
        first.contains(r#"<td class="num clicks">1</td>"#),
        "{first}"
    );
    assert!(
        first.contains(">Pause</button>") && first.contains(">Pin</button>"),
        "{first}"
    );
    let other = 3 - clicked;
    assert!(row(&page.body, other).contains(r#"<td class="num impressions">0</td>"#));

    let csrf = page.csrf();
    let done = post_form(
        &app,
        &format!("/dashboard/adverts/{id}/creatives/{other}/status"),
        Some(&cookie),
        Some(&app.address),
        &[("csrf_token", &csrf), ("status", "paused")],
    )
    .await;
    assert_eq!(
        (done.status, done.location()),
        (
            303,
            format!("/dashboard/adverts/{id}#creatives-heading").as_str()
        )
    );
    let page = get(&app, &path, Some(&cookie)).await;
    let paused = row(&page.body, other);
    assert!(
        paused.contains("status-paused") && paused.contains(">Resume</button>"),
        "{paused}"
    );
    // Pausing the last one is refused with the API's status, as a page.
    let refused = post_form(
        &app,
        &format!("/dashboard/adverts/{id}/creatives/{clicked}/status"),
        Some(&cookie),
        Some(&app.address),
        &[("csrf_token", &csrf), ("status", "paused")],
    )
    .await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    // Without the CSRF token: refused.
    let forged = post_form(
        &app,
        &format!("/dashboard/adverts/{id}/creatives/{clicked}/status"),
        Some(&cookie),
        Some(&app.address),
        &[("status", "pinned")],
    )
    .await;
    assert_eq!(forged.status, 403);
    let unknown = post_form(
        &app,
        &format!("/dashboard/adverts/{id}/creatives/9/status"),
        Some(&cookie),
        Some(&app.address),
        &[("csrf_token", &csrf), ("status", "pinned")],
    )
    .await;
    assert_eq!(unknown.status, 404);
    app.stop().await;
}
