//! Tenant isolation: every per-advert endpoint, the API's and the dashboard's, driven from one
//! table. Another customer's advert is indistinguishable from one that does not exist (404, the
//! same body), a request without valid credentials is refused before anything is looked up
//! (API: 401; dashboard: 303 to the sign-in page), and the owner succeeds. A new per-advert
//! endpoint is one more line in `ENDPOINTS`; a test below fails when one is mounted without it.
//! Per-key endpoints (`{id}` a key's public id) have their own table, `KEY_ENDPOINTS`, and the
//! same checks; so do per-webhook endpoints (`WEBHOOK_ENDPOINTS`).

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{TestApp, TestEnv, eventually, spawn_app_with};

/// How an endpoint authenticates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// `Authorization: Bearer rk_...`; refusal is 401 in the JSON error format.
    Bearer,
    /// The dashboard's session cookie (and CSRF token in forms); refusal is 303 to /login.
    Session,
}

/// A request body; `{csrf}` in a form is replaced by the caller's CSRF token.
#[derive(Clone, Copy)]
enum Body {
    None,
    Json(&'static str),
    Form(&'static str),
}

/// One per-advert endpoint: `{id}` in the path is the advert.
struct Endpoint {
    method: Method,
    path: &'static str,
    body: Body,
    auth: Auth,
    /// What the owner gets.
    owner_status: u16,
}

const fn endpoint(
    method: Method,
    path: &'static str,
    body: Body,
    auth: Auth,
    owner_status: u16,
) -> Endpoint {
    Endpoint {
        method,
        path,
        body,
        auth,
        owner_status,
    }
}

/// Every per-advert endpoint. The owner's requests run in this order, so the destructive one
/// comes last.
const ENDPOINTS: &[Endpoint] = &[
    endpoint(
        Method::GET,
        "/api/v1/adverts/{id}",
        Body::None,
        Auth::Bearer,
        200,
    ),
    endpoint(
        Method::PATCH,
        "/api/v1/adverts/{id}",
        Body::Json(r#"{"weight": 7}"#),
        Auth::Bearer,
        200,
    ),
    endpoint(
        Method::GET,
        "/api/v1/adverts/{id}/report",
        Body::None,
        Auth::Bearer,
        200,
    ),
    endpoint(
        Method::GET,
        "/api/v1/adverts/{id}/report?format=csv&granularity=day",
        Body::None,
        Auth::Bearer,
        200,
    ),
    endpoint(
        Method::GET,
        "/api/v1/adverts/{id}/full",
        Body::None,
        Auth::Bearer,
        200,
    ),
    endpoint(
        Method::GET,
        "/api/v1/adverts/{id}/variants",
        Body::None,
        Auth::Bearer,
        200,
    ),
    endpoint(
        Method::GET,
        "/api/v1/adverts/{id}/creatives",
        Body::None,
        Auth::Bearer,
        200,
    ),
    endpoint(
        Method::PATCH,
        "/api/v1/adverts/{id}/creatives/{creative_id}",
        Body::Json(r#"{"status": "pinned"}"#),
        Auth::Bearer,
        200,
    ),
    endpoint(
        Method::GET,
        "/dashboard/adverts/{id}",
        Body::None,
        Auth::Session,
        200,
    ),
    endpoint(
        Method::GET,
        "/dashboard/adverts/{id}?granularity=day",
        Body::None,
        Auth::Session,
        200,
    ),
    endpoint(
        Method::GET,
        "/dashboard/adverts/{id}/report.csv",
        Body::None,
        Auth::Session,
        200,
    ),
    endpoint(
        Method::POST,
        "/dashboard/adverts/{id}/status",
        Body::Form("status=paused&csrf_token={csrf}"),
        Auth::Session,
        303,
    ),
    endpoint(
        Method::POST,
        "/dashboard/adverts/{id}/creatives/{creative_id}/status",
        Body::Form("status=pinned&csrf_token={csrf}"),
        Auth::Session,
        303,
    ),
    // Content changes come late: a new image sends the advert back on its way to the cloud store
    // (the full record waits for it).
    endpoint(
        Method::PATCH,
        "/api/v1/adverts/{id}",
        Body::Json(r#"{"title": "Renamed", "text": "New words"}"#),
        Auth::Bearer,
        200,
    ),
    endpoint(
        Method::PATCH,
        "/api/v1/adverts/{id}",
        Body::Json(
            r#"{"image_base64": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"}"#,
        ),
        Auth::Bearer,
        200,
    ),
    endpoint(
        Method::DELETE,
        "/api/v1/adverts/{id}",
        Body::None,
        Auth::Bearer,
        204,
    ),
];

/// What a caller presents: an API key, and a dashboard session made with it.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub(crate) key: String,
    /// The `reklama_session` cookie's value.
    pub(crate) cookie: String,
    pub(crate) csrf: String,
}

/// Signs in to the dashboard with `key`: the session cookie and its CSRF token.
pub(crate) async fn sign_in(app: &TestApp, key: &str) -> Credentials {
    let response = app
        .client
        .post(app.url("/login"))
        .form(&[("api_key", key)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303, "sign-in");
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("reklama_session="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let page = app
        .client
        .get(app.url("/dashboard"))
        .header("cookie", format!("reklama_session={cookie}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split(r#"name="csrf_token" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token on the dashboard")
        .to_owned();
    Credentials {
        key: key.to_owned(),
        cookie,
        csrf,
    }
}

async fn call(
    app: &TestApp,
    endpoint: &Endpoint,
    id: impl std::fmt::Display,
    who: Option<&Credentials>,
) -> (u16, String) {
    // Every advert has creative 1 (its first title and text).
    let path = endpoint
        .path
        .replace("{id}", &id.to_string())
        .replace("{creative_id}", "1");
    let mut request = app.client.request(endpoint.method.clone(), app.url(&path));
    match (endpoint.auth, who) {
        (_, None) => {}
        (Auth::Bearer, Some(who)) => request = request.bearer_auth(&who.key),
        (Auth::Session, Some(who)) => {
            request = request.header("cookie", format!("reklama_session={}", who.cookie));
        }
    }
    match endpoint.body {
        Body::None => {}
        Body::Json(json) => {
            request = request
                .header("content-type", "application/json")
                .body(json);
        }
        Body::Form(form) => {
            let csrf = who.map(|w| w.csrf.as_str()).unwrap_or_default();
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.replace("{csrf}", csrf));
        }
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.text().await.unwrap();
    (status, location.map_or(body, |l| format!("-> {l}")))
}

fn error_code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Asserts a refusal for want of valid credentials.
fn assert_refused(endpoint: &Endpoint, status: u16, body: &str, what: &str) {
    match endpoint.auth {
        Auth::Bearer => {
            assert_eq!(status, 401, "{what}: {body}");
            assert_eq!(error_code(body), "unauthorized", "{what}: {body}");
        }
        Auth::Session => {
            assert_eq!((status, body), (303, "-> /login"), "{what}");
        }
    }
}

#[tokio::test]
async fn every_per_advert_endpoint_hides_other_customers_adverts() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        // This test is about who may see what, not how often.
        s.limits.enabled = false;
    })
    .await;
    let alice = sign_in(&app, &app.customer_key("Alice").await).await;
    let bob = sign_in(&app, &app.customer_key("Bob").await).await;
    let carol = sign_in(&app, &app.customer_key("Carol").await).await;
    assert_eq!(app.handles.customers.revoke("Carol").await.unwrap(), 1);
    let id = app.create_advert(&alice.key).await["id"].as_i64().unwrap();
    // Bob has adverts too, so his 404 is not an empty account's.
    let bobs = app.create_advert(&bob.key).await["id"].as_i64().unwrap();
    // The full record is there once the advert reached the cloud store.
    eventually(Duration::from_secs(20), "the advert offloaded", || async {
        let (_, advert) = app
            .get_json(&format!("/api/v1/adverts/{id}"), &alice.key)
            .await;
        (advert["offload_status"] == "done").then_some(())
    })
    .await;
    let unknown = bobs + 1_000_000;
    let malformed = Credentials {
        key: "rk_short_secret".into(),
        cookie: "not-a-session".into(),
        csrf: "x".into(),
    };
    // Alice's own key id and cookie, with the secret or the MAC changed.
    let mut tampered_cookie = alice.cookie.clone();
    let last = tampered_cookie.pop().unwrap();
    tampered_cookie.push(if last == 'A' { 'B' } else { 'A' });
    let forged = Credentials {
        key: format!("{}{}", &alice.key[..alice.key.len() - 32], "x".repeat(32)),
        cookie: tampered_cookie,
        csrf: alice.csrf.clone(),
    };

    for endpoint in ENDPOINTS {
        let what = format!("{} {}", endpoint.method, endpoint.path);
        // Another customer: 404, exactly what an advert that does not exist answers.
        let (status, body) = call(&app, endpoint, id, Some(&bob)).await;
        assert_eq!(status, 404, "{what} by another customer: {body}");
        if endpoint.auth == Auth::Bearer {
            assert_eq!(error_code(&body), "not_found", "{what}: {body}");
        }
        let (unknown_status, unknown_body) = call(&app, endpoint, unknown, Some(&bob)).await;
        assert_eq!(
            (unknown_status, &unknown_body),
            (status, &body),
            "{what}: another customer's advert and an unknown one differ"
        );
        // The owner asking for an advert that does not exist.
        let (status, body) = call(&app, endpoint, unknown, Some(&alice)).await;
        assert_eq!(status, 404, "{what} for an unknown id: {body}");
        // No valid credentials.
        for (who, credentials) in [
            ("nobody", None),
            ("a revoked customer", Some(&carol)),
            ("malformed credentials", Some(&malformed)),
            ("the owner's key id or cookie, tampered with", Some(&forged)),
        ] {
            let (status, body) = call(&app, endpoint, id, credentials).await;
            assert_refused(endpoint, status, &body, &format!("{what} by {who}"));
        }
    }

    // None of that touched the advert: the owner still sees it unchanged, then uses every
    // endpoint in turn.
    let (status, advert) = app
        .get_json(&format!("/api/v1/adverts/{id}"), &alice.key)
        .await;
    assert_eq!(
        (status, advert["weight"].as_u64(), advert["status"].as_str()),
        (200, Some(1), Some("active"))
    );
    for endpoint in ENDPOINTS {
        let what = format!("{} {}", endpoint.method, endpoint.path);
        let (status, body) = call(&app, endpoint, id, Some(&alice)).await;
        assert_eq!(status, endpoint.owner_status, "{what} by the owner: {body}");
    }
    // Bob's advert is still his, untouched.
    let (status, advert) = app
        .get_json(&format!("/api/v1/adverts/{bobs}"), &bob.key)
        .await;
    assert_eq!((status, advert["status"].as_str()), (200, Some("active")));
    app.stop().await;
}

/// Every per-key endpoint: `{id}` in the path is a key's public id. Each revokes the key, so
/// the owner's call takes a key of its own.
const KEY_ENDPOINTS: &[Endpoint] = &[
    endpoint(
        Method::DELETE,
        "/api/v1/keys/{id}",
        Body::None,
        Auth::Bearer,
        204,
    ),
    endpoint(
        Method::POST,
        "/dashboard/keys/{id}/revoke",
        Body::Form("csrf_token={csrf}"),
        Auth::Session,
        303,
    ),
];

#[tokio::test]
async fn every_per_key_endpoint_hides_other_customers_keys() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        s.limits.enabled = false;
    })
    .await;
    let alice = sign_in(&app, &app.customer_key("Alice").await).await;
    let bob = sign_in(&app, &app.customer_key("Bob").await).await;
    let carol = sign_in(&app, &app.customer_key("Carol").await).await;
    assert_eq!(app.handles.customers.revoke("Carol").await.unwrap(), 1);
    let malformed = Credentials {
        key: "rk_short_secret".into(),
        cookie: "not-a-session".into(),
        csrf: "x".into(),
    };
    // One of Alice's keys per endpoint, for its owner's call at the end.
    let mut targets = Vec::new();
    for _ in KEY_ENDPOINTS {
        let response = app
            .client
            .post(app.url("/api/v1/keys"))
            .bearer_auth(&alice.key)
            .json(&serde_json::json!({"scope": "read"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let made: Value = response.json().await.unwrap();
        targets.push(made["id"].as_str().unwrap().to_owned());
    }
    let unknown = "ZZZZZZZZZZZZ";
    for (endpoint, target) in KEY_ENDPOINTS.iter().zip(&targets) {
        let what = format!("{} {}", endpoint.method, endpoint.path);
        for id in [target.as_str(), &alice.key[3..15]] {
            // Another customer: 404, exactly what a key that does not exist answers.
            let (status, body) = call(&app, endpoint, id, Some(&bob)).await;
            assert_eq!(status, 404, "{what} by another customer: {body}");
            if endpoint.auth == Auth::Bearer {
                assert_eq!(error_code(&body), "not_found", "{what}: {body}");
            }
            let (unknown_status, unknown_body) = call(&app, endpoint, unknown, Some(&bob)).await;
            assert_eq!(
                (unknown_status, &unknown_body),
                (status, &body),
                "{what}: another customer's key and an unknown one differ"
            );
            // No valid credentials.
            for (who, credentials) in [
                ("nobody", None),
                ("a revoked customer", Some(&carol)),
                ("malformed credentials", Some(&malformed)),
            ] {
                let (status, body) = call(&app, endpoint, id, credentials).await;
                assert_refused(endpoint, status, &body, &format!("{what} by {who}"));
            }
        }
        // The owner asking for a key that does not exist.
        let (status, body) = call(&app, endpoint, unknown, Some(&alice)).await;
        assert_eq!(status, 404, "{what} for an unknown id: {body}");
    }
    // None of that revoked anything; then the owner revokes each target in turn.
    let listed = |key: String| {
        let app = &app;
        async move {
            let (status, body) = app.get_json("/api/v1/keys", &key).await;
            assert_eq!(status, 200);
            body["keys"].as_array().unwrap().len()
        }
    };
    assert_eq!(listed(alice.key.clone()).await, 1 + targets.len());
    for (endpoint, target) in KEY_ENDPOINTS.iter().zip(&targets) {
        let what = format!("{} {}", endpoint.method, endpoint.path);
        let (status, body) = call(&app, endpoint, target, Some(&alice)).await;
        assert_eq!(status, endpoint.owner_status, "{what} by the owner: {body}");
    }
    assert_eq!(listed(alice.key.clone()).await, 1);
    assert_eq!(listed(bob.key.clone()).await, 1);
    app.stop().await;
}

/// Every per-webhook endpoint: `{id}` in the path is a webhook's id. The owner's requests run
/// in this order, so the destructive one comes last.
const WEBHOOK_ENDPOINTS: &[Endpoint] = &[
    endpoint(
        Method::GET,
        "/api/v1/webhooks/{id}",
        Body::None,
        Auth::Bearer,
        200,
    ),
    endpoint(
        Method::PATCH,
        "/api/v1/webhooks/{id}",
        Body::Json(r#"{"events": ["advert.paused"]}"#),
        Auth::Bearer,
        200,
    ),
    endpoint(
        Method::GET,
        "/api/v1/webhooks/{id}/deliveries",
        Body::None,
        Auth::Bearer,
        200,
    ),
    endpoint(
        Method::DELETE,
        "/api/v1/webhooks/{id}",
        Body::None,
        Auth::Bearer,
        204,
    ),
];

#[tokio::test]
async fn every_per_webhook_endpoint_hides_other_customers_webhooks() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        s.limits.enabled = false;
        // The target is never called here; it need not be public.
        s.webhooks.allow_private_targets = true;
    })
    .await;
    let alice = sign_in(&app, &app.customer_key("Alice").await).await;
    let bob = sign_in(&app, &app.customer_key("Bob").await).await;
    let carol = sign_in(&app, &app.customer_key("Carol").await).await;
    assert_eq!(app.handles.customers.revoke("Carol").await.unwrap(), 1);
    let make = |key: String| {
        let app = &app;
        async move {
            let response = app
                .client
                .post(app.url("/api/v1/webhooks"))
                .bearer_auth(key)
                .json(&serde_json::json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
            let made: Value = response.json().await.unwrap();
            made["id"].as_str().unwrap().to_owned()
        }
    };
    let id = make(alice.key.clone()).await;
    // Bob has a webhook too, so his 404 is not an empty account's.
    let bobs = make(bob.key.clone()).await;
    let unknown = "wh_ZZZZZZZZZZZZZZZZZZZZ";
    let malformed = Credentials {
        key: "rk_short_secret".into(),
        cookie: "not-a-session".into(),
        csrf: "x".into(),
    };
    for endpoint in WEBHOOK_ENDPOINTS {
        let what = format!("{} {}", endpoint.method, endpoint.path);
        for target in [id.as_str(), "not-a-webhook-id"] {
            // Another customer: 404, exactly what a webhook that does not exist answers.
            let (status, body) = call(&app, endpoint, target, Some(&bob)).await;
            assert_eq!(status, 404, "{what} by another customer: {body}");
            assert_eq!(error_code(&body), "not_found", "{what}: {body}");
            let (unknown_status, unknown_body) = call(&app, endpoint, unknown, Some(&bob)).await;
            assert_eq!(
                (unknown_status, &unknown_body),
                (status, &body),
                "{what}: another customer's webhook and an unknown one differ"
            );
        }
        let (status, body) = call(&app, endpoint, unknown, Some(&alice)).await;
        assert_eq!(status, 404, "{what} for an unknown id: {body}");
        for (who, credentials) in [
            ("nobody", None),
            ("a revoked customer", Some(&carol)),
            ("malformed credentials", Some(&malformed)),
        ] {
            let (status, body) = call(&app, endpoint, &id, credentials).await;
            assert_refused(endpoint, status, &body, &format!("{what} by {who}"));
        }
    }
    // None of that changed Alice's webhook; then she uses every endpoint in turn.
    let (status, hook) = app
        .get_json(&format!("/api/v1/webhooks/{id}"), &alice.key)
        .await;
    assert_eq!((status, &hook["events"]), (200, &serde_json::json!(["*"])));
    for endpoint in WEBHOOK_ENDPOINTS {
        let what = format!("{} {}", endpoint.method, endpoint.path);
        let (status, body) = call(&app, endpoint, &id, Some(&alice)).await;
        assert_eq!(status, endpoint.owner_status, "{what} by the owner: {body}");
    }
    // Bob's is still his, untouched; each lists only its own.
    let (status, hook) = app
        .get_json(&format!("/api/v1/webhooks/{bobs}"), &bob.key)
        .await;
    assert_eq!((status, &hook["events"]), (200, &serde_json::json!(["*"])));
    let (_, list) = app.get_json("/api/v1/webhooks", &alice.key).await;
    assert_eq!(list["webhooks"], serde_json::json!([]));
    let (_, list) = app.get_json("/api/v1/webhooks", &bob.key).await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1);
    app.stop().await;
}

#[test]
fn the_table_covers_every_per_webhook_route() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut mounted = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let source = std::fs::read_to_string(&path).unwrap();
                for piece in source.split('"').skip(1).step_by(2) {
                    if piece.starts_with("/api/v1/webhooks/{id}") {
                        mounted.push(piece.to_owned());
                    }
                }
            }
        }
    }
    assert!(mounted.len() >= 2, "{mounted:?}");
    for route in mounted {
        assert!(
            WEBHOOK_ENDPOINTS.iter().any(|e| e.path == route),
            "{route} is mounted but not in the isolation table"
        );
    }
}

#[test]
fn the_table_covers_every_per_key_route() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut mounted = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let source = std::fs::read_to_string(&path).unwrap();
                for piece in source.split('"').skip(1).step_by(2) {
                    if piece.starts_with("/api/v1/keys/{id}")
                        || piece.starts_with("/dashboard/keys/{id}")
                    {
                        mounted.push(piece.to_owned());
                    }
                }
            }
        }
    }
    assert!(mounted.len() >= 2, "{mounted:?}");
    for route in mounted {
        assert!(
            KEY_ENDPOINTS.iter().any(|e| e.path == route),
            "{route} is mounted but not in the isolation table"
        );
    }
}

#[test]
fn the_table_covers_every_per_advert_route() {
    // The per-advert routes mounted in the sources must all be in ENDPOINTS, so an endpoint
    // added later without a line here fails this test.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut mounted = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let source = std::fs::read_to_string(&path).unwrap();
                for piece in source.split('"').skip(1).step_by(2) {
                    if piece.starts_with("/api/v1/adverts/{id}")
                        || piece.starts_with("/dashboard/adverts/{id}")
                    {
                        mounted.push(piece.to_owned());
                    }
                }
            }
        }
    }
    assert!(mounted.len() >= 4, "{mounted:?}");
    for route in mounted {
        assert!(
            ENDPOINTS
                .iter()
                .any(|e| e.path.split('?').next() == Some(route.as_str())),
            "{route} is mounted but not in the isolation table"
        );
    }
}
