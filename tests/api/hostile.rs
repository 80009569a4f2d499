//! Hostile input and a hostile environment: oversized and malformed requests (answered 4xx, never
//! 5xx, with memory bounded), security headers (HSTS over HTTPS only, JSON content types), and
//! logs that keep neither API keys nor client addresses. intake_api.rs covers the ordinary bad
//! bodies (malformed JSON, the JSON PNG bomb, a truncated PNG, a 15 MiB body, text/plain);
//! this file covers what it does not.

use std::fs::File;
use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, TestEnv, advert_json, b64, png, spawn_app, spawn_app_with};

// ---- memory ---------------------------------------------------------------------------------

/// The most the test process (client and in-process server together) may grow while one hostile
/// request is built, sent and answered. A decoded 50000×50000 bomb would need 7 GiB; a whole
/// 11 MiB upload held a few times over (base64 text, JSON, decoded bytes) stays far below.
const MEMORY_BOUND_KIB: u64 = 200 * 1024;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// Resets the peak resident set (VmHWM) to the current one; returns that baseline.
fn reset_peak() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM through clear_refs");
    status_kib("VmRSS:")
}

/// Runs one hostile case and asserts the process's peak memory grew by less than the bound.
async fn within_memory_bound<T>(what: &str, case: impl std::future::Future<Output = T>) -> T {
    let baseline = reset_peak();
    let out = case.await;
    let peak = status_kib("VmHWM:");
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "{what}: peak RSS {} MiB, grew {} MiB",
        peak / 1024,
        growth / 1024
    );
    assert!(
        growth < MEMORY_BOUND_KIB,
        "{what}: resident memory grew by {} MiB (bound {} MiB)",
        growth / 1024,
        MEMORY_BOUND_KIB / 1024
    );
    out
}

// ---- images ---------------------------------------------------------------------------------

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header declares `side`×`side` RGB pixels, with one tiny compressed row.
fn png_declaring(side: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

/// An animated GIF of `frames` frames on a 64×64 screen, each a 1×1 image (written by hand:
/// the smallest valid LZW stream), so thousands of frames take a few kilobytes.
fn gif_with_frames(frames: usize) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&64u16.to_le_bytes());
    out.extend_from_slice(&64u16.to_le_bytes());
    // Global colour table of 2 entries, background 0, no aspect ratio.
    out.extend_from_slice(&[0x80, 0, 0]);
    out.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    // Loop forever (NETSCAPE2.0).
    out.extend_from_slice(b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00");
    for n in 0..frames {
        // Graphic control: 1/100 s delay.
        out.extend_from_slice(&[0x21, 0xf9, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00]);
        let x = (n % 64) as u16;
        out.push(0x2c);
        out.extend_from_slice(&x.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.push(0);
        // LZW minimum code size 2; clear, index 0, end.
        out.extend_from_slice(&[0x02, 0x02, 0x44, 0x01, 0x00]);
    }
    out.push(0x3b);
    out
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

fn text_fields() -> Form {
    Form::new()
        .text("title", "Summer in Sochi")
        .text("text", "Seven nights by the sea")
        .text("genre", "travel")
        .text("target_url", "https://example.com/sochi")
}

async fn post_multipart(app: &TestApp, key: &str, form: Form) -> (u16, Value) {
    let response = app.post_advert_form(key, form).await;
    answer(response).await
}

async fn post_raw(app: &TestApp, key: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/api/v1/adverts"))
        .bearer_auth(key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    answer(response).await
}

#[tokio::test]
async fn image_bombs_animations_and_truncation_are_handled_with_bounded_memory() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;

    // A PNG declaring 50000×50000 pixels, as a multipart file: refused from its header.
    let (status, body) = within_memory_bound("multipart PNG bomb", async {
        let form = text_fields().part(
            "image",
            Part::bytes(png_declaring(50_000)).file_name("bomb.png"),
        );
        post_multipart(&app, &key, form).await
    })
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "image");
    assert_eq!(body["error"]["fields"][0]["code"], "dimensions_too_large");

    // Just inside the side limit, but past the pixel limit (11999² ≈ 144 Mpx > 40 Mpx).
    let (status, body) = within_memory_bound("PNG over the pixel limit", async {
        answer(
            app.post_advert(&key, &advert_json(&png_declaring(11_999)))
                .await,
        )
        .await
    })
    .await;
    assert_eq!(status, 422, "{body}");

    // 3000 frames: the creative is made from the first; the advert is accepted.
    let gif = gif_with_frames(3000);
    let (status, body) = within_memory_bound("GIF with 3000 frames", async {
        let form = text_fields().part("image", Part::bytes(gif).file_name("many.gif"));
        post_multipart(&app, &key, form).await
    })
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["image_width"], 64);

    // A JPEG cut in half.
    let whole = jpeg(400, 300);
    let (status, body) = within_memory_bound("truncated JPEG", async {
        answer(
            app.post_advert(&key, &advert_json(&whole[..whole.len() / 2]))
                .await,
        )
        .await
    })
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "image");
    assert_eq!(body["error"]["fields"][0]["code"], "corrupt");

    // An 11 MiB image (over intake.max_image_bytes) as base64 in a JSON body: 413, whether the
    // body limit or the image limit catches it first.
    let big = vec![0x42u8; 11 * 1024 * 1024];
    let (status, body) = within_memory_bound("11 MiB image in JSON", async {
        let body = serde_json::to_vec(&advert_json(&big)).unwrap();
        post_raw(&app, &key, "application/json", body).await
    })
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    app.stop().await;
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

// ---- malformed bodies -----------------------------------------------------------------------

#[tokio::test]
async fn invalid_utf8_is_400_in_json_and_422_naming_the_field_in_multipart() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;

    // Inside a JSON string: the JSON itself is invalid.
    let mut body = br#"{"title": "Summer "#.to_vec();
    body.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    body.extend_from_slice(
        br#"", "text": "t", "genre": "travel", "target_url": "https://example.com/"}"#,
    );
    let (status, error) = post_raw(&app, &key, "application/json", body).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["code"], "malformed_body");

    // The same in a PATCH body.
    let id = app.create_advert(&key).await["id"].as_i64().unwrap();
    let mut patch = br#"{"status": ""#.to_vec();
    patch.extend_from_slice(&[0xc0, 0x80]);
    patch.extend_from_slice(br#""}"#);
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/adverts/{id}")))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(patch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // In a multipart text field: 422 naming that field.
    for field in ["title", "text", "genre", "target_url"] {
        let mut form = Form::new();
        for (name, value) in [
            ("title", "Summer in Sochi"),
            ("text", "Seven nights"),
            ("genre", "travel"),
            ("target_url", "https://example.com/"),
        ] {
            form = if name == field {
                form.part(name, Part::bytes(vec![b'a', 0xff, 0xfe, b'z']))
            } else {
                form.text(name, value)
            };
        }
        form = form.part("image", Part::bytes(png(32, 32)).file_name("a.png"));
        let (status, error) = post_multipart(&app, &key, form).await;
        assert_eq!(status, 422, "{field}: {error}");
        assert_eq!(error["error"]["fields"][0]["field"], field, "{error}");
        assert_eq!(error["error"]["fields"][0]["code"], "invalid_utf8");
    }
    app.stop().await;
}

#[tokio::test]
async fn deep_nesting_oversized_patches_and_wrong_content_types_are_4xx() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let id = app.create_advert(&key).await["id"].as_i64().unwrap();
    let patch = |content_type: &'static str, body: Vec<u8>| {
        app.client
            .patch(app.url(&format!("/api/v1/adverts/{id}")))
            .bearer_auth(&key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    // Objects nested 100 000 deep, in a create and in a patch.
    let deep = format!("{}1{}", r#"{"title":"#.repeat(100_000), "}".repeat(100_000));
    let (status, _) = within_memory_bound("deeply nested create", async {
        post_raw(&app, &key, "application/json", deep.clone().into_bytes()).await
    })
    .await;
    assert_eq!(status, 400);
    let deep_patch = format!("{{\"status\":{}{}}}", "[".repeat(5_000), "]".repeat(5_000));
    let response = patch("application/json", deep_patch.into_bytes())
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // A 15 MiB PATCH body: past `server.max_body_bytes` (14 MiB, room for a new image).
    let huge = within_memory_bound("15 MiB PATCH", async {
        let mut body = br#"{"status": "paused", "weight": 1"#.to_vec();
        body.resize(15 * 1024 * 1024, b' ');
        body.push(b'}');
        patch("application/json", body).await.unwrap()
    })
    .await;
    assert_eq!(huge.status(), 413);

    // Wrong content types: 415 in the error format.
    for (content_type, body) in [
        ("text/plain", b"status=paused".to_vec()),
        (
            "application/x-www-form-urlencoded",
            b"status=paused".to_vec(),
        ),
        ("multipart/form-data; boundary=x", b"--x--\r\n".to_vec()),
    ] {
        let response = patch(content_type, body).await.unwrap();
        assert_eq!(response.status(), 415, "PATCH as {content_type}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "unsupported_media_type");
    }
    for content_type in [
        "application/xml",
        "application/x-www-form-urlencoded",
        "image/png",
    ] {
        let (status, error) = post_raw(&app, &key, content_type, b"<advert/>".to_vec()).await;
        assert_eq!(status, 415, "POST as {content_type}: {error}");
    }
    // No content type at all.
    let response = app
        .client
        .post(app.url("/api/v1/adverts"))
        .bearer_auth(&key)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    // Multipart with no boundary, or a body that never closes it: 4xx.
    let (status, _) = post_raw(&app, &key, "multipart/form-data", b"--x\r\n".to_vec()).await;
    assert!((400..500).contains(&status), "{status}");
    let (status, _) = post_raw(
        &app,
        &key,
        "multipart/form-data; boundary=x",
        b"--x\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nunterminated".to_vec(),
    )
    .await;
    assert!((400..500).contains(&status), "{status}");
    app.stop().await;
}

// ---- oversized request heads ----------------------------------------------------------------

/// Sends raw bytes on a fresh connection and returns the status line of the answer (empty if
/// the server closed without one).
async fn raw_exchange(app: &TestApp, request: &[u8]) -> String {
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    // The server may answer and close before it has read everything: a failed write is fine.
    let _ = stream.write_all(request).await;
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
            if received.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&received)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn status_of(line: &str) -> Option<u16> {
    line.split(' ').nth(1)?.parse().ok()
}

#[tokio::test]
async fn huge_headers_many_headers_and_long_urls_are_refused_with_a_4xx() {
    let app = spawn_app().await;
    let big_value = "a".repeat(64 * 1024);
    let cases = [
        (
            "one 64 KiB header",
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big_value}\r\n\r\n"),
        ),
        (
            "a 64 KiB cookie on the API",
            format!(
                "POST /api/v1/adverts HTTP/1.1\r\nHost: x\r\nCookie: {big_value}\r\n\
                 Content-Length: 0\r\n\r\n"
            ),
        ),
        ("500 headers", {
            let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
            for n in 0..500 {
                head.push_str(&format!("X-H{n}: v\r\n"));
            }
            head + "\r\n"
        }),
        (
            "a 64 KiB URL",
            format!("GET /r/{big_value} HTTP/1.1\r\nHost: x\r\n\r\n"),
        ),
    ];
    for (what, request) in cases {
        let line = within_memory_bound(what, raw_exchange(&app, request.as_bytes())).await;
        let status = status_of(&line);
        assert!(
            matches!(status, Some(400 | 414 | 431)),
            "{what}: answered {line:?}"
        );
    }
    // An ordinary large head (an 8 KiB cookie, a 2 KiB query) still gets through.
    let response = app
        .client
        .get(app.url(&format!("/healthz?pad={}", "q".repeat(2048))))
        .header("cookie", "c".repeat(8 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.stop().await;
}

// ---- security headers -----------------------------------------------------------------------

/// A self-signed certificate for 127.0.0.1 (as tls.rs makes them).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("hsts-cert.pem");
    let key = dir.join("hsts-key.pem");
    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-days", "1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(output.status.success(), "openssl req failed");
    (cert, key)
}

const HSTS: &str = "max-age=31536000";

#[tokio::test]
async fn every_https_answer_carries_hsts() {
    let env = TestEnv::new();
    let (cert, key) = self_signed(env.dir.path());
    let (cert_path, key_path) = (cert.display().to_string(), key.display().to_string());
    let app = spawn_app_with(env, None, |s| {
        s.tls.cert = cert_path;
        s.tls.key = key_path;
    })
    .await;
    let base = app.address.replace("http://", "https://");
    let pem = std::fs::read(&cert).unwrap();
    let client = reqwest::Client::builder()
        .tls_backend_rustls()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let api_key = app.customer_key("Acme").await;
    for (path, want) in [
        ("/healthz", 200),
        ("/", 200),
        ("/api/v1/serve?user_id=u", 200),
        ("/api/v1/adverts", 401),
        ("/r/NoSuchCode00", 404),
        ("/no/such/route", 404),
    ] {
        let response = client
            .get(format!("{base}{path}"))
            .bearer_auth(if want == 401 { "wrong" } else { &api_key })
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), want, "{path}");
        assert_eq!(
            response
                .headers()
                .get("strict-transport-security")
                .map(|v| v.to_str().unwrap()),
            Some(HSTS),
            "{path}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn plain_http_has_no_hsts_and_json_answers_say_application_json() {
    let app = spawn_app().await;
    let key = app.customer_key("Acme").await;
    let json_paths = [
        ("/healthz", None, 200),
        ("/readyz", None, 200),
        ("/api/v1/serve?user_id=u", None, 200),
        ("/api/v1/serve", None, 422),
        ("/api/v1/adverts", Some(key.as_str()), 200),
        ("/api/v1/adverts", None, 401),
        ("/api/v1/adverts/999999", Some(key.as_str()), 404),
        ("/api/v1/reports", Some(key.as_str()), 200),
        ("/no/such/route", None, 404),
    ];
    for (path, key, want) in json_paths {
        let mut request = app.client.get(app.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), want, "{path}");
        assert!(
            response
                .headers()
                .get("strict-transport-security")
                .is_none(),
            "{path}: HSTS over plain HTTP"
        );
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "{path}: content-type {content_type:?}"
        );
        let _: Value = response.json().await.expect("a JSON body");
    }
    // HTML pages keep their own headers.
    let page = app.client.get(app.url("/")).send().await.unwrap();
    assert!(page.headers().get("strict-transport-security").is_none());
    assert!(page.headers().get("content-security-policy").is_some());
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    app.stop().await;
}

// ---- privacy of the logs --------------------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary with this test's database and directories, logging at debug to `log`.
fn reklama(env: &TestEnv, port: u16, log: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reklama"));
    for (name, _) in std::env::vars() {
        if name.starts_with("REKLAMA__") {
            cmd.env_remove(name);
        }
    }
    let log = File::options().create(true).append(true).open(log).unwrap();
    cmd.current_dir(env.dir.path())
        .env("REKLAMA__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "REKLAMA__SERVER__PUBLIC_URL",
            format!("http://127.0.0.1:{port}"),
        )
        .env("REKLAMA__DATABASE__URL", &env.database_url)
        .env("REKLAMA__CLOUD__URL", env.cloud_dir())
        .env(
            "REKLAMA__TRACKING__JOURNAL_DIR",
            env.dir.path().join("journal"),
        )
        .env("RUST_LOG", "debug")
        .stderr(log.try_clone().unwrap())
        .stdin(Stdio::null());
    cmd
}

/// The client's own address: one no other part of the log could contain by chance.
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 23, 45, 67);

#[tokio::test]
async fn debug_logs_hold_neither_keys_nor_client_addresses() {
    let env = TestEnv::new();
    let log = env.dir.path().join("reklama.log");
    let added = reklama(&env, free_port(), &log)
        .args(["customer", "add", "Acme"])
        .output()
        .unwrap();
    assert!(added.status.success());
    let key = String::from_utf8(added.stdout).unwrap().trim().to_owned();
    let secret = key.rsplit('_').next().unwrap().to_owned();
    assert_eq!(secret.len(), 32, "{key}");

    let port = free_port();
    let mut child = reklama(&env, port, &log)
        .arg("serve")
        .stdout(File::create(env.dir.path().join("serve.stdout")).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .local_address(IpAddr::V4(CLIENT_IP))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0")
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "not healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Create through the API and the form, follow the link, read the reports.
    let created = client
        .post(format!("{base}/api/v1/adverts"))
        .bearer_auth(&key)
        .json(&advert_json(&png(64, 64)))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let advert: Value = created.json().await.unwrap();
    let id = advert["id"].as_i64().unwrap();
    let form = text_fields()
        .text("api_key", key.clone())
        .part("image", Part::bytes(png(32, 32)).file_name("a.png"));
    let page = client
        .post(format!("{base}/adverts"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 201);
    // The dashboard's sign-in takes the key in a form field, and sets a session cookie.
    let signed_in = client
        .post(format!("{base}/login"))
        .form(&[("api_key", key.as_str())])
        .send()
        .await
        .unwrap();
    assert!(
        signed_in.status().is_redirection() || signed_in.status().is_success(),
        "{}",
        signed_in.status()
    );
    let tracked = advert["tracked_url"].as_str().unwrap();
    for _ in 0..3 {
        let followed = client.get(tracked).send().await.unwrap();
        assert_eq!(followed.status(), 302);
    }
    let report = client
        .get(format!("{base}/api/v1/adverts/{id}/report"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), 200);
    let summary = client
        .get(format!("{base}/api/v1/reports"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(summary.status(), 200);
    // Failures log too: a wrong secret, a patch with a bad body, an unknown advert.
    let forged = format!("{}{}", &key[..key.len() - 32], "x".repeat(32));
    let refused = client
        .get(format!("{base}/api/v1/reports"))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let bad = client
        .patch(format!("{base}/api/v1/adverts/{id}"))
        .bearer_auth(&key)
        .json(&json!({"weight": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let body = json!({"image_base64": b64(b"not an image")});
    let odd = client
        .post(format!("{base}/api/v1/adverts"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(odd.status().is_client_error());

    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.wait();

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("reklama started") && text.contains("DEBUG"),
        "the log was captured at debug level:\n{text}"
    );
    let lines = text.lines().count();
    for (what, needle) in [
        ("the API key", key.as_str()),
        ("the key's secret", secret.as_str()),
        ("the forged key's secret", &forged[forged.len() - 32..]),
        ("the client address", &CLIENT_IP.to_string()),
    ] {
        let leaks: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
        assert!(
            leaks.is_empty(),
            "{what} appears in {} of {lines} log lines, e.g.:\n{}",
            leaks.len(),
            leaks[0]
        );
    }
    eprintln!("checked {lines} debug log lines");
}
