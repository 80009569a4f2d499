//! Scoped API keys: made, listed and revoked through the API, the dashboard and the command
//! line; a read key reads and never writes (every non-GET `/api/v1` operation of the OpenAPI
//! document is tried with one); a read key's dashboard session is read-only; revoking a key ends
//! its sessions; keys of the one-key era keep working as write keys.

use std::collections::BTreeSet;
use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, TestEnv, advert_json, field_codes, pairs, png, random_suffix, spawn_app_with,
};
use crate::isolation::sign_in;

async fn app() -> TestApp {
    spawn_app_with(TestEnv::new(), None, |s| {
        // About who may do what, not how often.
        s.limits.enabled = false;
    })
    .await
}

/// `method path` with `key` and a JSON body: the status and the body.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A new key of the customer whose write key is `key`: (its id, the whole key).
async fn new_key(app: &TestApp, key: &str, scope: &str, name: Option<&str>) -> (String, String) {
    let mut body = json!({ "scope": scope });
    if let Some(name) = name {
        body["name"] = json!(name);
    }
    let (status, made) = call(app, Method::POST, "/api/v1/keys", key, Some(&body)).await;
    assert_eq!(status, 201, "{made}");
    (
        made["id"].as_str().unwrap().to_owned(),
        made["key"].as_str().unwrap().to_owned(),
    )
}

async fn list(app: &TestApp, key: &str) -> Vec<Value> {
    let (status, body) = call(app, Method::GET, "/api/v1/keys", key, None).await;
    assert_eq!(status, 200, "{body}");
    body["keys"].as_array().unwrap().clone()
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn keys_are_made_listed_and_revoked_through_the_api() {
    let app = app().await;
    let write = app.customer_key("Acme").await;
    let write_id = write[3..15].to_owned();

    // A read key with a name: the whole key once, never stored or listed again.
    let response = app
        .client
        .post(app.url("/api/v1/keys"))
        .bearer_auth(&write)
        .json(&json!({"scope": "read", "name": "  reporting  "}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let made: Value = response.json().await.unwrap();
    let read = made["key"].as_str().unwrap().to_owned();
    let read_id = made["id"].as_str().unwrap().to_owned();
    assert!(read.starts_with(&format!("rk_{read_id}_")), "{made}");
    assert_eq!(read.len(), 3 + 12 + 1 + 32);
    assert_eq!(
        (&made["scope"], &made["name"], &made["last_used_at"]),
        (&json!("read"), &json!("reporting"), &Value::Null)
    );
    assert!(
        made["created_at"].as_str().unwrap().ends_with('Z'),
        "{made}"
    );

    // The list: public ids, scopes, names, times; never a secret or a hash.
    let response = app
        .client
        .get(app.url("/api/v1/keys"))
        .bearer_auth(&write)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-store");
    let text = response.text().await.unwrap();
    assert!(!text.contains(&read[16..]), "a secret is listed: {text}");
    assert!(!text.contains(&write[16..]), "a secret is listed: {text}");
    assert!(!text.contains("hash") && !text.contains("rk_"), "{text}");
    let keys: Value = serde_json::from_str(&text).unwrap();
    let keys = keys["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{text}");
    let fields: BTreeSet<&str> = keys[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "id",
            "scope",
            "name",
            "created_at",
            "last_used_at",
            "current"
        ])
    );
    // Oldest first; `current` is the key that asked, and this request noted its use.
    assert_eq!(
        (&keys[0]["id"], &keys[0]["scope"], &keys[0]["current"]),
        (&json!(write_id), &json!("write"), &json!(true))
    );
    assert!(keys[0]["last_used_at"].is_string(), "{text}");
    assert_eq!(
        (&keys[1]["id"], &keys[1]["scope"], &keys[1]["current"]),
        (&json!(read_id), &json!("read"), &json!(false))
    );
    assert_eq!(keys[1]["last_used_at"], Value::Null, "not used yet");

    // The read key lists the same keys, and its use is noted.
    let seen_by_read = list(&app, &read).await;
    assert_eq!(seen_by_read.len(), 2);
    assert_eq!(seen_by_read[1]["current"], true);
    assert!(
        seen_by_read[1]["last_used_at"].is_string(),
        "last_used_at is set once the key is used: {seen_by_read:?}"
    );

    // Bad bodies, each naming its field, in the error format.
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/keys",
        &write,
        Some(&json!({"scope": "admin"})),
    )
    .await;
    assert_eq!((status, code(&body)), (422, "validation_failed"), "{body}");
    assert_eq!(field_codes(&body), pairs(&[("scope", "invalid")]));
    assert_eq!(
        body["error"]["fields"][0]["allowed"],
        json!(["read", "write"])
    );
    let (status, body) = call(&app, Method::POST, "/api/v1/keys", &write, Some(&json!({}))).await;
    assert_eq!(status, 422);
    assert_eq!(field_codes(&body), pairs(&[("scope", "required")]));
    assert_eq!(
        body["error"]["fields"][0]["allowed"],
        json!(["read", "write"])
    );
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/keys",
        &write,
        Some(&json!({"scope": "read", "customer_id": 2, "name": "x".repeat(61)})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        field_codes(&body),
        pairs(&[("customer_id", "unknown_field"), ("name", "too_long")])
    );
    let response = app
        .client
        .post(app.url("/api/v1/keys"))
        .bearer_auth(&write)
        .body("scope=read")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let response = app
        .client
        .post(app.url("/api/v1/keys"))
        .bearer_auth(&write)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(list(&app, &write).await.len(), 2, "nothing was made");

    // The last write key stays: there would be no key left to manage the account with.
    let (status, body) = call(
        &app,
        Method::DELETE,
        &format!("/api/v1/keys/{write_id}"),
        &write,
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (409, "last_write_key"), "{body}");
    let (status, _) = call(&app, Method::GET, "/api/v1/adverts", &write, None).await;
    assert_eq!(status, 200, "the refused key still works");

    // With a second write key, the first may revoke itself: that was its last request.
    let (second_id, second) = new_key(&app, &write, "write", Some("ci")).await;
    let (status, _) = call(
        &app,
        Method::DELETE,
        &format!("/api/v1/keys/{write_id}"),
        &write,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = call(&app, Method::GET, "/api/v1/adverts", &write, None).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    let ids: Vec<Value> = list(&app, &second)
        .await
        .iter()
        .map(|k| k["id"].clone())
        .collect();
    assert_eq!(ids, [json!(read_id), json!(second_id)]);

    // Revoking the read key; again, or a key that never was: 404 alike.
    let path = format!("/api/v1/keys/{read_id}");
    let (status, _) = call(&app, Method::DELETE, &path, &second, None).await;
    assert_eq!(status, 204);
    let (status, body) = call(&app, Method::GET, "/api/v1/adverts", &read, None).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    let (again, again_body) = call(&app, Method::DELETE, &path, &second, None).await;
    let (never, never_body) = call(
        &app,
        Method::DELETE,
        "/api/v1/keys/AAAAAAAAAAAA",
        &second,
        None,
    )
    .await;
    let (odd, odd_body) = call(&app, Method::DELETE, "/api/v1/keys/x", &second, None).await;
    assert_eq!((again, never, odd), (404, 404, 404));
    assert_eq!(again_body, never_body);
    assert_eq!(odd_body, never_body);
    app.stop().await;
}

#[tokio::test]
async fn another_customers_keys_are_neither_listed_nor_revocable() {
    let app = app().await;
    let alice = app.customer_key("Alice").await;
    let bob = app.customer_key("Bob").await;
    let (alices_read, alices_read_key) = new_key(&app, &alice, "read", None).await;
    let (alices_write, _) = new_key(&app, &alice, "write", None).await;

    // Bob sees only his own key.
    let bobs = list(&app, &bob).await;
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0]["id"], json!(&bob[3..15]));

    // Alice's keys are, to Bob, keys that do not exist: the same 404, and nothing changes.
    for id in [&alices_read, &alices_write, &alice[3..15].to_owned()] {
        let (status, body) = call(
            &app,
            Method::DELETE,
            &format!("/api/v1/keys/{id}"),
            &bob,
            None,
        )
        .await;
        let (_, unknown) = call(
            &app,
            Method::DELETE,
            "/api/v1/keys/ZZZZZZZZZZZZ",
            &bob,
            None,
        )
        .await;
        assert_eq!((status, &body), (404, &unknown), "{id}");
    }
    assert_eq!(list(&app, &alice).await.len(), 3);
    let (status, _) = call(&app, Method::GET, "/api/v1/adverts", &alices_read_key, None).await;
    assert_eq!(status, 200);

    // Without a valid key, nothing is looked up.
    for (method, path) in [
        (Method::GET, "/api/v1/keys".to_owned()),
        (Method::POST, "/api/v1/keys".to_owned()),
        (Method::DELETE, format!("/api/v1/keys/{alices_read}")),
    ] {
        let mut forged = alice.clone();
        forged.replace_range(20.., &"x".repeat(28));
        for key in ["", "rk_short_secret", forged.as_str()] {
            let (status, body) = call(
                &app,
                method.clone(),
                &path,
                key,
                Some(&json!({"scope": "read"})),
            )
            .await;
            assert_eq!(
                (status, code(&body)),
                (401, "unauthorized"),
                "{method} {path}"
            );
        }
    }
    assert_eq!(list(&app, &alice).await.len(), 3);

    // A revoked customer's keys all stop, the read one too.
    assert_eq!(app.handles.customers.revoke("Alice").await.unwrap(), 1);
    let (status, _) = call(&app, Method::GET, "/api/v1/keys", &alices_read_key, None).await;
    assert_eq!(status, 401);
    app.stop().await;
}

/// Every operation of the document that is not a GET and is under `/api/v1` (the serve
/// excepted: it takes no key), with its path's placeholders filled.
fn writes(doc: &Value, advert: i64) -> Vec<(Method, String, String)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1/") || path == "/api/v1/serve" {
            continue;
        }
        for method in ["post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                let filled = path
                    .replace("{id}", &advert.to_string())
                    .replace("{creative_id}", "1");
                found.push((
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    filled,
                    path.clone(),
                ));
            }
        }
    }
    found
}

#[tokio::test]
async fn a_read_key_may_read_and_every_write_of_the_api_is_insufficient_scope() {
    let app = app().await;
    let write = app.customer_key("Acme").await;
    let (_, read) = new_key(&app, &write, "read", Some("reports")).await;
    let advert = app.create_advert(&write).await;
    let id = advert["id"].as_i64().unwrap();

    // Reads: adverts, one advert, variants, creatives, reports, keys.
    for path in [
        "/api/v1/adverts".to_owned(),
        format!("/api/v1/adverts/{id}"),
        format!("/api/v1/adverts/{id}/variants"),
        format!("/api/v1/adverts/{id}/creatives"),
        format!("/api/v1/adverts/{id}/report"),
        format!("/api/v1/adverts/{id}/report?format=csv"),
        "/api/v1/reports".to_owned(),
        "/api/v1/keys".to_owned(),
    ] {
        let response = app
            .client
            .get(app.url(&path))
            .bearer_auth(&read)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path} with a read key");
    }

    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let writes = writes(&doc, id);
    // The ones known today, at least; a new one is found by the same walk.
    for known in [
        "POST /api/v1/adverts",
        "PATCH /api/v1/adverts/{id}",
        "DELETE /api/v1/adverts/{id}",
        "PATCH /api/v1/adverts/{id}/creatives/{creative_id}",
        "POST /api/v1/conversions",
        "POST /api/v1/keys",
        "DELETE /api/v1/keys/{id}",
    ] {
        assert!(
            writes.iter().any(|(m, _, p)| format!("{m} {p}") == known),
            "{known} is not in the document"
        );
    }
    let read_id = read[3..15].to_owned();
    for (method, path, documented) in &writes {
        let what = format!("{method} {documented}");
        // The document says so: the write scope, and the 403.
        let op = &doc["paths"][documented][method.as_str().to_lowercase()];
        assert!(
            op["security"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["bearer"] == json!(["write"])),
            "{what}: security {}",
            op["security"]
        );
        assert!(
            op["responses"]["403"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("insufficient_scope")),
            "{what} documents no 403 insufficient_scope"
        );
        // A read key is refused, whatever the body, before anything is looked at.
        let path = path.replace(&format!("/keys/{id}"), &format!("/keys/{read_id}"));
        for body in [
            json!({}),
            json!({"scope": "write", "weight": 3, "status": "paused"}),
        ] {
            let (status, answer) = call(&app, method.clone(), &path, &read, Some(&body)).await;
            assert_eq!(
                (status, code(&answer)),
                (403, "insufficient_scope"),
                "{what} with a read key: {answer}"
            );
            assert!(answer["error"]["message"].is_string());
        }
        // The write key gets past the scope (to a 404 or a 422 with these bodies).
        let unknown = path
            .replace(&format!("/adverts/{id}"), "/adverts/999999999")
            .replace(&format!("/keys/{read_id}"), "/keys/ZZZZZZZZZZZZ");
        let (status, answer) = call(&app, method.clone(), &unknown, &write, Some(&json!({}))).await;
        assert!(
            ![401, 403].contains(&status) && (400..500).contains(&status),
            "{what} with the write key: {status} {answer}"
        );
    }

    // Nothing the read key tried changed anything.
    let (status, after) = call(
        &app,
        Method::GET,
        &format!("/api/v1/adverts/{id}"),
        &write,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&after["status"], &after["weight"], &after["title"]),
        (&advert["status"], &advert["weight"], &advert["title"])
    );
    assert_eq!(list(&app, &write).await.len(), 2);
    let (status, adverts) = call(&app, Method::GET, "/api/v1/adverts", &write, None).await;
    assert_eq!(
        (status, adverts["adverts"].as_array().unwrap().len()),
        (200, 1)
    );

    // The advert form for people refuses a read key too, before reading the image.
    let form = reqwest::multipart::Form::new()
        .text("api_key", read.clone())
        .text("title", "Summer in Sochi")
        .text("text", "Seven nights by the sea.")
        .text("genre", "travel")
        .text("target_url", "https://example.com/")
        .part(
            "image",
            crate::helpers::file_part(png(64, 64), "a.png", "image/png"),
        );
    let response = app.post_form_page(form).await;
    assert_eq!(response.status(), 403);
    let page = response.text().await.unwrap();
    assert!(page.contains("read key"), "{page}");
    let (_, adverts) = call(&app, Method::GET, "/api/v1/adverts", &write, None).await;
    assert_eq!(adverts["adverts"].as_array().unwrap().len(), 1);
    app.stop().await;
}

async fn form_post(
    app: &TestApp,
    path: &str,
    cookie: &str,
    body: &str,
) -> (u16, Option<String>, String) {
    let response = app
        .client
        .post(app.url(path))
        .header("cookie", format!("reklama_session={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    (status, location, response.text().await.unwrap())
}

async fn page(app: &TestApp, path: &str, cookie: &str) -> (u16, Option<String>, String) {
    let response = app
        .client
        .get(app.url(path))
        .header("cookie", format!("reklama_session={cookie}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    (status, location, response.text().await.unwrap())
}

#[tokio::test]
async fn a_read_keys_dashboard_session_looks_but_never_changes() {
    let app = app().await;
    let write = app.customer_key("Acme").await;
    let (_, read) = new_key(&app, &write, "read", None).await;
    let id = app.create_advert(&write).await["id"].as_i64().unwrap();
    let session = sign_in(&app, &read).await;

    // Every page reads.
    let (status, _, dashboard) = page(&app, "/dashboard", &session.cookie).await;
    assert_eq!(status, 200);
    assert!(dashboard.contains("read-only"), "{dashboard}");
    assert!(
        !dashboard.contains("/status\""),
        "no pause button: {dashboard}"
    );
    for path in [
        format!("/dashboard/adverts/{id}"),
        format!("/dashboard/adverts/{id}/report.csv"),
        "/dashboard/keys".to_owned(),
    ] {
        let (status, _, body) = page(&app, &path, &session.cookie).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            !body.contains("action=\"/dashboard/keys\""),
            "{path}: a key form"
        );
    }
    // The advert form asks a read session for a key instead of posting as it.
    let (_, _, form) = page(&app, "/", &session.cookie).await;
    assert!(form.contains("name=\"api_key\""), "{form}");

    // Every dashboard form that changes something answers 403, CSRF token and all. Found in the
    // OpenAPI document, so a form added later is tried too.
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut tried = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/dashboard") || item.get("post").is_none() {
            continue;
        }
        let filled = path
            .replace("{id}", &id.to_string())
            .replace("{creative_id}", "1");
        let filled = if path.starts_with("/dashboard/keys/") {
            path.replace("{id}", &write[3..15])
        } else {
            filled
        };
        let body = format!("csrf_token={}&status=paused&scope=read", session.csrf);
        let (status, _, answer) = form_post(&app, &filled, &session.cookie, &body).await;
        assert_eq!(status, 403, "POST {path} from a read session: {answer}");
        assert!(answer.contains("read key"), "POST {path}: {answer}");
        tried += 1;
    }
    assert!(tried >= 5, "only {tried} dashboard forms");
    let (_, after) = call(
        &app,
        Method::GET,
        &format!("/api/v1/adverts/{id}"),
        &write,
        None,
    )
    .await;
    assert_eq!(after["status"], "active");
    assert_eq!(list(&app, &write).await.len(), 2);

    // Signing out is not a change of the account: it works.
    let (status, location, _) = form_post(
        &app,
        "/logout",
        &session.cookie,
        &format!("csrf_token={}", session.csrf),
    )
    .await;
    assert_eq!((status, location.as_deref()), (303, Some("/login")));
    app.stop().await;
}

#[tokio::test]
async fn keys_on_the_dashboard_page_and_revoking_a_key_ends_its_sessions() {
    let app = app().await;
    let write = app.customer_key("Acme").await;
    let write_id = write[3..15].to_owned();
    let session = sign_in(&app, &write).await;

    let (status, _, keys_page) = page(&app, "/dashboard/keys", &session.cookie).await;
    assert_eq!(status, 200);
    assert!(keys_page.contains(&write_id), "{keys_page}");
    assert!(keys_page.contains("this session"), "{keys_page}");
    assert!(
        !keys_page.contains(&write[16..]),
        "the secret is on the page"
    );

    // A new read key, shown once on the answer.
    let (status, _, made) = form_post(
        &app,
        "/dashboard/keys",
        &session.cookie,
        &format!("csrf_token={}&scope=read&name=Weekly+report", session.csrf),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let shown = made
        .split(r#"id="new-key-value">"#)
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the new key on the page")
        .to_owned();
    assert!(shown.starts_with("rk_") && shown.len() == 48, "{shown}");
    assert!(made.contains("Weekly report"));
    let (status, _) = call(&app, Method::GET, "/api/v1/adverts", &shown, None).await;
    assert_eq!(status, 200, "the key shown works");
    let (_, _, again) = page(&app, "/dashboard/keys", &session.cookie).await;
    assert!(!again.contains(&shown[16..]), "shown once only");
    assert!(again.contains("Weekly report"));
    let listed = list(&app, &write).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["name"], "Weekly report");

    // A bad scope: the page again, 422, the error beside the field; no key made.
    let (status, _, refused) = form_post(
        &app,
        "/dashboard/keys",
        &session.cookie,
        &format!("csrf_token={}&scope=admin", session.csrf),
    )
    .await;
    assert_eq!(status, 422);
    assert!(refused.contains("key-scope-error"), "{refused}");
    // No CSRF token: refused.
    let (status, _, _) = form_post(&app, "/dashboard/keys", &session.cookie, "scope=read").await;
    assert_eq!(status, 403);
    assert_eq!(list(&app, &write).await.len(), 2);

    // The last write key cannot go.
    let revoke_own = format!("/dashboard/keys/{write_id}/revoke");
    let csrf = format!("csrf_token={}", session.csrf);
    let (status, _, refused) = form_post(&app, &revoke_own, &session.cookie, &csrf).await;
    assert_eq!(status, 409);
    assert!(refused.contains("last write key"), "{refused}");

    // A read key's session ends when the key is revoked, from the dashboard of another.
    let read_session = sign_in(&app, &shown).await;
    let (status, location, _) = form_post(
        &app,
        &format!("/dashboard/keys/{}/revoke", &shown[3..15]),
        &session.cookie,
        &csrf,
    )
    .await;
    assert_eq!(
        (status, location.as_deref()),
        (303, Some("/dashboard/keys"))
    );
    let (status, location, _) = page(&app, "/dashboard", &read_session.cookie).await;
    assert_eq!((status, location.as_deref()), (303, Some("/login")));
    let (status, _) = call(&app, Method::GET, "/api/v1/adverts", &shown, None).await;
    assert_eq!(status, 401);
    // Another customer's key, or one already revoked: not found.
    let other = app.customer_key("Other").await;
    for id in [&other[3..15], &shown[3..15]] {
        let (status, _, _) = form_post(
            &app,
            &format!("/dashboard/keys/{id}/revoke"),
            &session.cookie,
            &csrf,
        )
        .await;
        assert_eq!(status, 404, "{id}");
    }
    let (status, _) = call(&app, Method::GET, "/api/v1/keys", &other, None).await;
    assert_eq!(status, 200, "the other customer's key is untouched");

    // With a second write key, revoking the session's own key signs the browser out.
    let (_, second) = new_key(&app, &write, "write", None).await;
    let api_session = sign_in(&app, &write).await;
    let (status, location, _) = form_post(&app, &revoke_own, &session.cookie, &csrf).await;
    assert_eq!((status, location.as_deref()), (303, Some("/login")));
    for cookie in [&session.cookie, &api_session.cookie] {
        let (status, location, _) = page(&app, "/dashboard", cookie).await;
        assert_eq!((status, location.as_deref()), (303, Some("/login")));
    }
    let (status, _) = call(&app, Method::GET, "/api/v1/adverts", &write, None).await;
    assert_eq!(status, 401);
    // The API revokes sessions alike.
    let (third_id, third) = new_key(&app, &second, "write", None).await;
    let third_session = sign_in(&app, &third).await;
    let (status, _) = call(
        &app,
        Method::DELETE,
        &format!("/api/v1/keys/{third_id}"),
        &second,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, location, _) = page(&app, "/dashboard", &third_session.cookie).await;
    assert_eq!((status, location.as_deref()), (303, Some("/login")));
    app.stop().await;
}

fn reklama(env: &TestEnv) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reklama"));
    cmd.current_dir(env.dir.path())
        .env_remove("RUST_LOG")
        .env("REKLAMA__DATABASE__URL", &env.database_url)
        .env("REKLAMA__CLOUD__URL", env.cloud_dir().display().to_string());
    cmd
}

fn run(env: &TestEnv, args: &[&str]) -> (bool, String, String) {
    let out = reklama(env).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn the_command_line_adds_lists_and_revokes_keys_the_server_honours() {
    let app = app().await;
    let env = app.env.clone();
    let name = format!("Cli {}", random_suffix());
    let (ok, added, stderr) = run(&env, &["customer", "add", &name]);
    assert!(ok, "{stderr}");
    let write = added.trim().to_owned();

    let (ok, stdout, stderr) = run(
        &env,
        &[
            "customer",
            "key",
            "add",
            &name,
            "--scope",
            "read",
            "--name",
            "dashboards",
        ],
    );
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "the key alone on stdout: {stdout:?}");
    let read = lines[0].to_owned();
    assert!(read.starts_with("rk_") && read.len() == 48, "{read}");
    assert!(
        stderr.contains("read") && !stderr.contains(&read),
        "{stderr}"
    );

    // The server takes it as a read key.
    let (status, _) = call(&app, Method::GET, "/api/v1/adverts", &read, None).await;
    assert_eq!(status, 200);
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/adverts",
        &read,
        Some(&advert_json(&png(64, 64))),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "insufficient_scope"));
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/adverts",
        &write,
        Some(&advert_json(&png(64, 64))),
    )
    .await;
    assert_eq!(status, 201, "customer add makes a write key");

    // The list: ids and scopes, never a secret.
    let (ok, listed, stderr) = run(&env, &["customer", "key", "list", &name]);
    assert!(ok, "{stderr}");
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains(&read[3..15]) && listed.contains("dashboards"));
    assert!(!listed.contains(&read[16..]) && !listed.contains(&write[16..]));

    // Bad input is refused, naming it.
    let (ok, _, stderr) = run(&env, &["customer", "key", "add", &name, "--scope", "admin"]);
    assert!(!ok && stderr.contains("--scope"), "{stderr}");
    let (ok, _, stderr) = run(
        &env,
        &["customer", "key", "add", "Nobody at all", "--scope", "read"],
    );
    assert!(!ok && stderr.contains("Nobody at all"), "{stderr}");
    let (ok, _, stderr) = run(&env, &["customer", "key", "revoke", &name, &write[3..15]]);
    assert!(!ok && stderr.contains("last write key"), "{stderr}");

    // Revoking the read key: the server refuses it from then on.
    let (ok, _, stderr) = run(&env, &["customer", "key", "revoke", &name, &read[3..15]]);
    assert!(ok, "{stderr}");
    let (status, _) = call(&app, Method::GET, "/api/v1/adverts", &read, None).await;
    assert_eq!(status, 401);

    // `customer revoke` still revokes every key.
    let (_, other_read) = new_key(&app, &write, "read", None).await;
    let (ok, _, stderr) = run(&env, &["customer", "revoke", &name]);
    assert!(ok, "{stderr}");
    for key in [&write, &other_read] {
        let (status, _) = call(&app, Method::GET, "/api/v1/adverts", key, None).await;
        assert_eq!(status, 401);
    }
    let (ok, _, _) = run(&env, &["customer", "key", "add", &name, "--scope", "write"]);
    assert!(!ok, "a revoked customer gets no new key");
    app.stop().await;
}

/// A database of the one-key era (every migration before `api_keys`) with a customer made the
/// old way, then the migration: its key is a write key, a revoked one stays revoked; and back.
mod one_key_era {
    use diesel::{Connection, PgConnection, RunQueryDsl, SqliteConnection};
    use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
    use sha2::{Digest, Sha256};

    use super::*;

    const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
    const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");
    const OLD_KEY: &str = "rk_OldKeyId1234_abcdefghijklmnopqrstuvwxyzABCDEF";
    const GONE_KEY: &str = "rk_GoneKeyId123_abcdefghijklmnopqrstuvwxyzABCDEF";

    #[derive(diesel::QueryableByName)]
    struct Hash {
        #[diesel(sql_type = diesel::sql_types::Text)]
        key_hash: String,
    }

    fn sha256(text: &str) -> String {
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    fn old_rows() -> String {
        format!(
            "INSERT INTO customers (name, key_id, key_hash, created_at) \
             VALUES ('Old', 'OldKeyId1234', '{}', 1000); \
             INSERT INTO customers (name, key_id, key_hash, created_at, revoked_at) \
             VALUES ('Gone', 'GoneKeyId123', '{}', 1000, 2000);",
            sha256(OLD_KEY),
            sha256(GONE_KEY)
        )
    }

    /// Runs `$body` with a connection to the test's database, of its backend.
    macro_rules! with_conn {
        ($env:expr, |$conn:ident, $migrations:ident| $body:block) => {{
            if let Some(path) = $env.database_url.strip_prefix("sqlite://") {
                let mut $conn = SqliteConnection::establish(path).unwrap();
                let $migrations = SQLITE;
                $body
            } else {
                let mut $conn = PgConnection::establish(&$env.database_url).unwrap();
                let $migrations = POSTGRES;
                $body
            }
        }};
    }

    fn is_api_keys(name: &dyn std::fmt::Display) -> bool {
        name.to_string().ends_with("_api_keys")
    }

    fn api_keys_migration<DB: diesel::backend::Backend>(
        source: &EmbeddedMigrations,
    ) -> Box<dyn diesel::migration::Migration<DB>> {
        diesel::migration::MigrationSource::<DB>::migrations(source)
            .unwrap()
            .into_iter()
            .find(|m| is_api_keys(&m.name()))
            .unwrap()
    }

    fn stored_hash(env: &TestEnv) -> String {
        with_conn!(env, |conn, _m| {
            let rows: Vec<Hash> =
                diesel::sql_query("SELECT key_hash FROM customers WHERE name = 'Old'")
                    .load(&mut conn)
                    .unwrap();
            rows.into_iter().next().unwrap().key_hash
        })
    }

    #[tokio::test]
    async fn a_key_made_before_scopes_is_a_write_key_and_the_migration_reverts() {
        let env = TestEnv::new();
        with_conn!(env, |conn, migrations| {
            for migration in conn.pending_migrations(migrations).unwrap() {
                if is_api_keys(&migration.name()) {
                    break;
                }
                conn.run_migration(&*migration).unwrap();
            }
            for statement in old_rows().split(';').filter(|s| !s.trim().is_empty()) {
                diesel::sql_query(statement).execute(&mut conn).unwrap();
            }
        });
        assert_eq!(stored_hash(&env), sha256(OLD_KEY));

        let app = spawn_app_with(env, None, |s| s.limits.enabled = false).await;
        let (status, _) = call(&app, Method::GET, "/api/v1/adverts", OLD_KEY, None).await;
        assert_eq!(status, 200, "the old key still works");
        let keys = list(&app, OLD_KEY).await;
        assert_eq!(keys.len(), 1);
        assert_eq!(
            (&keys[0]["id"], &keys[0]["scope"], &keys[0]["current"]),
            (&json!("OldKeyId1234"), &json!("write"), &json!(true))
        );
        assert_eq!(keys[0]["created_at"], "1970-01-01T00:00:01Z");
        let (_, read) = new_key(&app, OLD_KEY, "read", None).await;
        let id = app.create_advert(OLD_KEY).await["id"].as_i64().unwrap();
        let (status, _) = call(
            &app,
            Method::GET,
            &format!("/api/v1/adverts/{id}"),
            &read,
            None,
        )
        .await;
        assert_eq!(status, 200);
        let (status, _) = call(&app, Method::GET, "/api/v1/adverts", GONE_KEY, None).await;
        assert_eq!(status, 401, "a revoked customer's key stays revoked");
        let env = app.stop().await;
        assert_eq!(stored_hash(&env), "", "no second copy of the hash is kept");

        // Back: the customer's first key returns to its row.
        with_conn!(env, |conn, migrations| {
            let migration = api_keys_migration(&migrations);
            conn.revert_migration(&*migration).unwrap();
        });
        assert_eq!(stored_hash(&env), sha256(OLD_KEY));
    }
}
