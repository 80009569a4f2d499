//! Webhooks: the API (created, listed, changed, deleted; the secret shown once), deliveries
//! signed as the Standard Webhooks specification says and checked here with HMAC-SHA256 the way
//! a receiver would, retries after failures, disabling after failing long enough, the SSRF guard,
//! redirects not followed, a delivery bounded by `webhooks.timeout_ms`, and `stats.flushed`
//! without a broker. The receiver is a small HTTP server on a loopback port, so these tests allow
//! private targets except where they test the guard.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use reklama::main_app::Settings;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{BROWSER, TestApp, TestEnv, eventually, spawn_app_with};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// What the receiver answers.
#[derive(Clone, Copy)]
enum Answer {
    /// 500 for the first N requests, then 200.
    FailFirst(usize),
    /// Always this status (a 3xx with a `location`).
    Always(u16),
}

struct ReceiverState {
    received: Mutex<Vec<Received>>,
    answer: Answer,
    answered: AtomicUsize,
}

/// An HTTP server on a loopback port that records every request.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
    server: actix_web::dev::ServerHandle,
}

impl Receiver {
    async fn start(answer: Answer) -> Self {
        let state = Arc::new(ReceiverState {
            received: Mutex::new(Vec::new()),
            answer,
            answered: AtomicUsize::new(0),
        });
        let data = web::Data::from(state.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(1 << 20))
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            state,
            server: handle,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits for a request whose JSON `type` is `kind`.
    async fn until(&self, kind: &str, limit: Duration) -> Received {
        eventually(limit, &format!("a {kind} delivery"), || async {
            self.received()
                .into_iter()
                .find(|r| r.json()["type"] == kind)
        })
        .await
    }

    async fn stop(self) {
        self.server.stop(false).await;
    }
}

/// A receiver that reads each request whole and answers 200 only after `after`: far later than
/// a delivery may wait.
struct Slow {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Slow {
    async fn start(after: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            // Dropped with the task: every connection it holds is closed then.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                let seen = seen.clone();
                connections.spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !whole_request(&request) {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&request).into_owned());
                    tokio::time::sleep(after).await;
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                });
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            requests,
            task,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// Whether `request` holds the head and the whole body its `content-length` announces.
fn whole_request(request: &[u8]) -> bool {
    let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |n| n.trim().parse().unwrap());
    request.len() >= end + 4 + length
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ReceiverState>,
) -> HttpResponse {
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    state.received.lock().unwrap().push(Received {
        headers,
        body: body.to_vec(),
    });
    let n = state.answered.fetch_add(1, Ordering::SeqCst);
    match state.answer {
        Answer::FailFirst(failures) if n < failures => {
            HttpResponse::InternalServerError().body("not yet")
        }
        Answer::FailFirst(_) => HttpResponse::Ok().body("thanks"),
        Answer::Always(code) => {
            let status = actix_web::http::StatusCode::from_u16(code).unwrap();
            HttpResponse::build(status)
                .insert_header(("location", "http://127.0.0.1:9/elsewhere"))
                .finish()
        }
    }
}

/// Verifies a delivery as a receiver would: `v1,` + base64 HMAC-SHA256, keyed with the
/// secret's decoded bytes, over `{webhook-id}.{webhook-timestamp}.{body}`.
fn verifies(secret: &str, id: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    // The header may carry several space-separated signatures.
    signature.split(' ').any(|s| s == expected)
}

/// Settings of these tests: receivers on loopback are allowed; quick retries.
fn allow_loopback(s: &mut Settings) {
    s.webhooks.allow_private_targets = true;
    s.webhooks.timeout_ms = 2000;
    s.limits.enabled = false;
    s.events.poll_interval_ms = 50;
}

async fn create(app: &TestApp, key: &str, body: &Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn patch(app: &TestApp, key: &str, id: &str, body: &Value) -> (u16, Value) {
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/webhooks/{id}")))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn delete(app: &TestApp, key: &str, id: &str) -> u16 {
    app.client
        .delete(app.url(&format!("/api/v1/webhooks/{id}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn read_key(app: &TestApp, key: &str) -> String {
    let response = app
        .client
        .post(app.url("/api/v1/keys"))
        .bearer_auth(key)
        .json(&json!({"scope": "read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["key"].as_str().unwrap().to_owned()
}

fn fields(body: &Value) -> Vec<(String, String)> {
    body["error"]["fields"]
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .map(|f| {
                    (
                        f["field"].as_str().unwrap().to_owned(),
                        f["code"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The deliveries of a webhook, newest first.
async fn deliveries(app: &TestApp, key: &str, id: &str) -> Vec<Value> {
    let (status, body) = app
        .get_json(&format!("/api/v1/webhooks/{id}/deliveries"), key)
        .await;
    assert_eq!(status, 200, "{body}");
    body["deliveries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn webhooks_are_created_listed_changed_and_deleted_and_the_secret_is_shown_once() {
    let app = spawn_app_with(TestEnv::new(), None, allow_loopback).await;
    let key = app.customer_key("Acme").await;
    let (status, made) = create(
        &app,
        &key,
        &json!({"url": "https://hooks.example.com/reklama", "events": ["advert.paused", "advert.paused", "advert.created"]}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("wh_") && id.len() == 23, "{id}");
    let secret = made["secret"].as_str().unwrap();
    let bytes = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    assert_eq!(bytes.len(), 32);
    assert_eq!(made["url"], "https://hooks.example.com/reklama");
    assert_eq!(made["events"], json!(["advert.paused", "advert.created"]));
    assert_eq!(made["enabled"], true);

    // Listed and shown, never with the secret.
    let (status, list) = app.get_json("/api/v1/webhooks", &key).await;
    assert_eq!(status, 200);
    let listed = list["webhooks"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    let (status, one) = app.get_json(&format!("/api/v1/webhooks/{id}"), &key).await;
    assert_eq!(status, 200);
    for shown in [&listed[0], &one] {
        assert!(shown.get("secret").is_none(), "{shown}");
        assert!(!shown.to_string().contains(secret), "{shown}");
        assert_eq!(shown["enabled"], true);
        assert_eq!(shown["disabled_reason"], Value::Null);
        assert_eq!(shown["failing_since"], Value::Null);
    }

    // Changed: url, events ("*" covers everything), disabled and enabled again.
    let (status, changed) = patch(
        &app,
        &key,
        &id,
        &json!({"url": "https://hooks.example.com/v2", "events": ["advert.created", "*"]}),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["url"], "https://hooks.example.com/v2");
    assert_eq!(changed["events"], json!(["*"]));
    let (_, off) = patch(&app, &key, &id, &json!({"enabled": false})).await;
    assert_eq!(
        (off["enabled"].as_bool(), off["disabled_reason"].as_str()),
        (Some(false), Some("disabled by the customer"))
    );
    let (_, on) = patch(&app, &key, &id, &json!({"enabled": true})).await;
    assert_eq!(
        (on["enabled"].as_bool(), &on["disabled_reason"]),
        (Some(true), &Value::Null)
    );

    // Refused bodies name their field.
    for (body, expected) in [
        (
            json!({"events": ["advert.created"]}),
            vec![("url", "required")],
        ),
        (
            json!({"url": "https://x.example/h"}),
            vec![("events", "required")],
        ),
        (
            json!({"url": "https://x.example/h", "events": []}),
            vec![("events", "empty")],
        ),
        (
            json!({"url": "https://x.example/h", "events": ["advert.exploded"]}),
            vec![("events", "unknown_event")],
        ),
        (
            json!({"url": "ftp://x.example/h", "events": ["*"]}),
            vec![("url", "invalid")],
        ),
        (
            json!({"url": "/relative", "events": ["*"]}),
            vec![("url", "invalid")],
        ),
        (
            json!({"url": "https://u:p@x.example/h", "events": ["*"]}),
            vec![("url", "invalid")],
        ),
        (
            json!({"url": "https://x.example/h#frag", "events": ["*"]}),
            vec![("url", "invalid")],
        ),
        (
            json!({"url": format!("https://x.example/{}", "a".repeat(2048)), "events": ["*"]}),
            vec![("url", "too_long")],
        ),
        (
            json!({"url": "https://x.example/h", "events": ["*"], "secret": "mine"}),
            vec![("secret", "unknown_field")],
        ),
        (
            json!({"url": 5, "events": "advert.created"}),
            vec![("events", "invalid_type"), ("url", "invalid_type")],
        ),
    ] {
        let (status, error) = create(&app, &key, &body).await;
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["error"]["code"], "validation_failed");
        let mut got = fields(&error);
        got.sort();
        let mut want: Vec<(String, String)> = expected
            .iter()
            .map(|(f, c)| ((*f).to_owned(), (*c).to_owned()))
            .collect();
        want.sort();
        assert_eq!(got, want, "{body}: {error}");
    }
    let (_, error) = create(
        &app,
        &key,
        &json!({"url": "https://x.example/h", "events": ["advert.exploded"]}),
    )
    .await;
    let allowed = error["error"]["fields"][0]["allowed"].as_array().unwrap();
    for name in ["advert.created", "stats.flushed", "webhook.disabled"] {
        assert!(allowed.iter().any(|a| a == name), "{name} in {allowed:?}");
    }
    let (status, error) = patch(&app, &key, &id, &json!({"enabled": "yes"})).await;
    assert_eq!(
        (status, fields(&error)),
        (422, vec![("enabled".into(), "invalid_type".into())])
    );
    let response = app
        .client
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(&key)
        .body(r#"{"url": "https://x.example/h", "events": ["*"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);

    // A read key reads, and changes nothing.
    let reader = read_key(&app, &key).await;
    let (status, _) = app.get_json("/api/v1/webhooks", &reader).await;
    assert_eq!(status, 200);
    let (status, body) = create(
        &app,
        &reader,
        &json!({"url": "https://x.example/h", "events": ["*"]}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("insufficient_scope"))
    );
    let (status, body) = patch(&app, &reader, &id, &json!({"enabled": false})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("insufficient_scope"))
    );
    assert_eq!(delete(&app, &reader, &id).await, 403);

    // Deleted: gone.
    assert_eq!(delete(&app, &key, &id).await, 204);
    assert_eq!(delete(&app, &key, &id).await, 404);
    let (status, _) = app.get_json(&format!("/api/v1/webhooks/{id}"), &key).await;
    assert_eq!(status, 404);
    let (_, list) = app.get_json("/api/v1/webhooks", &key).await;
    assert_eq!(list["webhooks"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn an_advert_change_is_delivered_signed_and_a_tampered_body_fails_verification() {
    let receiver = Receiver::start(Answer::FailFirst(0)).await;
    let app = spawn_app_with(TestEnv::new(), None, allow_loopback).await;
    let key = app.customer_key("Acme").await;
    let (_, hook) = create(
        &app,
        &key,
        &json!({"url": receiver.url, "events": ["advert.created", "advert.paused"]}),
    )
    .await;
    let (hook_id, secret) = (
        hook["id"].as_str().unwrap().to_owned(),
        hook["secret"].as_str().unwrap().to_owned(),
    );
    // Another customer's advert reaches nobody here.
    let other = app.customer_key("Other").await;
    app.create_advert(&other).await;
    let advert = app.create_advert(&key).await["id"].as_i64().unwrap();

    let got = receiver
        .until("advert.created", Duration::from_secs(20))
        .await;
    let envelope = got.json();
    assert_eq!(envelope["advert_id"], advert);
    assert_eq!(envelope["data"]["advert"]["id"], advert);
    let event_id = envelope["id"].as_str().unwrap();
    assert!(event_id.starts_with("evt_"));
    assert_eq!(got.header("webhook-id"), Some(event_id));
    assert_eq!(got.header("content-type"), Some("application/json"));
    let timestamp = got.header("webhook-timestamp").unwrap();
    let sent_at: i64 = timestamp.parse().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - sent_at).abs() < 60, "{sent_at} vs {now}");
    let signature = got.header("webhook-signature").unwrap();
    assert!(signature.starts_with("v1,"), "{signature}");
    assert!(verifies(&secret, event_id, timestamp, &got.body, signature));
    // A body changed on the way, or another timestamp, or another secret, fails.
    let mut tampered = got.body.clone();
    let at = tampered.len() - 2;
    tampered[at] ^= 1;
    assert!(!verifies(
        &secret, event_id, timestamp, &tampered, signature
    ));
    assert!(!verifies(
        &secret,
        event_id,
        &(sent_at + 1).to_string(),
        &got.body,
        signature
    ));
    let other_secret = format!("whsec_{}", STANDARD.encode([7u8; 32]));
    assert!(!verifies(
        &other_secret,
        event_id,
        timestamp,
        &got.body,
        signature
    ));

    // Pausing is delivered too; updating (not subscribed) is not.
    let (status, _) = app
        .patch_advert(&key, advert, &json!({"status": "paused", "weight": 3}))
        .await;
    assert_eq!(status, 200);
    receiver
        .until("advert.paused", Duration::from_secs(20))
        .await;
    let list = eventually(
        Duration::from_secs(20),
        "two deliveries succeeded",
        || async {
            let list = deliveries(&app, &key, &hook_id).await;
            (list.len() == 2 && list.iter().all(|d| d["status"] == "succeeded")).then_some(list)
        },
    )
    .await;
    assert_eq!(list[0]["event_type"], "advert.paused");
    assert_eq!(list[1]["event_type"], "advert.created");
    assert_eq!(list[1]["event_id"], event_id);
    for d in &list {
        assert_eq!(
            (d["attempts"].as_i64(), d["last_response_code"].as_i64()),
            (Some(1), Some(200))
        );
        assert!(d["delivered_at"].is_string());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kinds: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["advert.created", "advert.paused"]);
    app.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_backoff_until_one_succeeds() {
    let receiver = Receiver::start(Answer::FailFirst(3)).await;
    let app = spawn_app_with(TestEnv::new(), None, allow_loopback).await;
    let key = app.customer_key("Acme").await;
    let (_, hook) = create(
        &app,
        &key,
        &json!({"url": receiver.url, "events": ["advert.created"]}),
    )
    .await;
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    app.create_advert(&key).await;
    let delivery = eventually(Duration::from_secs(30), "a delivery succeeded", || async {
        deliveries(&app, &key, &hook_id)
            .await
            .into_iter()
            .find(|d| d["event_type"] == "advert.created" && d["status"] == "succeeded")
    })
    .await;
    assert_eq!(delivery["attempts"], 4);
    assert_eq!(delivery["last_response_code"], 200);
    assert_eq!(delivery["last_error"], Value::Null);
    let tries: Vec<Received> = receiver
        .received()
        .into_iter()
        .filter(|r| r.json()["type"] == "advert.created")
        .collect();
    assert_eq!(tries.len(), 4);
    // Every retry is the same event, signed again.
    for t in &tries {
        assert_eq!(
            t.header("webhook-id"),
            Some(delivery["event_id"].as_str().unwrap())
        );
        assert_eq!(t.body, tries[0].body);
        let secret = hook["secret"].as_str().unwrap();
        assert!(verifies(
            secret,
            t.header("webhook-id").unwrap(),
            t.header("webhook-timestamp").unwrap(),
            &t.body,
            t.header("webhook-signature").unwrap()
        ));
    }
    // A success ends the failure record.
    let (_, shown) = app
        .get_json(&format!("/api/v1/webhooks/{hook_id}"), &key)
        .await;
    assert_eq!(
        (shown["enabled"].as_bool(), &shown["failing_since"]),
        (Some(true), &Value::Null)
    );
    app.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn a_webhook_failing_long_enough_is_disabled_and_the_customer_told() {
    let broken = Receiver::start(Answer::Always(500)).await;
    let watcher = Receiver::start(Answer::FailFirst(0)).await;
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        allow_loopback(s);
        // About a second.
        s.webhooks.disable_after_hours = 0.0003;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let (_, hook) = create(
        &app,
        &key,
        &json!({"url": broken.url, "events": ["advert.created"]}),
    )
    .await;
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let (_, _) = create(
        &app,
        &key,
        &json!({"url": watcher.url, "events": ["webhook.disabled"]}),
    )
    .await;
    app.create_advert(&key).await;

    let told = watcher
        .until("webhook.disabled", Duration::from_secs(30))
        .await
        .json();
    assert_eq!(told["data"]["webhook_id"], hook_id.as_str());
    assert_eq!(told["data"]["url"], broken.url.as_str());
    assert!(
        told["data"]["reason"].as_str().unwrap().contains("500"),
        "{told}"
    );
    assert_eq!(told["advert_id"], Value::Null);
    let (_, shown) = app
        .get_json(&format!("/api/v1/webhooks/{hook_id}"), &key)
        .await;
    assert_eq!(shown["enabled"], false, "{shown}");
    assert!(
        shown["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("failed"),
        "{shown}"
    );
    assert!(shown["failing_since"].is_string(), "{shown}");
    let list = deliveries(&app, &key, &hook_id).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "failed");
    assert_eq!(list[0]["last_response_code"], 500);
    assert!(list[0]["attempts"].as_i64().unwrap() >= 2, "{}", list[0]);
    // Disabled: nothing more is sent to it.
    let before = broken.received().len();
    app.create_advert(&key).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(broken.received().len(), before);
    // Enabled again, with a clean slate.
    let (status, on) = patch(&app, &key, &hook_id, &json!({"enabled": true})).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            on["enabled"].as_bool(),
            &on["failing_since"],
            &on["disabled_reason"]
        ),
        (Some(true), &Value::Null, &Value::Null)
    );
    app.stop().await;
    broken.stop().await;
    watcher.stop().await;
}

#[tokio::test]
async fn redirects_are_not_followed_and_count_as_failures() {
    let mover = Receiver::start(Answer::Always(302)).await;
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        allow_loopback(s);
        s.webhooks.max_attempts = 2;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let (_, hook) = create(
        &app,
        &key,
        &json!({"url": mover.url, "events": ["advert.created"]}),
    )
    .await;
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    app.create_advert(&key).await;
    let failed = eventually(Duration::from_secs(20), "the delivery given up", || async {
        deliveries(&app, &key, &hook_id)
            .await
            .into_iter()
            .find(|d| d["status"] == "failed")
    })
    .await;
    assert_eq!(failed["attempts"], 2);
    assert_eq!(failed["last_response_code"], 302);
    assert!(
        failed["last_error"].as_str().unwrap().contains("302"),
        "{failed}"
    );
    assert_eq!(mover.received().len(), 2);
    app.stop().await;
    mover.stop().await;
}

#[tokio::test]
async fn a_delivery_without_an_answer_within_the_timeout_fails_and_the_late_answer_is_not_awaited()
{
    // It would answer after half a minute; a delivery waits 300 ms.
    let slow = Slow::start(Duration::from_secs(30)).await;
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        allow_loopback(s);
        s.webhooks.timeout_ms = 300;
        s.webhooks.max_attempts = 2;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let (_, hook) = create(
        &app,
        &key,
        &json!({"url": slow.url, "events": ["advert.created"]}),
    )
    .await;
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    app.create_advert(&key).await;
    // Both attempts given up well before the first answer could come.
    let failed = eventually(Duration::from_secs(20), "the delivery given up", || async {
        deliveries(&app, &key, &hook_id)
            .await
            .into_iter()
            .find(|d| d["status"] == "failed")
    })
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert_eq!(failed["event_type"], "advert.created");
    assert_eq!(failed["attempts"], 2, "{failed}");
    assert_eq!(failed["last_response_code"], Value::Null, "{failed}");
    assert_eq!(failed["delivered_at"], Value::Null, "{failed}");
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("no answer within 300 ms"),
        "{failed}"
    );
    // Each attempt reached the receiver whole and signed: the time ran out on the answer.
    let requests = slow.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for request in &requests {
        let lower = request.to_ascii_lowercase();
        assert!(lower.starts_with("post /hook "), "{request}");
        assert!(lower.contains("\r\nwebhook-signature: v1,"), "{request}");
        assert!(request.contains("\"type\":\"advert.created\""), "{request}");
    }
    // Still enabled, and failing since the first attempt.
    let (_, shown) = app
        .get_json(&format!("/api/v1/webhooks/{hook_id}"), &key)
        .await;
    assert_eq!(shown["enabled"], true, "{shown}");
    assert!(shown["failing_since"].is_string(), "{shown}");
    app.stop().await;
    slow.stop();
}

#[tokio::test]
async fn targets_on_private_addresses_are_refused() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        s.limits.enabled = false;
        s.webhooks.timeout_ms = 2000;
    })
    .await;
    let key = app.customer_key("Acme").await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://localhost:8080/hook",
        "http://192.168.1.10/",
        "http://[::ffff:127.0.0.1]/",
    ] {
        let (status, body) = create(&app, &key, &json!({"url": url, "events": ["*"]})).await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(
            fields(&body),
            vec![("url".into(), "private_target".into())],
            "{url}"
        );
    }
    // A public one is taken; changing it to a private one is refused.
    let (status, hook) = create(
        &app,
        &key,
        &json!({"url": "https://93.184.215.14/hook", "events": ["*"]}),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    let (status, body) = patch(
        &app,
        &key,
        hook["id"].as_str().unwrap(),
        &json!({"url": "http://127.0.0.1/"}),
    )
    .await;
    assert_eq!(
        (status, fields(&body)),
        (422, vec![("url".into(), "private_target".into())])
    );
    app.stop().await;
}

#[tokio::test]
async fn a_private_target_is_refused_at_delivery_too() {
    // A webhook saved while private targets were allowed, delivered once they no longer are
    // (what a name that resolves privately later comes to).
    let receiver = Receiver::start(Answer::FailFirst(0)).await;
    let env = TestEnv::new();
    let app = spawn_app_with(env.clone(), None, allow_loopback).await;
    let key = app.customer_key("Acme").await;
    let (_, hook) = create(
        &app,
        &key,
        &json!({"url": receiver.url, "events": ["advert.created"]}),
    )
    .await;
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let env = app.stop().await;
    let app = spawn_app_with(env, None, |s| {
        allow_loopback(s);
        s.webhooks.allow_private_targets = false;
        s.webhooks.max_attempts = 1;
    })
    .await;
    app.create_advert(&key).await;
    let failed = eventually(Duration::from_secs(20), "the delivery refused", || async {
        deliveries(&app, &key, &hook_id)
            .await
            .into_iter()
            .find(|d| d["status"] == "failed")
    })
    .await;
    assert!(
        failed["last_error"].as_str().unwrap().contains("loopback"),
        "{failed}"
    );
    assert_eq!(failed["last_response_code"], Value::Null);
    assert!(receiver.received().is_empty());
    app.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn stats_flushed_reaches_a_subscribed_webhook_without_a_broker() {
    let receiver = Receiver::start(Answer::FailFirst(0)).await;
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        allow_loopback(s);
        assert!(s.events.amqp_url.is_empty());
    })
    .await;
    let key = app.customer_key("Acme").await;
    let (status, _) = create(
        &app,
        &key,
        &json!({"url": receiver.url, "events": ["stats.flushed"]}),
    )
    .await;
    assert_eq!(status, 201);
    let (id, link) = app.advert_with_link(&key, "https://example.com/").await;
    assert_eq!(app.click(&link, BROWSER).await.status(), 302);
    // A report settles the pending counts: that flush records the deltas.
    let report = app.report(&key, id).await;
    assert_eq!(report["clicks"], 1);
    let got = receiver
        .until("stats.flushed", Duration::from_secs(20))
        .await
        .json();
    assert_eq!(got["advert_id"], id);
    assert_eq!(got["data"]["deltas"]["clicks"], 1);
    // Only what it subscribed to.
    assert!(
        receiver
            .received()
            .iter()
            .all(|r| r.json()["type"] == "stats.flushed")
    );
    app.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn two_instances_deliver_each_event_once() {
    let receiver = Receiver::start(Answer::FailFirst(0)).await;
    let env = TestEnv::new();
    let instance = |journal: &'static str| {
        let dir = env.dir.path().join(journal);
        move |s: &mut Settings| {
            allow_loopback(s);
            s.tracking.journal_dir = dir.display().to_string();
        }
    };
    let a = spawn_app_with(env.clone(), None, instance("journal-a")).await;
    let b = spawn_app_with(env.clone(), None, instance("journal-b")).await;
    let key = a.customer_key("Acme").await;
    let (status, hook) = create(
        &a,
        &key,
        &json!({"url": receiver.url, "events": ["advert.created"]}),
    )
    .await;
    assert_eq!(status, 201);
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    // Both dispatchers see the same events: each is handed out by one of them.
    let mut adverts = Vec::new();
    for n in 0..8 {
        let app = if n % 2 == 0 { &a } else { &b };
        adverts.push(app.create_advert(&key).await["id"].as_i64().unwrap());
    }
    eventually(Duration::from_secs(30), "eight deliveries", || async {
        (receiver.received().len() >= adverts.len()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let received = receiver.received();
    assert_eq!(received.len(), adverts.len());
    let mut ids: Vec<String> = received
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), adverts.len());
    let mut delivered: Vec<i64> = received
        .iter()
        .map(|r| r.json()["advert_id"].as_i64().unwrap())
        .collect();
    delivered.sort_unstable();
    adverts.sort_unstable();
    assert_eq!(delivered, adverts);
    let list = deliveries(&b, &key, &hook_id).await;
    assert_eq!(list.len(), adverts.len());
    assert!(list.iter().all(|d| d["status"] == "succeeded"));
    a.stop().await;
    b.stop().await;
    receiver.stop().await;
}
