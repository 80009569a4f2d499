//! E-mail against a real SMTP server on loopback: each test starts its own
//! (tests/support/smtp_sink.py, aiosmtpd) on a free port, reads what it received from a
//! directory, and stops it at the end. `reklama mail test`, the `mail.send` job through the
//! app's queue (also while the server is down, then up), the customer's address on the command
//! line and the dashboard, and the settings' checks.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reklama::platform::auth::{Contact, ReportEmail};
use reklama::platform::db::DbError;
use reklama::platform::mail::{self, Email, MailQueue, MailSettings};

use crate::helpers::{TestApp, TestEnv, eventually, random_suffix, spawn_app_with};
use crate::isolation::sign_in;

pub(crate) const FROM: &str = "reklama <noreply@example.com>";

/// An aiosmtpd server on 127.0.0.1, writing every message it accepts to its own directory.
/// Killed when dropped (and it exits by itself when its stdin closes).
pub(crate) struct SmtpSink {
    child: Child,
    dir: PathBuf,
}

impl SmtpSink {
    pub(crate) fn start(port: u16, dir: &Path) -> Self {
        Self::start_with(port, dir, &[])
    }

    fn start_with(port: u16, dir: &Path, flags: &[&str]) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(dir)
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs tests/support/smtp_sink.py (pip install aiosmtpd)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut sink = Self {
            child,
            dir: dir.to_owned(),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.trim() == "READY" => sink,
            other => {
                let _ = sink.child.kill();
                panic!(
                    "the SMTP sink did not start on port {port}: {other:?} (is aiosmtpd installed?)"
                );
            }
        }
    }

    /// Every message received so far, oldest first.
    pub(crate) fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// Every message received so far, decoded: `{"to", "subject", "text", "html"}`.
    pub(crate) fn decoded(&self) -> Vec<serde_json::Value> {
        self.messages()
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let path = self.dir.join(format!("{:06}.json", i + 1));
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
            })
            .collect()
    }

    /// Waits (blocking) for at least `n` messages.
    pub(crate) fn wait_for(&self, n: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the SMTP sink got {} message(s), not {n}",
                messages.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Asserts one received message is `subject` from [`FROM`] to `to`, in text and HTML.
fn assert_message(message: &str, to: &str, subject: &str, text: &str, html: &str) {
    assert!(
        message.contains("X-Envelope-From: noreply@example.com"),
        "{message}"
    );
    assert!(
        message.contains(&format!("X-Envelope-To: {to}")),
        "{message}"
    );
    assert!(message.contains(&format!("From: {FROM}")), "{message}");
    assert!(message.contains(&format!("To: {to}")), "{message}");
    assert!(
        message.contains(&format!("Subject: {subject}")),
        "{message}"
    );
    assert!(message.contains("Date: "), "{message}");
    assert!(message.contains("Message-ID: "), "{message}");
    assert!(
        message.contains("Content-Type: multipart/alternative"),
        "{message}"
    );
    let plain = message.find("Content-Type: text/plain").expect(message);
    let rich = message.find("Content-Type: text/html").expect(message);
    assert!(plain < rich, "plain text first, HTML second: {message}");
    let text_at = message.find(text).expect(message);
    let html_at = message.find(html).expect(message);
    assert!(
        plain < text_at && text_at < rich && rich < html_at,
        "{message}"
    );
}

fn reklama(env: &TestEnv) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reklama"));
    cmd.current_dir(env.dir.path())
        .env_remove("RUST_LOG")
        .env("REKLAMA__DATABASE__URL", &env.database_url)
        .env("REKLAMA__CLOUD__URL", env.cloud_dir().display().to_string());
    cmd
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn mail_test_sends_one_email_in_text_and_html_or_fails_with_the_servers_error() {
    let env = TestEnv::new();
    let port = free_port();
    let sink = SmtpSink::start(port, &env.dir.path().join("inbox"));
    let (ok, _, stderr) = run(reklama(&env)
        .args(["mail", "test", "ann@example.com"])
        .env(
            "REKLAMA__MAIL__SMTP_URL",
            format!("smtp://127.0.0.1:{port}"),
        )
        .env("REKLAMA__MAIL__FROM", FROM));
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("sent a test e-mail to ann@example.com"),
        "{stderr}"
    );
    let messages = sink.wait_for(1);
    assert_eq!(messages.len(), 1);
    assert_message(
        &messages[0],
        "ann@example.com",
        "reklama: test e-mail",
        "This is a test e-mail from reklama",
        "<strong>reklama</strong>",
    );
    drop(sink);

    // A server that refuses the recipient: non-zero, with the server's words.
    let port = free_port();
    let refusing = SmtpSink::start_with(port, &env.dir.path().join("refused"), &["--reject"]);
    let (ok, _, stderr) = run(reklama(&env)
        .args(["mail", "test", "bob@example.com"])
        .env(
            "REKLAMA__MAIL__SMTP_URL",
            format!("smtp://127.0.0.1:{port}"),
        )
        .env("REKLAMA__MAIL__FROM", FROM));
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("550"), "{stderr}");
    assert!(stderr.contains("mailbox unavailable"), "{stderr}");
    assert!(refusing.messages().is_empty());
    drop(refusing);

    // No server at all: non-zero, saying why, within the timeout.
    let started = Instant::now();
    let (ok, _, stderr) = run(reklama(&env)
        .args(["mail", "test", "bob@example.com"])
        .env(
            "REKLAMA__MAIL__SMTP_URL",
            format!("smtp://127.0.0.1:{port}"),
        )
        .env("REKLAMA__MAIL__FROM", FROM)
        .env("REKLAMA__MAIL__TIMEOUT_MS", "2000"));
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("SMTP") || stderr.contains("no answer"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));

    // Mail off, or a bad address: refused before anything is sent.
    let (ok, _, stderr) = run(reklama(&env).args(["mail", "test", "ann@example.com"]));
    assert!(!ok);
    assert!(stderr.contains("mail is off"), "{stderr}");
    let (ok, _, stderr) = run(reklama(&env)
        .args(["mail", "test", "not-an-address"])
        .env(
            "REKLAMA__MAIL__SMTP_URL",
            format!("smtp://127.0.0.1:{port}"),
        )
        .env("REKLAMA__MAIL__FROM", FROM));
    assert!(!ok);
    assert!(stderr.contains("ADDRESS: "), "{stderr}");
}

pub(crate) async fn mail_app(
    port: u16,
    tweak: impl FnOnce(&mut reklama::main_app::Settings),
) -> TestApp {
    spawn_app_with(TestEnv::new(), None, |s| {
        s.mail.smtp_url = format!("smtp://127.0.0.1:{port}");
        s.mail.from = FROM.into();
        s.mail.timeout_ms = 2000;
        s.limits.enabled = false;
        tweak(s);
    })
    .await
}

/// Queues `email` as a module would: inside a transaction of its own.
async fn queue(app: &TestApp, email: Email) -> Option<i64> {
    let queue = app.handles.mail;
    let id = app
        .handles
        .db
        .run(move |conn| {
            reklama::platform::db::transaction(conn, |conn| queue.enqueue(conn, &email))
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    app.handles.jobs.enqueuer().waker.wake();
    id
}

/// Who gets the `report` e-mail (whose report of a period ending far ahead is due).
async fn report_recipients(
    app: &TestApp,
    report: ReportEmail,
) -> Vec<(reklama::domain::CustomerId, String)> {
    app.handles
        .db
        .run(move |conn| {
            reklama::platform::auth::reports_due(conn, report, i64::MAX).map_err(DbError::from)
        })
        .await
        .unwrap()
}

/// The `mail.send` jobs queued or running (an app with mail on also has the report e-mails'
/// job waiting for midnight).
pub(crate) async fn sends_waiting(app: &TestApp) -> i64 {
    use diesel::prelude::*;
    use reklama::platform::db::schema::jobs;
    app.handles
        .db
        .run(|conn| {
            jobs::table
                .filter(jobs::kind.eq(mail::SEND_JOB))
                .filter(jobs::status.eq_any(["queued", "running"]))
                .count()
                .get_result::<i64>(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn the_send_job_delivers_through_the_apps_queue() {
    let port = free_port();
    let app = mail_app(port, |_| {}).await;
    let sink = SmtpSink::start(port, &app.env.dir.path().join("inbox"));
    assert!(app.handles.mail.enabled());
    let email = Email::new(
        "cat@example.org",
        "Your advert reached its cap",
        "Summer in Sochi has had its 1000 clicks.",
        "<p>Summer in Sochi has had its <b>1000</b> clicks.</p>",
    )
    .unwrap();
    let id = queue(&app, email).await;
    assert!(id.is_some());
    let messages = eventually(Duration::from_secs(20), "the e-mail", || {
        let got = sink.messages();
        async move { (!got.is_empty()).then_some(got) }
    })
    .await;
    assert_eq!(messages.len(), 1);
    assert_message(
        &messages[0],
        "cat@example.org",
        "Your advert reached its cap",
        "Summer in Sochi has had its 1000 clicks.",
        "<b>1000</b>",
    );
    // The job is done and gone.
    eventually(Duration::from_secs(10), "the job to finish", || async {
        (sends_waiting(&app).await == 0).then_some(())
    })
    .await;
    assert_eq!(app.handles.jobs.stats().dead.load(Ordering::Relaxed), 0);
    app.stop().await;
}

#[tokio::test]
async fn a_server_that_is_down_gets_the_email_once_it_is_up() {
    let port = free_port();
    // Enough attempts to outlast the server's start-up at the tests' fast backoff.
    let app = mail_app(port, |s| s.jobs.max_attempts = 30).await;
    let email = Email::new(
        "dan@example.net",
        "Weekly report",
        "Totals",
        "<p>Totals</p>",
    )
    .unwrap();
    queue(&app, email).await.unwrap();
    let stats = app.handles.jobs.stats();
    eventually(
        Duration::from_secs(20),
        "the send to fail twice",
        || async { (stats.retried.load(Ordering::Relaxed) >= 2).then_some(()) },
    )
    .await;
    assert_eq!(sends_waiting(&app).await, 1);

    // The server comes up: the waiting e-mail goes out, once.
    let sink = SmtpSink::start(port, &app.env.dir.path().join("inbox"));
    eventually(
        Duration::from_secs(20),
        "the e-mail after the outage",
        || {
            let n = sink.messages().len();
            async move { (n >= 1).then_some(()) }
        },
    )
    .await;
    eventually(Duration::from_secs(10), "the job to finish", || async {
        (sends_waiting(&app).await == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "exactly once");
    assert_message(
        &messages[0],
        "dan@example.net",
        "Weekly report",
        "Totals",
        "<p>Totals</p>",
    );
    assert_eq!(app.handles.jobs.depth().await.unwrap().dead, 0);
    app.stop().await;
}

#[tokio::test]
async fn with_mail_off_nothing_is_queued_and_queued_mail_completes_unsent() {
    let app = spawn_app_with(TestEnv::new(), None, |_| {}).await;
    assert!(!app.handles.mail.enabled());
    let email = Email::new("eve@example.com", "Hi", "t", "<p>h</p>").unwrap();
    assert_eq!(queue(&app, email.clone()).await, None);
    assert_eq!(app.handles.jobs.depth().await.unwrap().queued, 0);

    // A job recorded while mail was on completes without sending once it is off.
    app.handles
        .db
        .run(move |conn| mail::enqueue(conn, &email, 3).map_err(DbError::from))
        .await
        .unwrap();
    app.handles.jobs.enqueuer().waker.wake();
    eventually(Duration::from_secs(10), "the job to complete", || async {
        let d = app.handles.jobs.depth().await.unwrap();
        (d.queued + d.running == 0).then_some(())
    })
    .await;
    let stats = app.handles.jobs.stats();
    assert_eq!(stats.dead.load(Ordering::Relaxed), 0);
    assert_eq!(stats.retried.load(Ordering::Relaxed), 0);
    app.stop().await;

    // The queue handle follows the settings.
    let on = MailSettings {
        smtp_url: "smtp://127.0.0.1:25".into(),
        from: FROM.into(),
        timeout_ms: 1000,
    };
    assert!(MailQueue::new(&on, 3).enabled());
}

#[tokio::test]
async fn the_command_line_sets_and_clears_a_customers_address_and_report() {
    let app = spawn_app_with(TestEnv::new(), None, |_| {}).await;
    let env = app.env.clone();
    let name = format!("Mail {}", random_suffix());
    let (ok, key, stderr) = run(reklama(&env).args([
        "customer",
        "add",
        &name,
        "--email",
        "ann@example.com",
        "--report",
        "weekly",
    ]));
    assert!(ok, "{stderr}");
    let key = key.trim().to_owned();
    let (id, _) = app.handles.customers.find(&name).await.unwrap();
    let contact = |expected: Contact| {
        let customers = app.handles.customers.clone();
        async move {
            assert_eq!(customers.contact(id).await.unwrap(), Some(expected));
        }
    };
    contact(Contact {
        email: Some("ann@example.com".into()),
        report: ReportEmail::Weekly,
    })
    .await;
    assert_eq!(
        report_recipients(&app, ReportEmail::Weekly).await,
        [(id, "ann@example.com".to_owned())]
    );

    // A bad address is refused naming --email, and changes nothing.
    for bad in [
        "ann",
        "ann@",
        "a b@example.com",
        &format!("{}@example.com", "a".repeat(250)),
    ] {
        let (ok, _, stderr) = run(reklama(&env).args(["customer", "set", &name, "--email", bad]));
        assert!(!ok, "{bad}");
        assert!(stderr.contains("--email"), "{bad}: {stderr}");
    }
    let (ok, _, stderr) = run(reklama(&env).args(["customer", "add", "Other", "--email", "nope"]));
    assert!(!ok && stderr.contains("--email"), "{stderr}");
    assert!(
        app.handles.customers.find("Other").await.is_err(),
        "not created"
    );
    let (ok, _, stderr) = run(reklama(&env).args(["customer", "set", &name, "--report", "hourly"]));
    assert!(!ok && stderr.contains("--report"), "{stderr}");
    let (ok, _, stderr) = run(reklama(&env).args(["customer", "set", &name]));
    assert!(!ok && stderr.contains("nothing to change"), "{stderr}");
    contact(Contact {
        email: Some("ann@example.com".into()),
        report: ReportEmail::Weekly,
    })
    .await;

    // Set, by name: the address alone, then the report alone.
    let (ok, _, stderr) =
        run(reklama(&env).args(["customer", "set", &name, "--email", "  bob@example.org "]));
    assert!(ok, "{stderr}");
    assert!(stderr.contains("bob@example.org"), "{stderr}");
    contact(Contact {
        email: Some("bob@example.org".into()),
        report: ReportEmail::Weekly,
    })
    .await;
    let (ok, _, stderr) =
        run(reklama(&env).args(["customer", "set", &id.to_string(), "--report", "daily"]));
    assert!(ok, "{stderr}");
    contact(Contact {
        email: Some("bob@example.org".into()),
        report: ReportEmail::Daily,
    })
    .await;

    // '' clears the address.
    let (ok, _, stderr) = run(reklama(&env).args(["customer", "set", &name, "--email", ""]));
    assert!(ok, "{stderr}");
    contact(Contact {
        email: None,
        report: ReportEmail::Daily,
    })
    .await;
    assert!(
        report_recipients(&app, ReportEmail::Daily).await.is_empty(),
        "no address, no report"
    );
    let (ok, _, _) = run(reklama(&env).args(["customer", "set", "Nobody", "--email", ""]));
    assert!(!ok);

    // The dashboard shows what the command line set.
    let page = app.dashboard_page(&key, "/dashboard/account").await;
    assert!(page.contains(r#"value="daily" selected"#), "{page}");
    app.stop().await;
}

async fn post_account(app: &TestApp, cookie: &str, body: &str) -> (u16, String) {
    let response = app
        .client
        .post(app.url("/dashboard/account"))
        .header("cookie", format!("reklama_session={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn the_account_page_changes_the_address_and_a_read_session_cannot() {
    let app = spawn_app_with(TestEnv::new(), None, |s| s.limits.enabled = false).await;
    let write = app.customer_key("Acme").await;
    let (id, _) = app.handles.customers.find("Acme").await.unwrap();
    let contact = || async { app.handles.customers.contact(id).await.unwrap().unwrap() };
    let session = sign_in(&app, &write).await;

    let page = app.dashboard_page(&write, "/dashboard/account").await;
    assert!(page.contains(r#"action="/dashboard/account""#), "{page}");
    assert!(
        page.contains(r#"href="/dashboard/account""#),
        "in the navigation"
    );

    // Saved: the address, the report.
    let (status, page) = post_account(
        &app,
        &session.cookie,
        &format!(
            "csrf_token={}&email=ann%40example.com&report=weekly",
            session.csrf
        ),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Saved."), "{page}");
    assert!(page.contains(r#"value="ann@example.com""#), "{page}");
    assert_eq!(
        contact().await,
        Contact {
            email: Some("ann@example.com".into()),
            report: ReportEmail::Weekly
        }
    );

    // A bad address: the page again, 422, the error beside the field and what was typed kept;
    // nothing changed.
    let (status, page) = post_account(
        &app,
        &session.cookie,
        &format!("csrf_token={}&email=ann%40&report=daily", session.csrf),
    )
    .await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains(r#"id="account-email-error""#), "{page}");
    assert!(page.contains("is not an e-mail address"), "{page}");
    assert!(page.contains(r#"aria-invalid="true""#), "{page}");
    assert!(page.contains(r#"value="ann@""#), "{page}");
    let long = format!("{}%40example.com", "a".repeat(250));
    let (status, page) = post_account(
        &app,
        &session.cookie,
        &format!("csrf_token={}&email={long}", session.csrf),
    )
    .await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("at most 254"), "{page}");
    let (status, page) = post_account(
        &app,
        &session.cookie,
        &format!("csrf_token={}&email=&report=hourly", session.csrf),
    )
    .await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains(r#"id="account-report-error""#), "{page}");
    assert_eq!(contact().await.email.as_deref(), Some("ann@example.com"));
    assert_eq!(contact().await.report, ReportEmail::Weekly);

    // A field left out is left as it is.
    let (status, page) = post_account(
        &app,
        &session.cookie,
        &format!("csrf_token={}&report=daily", session.csrf),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        contact().await,
        Contact {
            email: Some("ann@example.com".into()),
            report: ReportEmail::Daily
        }
    );

    // Without the CSRF token: refused.
    let (status, _) = post_account(&app, &session.cookie, "email=x%40example.com").await;
    assert_eq!(status, 403);

    // A read key's session sees the address but cannot change it.
    let made = app
        .client
        .post(app.url("/api/v1/keys"))
        .bearer_auth(&write)
        .json(&serde_json::json!({"scope": "read"}))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let read = made["key"].as_str().unwrap().to_owned();
    let page = app.dashboard_page(&read, "/dashboard/account").await;
    assert!(page.contains("ann@example.com"), "{page}");
    assert!(!page.contains(r#"action="/dashboard/account""#), "{page}");
    let reader = sign_in(&app, &read).await;
    let (status, page) = post_account(
        &app,
        &reader.cookie,
        &format!(
            "csrf_token={}&email=mallory%40example.com&report=off",
            reader.csrf
        ),
    )
    .await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("read key"), "{page}");
    assert_eq!(contact().await.email.as_deref(), Some("ann@example.com"));

    // Empty clears it.
    let (status, page) = post_account(
        &app,
        &session.cookie,
        &format!("csrf_token={}&email=&report=off", session.csrf),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(contact().await, Contact::default());

    // Another customer's page shows its own (empty) address, never this one's.
    let other = app.customer_key("Other").await;
    let page = app.dashboard_page(&other, "/dashboard/account").await;
    assert!(!page.contains("ann@example.com"));

    // Not signed in: to the sign-in page.
    let response = app
        .client
        .get(app.url("/dashboard/account"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    app.stop().await;
}

#[test]
fn mail_settings_are_checked_at_start_up_naming_the_key_and_the_password_is_redacted() {
    let env = TestEnv::new();
    for (pairs, named) in [
        (
            vec![("REKLAMA__MAIL__SMTP_URL", "mail.example.com:25")],
            "mail.smtp_url: must be smtp://",
        ),
        (
            vec![("REKLAMA__MAIL__SMTP_URL", "smtp://mail.example.com")],
            "mail.from: must be set",
        ),
        (
            vec![
                ("REKLAMA__MAIL__SMTP_URL", "smtp://mail.example.com"),
                ("REKLAMA__MAIL__FROM", "noreply"),
            ],
            "mail.from: \"noreply\" is not a mailbox",
        ),
        (vec![("REKLAMA__MAIL__TIMEOUT_MS", "0")], "mail.timeout_ms"),
    ] {
        let mut cmd = reklama(&env);
        cmd.arg("check-config");
        for (k, v) in &pairs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{pairs:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(named), "{pairs:?}: {stderr}");
    }
    let (ok, stdout, stderr) = run(reklama(&env)
        .arg("check-config")
        .env(
            "REKLAMA__MAIL__SMTP_URL",
            "smtps://relay%40example.com:s3cret@smtp.example.com:465",
        )
        .env("REKLAMA__MAIL__FROM", FROM));
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("s3cret"), "{stdout}");
    assert!(
        stdout.contains("smtps://relay%40example.com:REDACTED@smtp.example.com:465"),
        "{stdout}"
    );
}
