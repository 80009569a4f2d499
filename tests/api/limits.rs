//! Limits on what one client can take: request rates on the customer API (429 with Retry-After),
//! slow clients that trickle a request head (slowloris), and many idle connections.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, TestEnv, spawn_app_with};

const KEY_A: &str = "rk_AAAAAAAAAAAA_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const KEY_B: &str = "rk_BBBBBBBBBBBB_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// Three requests at once, then one a minute: nothing refills while a test runs. The client
/// address comes from X-Forwarded-For, so one test can play several clients.
async fn limited_app() -> TestApp {
    spawn_app_with(TestEnv::new(), None, |s| {
        s.limits.enabled = true;
        s.limits.intake_per_minute = 1;
        s.limits.reports_per_minute = 1;
        s.limits.burst = 3;
        s.tracking.trust_forwarded_for = true;
    })
    .await
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    from: &str,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method.clone(), app.url(path))
        .header("x-forwarded-for", from);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if method == Method::POST || method == Method::PATCH {
        request = request
            .header("content-type", "application/json")
            .body("{}");
    }
    request.send().await.unwrap()
}

async fn status(app: &TestApp, method: Method, path: &str, key: Option<&str>, from: &str) -> u16 {
    send(app, method, path, key, from).await.status().as_u16()
}

/// A 429 in the error format, with a Retry-After in whole seconds.
async fn assert_rate_limited(response: reqwest::Response, what: &str) -> u64 {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{what}");
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .unwrap_or_else(|| panic!("{what}: no Retry-After"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{what}: Retry-After is not whole seconds: {e}"));
    assert!(
        response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("application/json")),
        "{what}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], 429, "{what}: {body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{what}: {body}");
    assert!((1..=60).contains(&retry_after), "{what}: {retry_after}");
    retry_after
}

#[tokio::test]
async fn intake_is_limited_per_address_and_per_key_independently() {
    let app = limited_app().await;
    let create = "/api/v1/adverts";
    let key_a = app.customer_key("A").await;
    // The burst: refused for what they are (422, an empty advert), never for their rate.
    for n in 0..3 {
        let got = status(&app, Method::POST, create, Some(&key_a), "203.0.113.1").await;
        assert_eq!(got, 422, "request {n} of the burst");
    }
    let over = send(&app, Method::POST, create, Some(&key_a), "203.0.113.1").await;
    assert_rate_limited(over, "the fourth from one address with one key").await;
    // The same key from a fresh address: the key's budget is spent.
    let key_spent = send(&app, Method::POST, create, Some(&key_a), "203.0.113.2").await;
    assert_rate_limited(key_spent, "key A from another address").await;
    // Another key from the spent address: the address's budget is spent.
    let address_spent = send(&app, Method::POST, create, Some(KEY_B), "203.0.113.1").await;
    assert_rate_limited(address_spent, "key B from the first address").await;
    // Another key from another address goes through.
    assert_eq!(
        status(&app, Method::POST, create, Some(KEY_B), "203.0.113.3").await,
        401
    );
    // Without a key, the address alone counts.
    for _ in 0..2 {
        assert_eq!(
            status(&app, Method::POST, create, None, "203.0.113.4").await,
            401
        );
    }

    // PATCH, DELETE and the form draw from the same intake budget.
    let key_c = app.customer_key("C").await;
    let advert = "/api/v1/adverts/999999";
    assert_ne!(
        status(&app, Method::PATCH, advert, Some(&key_c), "198.51.100.1").await,
        429
    );
    assert_ne!(
        status(&app, Method::DELETE, advert, Some(&key_c), "198.51.100.2").await,
        429
    );
    assert_ne!(
        status(&app, Method::POST, create, Some(&key_c), "198.51.100.3").await,
        429
    );
    let delete = send(&app, Method::DELETE, advert, Some(&key_c), "198.51.100.4").await;
    assert_rate_limited(delete, "DELETE with key C after three intake requests").await;
    for n in 0..3 {
        assert_ne!(
            status(&app, Method::POST, "/adverts", None, "198.51.100.9").await,
            429,
            "form submission {n}"
        );
    }
    let form = send(&app, Method::POST, "/adverts", None, "198.51.100.9").await;
    assert_rate_limited(form, "the fourth form submission from one address").await;

    // Reads, reports and the hot paths are not intake: the spent address still gets them.
    let spent = "203.0.113.1";
    assert_eq!(
        status(&app, Method::GET, "/api/v1/adverts", Some(KEY_A), spent).await,
        401
    );
    assert_eq!(
        status(&app, Method::GET, "/api/v1/reports", Some(KEY_A), spent).await,
        401
    );
    app.stop().await;
}

/// A key with the same public id as `key` and a made-up secret.
fn junk_secret_for(key: &str) -> String {
    let (prefix, _secret) = key.rsplit_once('_').unwrap();
    format!("{prefix}_{}", "J".repeat(32))
}

#[tokio::test]
async fn junk_secrets_naming_a_real_key_id_spend_the_senders_address_not_the_key() {
    let app = limited_app().await;
    let key = app.customer_key("Acme").await;
    let junk = junk_secret_for(&key);
    for n in 0..10 {
        let from = format!("203.0.113.{}", 50 + n);
        assert_eq!(
            status(&app, Method::POST, "/api/v1/adverts", Some(&junk), &from).await,
            401,
            "junk attempt {n}"
        );
        assert_eq!(
            status(&app, Method::GET, "/api/v1/reports", Some(&junk), &from).await,
            401,
            "junk report attempt {n}"
        );
    }
    // Failed attempts are charged to the address they came from.
    let from = "203.0.113.49";
    for _ in 0..3 {
        send(&app, Method::POST, "/api/v1/adverts", Some(&junk), from).await;
    }
    let over = send(&app, Method::POST, "/api/v1/adverts", Some(&junk), from).await;
    assert_rate_limited(over, "the fourth junk attempt from one address").await;
    // The real key still has its whole burst, from anywhere.
    for n in 0..3 {
        let from = format!("198.51.100.{}", 60 + n);
        assert_eq!(
            status(&app, Method::POST, "/api/v1/adverts", Some(&key), &from).await,
            422,
            "the customer's request {n}"
        );
        assert_eq!(
            status(&app, Method::GET, "/api/v1/reports", Some(&key), &from).await,
            200,
            "the customer's report {n}"
        );
    }
    app.stop().await;
}

/// The encoded path reaches the route (never 404) and is refused after the burst like the plain
/// one, since the router matches the decoded path.
async fn assert_encoded_path_is_limited(method: Method, path: &str, key: Option<&str>) {
    let app = limited_app().await;
    let from = "203.0.113.77";
    for n in 0..3 {
        let got = status(&app, method.clone(), path, key, from).await;
        assert!(
            got != 429 && got != 404,
            "{method} {path} request {n}: {got}"
        );
    }
    let over = send(&app, method.clone(), path, key, from).await;
    assert_rate_limited(over, &format!("{method} {path} after the burst")).await;
    app.stop().await;
}

#[tokio::test]
async fn an_encoded_reports_path_is_limited_like_the_plain_one() {
    assert_encoded_path_is_limited(Method::GET, "/api/v1/%72eports", None).await;
}

#[tokio::test]
async fn an_encoded_adverts_path_is_limited_like_the_plain_one() {
    assert_encoded_path_is_limited(Method::POST, "/api/v1/advert%73", Some(KEY_A)).await;
}

#[tokio::test]
async fn an_encoded_login_path_is_limited_like_the_plain_one() {
    assert_encoded_path_is_limited(Method::POST, "/%6Cogin", None).await;
}

#[tokio::test]
async fn an_encoded_form_path_is_limited_like_the_plain_one() {
    assert_encoded_path_is_limited(Method::POST, "/%61dverts", None).await;
}

#[tokio::test]
async fn an_encoded_advert_patch_is_limited_like_the_plain_one() {
    assert_encoded_path_is_limited(Method::PATCH, "/api/v1/%61dverts/7", Some(KEY_B)).await;
}

#[tokio::test]
async fn forwarded_for_is_believed_from_trusted_proxies_only() {
    // The test client connects from 127.0.0.1: a trusted proxy here.
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        s.limits.intake_per_minute = 1;
        s.limits.burst = 1;
        s.limits.trusted_proxies = vec!["127.0.0.0/8".into(), "10.0.0.0/8".into()];
        s.tracking.trust_forwarded_for = false;
    })
    .await;
    // Each client behind the proxy has its own budget...
    for n in 0..4 {
        let from = format!("192.0.2.{n}");
        assert_eq!(
            status(&app, Method::POST, "/api/v1/adverts", None, &from).await,
            401,
            "client {n} behind the proxy"
        );
    }
    // ...and a client cannot escape by prepending an address: the proxy's own entry counts.
    let chain = |forged: &str| format!("{forged}, 192.0.2.0, 10.1.1.1");
    let forged = send(
        &app,
        Method::POST,
        "/api/v1/adverts",
        None,
        &chain("198.51.100.9"),
    )
    .await;
    assert_rate_limited(forged, "a forged entry before the real client's").await;
    app.stop().await;

    // A peer outside the list is counted under its own address, whatever it forwards.
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        s.limits.intake_per_minute = 1;
        s.limits.burst = 1;
        s.limits.trusted_proxies = vec!["10.0.0.0/8".into()];
    })
    .await;
    assert_eq!(
        status(&app, Method::POST, "/api/v1/adverts", None, "192.0.2.1").await,
        401
    );
    let other = send(&app, Method::POST, "/api/v1/adverts", None, "192.0.2.2").await;
    assert_rate_limited(other, "an untrusted peer claiming another client").await;
    app.stop().await;
}

#[tokio::test]
async fn reports_have_their_own_budget() {
    let app = limited_app().await;
    let key = app.customer_key("Acme").await;
    let from = "192.0.2.10";
    for n in 0..3 {
        assert_eq!(
            status(&app, Method::GET, "/api/v1/reports", Some(&key), from).await,
            200,
            "report {n}"
        );
    }
    let over = send(&app, Method::GET, "/api/v1/reports", Some(&key), from).await;
    assert_rate_limited(over, "the fourth report").await;
    // One advert's report shares the budget, per key as well as per address.
    let one = send(
        &app,
        Method::GET,
        "/api/v1/adverts/1/report",
        Some(&key),
        "192.0.2.11",
    )
    .await;
    assert_rate_limited(one, "an advert report with the spent key").await;
    // Intake is a separate budget.
    assert_eq!(
        status(&app, Method::POST, "/api/v1/adverts", Some(&key), from).await,
        422
    );
    app.stop().await;
}

#[tokio::test]
async fn the_redirect_serving_and_media_are_never_limited() {
    let app = limited_app().await;
    let from = "192.0.2.20";
    // Spend the address's intake and report budgets.
    for _ in 0..4 {
        send(&app, Method::POST, "/api/v1/adverts", None, from).await;
        send(&app, Method::GET, "/api/v1/reports", None, from).await;
    }
    assert_eq!(
        status(&app, Method::GET, "/api/v1/reports", None, from).await,
        429
    );
    for n in 0..30 {
        assert_eq!(
            status(&app, Method::GET, "/r/NoSuchCode00", None, from).await,
            404,
            "redirect {n}"
        );
        assert_eq!(
            status(&app, Method::GET, "/api/v1/serve?user_id=u1", None, from).await,
            200,
            "serve {n}"
        );
        assert_eq!(
            status(
                &app,
                Method::GET,
                "/media/1/0000000000000000.jpg",
                None,
                from
            )
            .await,
            404,
            "media {n}"
        );
    }
    assert_eq!(status(&app, Method::GET, "/healthz", None, from).await, 200);
    app.stop().await;
}

#[tokio::test]
async fn a_forged_forwarded_for_does_not_escape_the_limit_unless_trusted() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        s.limits.intake_per_minute = 1;
        s.limits.burst = 2;
        s.tracking.trust_forwarded_for = false;
    })
    .await;
    let mut statuses = Vec::new();
    for n in 0..4 {
        let from = format!("10.9.8.{n}");
        statuses.push(status(&app, Method::POST, "/api/v1/adverts", None, &from).await);
    }
    assert_eq!(statuses, [401, 401, 429, 429], "the peer address counts");
    app.stop().await;
}

#[tokio::test]
async fn the_budget_refills_at_the_steady_rate() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        s.limits.intake_per_minute = 60;
        s.limits.burst = 1;
    })
    .await;
    let post = || async {
        app.client
            .post(app.url("/api/v1/adverts"))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(post().await.status(), 401);
    let over = post().await;
    let retry_after = assert_rate_limited(over, "the second within a second").await;
    assert_eq!(
        retry_after, 1,
        "one request a second refills in at most 1 s"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(post().await.status(), 401, "refilled after Retry-After");
    app.stop().await;
}

#[tokio::test]
async fn limits_can_be_turned_off() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        s.limits.enabled = false;
        s.limits.intake_per_minute = 1;
        s.limits.burst = 1;
    })
    .await;
    for n in 0..20 {
        let response = app
            .client
            .post(app.url("/api/v1/adverts"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "request {n}");
    }
    app.stop().await;
}

// ---- slow and idle clients ------------------------------------------------------------------

const HEAD_TIMEOUT: Duration = Duration::from_secs(2);

async fn slow_client_app() -> TestApp {
    spawn_app_with(TestEnv::new(), None, |s| {
        s.server.client_request_timeout_ms = HEAD_TIMEOUT.as_millis() as u64;
        s.server.client_disconnect_timeout_ms = 500;
    })
    .await
}

fn socket_address(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or resets it); what it sent before that.
async fn read_until_closed(
    stream: &mut tokio::net::tcp::OwnedReadHalf,
    limit: Duration,
) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the connection is still open after {limit:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0) | Err(_)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_slowloris_client_is_cut_off_while_others_are_served() {
    let app = slow_client_app().await;
    let stream = TcpStream::connect(socket_address(&app)).await.unwrap();
    let opened = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    // One byte every 500 ms: a request head that never ends.
    let trickle = tokio::spawn(async move {
        let head =
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut sent = 0;
        for byte in head {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        sent
    });
    // Meanwhile an ordinary request on another connection is answered at once.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let started = Instant::now();
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a normal request waited {:?} behind the slow one",
        started.elapsed()
    );

    let received = read_until_closed(&mut reader, HEAD_TIMEOUT + Duration::from_secs(2)).await;
    let closed_after = opened.elapsed();
    let text = String::from_utf8_lossy(&received);
    assert!(
        received.is_empty() || text.starts_with("HTTP/1.1 408"),
        "the slow client got {text:?}"
    );
    assert!(
        closed_after <= HEAD_TIMEOUT + Duration::from_secs(2),
        "closed only after {closed_after:?}"
    );
    let sent = tokio::time::timeout(Duration::from_secs(5), trickle)
        .await
        .expect("the trickle stops once the server closed")
        .unwrap();
    eprintln!("slowloris: closed after {closed_after:?}, {sent} bytes trickled, got {text:?}");
    app.stop().await;
}

#[tokio::test]
async fn many_idle_connections_do_not_block_healthz_and_are_closed() {
    let app = slow_client_app().await;
    let address = socket_address(&app);
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(&address).await.unwrap());
    }
    let started = Instant::now();
    for _ in 0..5 {
        let response = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "healthz took {:?} with 200 idle connections open",
        started.elapsed()
    );
    // None of them sent a request: each is closed once the head timeout passes.
    let mut closed = 0;
    for stream in idle {
        let (mut reader, _writer) = stream.into_split();
        read_until_closed(&mut reader, HEAD_TIMEOUT + Duration::from_secs(2)).await;
        closed += 1;
    }
    assert_eq!(closed, 200);
    app.stop().await;
}
