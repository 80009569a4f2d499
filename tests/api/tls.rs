//! HTTPS with rustls: a self-signed certificate made at test time with the openssl CLI.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use reklama::main_app::{Application, Overrides};

use crate::helpers::{TestApp, TestEnv, spawn_app_with, test_settings};

struct Pem {
    cert: PathBuf,
    key: PathBuf,
}

/// A self-signed P-256 certificate for 127.0.0.1 and localhost, valid for a day.
fn self_signed(dir: &Path, name: &str) -> Pem {
    let cert = dir.join(format!("{name}-cert.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        // webpki refuses a CA certificate as the server's own (CaUsedAsEndEntity).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-days", "1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Pem { cert, key }
}

/// An app serving HTTPS only, its port and its certificate.
async fn spawn_https_app() -> (TestApp, u16, Pem) {
    let env = TestEnv::new();
    let pem = self_signed(env.dir.path(), "server");
    let (cert, key) = (
        pem.cert.display().to_string(),
        pem.key.display().to_string(),
    );
    let app = spawn_app_with(env, None, |s| {
        s.tls.cert = cert;
        s.tls.key = key;
    })
    .await;
    let port = app
        .address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in the app address");
    (app, port, pem)
}

/// A client that trusts only this certificate.
fn https_client(cert: &Path) -> reqwest::Client {
    let pem = std::fs::read(cert).unwrap();
    reqwest::Client::builder()
        .tls_backend_rustls()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `openssl s_client` against the port with extra arguments; stdin is empty, so it quits
/// right after the handshake.
async fn s_client(port: u16, args: &[&str]) -> (Output, String) {
    let mut command = Command::new("openssl");
    command
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output().expect("run openssl"))
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

/// The cipher s_client negotiated, from its "New, TLSv1.2, Cipher is X" line.
fn negotiated_cipher(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|line| line.split_once("Cipher is ").map(|(_, c)| c.trim()))
        .filter(|c| *c != "(NONE)")
}

#[tokio::test]
async fn healthz_answers_over_https_with_the_configured_certificate() {
    let (app, port, pem) = spawn_https_app().await;
    let client = https_client(&pem.cert);
    let response = client
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    // By name too: the certificate names localhost as well.
    let response = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A client that trusts another certificate refuses this server.
    let other = self_signed(app.env.dir.path(), "other");
    let error = https_client(&other.cert)
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    app.stop().await;
}

#[tokio::test]
async fn plain_http_on_the_https_port_gets_no_answer() {
    let (app, _port, _pem) = spawn_https_app().await;
    match app.client.get(app.url("/healthz")).send().await {
        Err(_) => {}
        Ok(response) => assert_ne!(response.status(), 200, "{response:?}"),
    }
    app.stop().await;
}

#[tokio::test]
async fn only_tls_1_2_and_1_3_are_accepted() {
    let (app, port, pem) = spawn_https_app().await;
    // rustls cannot even build a client limited to TLS 1.1.
    assert!(
        reqwest::Client::builder()
            .tls_backend_rustls()
            .max_tls_version(reqwest::tls::Version::TLS_1_1)
            .build()
            .is_err()
    );
    let ca = pem.cert.display().to_string();

    // The server refuses TLS 1.1 and 1.0. SECLEVEL=0 lets the openssl client offer them (OpenSSL
    // 3 refuses them itself otherwise), so the refusal comes from the server: a fatal alert
    // (rustls answers handshake_failure) instead of a ServerHello.
    for version in ["-tls1_1", "-tls1"] {
        let (output, text) = s_client(port, &[version, "-cipher", "DEFAULT@SECLEVEL=0"]).await;
        assert!(!output.status.success(), "{version}: {text}");
        assert_eq!(negotiated_cipher(&text), None, "{version}: {text}");
        assert!(text.contains("no peer certificate available"), "{text}");
        assert!(
            text.contains("SSL alert number"),
            "{version} was not refused by the server: {text}"
        );
    }

    // TLS 1.2 and 1.3 handshake, and the certificate verifies.
    for (version, protocol) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (output, text) =
            s_client(port, &[version, "-CAfile", &ca, "-verify_return_error"]).await;
        assert!(output.status.success(), "{version}: {text}");
        assert!(negotiated_cipher(&text).is_some(), "{version}: {text}");
        assert!(
            text.contains(&format!("New, {protocol}, Cipher is ")),
            "{version}: {text}"
        );
        assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    }
    app.stop().await;
}

/// Builds the application with these TLS paths; returns the build error.
async fn build_error(env: &TestEnv, cert: &Path, key: &Path) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut settings = test_settings(env, port);
    settings.tls.cert = cert.display().to_string();
    settings.tls.key = key.display().to_string();
    let built = Application::build_with(
        settings,
        Overrides {
            cloud: None,
            listener: Some(listener),
        },
    )
    .await;
    match built {
        Ok(_) => panic!("the application built with tls.cert={cert:?} tls.key={key:?}"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn unusable_tls_files_stop_the_build_naming_the_setting() {
    let env = TestEnv::new();
    let dir = env.dir.path();
    let good = self_signed(dir, "good");
    let missing = dir.join("missing.pem");

    let error = build_error(&env, &missing, &good.key).await;
    assert!(error.contains("tls.cert"), "{error}");
    assert!(error.contains("missing.pem"), "{error}");

    let not_pem = dir.join("not-a-cert.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let error = build_error(&env, &not_pem, &good.key).await;
    assert!(error.contains("tls.cert"), "{error}");
    assert!(error.contains("holds no certificate"), "{error}");

    let error = build_error(&env, &good.cert, &missing).await;
    assert!(error.contains("tls.key"), "{error}");

    // A certificate with someone else's key.
    let other = self_signed(dir, "other");
    let error = build_error(&env, &good.cert, &other.key).await;
    assert!(error.contains("tls:"), "{error}");
    assert!(error.contains("do not fit together"), "{error}");
}
