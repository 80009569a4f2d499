//! Alerts and the report e-mail, delivered to a real SMTP server on loopback (aiosmtpd, as in
//! `mail.rs`): a cap reached, an end passed, a webhook disabled and a cloud copy dead-lettered
//! each reach the customer's address once; the daily and weekly reports total what the report
//! API shows, once per period, through the app's own job queue.

use std::sync::atomic::Ordering;
use std::time::Duration;

use diesel::prelude::*;
use reklama::domain::CustomerId;
use reklama::modules::integrations::{GRACE_SECS, Period, REPORTS_JOB, next_run};
use reklama::platform::auth::{Contact, ReportEmail};
use reklama::platform::db::{DbError, schema::jobs};
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestEnv, advert_json, eventually, png, spawn_app_with};
use crate::mail::{FROM, SmtpSink, free_port, mail_app};
use crate::offload::FlakyStore;

/// A customer with `contact`: its id and key.
async fn customer(app: &TestApp, name: &str, contact: Contact) -> (CustomerId, String) {
    let issued = app
        .handles
        .customers
        .create_with_contact(name, contact)
        .await
        .unwrap();
    (issued.customer.id, issued.key)
}

fn at(address: &str, report: ReportEmail) -> Contact {
    Contact {
        email: Some(address.into()),
        report,
    }
}

async fn create(app: &TestApp, key: &str, body: &Value) -> i64 {
    let response = app.post_advert(key, body).await;
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap()
}

/// The decoded messages to `to`.
fn to(sink: &SmtpSink, address: &str) -> Vec<Value> {
    sink.decoded()
        .into_iter()
        .filter(|m| m["to"] == address)
        .collect()
}

/// Every alert headline the messages to `address` carry (an e-mail may list several).
fn text_of(messages: &[Value]) -> String {
    messages
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_reached_cap_and_a_passed_end_alert_the_customer_once_and_nobody_without_an_address() {
    let port = free_port();
    let env = TestEnv::new();
    let sink = SmtpSink::start(port, &env.dir.path().join("inbox"));
    let app = spawn_app_with(env.clone(), None, |s| {
        s.mail.smtp_url = format!("smtp://127.0.0.1:{port}");
        s.mail.from = FROM.into();
        s.limits.enabled = false;
    })
    .await;
    let (_, key) = customer(&app, "Acme", at("ads@acme.example", ReportEmail::Off)).await;
    let (_, quiet) = customer(&app, "Quiet", Contact::default()).await;
    let mut body = advert_json(&png(64, 64));
    body["title"] = json!("Cap <me> & co");
    body["max_impressions"] = json!(2);
    let capped = create(&app, &key, &body).await;
    let mut body = advert_json(&png(64, 64));
    body["title"] = json!("Ends soon");
    body["genre"] = json!("automotive");
    let ends = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    body["ends_at"] = json!(
        ends.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    let ending = create(&app, &key, &body).await;
    // The customer without an address has a capped advert too.
    let mut body = advert_json(&png(64, 64));
    body["max_impressions"] = json!(1);
    body["genre"] = json!("food");
    let unheard = create(&app, &quiet, &body).await;

    eventually(
        Duration::from_secs(15),
        "both capped adverts served out",
        || async {
            let mut served = 0;
            for n in 0..6 {
                for genre in ["travel", "food"] {
                    served += app
                        .cards(&format!("user_id=u{n}&genres={genre}"))
                        .await
                        .iter()
                        .filter(|c| c["advert_id"] == capped || c["advert_id"] == unheard)
                        .count();
                }
            }
            (served == 0).then_some(())
        },
    )
    .await;
    let headlines = [
        format!("\u{201c}Cap <me> & co\u{201d} (advert {capped}) reached its cap of 2 impressions"),
        format!("\u{201c}Ends soon\u{201d} (advert {ending}) ended"),
    ];
    let messages = eventually(Duration::from_secs(20), "both alerts e-mailed", || {
        let messages = to(&sink, "ads@acme.example");
        let text = text_of(&messages);
        let told = headlines.iter().all(|h| text.contains(h.as_str()));
        async move { told.then_some(messages) }
    })
    .await;
    let text = text_of(&messages);
    assert!(
        text.contains("It is no longer served. Raise the cap"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}/dashboard/adverts/{capped}", app.address)),
        "{text}"
    );
    let html: String = messages
        .iter()
        .map(|m| m["html"].as_str().unwrap().to_owned())
        .collect();
    assert!(html.contains("Cap &lt;me&gt; &amp; co"), "{html}");
    assert!(!html.contains("<me>"), "{html}");
    if let [one] = messages.as_slice() {
        assert_eq!(
            one["subject"],
            "reklama: 2 alerts about your adverts and webhooks"
        );
    } else {
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0]["subject"], format!("reklama: {}", headlines[0]));
    }

    // Another instance's start (and more time) tells nobody again; the customer without an
    // address was never written to.
    let env = app.stop().await;
    let app = spawn_app_with(env, None, |s| {
        s.mail.smtp_url = format!("smtp://127.0.0.1:{port}");
        s.mail.from = FROM.into();
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = to(&sink, "ads@acme.example");
    assert_eq!(again.len(), messages.len());
    let listed = text_of(&again)
        .lines()
        .filter(|line| line.starts_with("* "))
        .count();
    assert_eq!(listed, 2, "{}", text_of(&again));
    assert_eq!(sink.decoded().len(), messages.len(), "{:?}", sink.decoded());
    app.stop().await;
}

#[tokio::test]
async fn a_dead_lettered_cloud_copy_and_a_disabled_webhook_are_e_mailed() {
    let port = free_port();
    let env = TestEnv::new();
    let sink = SmtpSink::start(port, &env.dir.path().join("inbox"));
    let store = FlakyStore::new(&env.cloud_dir(), u32::MAX);
    let app = spawn_app_with(env.clone(), Some(store), |s| {
        s.mail.smtp_url = format!("smtp://127.0.0.1:{port}");
        s.mail.from = FROM.into();
        s.jobs.max_attempts = 2;
        s.webhooks.allow_private_targets = true;
        // About a second.
        s.webhooks.disable_after_hours = 0.0003;
    })
    .await;
    let (_, key) = customer(&app, "Acme", at("ops@acme.example", ReportEmail::Off)).await;
    // Nothing listens on this port: every delivery fails.
    let nowhere = format!("http://127.0.0.1:{}/hook", free_port());
    let response = app
        .client
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(&key)
        .json(&json!({"url": nowhere, "events": ["advert.created"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let hook = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut body = advert_json(&png(64, 64));
    body["title"] = json!("Winter sale");
    let id = create(&app, &key, &body).await;

    let text = eventually(Duration::from_secs(30), "both alerts e-mailed", || {
        let text = text_of(&to(&sink, "ops@acme.example"));
        let told = text.contains("The cloud copy of") && text.contains("was disabled");
        async move { told.then_some(text) }
    })
    .await;
    assert!(
        text.contains(&format!(
            "The cloud copy of \u{201c}Winter sale\u{201d} (advert {id}) failed"
        )),
        "{text}"
    );
    assert!(text.contains("injected outage"), "{text}");
    assert!(
        text.contains(&format!("Your webhook to {nowhere} was disabled")),
        "{text}"
    );
    assert!(
        text.contains(&format!("PATCH /api/v1/webhooks/{hook}")),
        "{text}"
    );
    // The event itself is in the outbox for the broker and webhooks.
    let kinds: Vec<(String, String)> = app
        .handles
        .db
        .run(move |conn| {
            diesel::sql_query(format!(
                "SELECT type AS kind, data FROM events WHERE advert_id = {id} AND type = 'advert.offload_failed'"
            ))
            .load::<EventRow>(conn)
            .map(|rows| rows.into_iter().map(|r| (r.kind, r.data)).collect())
            .map_err(DbError::from)
        })
        .await
        .unwrap();
    assert_eq!(kinds.len(), 1, "{kinds:?}");
    let data: Value = serde_json::from_str(&kinds[0].1).unwrap();
    assert_eq!(data["job"], "offload");
    assert_eq!(data["title"], "Winter sale");
    app.stop().await;
}

#[derive(QueryableByName)]
struct EventRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    kind: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    data: String,
}

/// The `mail.reports` jobs waiting, with their `run_at` (Unix milliseconds).
async fn report_jobs(app: &TestApp) -> Vec<i64> {
    app.handles
        .db
        .run(|conn| {
            jobs::table
                .filter(jobs::kind.eq(REPORTS_JOB))
                .filter(jobs::status.eq("queued"))
                .select(jobs::run_at)
                .load::<i64>(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn the_daily_and_weekly_reports_are_e_mailed_once_per_period_with_the_reports_totals() {
    let port = free_port();
    let app = mail_app(port, |_| {}).await;
    let sink = SmtpSink::start(port, &app.env.dir.path().join("inbox"));
    let (_, key) = customer(&app, "Daily", at("daily@example.com", ReportEmail::Daily)).await;
    customer(
        &app,
        "Weekly",
        at("weekly@example.com", ReportEmail::Weekly),
    )
    .await;
    customer(&app, "Off", at("off@example.com", ReportEmail::Off)).await;

    // The job waits for the next midnight (UTC) plus the grace, once however often the app starts.
    let now = reklama::platform::db::now_ms() / 1000;
    assert_eq!(report_jobs(&app).await, vec![next_run(now) * 1000]);

    // Run it now, through the queue, as an instance that was down at midnight would: the latest
    // whole periods (yesterday, last week) had nothing, and it says so.
    let app_db = app.handles.db.clone();
    app_db
        .run(|conn| {
            diesel::update(jobs::table.filter(jobs::kind.eq(REPORTS_JOB)))
                .set(jobs::run_at.eq(0i64))
                .execute(conn)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    app.handles.jobs.enqueuer().waker.wake();
    eventually(Duration::from_secs(20), "the two reports", || {
        let n = sink.decoded().len();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    let yesterday = Period::latest(ReportEmail::Daily, now).unwrap();
    let last_week = Period::latest(ReportEmail::Weekly, now).unwrap();
    let daily = &to(&sink, "daily@example.com")[0];
    assert_eq!(
        daily["subject"],
        format!("reklama: your daily report for {}", yesterday.label())
    );
    assert!(
        daily["text"]
            .as_str()
            .unwrap()
            .contains("None of your adverts was served")
    );
    let weekly = &to(&sink, "weekly@example.com")[0];
    assert_eq!(
        weekly["subject"],
        format!("reklama: your weekly report for {}", last_week.label())
    );
    // It scheduled its next run.
    eventually(
        Duration::from_secs(10),
        "the next run scheduled",
        || async {
            (report_jobs(&app).await
                == vec![next_run(reklama::platform::db::now_ms() / 1000) * 1000])
            .then_some(())
        },
    )
    .await;

    // Today's traffic, in today's report: three cards and a click.
    let mut body = advert_json(&png(64, 64));
    body["title"] = json!("Fresh <bread>");
    let id = create(&app, &key, &body).await;
    let mut link = None;
    for n in 0..3 {
        let cards = app.cards(&format!("user_id=r{n}&genres=travel")).await;
        let card = cards
            .iter()
            .find(|c| c["advert_id"] == id)
            .expect("the advert served");
        link = card["click_url"].as_str().map(str::to_owned);
    }
    assert_eq!(app.follow(&link.unwrap()).await.status(), 302);
    let report = app.report(&key, id).await;
    let (impressions, clicks) = (
        report["impressions"].as_u64().unwrap(),
        report["clicks"].as_u64().unwrap(),
    );
    assert_eq!((impressions, clicks), (3, 1), "{report}");

    // At tomorrow's run, today is the period: the daily customer's e-mail has the report's
    // figures; run again (a retry, another instance) and nothing more is sent.
    let tomorrow = now - now.rem_euclid(86_400) + 86_400 + GRACE_SECS;
    let before = sink.decoded().len();
    let queued = app.handles.reports.send_due(tomorrow).await.unwrap();
    assert!(queued >= 1, "{queued}");
    app.handles.jobs.enqueuer().waker.wake();
    let today = Period::latest(ReportEmail::Daily, tomorrow).unwrap();
    let mail = eventually(Duration::from_secs(20), "today's report", || {
        let found = to(&sink, "daily@example.com")
            .into_iter()
            .find(|m| m["subject"] == format!("reklama: your daily report for {}", today.label()));
        async move { found }
    })
    .await;
    let text = mail["text"].as_str().unwrap();
    assert!(
        text.contains("In all: 3 impressions, 1 clicks, CTR 33.33 %"),
        "{text}"
    );
    assert!(
        text.contains(&format!("Fresh <bread> (advert {id})")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}/dashboard/adverts/{id}", app.address)),
        "{text}"
    );
    let html = mail["html"].as_str().unwrap();
    assert!(html.contains("Fresh &lt;bread&gt;"), "{html}");
    assert!(html.contains("3 impressions, 1 clicks"), "{html}");
    assert_eq!(app.handles.reports.send_due(tomorrow).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = sink.decoded();
    assert_eq!(sent.len(), before + queued, "{sent:?}");
    assert!(sent.iter().all(|m| m["to"] != "off@example.com"));
    assert_eq!(app.handles.jobs.stats().dead.load(Ordering::Relaxed), 0);
    app.stop().await;
}
