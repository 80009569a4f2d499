//! Security at the edge: the text policy for what reaches publishers, secrets, sessions that
//! end, and multipart bodies bounded and authenticated before they are read.

use std::time::Duration;

use reklama::main_app::Settings;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, TestEnv, advert_json, field_codes, file_part, png, spawn_app, spawn_app_with,
};

// ---- text policy -----------------------------------------------------------------------------

#[tokio::test]
async fn invisible_and_bidi_characters_in_titles_and_texts_are_refused_with_their_field() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let image = png(64, 64);
    for (field, value) in [
        ("title", "\u{202E}evil title"),
        ("title", "\u{200B}"),
        ("title", "ok\u{200B}title"),
        ("title", "\u{2066}isolated\u{2069}"),
        ("title", "mark\u{200F}ed"),
        ("title", "arabic\u{061C}mark"),
        ("title", "bom\u{FEFF}inside"),
        ("title", "word\u{2060}joiner"),
        ("text", "Hidden\u{200D}joiner"),
        ("text", "Seven nights\u{202D} by the sea"),
    ] {
        let mut body = advert_json(&image);
        body[field] = json!(value);
        let response = app.post_advert(&key, &body).await;
        assert_eq!(response.status(), 422, "{field} {value:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            field_codes(&body),
            vec![(field.to_owned(), "invisible_character".to_owned())],
            "{field} {value:?}: {body}"
        );
        let message = body["error"]["fields"][0]["message"].as_str().unwrap();
        assert!(message.contains("U+"), "{message}");
    }
    app.stop().await;
}

#[tokio::test]
async fn whitespace_only_titles_are_refused_and_emoji_sequences_and_nfc_pass() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let image = png(64, 64);
    for blank in ["\u{3000}\u{00A0} ", "\u{2800}", " \u{3164} "] {
        let mut body = advert_json(&image);
        body["title"] = json!(blank);
        let response = app.post_advert(&key, &body).await;
        assert_eq!(response.status(), 422, "{blank:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            field_codes(&body),
            vec![("title".to_owned(), "required".to_owned())],
            "{blank:?}"
        );
    }
    let family = "Family trip \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";
    let mut body = advert_json(&image);
    body["title"] = json!(family);
    body["text"] = json!("Cafe\u{301} by the sea \u{1F3F3}\u{FE0F}\u{200D}\u{1F308}");
    let response = app.post_advert(&key, &body).await;
    assert_eq!(response.status(), 201);
    let advert: Value = response.json().await.unwrap();
    assert_eq!(advert["title"], family);
    assert_eq!(
        advert["text"], "Caf\u{E9} by the sea \u{1F3F3}\u{FE0F}\u{200D}\u{1F308}",
        "stored composed (NFC)"
    );
    // A PATCH goes through the same policy.
    let id = advert["id"].as_i64().unwrap();
    let (status, body) = app
        .patch_advert(&key, id, &json!({"title": "\u{202E}gnp.exe"}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        field_codes(&body),
        vec![("title".to_owned(), "invisible_character".to_owned())]
    );
    app.stop().await;
}

// ---- multipart bodies ------------------------------------------------------------------------

const BOUNDARY: &str = "reklamaBoundary7MA4YWxkTrZu0gW";

fn text_part(name: &str, value: &str) -> String {
    format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
}

fn image_part_head() -> String {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
}

/// Sends a request head and the start of a multipart body that announces megabytes more, then
/// waits, never sending the rest: the status line the server answers with.
async fn answer_to_a_stalled_upload(app: &TestApp, path: &str, bearer: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut start = String::new();
    start.push_str(&text_part(
        "api_key",
        "rk_AAAAAAAAAAAA_not-a-real-secret-at-all-000000",
    ));
    start.push_str(&text_part("title", "Summer in Sochi"));
    start.push_str(&image_part_head());
    start.push_str(&"x".repeat(1024));
    let announced = 8 * 1024 * 1024;
    let auth = bearer.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {announced}\r\n\r\n"
    );
    let address = app.address.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(start.as_bytes()).await.unwrap();
    // The answer must come while the body is still mostly unsent; a server reading the body
    // first would wait here until the test's bound.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 1024];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "{path}: no answer before the body was sent");
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_form_checks_the_key_before_reading_the_image() {
    let app = spawn_app().await;
    let status = answer_to_a_stalled_upload(&app, "/adverts", None).await;
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    app.stop().await;
}

#[tokio::test]
async fn a_form_with_the_key_after_the_image_is_still_read_whole() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let form = reqwest::multipart::Form::new()
        .part("image", file_part(png(320, 240), "a.png", "image/png"))
        .text("title", "Summer in Sochi")
        .text("text", "Seven nights by the sea.")
        .text("genre", "travel")
        .text("target_url", "https://example.com/")
        .text("api_key", key);
    let response = app.post_form_page(form).await;
    assert_eq!(response.status(), 201);
    app.stop().await;
}

#[tokio::test]
async fn the_api_checks_the_key_before_reading_a_multipart_body() {
    let app = spawn_app().await;
    let status = answer_to_a_stalled_upload(
        &app,
        "/api/v1/adverts",
        Some("rk_AAAAAAAAAAAA_not-a-real-secret-at-all-000000"),
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 401"), "{status}");
    app.stop().await;
}

#[tokio::test]
async fn a_multipart_body_over_the_total_limit_is_413_naming_the_body() {
    let limit = 64 * 1024;
    let app = spawn_app_with(TestEnv::new(), None, |s| s.server.max_body_bytes = limit).await;
    let key = app.customer_key("Acme").await;
    // Every part within its own limit (the image is far below intake.max_image_bytes), the
    // parts together over the body's.
    let form = reqwest::multipart::Form::new()
        .text("title", "Summer in Sochi")
        .text("text", "x".repeat(15 * 1024))
        .text("genre", "travel")
        .text("target_url", "https://example.com/")
        .part(
            "image",
            file_part(vec![7u8; 60 * 1024], "a.png", "image/png"),
        );
    let response = app.post_advert_form(&key, form).await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    assert_eq!(
        field_codes(&body),
        vec![("body".to_owned(), "too_large".to_owned())],
        "{body}"
    );

    // Chunked, so no length is declared: counted as it is read.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut body = String::new();
    body.push_str(&text_part("title", "Summer in Sochi"));
    for n in 0..6 {
        body.push_str(&text_part(&format!("extra{n}"), &"y".repeat(15 * 1024)));
    }
    body.push_str(&format!("--{BOUNDARY}--\r\n"));
    let head = format!(
        "POST /api/v1/adverts HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let address = app.address.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.as_bytes().chunks(8192) {
        let framed = format!("{:x}\r\n", chunk.len());
        if socket.write_all(framed.as_bytes()).await.is_err()
            || socket.write_all(chunk).await.is_err()
            || socket.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"field\":\"body\""), "{answer}");
    app.stop().await;
}

// ---- sessions --------------------------------------------------------------------------------

const SESSION_SECRET: &str = "gq3R8vLk2mZp9TfW4xYb7NcJ1sDh6UeA";

/// Another instance on the same database, with the same session secret.
fn instance(env: &TestEnv, name: &str) -> impl FnOnce(&mut Settings) + use<> {
    let journal = env.dir.path().join(format!("journal-{name}"));
    move |s| {
        s.tracking.journal_dir = journal.display().to_string();
        s.dashboard.session_secret = SESSION_SECRET.into();
    }
}

/// Signs in on `app`: the `name=value` of the session cookie and its full `Set-Cookie`.
async fn sign_in(app: &TestApp, key: &str) -> (String, String) {
    let response = app
        .client
        .post(app.url("/login"))
        .form(&[("api_key", key)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303, "sign-in");
    let set = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    (set.split(';').next().unwrap().to_owned(), set)
}

/// The dashboard's status and, on 200, its first CSRF token.
async fn dashboard(app: &TestApp, cookie: &str) -> (u16, String) {
    let response = app
        .client
        .get(app.url("/dashboard"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    let marker = r#"name="csrf_token" value=""#;
    let csrf = body
        .find(marker)
        .map(|at| {
            let at = at + marker.len();
            body[at..at + body[at..].find('"').unwrap()].to_owned()
        })
        .unwrap_or_default();
    (status, csrf)
}

#[tokio::test]
async fn signing_out_ends_the_session_on_every_instance() {
    let env = TestEnv::new();
    let a = spawn_app_with(env.clone(), None, instance(&env, "a")).await;
    let b = spawn_app_with(env.clone(), None, instance(&env, "b")).await;
    let key = a.customer_key("Acme").await;
    let (cookie, _) = sign_in(&a, &key).await;
    let (other, _) = sign_in(&a, &key).await;
    // One sign-in works on both instances.
    assert_eq!(dashboard(&b, &cookie).await.0, 200);
    let (status, csrf) = dashboard(&a, &cookie).await;
    assert_eq!(status, 200);
    let out = a
        .client
        .post(a.url("/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    // A copy of the signed-out cookie opens nothing, here or on the other instance.
    for app in [&a, &b] {
        let response = app
            .client
            .get(app.url("/dashboard"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303);
        assert_eq!(response.headers()["location"], "/login");
    }
    // The customer's other sign-in is untouched.
    assert_eq!(dashboard(&b, &other).await.0, 200);
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn revoking_the_key_ends_its_sessions_and_preview_links_on_every_instance() {
    let env = TestEnv::new();
    let a = spawn_app_with(env.clone(), None, instance(&env, "a")).await;
    let b = spawn_app_with(env.clone(), None, instance(&env, "b")).await;
    let key = a.customer_key("Acme").await;
    let (cookie, _) = sign_in(&a, &key).await;
    // A preview link, as the form's answer gives it.
    let form = reqwest::multipart::Form::new()
        .text("api_key", key.clone())
        .text("title", "Summer in Sochi")
        .text("text", "Seven nights by the sea.")
        .text("genre", "travel")
        .text("target_url", "https://example.com/")
        .part("image", file_part(png(320, 240), "a.png", "image/png"));
    let page = a.post_form_page(form).await;
    assert_eq!(page.status(), 201);
    let page = page.text().await.unwrap();
    let at = page.find("/adverts/").unwrap();
    let link = page[at..at + page[at..].find('"').unwrap()].replace("&amp;", "&");
    assert!(link.contains("/preview?t="), "{link}");
    let open = |app: &TestApp, path: String| {
        let request = app.client.get(app.url(&path));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(open(&b, link.clone()).await, 200);
    assert_eq!(dashboard(&b, &cookie).await.0, 200);

    assert_eq!(a.handles.customers.revoke("Acme").await.unwrap(), 1);
    for app in [&a, &b] {
        assert_eq!(dashboard(app, &cookie).await.0, 303, "the session ended");
        assert_eq!(open(app, link.clone()).await, 404, "the preview link died");
    }
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn over_https_the_cookie_is_host_prefixed_and_secure_whatever_the_schemes_case() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        s.server.public_url = s.server.public_url.replace("http://", "HTTPS://");
    })
    .await;
    let key = app.customer_key("Acme").await;
    let (cookie, set) = sign_in(&app, &key).await;
    assert!(cookie.starts_with("__Host-reklama_session=v1."), "{set}");
    let attributes: Vec<&str> = set.split(';').map(str::trim).collect();
    for expected in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(attributes.contains(&expected), "{expected} missing: {set}");
    }
    assert!(!set.to_ascii_lowercase().contains("domain="), "{set}");
    assert_eq!(dashboard(&app, &cookie).await.0, 200);
    // The unprefixed name is not read: another host's cookie cannot stand in for it.
    let unprefixed = cookie.replacen("__Host-reklama_session", "reklama_session", 1);
    assert_eq!(dashboard(&app, &unprefixed).await.0, 303);
    app.stop().await;
}

// ---- misses cost memory, not backends --------------------------------------------------------

/// GETs `path` without following redirects: its status.
async fn status_of(app: &TestApp, path: &str) -> u16 {
    app.client
        .get(app.url(path))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn codes_that_cannot_be_codes_are_404_without_a_lookup_and_unknown_ones_share_a_budget() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        s.limits.miss_lookups_per_second = 1;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let (_, link) = app.advert_with_link(&key, "https://example.com/").await;
    // The real link is read once and held in memory.
    assert_eq!(status_of(&app, &link).await, 302);
    let started = std::time::Instant::now();
    // Wrong length or alphabet: 404 at once, spending nothing.
    for bad in [
        "abc",
        "AbCdEfGhIjK",
        "AbCdEfGhIjKlM",
        "AbCdEfGh-jKl",
        "AbCdEfGh%2EjKl",
    ] {
        assert_eq!(status_of(&app, &format!("/r/{bad}")).await, 404, "{bad}");
    }
    // Made-up codes of the right shape: the budget pays for a look-up a second, the rest are
    // answered from memory with 503 and Retry-After.
    let mut answers = Vec::new();
    for n in 0..20 {
        let response = app
            .client
            .get(app.url(&format!("/r/Made{n:0>8}")))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        if status == 503 {
            assert_eq!(response.headers()["retry-after"], "1");
        }
        answers.push(status);
    }
    let elapsed = started.elapsed().as_secs() as usize;
    let looked_up = answers.iter().filter(|&&s| s == 404).count();
    assert!(
        looked_up <= 1 + elapsed,
        "{looked_up} look-ups in {elapsed} s: {answers:?}"
    );
    assert_eq!(
        looked_up + answers.iter().filter(|&&s| s == 503).count(),
        20
    );
    // What memory knows is answered whatever the budget: the live link, and a code once found
    // unknown (the budget refills within a second, then the look-up is made).
    let unknown = "/r/Made99999999";
    crate::helpers::eventually(Duration::from_secs(10), "a look-up", || async {
        (status_of(&app, unknown).await == 404).then_some(())
    })
    .await;
    for _ in 0..10 {
        assert_eq!(status_of(&app, &link).await, 302);
        assert_eq!(status_of(&app, unknown).await, 404);
    }
    app.stop().await;
}

/// The media cache's lookups in memory with `result`, from `/metrics`.
async fn media_memory(app: &TestApp, result: &str) -> f64 {
    let text = app.get_text("/metrics").await;
    crate::helpers::metric(
        &text,
        "reklama_cache_lookups_total",
        &[("cache", "media"), ("tier", "memory"), ("result", result)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_wrong_media_hash_keeps_the_cached_image_and_misses_are_remembered() {
    let app = spawn_app_with(TestEnv::new(), None, |s| {
        s.limits.miss_lookups_per_second = 3;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let advert = app.create_advert(&key).await;
    let id = advert["id"].as_i64().unwrap();
    let image = advert["image_url"].as_str().unwrap();
    let image = &image[image.find("/media/").unwrap()..];
    assert_eq!(status_of(&app, image).await, 200);
    assert_eq!(status_of(&app, image).await, 200);
    let hits = media_memory(&app, "hit").await;
    // A wrong hash, asked for again and again: one look-up, then memory. Twenty look-ups would
    // need far more than the budget gives in the time this takes, and answer 503.
    let wrong = format!("/media/{id}/0000000000000000.jpg");
    for n in 0..20 {
        assert_eq!(status_of(&app, &wrong).await, 404, "wrong hash {n}");
    }
    let unknown_advert = "/media/987654321/0000000000000000.jpg";
    for n in 0..20 {
        assert_eq!(status_of(&app, unknown_advert).await, 404, "unknown id {n}");
    }
    // The cached image was not displaced: the next request is a memory hit.
    assert_eq!(status_of(&app, image).await, 200);
    assert_eq!(media_memory(&app, "hit").await, hits + 1.0);
    // Made-up URLs each needing a look-up spend the budget, then answer 503 from memory.
    let started = std::time::Instant::now();
    let answers: Vec<u16> = {
        let mut answers = Vec::new();
        for n in 0..20 {
            answers.push(status_of(&app, &format!("/media/{}/{n:0>16}.jpg", 5_000_000 + n)).await);
        }
        answers
    };
    let elapsed = started.elapsed().as_secs() as usize;
    let looked_up = answers.iter().filter(|&&s| s == 404).count();
    assert!(
        looked_up <= 4 + 3 * elapsed,
        "{looked_up} in {elapsed} s: {answers:?}"
    );
    assert_eq!(
        looked_up + answers.iter().filter(|&&s| s == 503).count(),
        20
    );
    app.stop().await;
}

/// A local store that counts readiness checks.
struct CountingStore {
    inner: reklama::platform::cloud::ObjectCloud,
    checks: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl reklama::platform::cloud::CloudStore for CountingStore {
    async fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
    ) -> Result<(), reklama::platform::cloud::CloudError> {
        self.inner.put(key, bytes).await
    }
    async fn get(&self, key: &str) -> Result<Vec<u8>, reklama::platform::cloud::CloudError> {
        self.inner.get(key).await
    }
    fn describe(&self) -> String {
        "counting test store".into()
    }
    async fn check(&self) -> Result<(), reklama::platform::cloud::CloudError> {
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.check().await
    }
}

#[tokio::test]
async fn readyz_answers_from_state_refreshed_once_a_second() {
    use std::sync::atomic::Ordering::SeqCst;
    let env = TestEnv::new();
    let mut cloud_settings = Settings::load_with(None, Vec::new()).unwrap().cloud;
    cloud_settings.url = env.cloud_dir().display().to_string();
    let store = std::sync::Arc::new(CountingStore {
        inner: reklama::platform::cloud::ObjectCloud::from_settings(&cloud_settings).unwrap(),
        checks: Default::default(),
    });
    let app = spawn_app_with(env, Some(store.clone()), |_| {}).await;
    let started = std::time::Instant::now();
    let before = store.checks.load(SeqCst);
    for _ in 0..50 {
        let (status, body) = app.get_json("/readyz", "").await;
        assert_eq!(status, 200);
        assert_eq!(body["status"], "ready", "{body}");
    }
    let rounds = store.checks.load(SeqCst) - before;
    let elapsed = started.elapsed().as_secs() as usize;
    assert!(
        rounds <= elapsed + 2,
        "{rounds} checks for 50 requests in {elapsed} s"
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_read_the_job_table_at_most_once_a_second() {
    let app = spawn_app().await;
    let dead = |text: &str| {
        crate::helpers::metric(text, "reklama_jobs", &[("status", "dead")]).unwrap_or(0.0)
    };
    let started = std::time::Instant::now();
    assert_eq!(dead(&app.get_text("/metrics").await), 0.0);
    app.handles
        .db
        .run(|conn| {
            use diesel::RunQueryDsl;
            diesel::sql_query(
                "INSERT INTO jobs (kind, payload, status, attempts, max_attempts, run_at, \
                 created_at, updated_at) VALUES ('test.dead', '{}', 'dead', 1, 1, 0, 0, 0)",
            )
            .execute(conn)
            .map_err(reklama::platform::db::DbError::from)
        })
        .await
        .unwrap();
    let again = dead(&app.get_text("/metrics").await);
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(
            again, 0.0,
            "a second scrape within the second reads no table"
        );
    }
    crate::helpers::eventually(Duration::from_secs(10), "the dead job counted", || async {
        (dead(&app.get_text("/metrics").await) == 1.0).then_some(())
    })
    .await;
    app.stop().await;
}

// ---- operations endpoints --------------------------------------------------------------------

/// A status and the `code` of the JSON error body, if any.
async fn status_and_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn with_an_admin_listener_operations_endpoints_leave_the_public_one() {
    let app = spawn_app_with(TestEnv::new(), None, |s: &mut Settings| {
        s.server.admin_listen = "127.0.0.1:0".into();
    })
    .await;
    let admin = app.admin_address.clone().expect("an admin listener");
    assert_ne!(admin, app.address);
    for path in [
        "/metrics",
        "/readyz",
        "/docs",
        "/openapi.json",
        "/asyncapi.json",
        "/docs/swagger-ui.css",
    ] {
        let public = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(
            status_and_code(public).await,
            (404, "not_found".to_owned()),
            "public {path}"
        );
        let private = app
            .client
            .get(format!("{admin}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(private.status(), 200, "admin {path}");
    }
    let metrics = app
        .client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("reklama_db_checkouts_total")
    );
    let ready: Value = app
        .client
        .get(format!("{admin}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    // Liveness answers on both, so a probe can use either port.
    for base in [&app.address, &admin] {
        let health = app
            .client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200, "{base}");
    }
    // The public API is not on the admin listener.
    let serve = app
        .client
        .get(format!("{admin}/api/v1/serve?user_id=u1"))
        .send()
        .await
        .unwrap();
    assert_eq!(serve.status(), 404);
    let (status, _) = app.serve("user_id=u1").await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test]
async fn metrics_and_readiness_details_need_the_admin_token_when_one_is_set() {
    const TOKEN: &str = "k8s-scrape-0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d";
    let app = spawn_app_with(TestEnv::new(), None, |s: &mut Settings| {
        s.admin.token = TOKEN.into();
    })
    .await;
    let metrics = || app.client.get(app.url("/metrics"));
    let refused = metrics().send().await.unwrap();
    assert_eq!(
        refused.headers()["www-authenticate"],
        "Bearer realm=\"reklama-metrics\""
    );
    let (status, code) = status_and_code(refused).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    for wrong in [
        "Bearer k8s-scrape-0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5e".to_owned(),
        format!("Bearer {TOKEN}x"),
        format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        format!("Basic {TOKEN}"),
        TOKEN.to_owned(),
    ] {
        let response = metrics()
            .header("Authorization", wrong.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{wrong}");
    }
    let response = metrics().bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("reklama_db_checkouts_total")
    );
    // Readiness answers every probe, with the backends' states for the token only.
    let ready = |token: Option<&'static str>| {
        let mut request = app.client.get(app.url("/readyz"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(ready(None).await, json!({"status": "ready"}));
    assert_eq!(ready(Some(TOKEN)).await["checks"]["database"], "up");
    // The token guards /metrics on the admin listener too.
    app.stop().await;
    let app = spawn_app_with(TestEnv::new(), None, |s: &mut Settings| {
        s.admin.token = TOKEN.into();
        s.server.admin_listen = "127.0.0.1:0".into();
    })
    .await;
    let admin = app.admin_address.clone().expect("an admin listener");
    let response = app
        .client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = app
        .client
        .get(format!("{admin}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.stop().await;
}
