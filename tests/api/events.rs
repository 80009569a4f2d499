//! Events on the message broker: a real RabbitMQ on loopback (`REKLAMA_TEST_AMQP_URL`). Every
//! test has its own exchange, and its own exclusive queue bound to it with `#`, so it sees its
//! own messages only; it deletes the exchange at the end.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ErrorKind, ExchangeKind};
use reklama::main_app::Settings;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::helpers::{
    TestApp, TestEnv, advert_json, eventually, metric, png, random_suffix, spawn_app_with,
};
use crate::proxy::{Mode, Proxy};

fn amqp_url() -> String {
    std::env::var("REKLAMA_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// One message as a consumer receives it.
#[derive(Debug, Clone)]
struct Message {
    routing_key: String,
    delivery_mode: Option<u8>,
    content_type: Option<String>,
    message_id: Option<String>,
    body: Value,
}

impl Message {
    fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }

    fn advert(&self) -> Option<i64> {
        self.body["advert_id"].as_i64()
    }
}

/// The test's exchange and a queue that receives everything published to it.
struct Broker {
    connection: Connection,
    exchange: String,
    received: mpsc::UnboundedReceiver<Message>,
    seen: Vec<Message>,
}

impl Broker {
    async fn start() -> Self {
        let exchange = format!("reklama.test.{}", random_suffix());
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
            .await
            .expect("RabbitMQ on loopback (scripts/start-services starts it)");
        let channel = connection.create_channel().await.expect("channel");
        // Declared as reklama declares it, so whichever comes first, both agree.
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare exchange");
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare queue");
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind queue");
        let mut consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let (tx, received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let props = &delivery.properties;
                let message = Message {
                    routing_key: delivery.routing_key.to_string(),
                    delivery_mode: *props.delivery_mode(),
                    content_type: props.content_type().as_ref().map(|c| c.to_string()),
                    message_id: props.message_id().as_ref().map(|c| c.to_string()),
                    body: serde_json::from_slice(&delivery.data).unwrap_or(Value::Null),
                };
                if tx.send(message).is_err() {
                    break;
                }
            }
        });
        Self {
            connection,
            exchange,
            received,
            seen: Vec::new(),
        }
    }

    /// Waits until `done` holds for everything received so far (at most `limit`).
    async fn until(&mut self, limit: Duration, what: &str, done: impl Fn(&[Message]) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        while !done(&self.seen) {
            match tokio::time::timeout_at(deadline, self.received.recv()).await {
                Ok(Some(message)) => self.seen.push(message),
                _ => panic!(
                    "{what}: not within {limit:?}; received {:?}",
                    self.seen
                        .iter()
                        .map(|m| (m.kind().to_owned(), m.advert()))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Collects whatever arrives within `quiet`.
    async fn drain(&mut self, quiet: Duration) {
        while let Ok(Some(message)) = tokio::time::timeout(quiet, self.received.recv()).await {
            self.seen.push(message);
        }
    }

    fn of(&self, kind: &str, advert: i64) -> Vec<&Message> {
        self.seen
            .iter()
            .filter(|m| m.kind() == kind && m.advert() == Some(advert))
            .collect()
    }

    async fn close(self) {
        if let Ok(channel) = self.connection.create_channel().await {
            let _ = channel
                .exchange_delete(
                    self.exchange.as_str().into(),
                    ExchangeDeleteOptions::default(),
                )
                .await;
        }
        let _ = self.connection.close(200, "done".into()).await;
    }
}

fn with_broker(url: String, exchange: String) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| {
        s.events.amqp_url = url;
        s.events.exchange = exchange;
        s.events.poll_interval_ms = 50;
        s.events.publish_timeout_ms = 1000;
    }
}

/// Checks a message against the document at `/asyncapi.json`: its envelope has exactly the
/// schema's properties, and its `data` every required property and none the schema lacks.
fn conforms(doc: &Value, message: &Message) {
    let kind = message.kind();
    let envelope = &doc["components"]["schemas"][format!("{kind}.envelope")];
    assert!(envelope.is_object(), "no schema for {kind}");
    let keys: HashSet<&str> = message
        .body
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let declared: HashSet<&str> = envelope["properties"]
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(keys, declared, "{kind}: {}", message.body);
    let data_ref = envelope["properties"]["data"]["$ref"].as_str().unwrap();
    let data_schema = doc.pointer(data_ref.trim_start_matches('#')).unwrap();
    let properties = data_schema["properties"].as_object().unwrap();
    let data = message.body["data"].as_object().unwrap();
    for key in data.keys() {
        assert!(
            properties.contains_key(key),
            "{kind}: data.{key} is not documented"
        );
    }
    for required in data_schema["required"].as_array().into_iter().flatten() {
        let required = required.as_str().unwrap();
        assert!(
            data.contains_key(required),
            "{kind}: data.{required} missing"
        );
    }
}

#[tokio::test]
async fn advert_events_reach_the_broker_once_each_in_commit_order() {
    let mut broker = Broker::start().await;
    let app = spawn_app_with(
        TestEnv::new(),
        None,
        with_broker(amqp_url(), broker.exchange.clone()),
    )
    .await;
    let key = app.customer_key("Acme").await;
    let advert = app.create_advert(&key).await;
    let id = advert["id"].as_i64().unwrap();
    for (body, status) in [
        (json!({"title": "Winter in Sochi"}), 200),
        (json!({"status": "paused"}), 200),
        // Paused already: nothing moved, nothing to tell.
        (json!({"status": "paused"}), 200),
        (json!({"status": "active", "weight": 7}), 200),
    ] {
        assert_eq!(app.patch_advert(&key, id, &body).await.0, status);
    }
    // The new title's rendering finishes before the delete: a rendering that finds its advert
    // deleted stores nothing and tells nothing (a busy machine renders slower than four PATCHes).
    broker
        .until(
            Duration::from_secs(30),
            "the variants of the advert",
            |seen| {
                seen.iter()
                    .any(|m| m.kind() == "advert.variants_ready" && m.advert() == Some(id))
            },
        )
        .await;
    assert_eq!(app.delete_advert(&key, id).await, 204);

    broker
        .until(
            Duration::from_secs(30),
            "every event of the advert",
            |seen| {
                [
                    "advert.deleted",
                    "advert.offloaded",
                    "advert.variants_ready",
                ]
                .iter()
                .all(|kind| {
                    seen.iter()
                        .any(|m| m.kind() == *kind && m.advert() == Some(id))
                })
            },
        )
        .await;
    broker.drain(Duration::from_millis(500)).await;
    let lifecycle: Vec<&str> = broker
        .seen
        .iter()
        .map(Message::kind)
        .filter(|k| {
            [
                "advert.created",
                "advert.updated",
                "advert.paused",
                "advert.resumed",
                "advert.deleted",
            ]
            .contains(k)
        })
        .collect();
    assert_eq!(
        lifecycle,
        [
            "advert.created",
            "advert.updated",
            "advert.paused",
            "advert.updated",
            "advert.resumed",
            "advert.deleted"
        ]
    );

    let customer = broker.seen[0].body["customer_id"].as_i64().unwrap();
    let mut ids = HashSet::new();
    let doc: Value = app
        .client
        .get(app.url("/asyncapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["channels"]["events"]["address"], broker.exchange);
    for message in &broker.seen {
        assert_eq!(message.routing_key, message.kind());
        assert_eq!(message.delivery_mode, Some(2), "persistent");
        assert_eq!(message.content_type.as_deref(), Some("application/json"));
        let event_id = message.body["id"].as_str().unwrap();
        assert!(event_id.starts_with("evt_"), "{event_id}");
        assert_eq!(message.message_id.as_deref(), Some(event_id));
        assert!(
            ids.insert(event_id.to_owned()),
            "{event_id} published twice"
        );
        assert_eq!(message.body["customer_id"], customer);
        assert_eq!(message.advert(), Some(id));
        let at = message.body["occurred_at"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).is_ok(),
            "{at}"
        );
        conforms(&doc, message);
    }
    let updated = broker.of("advert.updated", id);
    assert_eq!(updated[0].body["data"]["changed"], json!(["titles"]));
    assert_eq!(
        updated[0].body["data"]["advert"]["title"],
        "Winter in Sochi"
    );
    assert_eq!(
        updated[1].body["data"]["changed"],
        json!(["status", "weight"])
    );
    let paused = broker.of("advert.paused", id);
    assert_eq!(paused[0].body["data"]["advert"]["status"], "paused");
    assert_eq!(paused[0].body["data"]["changed"], json!(["status"]));
    let created = broker.of("advert.created", id);
    assert_eq!(
        created[0].body["data"]["advert"]["tracked_url"],
        advert["tracked_url"]
    );
    let ready = broker.of("advert.variants_ready", id);
    assert!(
        !ready[0].body["data"]["ready"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{}",
        ready[0].body
    );

    // The gauge is refreshed once a second: it reaches 0 once every event is marked published.
    eventually(Duration::from_secs(5), "the backlog empties", || async {
        backlog(&app).await.filter(|n| *n == 0.0)
    })
    .await;
    app.stop().await;
    broker.close().await;
}

#[tokio::test]
async fn counts_arrive_as_stats_flushed_per_advert_and_hour_and_clicks_one_by_one() {
    let mut broker = Broker::start().await;
    let app = spawn_app_with(TestEnv::new(), None, |s: &mut Settings| {
        with_broker(amqp_url(), broker.exchange.clone())(s);
        s.events.clicks = true;
    })
    .await;
    let key = app.customer_key("Acme").await;
    let (id, link) = app.advert_with_link(&key, "https://example.com/").await;
    for agent in [
        BROWSER,
        BROWSER_2,
        "Googlebot/2.1 (+http://www.google.com/bot.html)",
    ] {
        assert_eq!(app.click(&link, agent).await.status(), 302);
    }
    // A report settles the pending counts first: that flush publishes the deltas.
    let report = app.report(&key, id).await;
    let billable = report["clicks"].as_u64().unwrap();
    broker
        .until(
            Duration::from_secs(20),
            "stats.flushed and three clicks",
            |seen| {
                seen.iter()
                    .any(|m| m.kind() == "stats.flushed" && m.advert() == Some(id))
                    && seen
                        .iter()
                        .filter(|m| m.kind() == "click.recorded" && m.advert() == Some(id))
                        .count()
                        == 3
            },
        )
        .await;
    broker.drain(Duration::from_millis(300)).await;
    let flushed = broker.of("stats.flushed", id);
    let clicks: u64 = flushed
        .iter()
        .map(|m| m.body["data"]["deltas"]["clicks"].as_u64().unwrap())
        .sum();
    let bots: u64 = flushed
        .iter()
        .map(|m| m.body["data"]["deltas"]["bot_clicks"].as_u64().unwrap())
        .sum();
    assert_eq!((clicks, bots), (billable, 1), "{report}");
    assert!(billable >= 1);
    let now = time::OffsetDateTime::now_utc();
    let hour = flushed[0].body["data"]["hour"].as_str().unwrap();
    assert!(
        hour.starts_with(&format!(
            "{:04}-{:02}-{:02}T{:02}:00:00",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour()
        )) || now.minute() == 0,
        "{hour}"
    );
    assert!(
        !flushed[0].body["data"]["flush_id"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let kinds: HashMap<String, usize> =
        broker
            .of("click.recorded", id)
            .iter()
            .fold(HashMap::new(), |mut kinds, m| {
                *kinds
                    .entry(m.body["data"]["kind"].as_str().unwrap().to_owned())
                    .or_default() += 1;
                kinds
            });
    assert_eq!(kinds.get("bot_click"), Some(&1), "{kinds:?}");
    assert_eq!(
        kinds.values().sum::<usize>(),
        3,
        "one message per click: {kinds:?}"
    );
    app.stop().await;
    broker.close().await;
}

/// Clicks a tracked link of a new advert once, waits longer than the click queue's quarter
/// second (so that a `click.recorded`, if any, is in the outbox before the flush's event), settles
/// the counts with a report, and waits for the advert's `stats.flushed` and whatever follows it
/// within half a second. The advert's id.
async fn click_then_flush(app: &TestApp, broker: &mut Broker) -> i64 {
    let key = app.customer_key("Acme").await;
    let (id, link) = app.advert_with_link(&key, "https://example.com/").await;
    assert_eq!(app.click(&link, BROWSER).await.status(), 302);
    tokio::time::sleep(Duration::from_millis(750)).await;
    assert_eq!(app.report(&key, id).await["clicks"], 1);
    broker
        .until(Duration::from_secs(20), "stats.flushed", |seen| {
            seen.iter()
                .any(|m| m.kind() == "stats.flushed" && m.advert() == Some(id))
        })
        .await;
    broker.drain(Duration::from_millis(500)).await;
    id
}

#[tokio::test]
async fn per_click_events_are_off_by_default_while_the_counts_flow() {
    let mut broker = Broker::start().await;
    let app = spawn_app_with(TestEnv::new(), None, |s: &mut Settings| {
        assert!(!s.events.clicks, "events.clicks is off by default");
        with_broker(amqp_url(), broker.exchange.clone())(s);
    })
    .await;
    let id = click_then_flush(&app, &mut broker).await;
    let clicks: u64 = broker
        .of("stats.flushed", id)
        .iter()
        .map(|m| m.body["data"]["deltas"]["clicks"].as_u64().unwrap())
        .sum();
    assert_eq!(clicks, 1);
    let per_click: Vec<&Value> = broker
        .seen
        .iter()
        .filter(|m| m.kind() == "click.recorded")
        .map(|m| &m.body)
        .collect();
    assert!(per_click.is_empty(), "{per_click:?}");
    app.stop().await;
    broker.close().await;

    // The same steps with `events.clicks` on do see the click: the look above would have.
    let mut broker = Broker::start().await;
    let app = spawn_app_with(TestEnv::new(), None, |s: &mut Settings| {
        with_broker(amqp_url(), broker.exchange.clone())(s);
        s.events.clicks = true;
    })
    .await;
    let id = click_then_flush(&app, &mut broker).await;
    assert_eq!(broker.of("click.recorded", id).len(), 1);
    app.stop().await;
    broker.close().await;
}

/// The soft error (a channel's) the broker answered, if it answered one.
fn soft_error(result: lapin::Result<()>) -> Option<AMQPSoftError> {
    match result.err()?.kind() {
        ErrorKind::ProtocolError(e) => match e.kind() {
            AMQPErrorKind::Soft(soft) => Some(soft.clone()),
            AMQPErrorKind::Hard(_) => None,
        },
        _ => None,
    }
}

/// Declares `exchange` on a channel of its own (a refused declare closes its channel).
async fn declare(
    connection: &Connection,
    exchange: &str,
    kind: ExchangeKind,
    passive: bool,
    durable: bool,
) -> lapin::Result<()> {
    let channel = connection.create_channel().await?;
    channel
        .exchange_declare(
            exchange.into(),
            kind,
            ExchangeDeclareOptions {
                passive,
                durable,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
}

#[tokio::test]
async fn reklama_declares_its_exchange_durable_and_topic() {
    let exchange = format!("reklama.test.{}", random_suffix());
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ on loopback (scripts/start-services starts it)");
    // Nobody has declared it yet.
    assert_eq!(
        soft_error(declare(&connection, &exchange, ExchangeKind::Topic, true, true).await),
        Some(AMQPSoftError::NOTFOUND)
    );
    let app = spawn_app_with(
        TestEnv::new(),
        None,
        with_broker(amqp_url(), exchange.clone()),
    )
    .await;
    // The relay connects as the app starts.
    eventually(Duration::from_secs(10), "the exchange declared", || async {
        declare(&connection, &exchange, ExchangeKind::Topic, true, true)
            .await
            .ok()
    })
    .await;
    // Declaring it again agrees only as a durable topic exchange.
    declare(&connection, &exchange, ExchangeKind::Topic, false, true)
        .await
        .expect("the same declaration");
    for (kind, durable) in [
        (ExchangeKind::Direct, true),
        (ExchangeKind::Fanout, true),
        (ExchangeKind::Topic, false),
    ] {
        let what = format!("{kind:?}, durable {durable}");
        assert_eq!(
            soft_error(declare(&connection, &exchange, kind, false, durable).await),
            Some(AMQPSoftError::PRECONDITIONFAILED),
            "{what}"
        );
    }
    app.stop().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
    let _ = connection.close(200, "done".into()).await;
}

const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                       Chrome/120.0 Safari/537.36";
const BROWSER_2: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 \
                         (KHTML, like Gecko) Version/17.0 Safari/605.1.15";

async fn backlog(app: &TestApp) -> Option<f64> {
    metric(
        &app.get_text("/metrics").await,
        "reklama_events_backlog",
        &[],
    )
}

#[tokio::test]
async fn events_wait_in_the_database_while_the_broker_is_away_and_none_is_lost() {
    let mut broker = Broker::start().await;
    let upstream: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    proxy.set_mode(Mode::Down);
    let through_proxy = format!("amqp://guest:guest@{}/%2f", proxy.address());
    let env = TestEnv::new();
    let app = spawn_app_with(
        env.clone(),
        None,
        with_broker(through_proxy.clone(), broker.exchange.clone()),
    )
    .await;
    let key = app.customer_key("Acme").await;
    // Requests do not wait for the broker: every one answers while it is away.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let response = app.post_advert(&key, &advert_json(&png(64, 64))).await;
        assert_eq!(response.status(), 201);
        ids.push(
            response.json::<Value>().await.unwrap()["id"]
                .as_i64()
                .unwrap(),
        );
    }
    eventually(Duration::from_secs(10), "the backlog shows", || async {
        backlog(&app).await.filter(|n| *n >= 3.0)
    })
    .await;
    // A broker that takes the connection but never answers (a partition) holds nothing up
    // either, and loses nothing.
    proxy.set_mode(Mode::Blackhole);
    assert_eq!(
        app.patch_advert(&key, ids[0], &json!({"status": "paused"}))
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.set_mode(Mode::Forward);
    broker
        .until(
            Duration::from_secs(40),
            "every event once the broker is back",
            |seen| {
                ids.iter().all(|id| {
                    seen.iter()
                        .any(|m| m.kind() == "advert.created" && m.advert() == Some(*id))
                }) && seen
                    .iter()
                    .any(|m| m.kind() == "advert.paused" && m.advert() == Some(ids[0]))
            },
        )
        .await;
    eventually(Duration::from_secs(10), "the backlog empties", || async {
        backlog(&app).await.filter(|n| *n == 0.0)
    })
    .await;

    // Recorded while the broker is away, then the instance stops: the next one publishes it.
    proxy.set_mode(Mode::Down);
    assert_eq!(
        app.patch_advert(&key, ids[1], &json!({"status": "paused"}))
            .await
            .0,
        200
    );
    let env = app.stop().await;
    let app = spawn_app_with(env, None, with_broker(amqp_url(), broker.exchange.clone())).await;
    broker
        .until(
            Duration::from_secs(20),
            "the event of the stopped instance",
            |seen| {
                seen.iter()
                    .any(|m| m.kind() == "advert.paused" && m.advert() == Some(ids[1]))
            },
        )
        .await;
    // At least once: a repeat keeps its id, so counting distinct ids counts events.
    let distinct: HashSet<&str> = broker
        .seen
        .iter()
        .filter_map(|m| m.body["id"].as_str())
        .collect();
    let created = broker
        .seen
        .iter()
        .filter(|m| m.kind() == "advert.created")
        .map(|m| m.body["id"].as_str().unwrap())
        .collect::<HashSet<_>>();
    assert_eq!(created.len(), 3);
    assert!(distinct.len() >= 5);
    app.stop().await;
    broker.close().await;
}

#[tokio::test]
async fn a_reached_cap_and_a_passed_end_are_announced_once() {
    let mut broker = Broker::start().await;
    let env = TestEnv::new();
    let app = spawn_app_with(
        env.clone(),
        None,
        with_broker(amqp_url(), broker.exchange.clone()),
    )
    .await;
    let key = app.customer_key("Acme").await;
    let mut body = advert_json(&png(64, 64));
    body["max_impressions"] = json!(2);
    let response = app.post_advert(&key, &body).await;
    assert_eq!(response.status(), 201);
    let capped = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    let mut body = advert_json(&png(64, 64));
    let ends = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    body["ends_at"] = json!(
        ends.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    body["genre"] = json!("automotive");
    let response = app.post_advert(&key, &body).await;
    assert_eq!(response.status(), 201);
    let ending = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();

    eventually(
        Duration::from_secs(10),
        "the capped advert is served twice",
        || async {
            let mut served = 0;
            for n in 0..6 {
                served += app
                    .cards(&format!("user_id=u{n}&genres=travel"))
                    .await
                    .iter()
                    .filter(|c| c["advert_id"] == capped)
                    .count();
            }
            (served == 0).then_some(())
        },
    )
    .await;
    broker
        .until(Duration::from_secs(20), "cap_reached and ended", |seen| {
            seen.iter()
                .any(|m| m.kind() == "advert.cap_reached" && m.advert() == Some(capped))
                && seen
                    .iter()
                    .any(|m| m.kind() == "advert.ended" && m.advert() == Some(ending))
        })
        .await;
    let reached = broker.of("advert.cap_reached", capped)[0].body["data"].clone();
    let title = advert_json(&png(64, 64))["title"].clone();
    assert_eq!(
        reached,
        json!({"title": title, "cap": "max_impressions", "limit": 2, "day": null})
    );
    let ended = broker.of("advert.ended", ending)[0].body["data"].clone();
    assert!(ended["ends_at"].as_str().is_some(), "{ended}");
    assert_eq!(ended["title"], title, "{ended}");

    // Another instance start (another memory of what was told) tells nobody again.
    let env = app.stop().await;
    let app = spawn_app_with(env, None, with_broker(amqp_url(), broker.exchange.clone())).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.drain(Duration::from_millis(500)).await;
    assert_eq!(broker.of("advert.cap_reached", capped).len(), 1);
    assert_eq!(broker.of("advert.ended", ending).len(), 1);
    app.stop().await;
    broker.close().await;
}

/// On PostgreSQL another transaction may hold an event's row for a moment (the webhook dispatcher
/// marking it dispatched does, every batch). The relay waits for it: skipping it would publish
/// the newer events first.
#[tokio::test]
async fn an_event_row_held_by_another_transaction_delays_publishing_and_never_reorders_it() {
    use diesel::{Connection, PgConnection, RunQueryDsl};

    let env = TestEnv::new();
    if !env.database_url.starts_with("postgres") {
        // SQLite has one writer and no row locks: nothing can be held apart.
        return;
    }
    let mut broker = Broker::start().await;
    let upstream: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    proxy.set_mode(Mode::Down);
    let through_proxy = format!("amqp://guest:guest@{}/%2f", proxy.address());
    let app = spawn_app_with(
        env.clone(),
        None,
        with_broker(through_proxy, broker.exchange.clone()),
    )
    .await;
    let key = app.customer_key("Acme").await;
    let response = app.post_advert(&key, &advert_json(&png(64, 64))).await;
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        app.patch_advert(&key, id, &json!({"title": "Winter in Sochi"}))
            .await
            .0,
        200
    );
    assert_eq!(
        app.patch_advert(&key, id, &json!({"status": "paused"}))
            .await
            .0,
        200
    );

    // Another connection holds the oldest of them while the broker comes back.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let url = env.database_url.clone();
    let holder = std::thread::spawn(move || {
        let mut conn = PgConnection::establish(&url).unwrap();
        // A bare PostgreSQL connection standing in for another process.
        #[allow(clippy::disallowed_methods)]
        conn.transaction::<_, diesel::result::Error, _>(|conn| {
            diesel::sql_query(format!(
                "SELECT seq FROM events WHERE advert_id = {id} AND type = 'advert.created' \
                 FOR UPDATE"
            ))
            .execute(conn)?;
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(30));
            Ok(())
        })
        .unwrap();
    });
    locked_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    proxy.set_mode(Mode::Forward);
    // Long enough for the relay to reconnect and claim (its backoff is at most a second here).
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.drain(Duration::from_millis(200)).await;
    let early: Vec<&str> = broker
        .seen
        .iter()
        .filter(|m| m.advert() == Some(id))
        .map(Message::kind)
        .collect();
    assert!(
        early.is_empty(),
        "published past a held older event: {early:?}"
    );

    release_tx.send(()).unwrap();
    holder.join().unwrap();
    broker
        .until(Duration::from_secs(20), "the three events", |seen| {
            seen.iter()
                .any(|m| m.kind() == "advert.paused" && m.advert() == Some(id))
        })
        .await;
    broker.drain(Duration::from_millis(300)).await;
    let order: Vec<&str> = broker
        .seen
        .iter()
        .filter(|m| m.advert() == Some(id))
        .map(Message::kind)
        .filter(|k| {
            k.starts_with("advert.") && *k != "advert.offloaded" && *k != "advert.variants_ready"
        })
        .collect();
    assert_eq!(order, ["advert.created", "advert.updated", "advert.paused"]);
    app.stop().await;
    broker.close().await;
}
