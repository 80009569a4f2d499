//! The event outbox and its relay to the message broker.
//!
//! A module records an event with [`record`] inside the transaction that makes the change, so the
//! event exists exactly when the change does. The [`Relay`] of every instance then claims
//! unpublished rows in commit order, publishes each to a durable topic exchange (routing key =
//! the event's type, persistent, publisher confirms) and marks it published once the broker has
//! confirmed it. While the broker is unreachable, rows wait in the database (the backlog shows in
//! `reklama_events_backlog`) and nothing a request does waits for it. Delivery is at least once:
//! a relay that dies between the broker's confirm and its own mark publishes that row again, with
//! the same `id`, which consumers use to drop repeats.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::events::EventType;
use crate::domain::{AdvertId, CustomerId};
use crate::platform::db::schema::events;
use crate::platform::db::{Db, DbConnection, DbError, now_ms, sql_text};
use crate::platform::tokens::{random_base62, sha256_hex};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// `amqp://USER:PASSWORD@HOST:PORT/VHOST` or `amqps://...`; empty: no broker.
    pub amqp_url: String,
    /// The durable topic exchange reklama declares and publishes to.
    pub exchange: String,
    /// One `click.recorded` event per click (a message per click: off by default).
    pub clicks: bool,
    /// Published events (or, without a broker, all events) are kept this long, then deleted.
    pub retention_hours: u64,
    /// The longest wait for the broker: connecting, and the confirms of one batch.
    pub publish_timeout_ms: u64,
    /// How often a relay with nothing to publish looks for new rows.
    pub poll_interval_ms: u64,
}

impl EventSettings {
    pub fn broker_configured(&self) -> bool {
        !self.amqp_url.trim().is_empty()
    }

    /// What is wrong with these settings, each message naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.broker_configured() {
            match url::Url::parse(self.amqp_url.trim()) {
                Ok(u) if matches!(u.scheme(), "amqp" | "amqps") && u.host_str().is_some() => {}
                _ => problems.push(
                    "events.amqp_url: must be amqp://USER:PASSWORD@HOST:PORT/VHOST or amqps://..., \
                     or empty"
                        .into(),
                ),
            }
        }
        if self.exchange.is_empty()
            || self.exchange.len() > 127
            || !self
                .exchange
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            problems.push(
                "events.exchange: 1 to 127 characters of letters, digits, '-', '_', '.' and ':'"
                    .into(),
            );
        }
        if self.retention_hours == 0 {
            problems.push("events.retention_hours: must be at least 1".into());
        }
        if self.publish_timeout_ms < 100 {
            problems.push("events.publish_timeout_ms: must be at least 100".into());
        }
        if self.poll_interval_ms == 0 {
            problems.push("events.poll_interval_ms: must be at least 1".into());
        }
        problems
    }
}

/// Which events are worth recording: lifecycle events always; the per-flush and per-click ones
/// only while something consumes them: the broker, or a live webhook subscribed to them (which
/// [`WebhookInterest`] follows). Clones share the webhooks' part, so a module that read this at
/// start-up sees a subscription made later.
#[derive(Debug, Clone)]
pub struct Outbox {
    broker: bool,
    clicks: bool,
    webhooks: WebhookInterest,
}

/// Whether any live webhook subscribes to `stats.flushed` or `click.recorded`; kept current by
/// the webhooks module (at every change of a webhook, and every few seconds for the changes
/// other instances make).
#[derive(Debug, Clone, Default)]
pub struct WebhookInterest {
    stats: Arc<AtomicBool>,
    clicks: Arc<AtomicBool>,
}

impl WebhookInterest {
    pub fn set(&self, stats: bool, clicks: bool) {
        self.stats.store(stats, Ordering::Relaxed);
        self.clicks.store(clicks, Ordering::Relaxed);
    }
}

impl Outbox {
    pub fn new(settings: &EventSettings) -> Self {
        Self {
            broker: settings.broker_configured(),
            clicks: settings.clicks,
            webhooks: WebhookInterest::default(),
        }
    }

    /// An outbox that records every kind (unit tests).
    #[cfg(test)]
    pub fn everything() -> Self {
        Self {
            broker: true,
            clicks: true,
            webhooks: WebhookInterest::default(),
        }
    }

    /// The webhooks' part, for the webhooks module to keep current.
    pub fn webhook_interest(&self) -> WebhookInterest {
        self.webhooks.clone()
    }

    /// Whether `click.recorded` may ever be recorded (`events.clicks`): the clicks' queue is
    /// built only then.
    pub fn clicks_enabled(&self) -> bool {
        self.clicks
    }

    /// Whether an event of `kind` is to be recorded now.
    pub fn wants(&self, kind: EventType) -> bool {
        match kind {
            EventType::StatsFlushed => self.broker || self.webhooks.stats.load(Ordering::Relaxed),
            EventType::ClickRecorded => {
                self.clicks && (self.broker || self.webhooks.clicks.load(Ordering::Relaxed))
            }
            _ => true,
        }
    }
}

/// An event about to be recorded.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: EventType,
    pub customer: CustomerId,
    pub advert: Option<AdvertId>,
    /// The event's `data`, as JSON.
    pub data: String,
}

impl NewEvent {
    pub fn new(
        kind: EventType,
        customer: CustomerId,
        advert: Option<AdvertId>,
        data: &impl Serialize,
    ) -> Self {
        Self {
            kind,
            customer,
            advert,
            // Serialising plain structs of strings and numbers cannot fail.
            data: serde_json::to_string(data).unwrap_or_else(|_| "{}".into()),
        }
    }
}

/// A new event id: `evt_` and 22 base62 characters (about 130 random bits).
fn fresh_id() -> String {
    format!("evt_{}", random_base62(22))
}

/// The id of the event that `key` names: the same key always gives the same id, so recording it
/// twice (two instances, a retry) leaves one event.
fn id_for(key: &str) -> String {
    let hash = sha256_hex(key.as_bytes());
    format!("evt_{}", &hash[..32])
}

/// Records events with fresh ids. Call it inside the transaction that makes the change.
pub fn record(conn: &mut DbConnection, new: &[NewEvent]) -> QueryResult<()> {
    let now = now_ms();
    // Many rows per statement: a flush records one event per advert and hour it touched.
    for chunk in new.chunks(200) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|e| {
                format!(
                    "({}, {}, {now}, {}, {}, {})",
                    sql_text(&fresh_id()),
                    sql_text(e.kind.as_str()),
                    e.customer.0,
                    e.advert
                        .map_or_else(|| "NULL".to_owned(), |a| a.0.to_string()),
                    sql_text(&e.data),
                )
            })
            .collect();
        diesel::sql_query(format!(
            "INSERT INTO events (id, type, occurred_at, customer_id, advert_id, data) VALUES {}",
            rows.join(", ")
        ))
        .execute(conn)?;
    }
    Ok(())
}

/// Records the event `key` names unless it was recorded before; `true` if this call did.
pub fn record_once(conn: &mut DbConnection, key: &str, event: &NewEvent) -> QueryResult<bool> {
    let n = diesel::sql_query(
        "INSERT INTO events (id, type, occurred_at, customer_id, advert_id, data) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind::<Text, _>(id_for(key))
    .bind::<Text, _>(event.kind.as_str())
    .bind::<BigInt, _>(now_ms())
    .bind::<BigInt, _>(event.customer.0)
    .bind::<Nullable<BigInt>, _>(event.advert.map(|a| a.0))
    .bind::<Text, _>(&event.data)
    .execute(conn)?;
    Ok(n > 0)
}

/// An event as consumers receive it: the body of every message and webhook.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// RFC 3339, UTC, milliseconds.
    pub occurred_at: String,
    pub customer_id: i64,
    pub advert_id: Option<i64>,
    pub data: &'a RawValue,
}

/// One stored event, claimed for publishing.
#[derive(Debug, Clone, QueryableByName)]
pub struct StoredEvent {
    #[diesel(sql_type = BigInt)]
    pub seq: i64,
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Text, column_name = "type")]
    pub kind: String,
    #[diesel(sql_type = BigInt)]
    pub occurred_at: i64,
    #[diesel(sql_type = BigInt)]
    pub customer_id: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub advert_id: Option<i64>,
    #[diesel(sql_type = Text)]
    pub data: String,
}

impl StoredEvent {
    /// The envelope as JSON bytes.
    pub fn body(&self) -> Vec<u8> {
        // Stored by this code, so always JSON; an empty object rather than a lost event.
        let Ok(data) = serde_json::from_str::<&RawValue>(&self.data)
            .or_else(|_| serde_json::from_str::<&RawValue>("{}"))
        else {
            return Vec::new();
        };
        let envelope = Envelope {
            id: &self.id,
            kind: &self.kind,
            occurred_at: rfc3339_ms(self.occurred_at),
            customer_id: self.customer_id,
            advert_id: self.advert_id,
            data,
        };
        serde_json::to_vec(&envelope).unwrap_or_default()
    }
}

/// Unix milliseconds as RFC 3339 in UTC with milliseconds, e.g. `2026-12-03T19:40:12.345Z`.
pub fn rfc3339_ms(ms: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let whole = at.replace_millisecond(0).unwrap_or(at);
    match whole.format(&Rfc3339) {
        // `time` leaves out a zero fraction; always three digits keeps the field one shape.
        Ok(text) => format!("{}.{:03}Z", text.trim_end_matches('Z'), ms.rem_euclid(1000)),
        Err(_) => String::new(),
    }
}

/// How many events wait for the broker, for the backlog gauge.
pub fn backlog(conn: &mut DbConnection) -> QueryResult<i64> {
    events::table
        .filter(events::published_at.is_null())
        .count()
        .get_result(conn)
}

/// Claims up to `limit` unpublished events that no live lease holds, oldest first. One
/// statement, so two relays never claim the same row: on PostgreSQL a row another transaction
/// holds is waited for (for a moment: the webhook dispatcher marking it dispatched, or another
/// relay's claim, after which its lease excludes it), never skipped, so a batch never publishes
/// an event before an older one; SQLite has a single writer.
fn claim(conn: &mut DbConnection, limit: i64, lease_ms: i64) -> QueryResult<Vec<StoredEvent>> {
    let lock = match conn {
        DbConnection::Postgresql(_) => " FOR UPDATE",
        DbConnection::Sqlite(_) => "",
    };
    let now = now_ms();
    let sql = format!(
        "UPDATE events SET publishing_until = $1 WHERE seq IN (SELECT seq FROM events \
             WHERE published_at IS NULL AND (publishing_until IS NULL OR publishing_until < $2) \
             ORDER BY seq LIMIT $3{lock}) \
         RETURNING seq, id, type, occurred_at, customer_id, advert_id, data"
    );
    let mut rows: Vec<StoredEvent> = diesel::sql_query(sql)
        .bind::<BigInt, _>(now.saturating_add(lease_ms))
        .bind::<BigInt, _>(now)
        .bind::<BigInt, _>(limit)
        .load(conn)?;
    rows.sort_by_key(|e| e.seq);
    Ok(rows)
}

fn mark_published(conn: &mut DbConnection, seqs: &[i64]) -> QueryResult<usize> {
    diesel::update(events::table.filter(events::seq.eq_any(seqs)))
        .set((
            events::published_at.eq(now_ms()),
            events::publishing_until.eq(None::<i64>),
        ))
        .execute(conn)
}

fn release(conn: &mut DbConnection, seqs: &[i64]) -> QueryResult<usize> {
    diesel::update(events::table.filter(events::seq.eq_any(seqs)))
        .set(events::publishing_until.eq(None::<i64>))
        .execute(conn)
}

/// Deletes events older than the retention: published ones, or every one when no broker is
/// configured (nothing would ever publish them); never one the webhook dispatcher has not seen.
fn prune(conn: &mut DbConnection, before_ms: i64, broker: bool) -> QueryResult<usize> {
    let old = events::table
        .filter(events::occurred_at.lt(before_ms))
        .filter(events::dispatched_at.is_not_null());
    if broker {
        diesel::delete(old.filter(events::published_at.is_not_null())).execute(conn)
    } else {
        diesel::delete(old).execute(conn)
    }
}

/// Takes up to `limit` events the webhook dispatcher has not handled, oldest first, for the rest
/// of the caller's transaction ([`db::transaction`](crate::platform::db::transaction)):
/// PostgreSQL locks them and skips rows another instance holds; SQLite has a single writer,
/// whose lock that transaction took first. Call [`mark_dispatched`] in the same transaction.
pub fn undispatched(conn: &mut DbConnection, limit: i64) -> QueryResult<Vec<StoredEvent>> {
    let lock = match conn {
        DbConnection::Postgresql(_) => " FOR UPDATE SKIP LOCKED",
        DbConnection::Sqlite(_) => "",
    };
    diesel::sql_query(format!(
        "SELECT seq, id, type, occurred_at, customer_id, advert_id, data FROM events \
         WHERE dispatched_at IS NULL ORDER BY seq LIMIT $1{lock}"
    ))
    .bind::<BigInt, _>(limit)
    .load(conn)
}

/// Whether any event waits for the webhook dispatcher (a plain read: no lock).
pub fn any_undispatched(conn: &mut DbConnection) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        events::table.filter(events::dispatched_at.is_null()),
    ))
    .get_result(conn)
}

pub fn mark_dispatched(conn: &mut DbConnection, seqs: &[i64]) -> QueryResult<usize> {
    diesel::update(events::table.filter(events::seq.eq_any(seqs)))
        .set(events::dispatched_at.eq(now_ms()))
        .execute(conn)
}

/// The event with this public id, while it is kept.
pub fn find(conn: &mut DbConnection, id: &str) -> QueryResult<Option<StoredEvent>> {
    let mut rows: Vec<StoredEvent> = diesel::sql_query(
        "SELECT seq, id, type, occurred_at, customer_id, advert_id, data FROM events WHERE id = $1",
    )
    .bind::<Text, _>(id)
    .load(conn)?;
    Ok(rows.pop())
}

/// Events claimed per round trip to the broker.
const BATCH: i64 = 200;
/// The pause after the broker (or the database) first failed, doubling up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why a round published nothing (or not everything): the broker's side, after which the
/// connection is opened again, or the outbox's.
#[derive(Debug)]
enum Failure {
    Broker(String),
    Outbox(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Broker(e) => write!(f, "broker: {e}"),
            Self::Outbox(e) => write!(f, "outbox: {e}"),
        }
    }
}

/// A connection to the broker with a confirming channel and the exchange declared.
struct Link {
    connection: Connection,
    channel: Channel,
}

/// Publishes the outbox to the broker; without one, only keeps the table pruned.
pub struct Relay {
    db: Db,
    settings: EventSettings,
}

impl Relay {
    pub fn new(db: Db, settings: EventSettings) -> Self {
        Self { db, settings }
    }

    pub fn spawn(self, cancel: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move { self.run(cancel).await })
    }

    async fn run(self, cancel: CancellationToken) {
        let broker = self.settings.broker_configured();
        let poll = Duration::from_millis(self.settings.poll_interval_ms.max(1));
        let retention_ms = i64::try_from(self.settings.retention_hours.saturating_mul(3_600_000))
            .unwrap_or(i64::MAX / 2);
        let mut link: Option<Link> = None;
        let mut backoff = FIRST_BACKOFF;
        let mut next_prune = tokio::time::Instant::now();
        let mut next_gauge = tokio::time::Instant::now();
        while !cancel.is_cancelled() {
            let now = tokio::time::Instant::now();
            if now >= next_prune {
                next_prune = now + Duration::from_secs(60);
                let before = now_ms().saturating_sub(retention_ms);
                match self
                    .db
                    .run(move |c| Ok::<_, DbError>(prune(c, before, broker)?))
                    .await
                {
                    Ok(n) if n > 0 => tracing::debug!(deleted = n, "old events pruned"),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "old events not pruned; tried again later")
                    }
                }
            }
            if !broker {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep_until(next_prune) => {}
                }
                continue;
            }
            if now >= next_gauge {
                next_gauge = now + Duration::from_secs(1);
                if let Ok(n) = self.db.run(|c| Ok::<_, DbError>(backlog(c)?)).await {
                    metrics::gauge!("reklama_events_backlog").set(n as f64);
                }
            }
            let pause = match self.round(&mut link).await {
                Ok(n) => {
                    backoff = FIRST_BACKOFF;
                    if n > 0 {
                        continue;
                    }
                    poll
                }
                Err(e) => {
                    let first = backoff == FIRST_BACKOFF;
                    if let Failure::Broker(_) = e {
                        link = None;
                    }
                    // Once per outage, not once per retry.
                    if first {
                        tracing::warn!(error = %e, "events not published; the relay tries again");
                    }
                    metrics::counter!("reklama_events_publish_errors_total").increment(1);
                    let pause = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    pause
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        if let Some(link) = link {
            let _ = link.channel.close(200, "stopping".into()).await;
            let _ = link.connection.close(200, "stopping".into()).await;
        }
    }

    /// Connects if needed, then publishes one batch; how many events it published.
    async fn round(&self, link: &mut Option<Link>) -> Result<usize, Failure> {
        let timeout = Duration::from_millis(self.settings.publish_timeout_ms);
        if link.is_none() {
            *link = Some(self.connect(timeout).await.map_err(Failure::Broker)?);
            tracing::info!(exchange = %self.settings.exchange, "connected to the event broker");
        }
        let Some(current) = link.as_ref() else {
            return Ok(0);
        };
        let lease_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX / 4) * 3;
        let batch = self
            .db
            .run(move |c| Ok::<_, DbError>(claim(c, BATCH, lease_ms)?))
            .await
            .map_err(|e| Failure::Outbox(e.to_string()))?;
        if batch.is_empty() {
            return Ok(0);
        }
        let (published, failure) = self.publish(&current.channel, &batch, timeout).await;
        let unconfirmed: Vec<i64> = batch
            .iter()
            .map(|e| e.seq)
            .filter(|seq| !published.contains(seq))
            .collect();
        let n = published.len();
        let marked = self
            .db
            .run(move |c| {
                if !published.is_empty() {
                    mark_published(c, &published)?;
                }
                if !unconfirmed.is_empty() {
                    release(c, &unconfirmed)?;
                }
                Ok::<_, DbError>(())
            })
            .await;
        if let Err(e) = marked {
            // The confirmed events are published again once their lease runs out: a repeat with
            // the same id, never a loss.
            return Err(Failure::Outbox(format!("published events not marked: {e}")));
        }
        metrics::counter!("reklama_events_published_total").increment(n as u64);
        match failure {
            Some(e) => Err(Failure::Broker(e)),
            None => Ok(n),
        }
    }

    async fn connect(&self, timeout: Duration) -> Result<Link, String> {
        let url = self.settings.amqp_url.trim().to_owned();
        let exchange = self.settings.exchange.clone();
        let open = async move {
            let connection = Connection::connect(&url, ConnectionProperties::default())
                .await
                .map_err(|e| format!("cannot connect to the broker: {e}"))?;
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| format!("cannot open a channel: {e}"))?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| format!("publisher confirms refused: {e}"))?;
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("cannot declare exchange {exchange:?}: {e}"))?;
            Ok::<_, String>(Link {
                connection,
                channel,
            })
        };
        tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| format!("the broker did not answer within {timeout:?}"))?
    }

    /// Publishes `batch` in order and waits for the broker's confirms; the events it confirmed,
    /// and what went wrong with the rest.
    async fn publish(
        &self,
        channel: &Channel,
        batch: &[StoredEvent],
        timeout: Duration,
    ) -> (Vec<i64>, Option<String>) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pending = Vec::with_capacity(batch.len());
        let mut failure = None;
        for event in batch {
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(event.id.as_str().into())
                .with_type(event.kind.as_str().into())
                .with_timestamp(u64::try_from(event.occurred_at.div_euclid(1000)).unwrap_or(0));
            let sent = tokio::time::timeout_at(
                deadline,
                channel.basic_publish(
                    self.settings.exchange.as_str().into(),
                    event.kind.as_str().into(),
                    BasicPublishOptions::default(),
                    &event.body(),
                    properties,
                ),
            )
            .await;
            match sent {
                Ok(Ok(confirm)) => pending.push((event.seq, confirm)),
                Ok(Err(e)) => {
                    failure = Some(format!("publish failed: {e}"));
                    break;
                }
                Err(_) => {
                    failure = Some("the broker took too long to take messages".into());
                    break;
                }
            }
        }
        let mut confirmed = Vec::with_capacity(pending.len());
        for (seq, confirm) in pending {
            match tokio::time::timeout_at(deadline, confirm).await {
                Ok(Ok(c)) if c.is_ack() => confirmed.push(seq),
                Ok(Ok(_)) => {
                    failure.get_or_insert_with(|| "the broker refused a message (nack)".into());
                }
                Ok(Err(e)) => {
                    failure.get_or_insert_with(|| format!("confirm lost: {e}"));
                }
                Err(_) => {
                    failure.get_or_insert_with(|| "the broker did not confirm in time".into());
                    break;
                }
            }
        }
        (confirmed, failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_always_carry_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_764_790_812_345), "2025-12-03T19:40:12.345Z");
        assert_eq!(rfc3339_ms(1_764_790_812_000), "2025-12-03T19:40:12.000Z");
    }

    #[test]
    fn keyed_ids_repeat_and_fresh_ids_do_not() {
        assert_eq!(id_for("cap:1:max_clicks"), id_for("cap:1:max_clicks"));
        assert_ne!(id_for("cap:1:max_clicks"), id_for("cap:2:max_clicks"));
        assert_ne!(fresh_id(), fresh_id());
        assert_eq!(fresh_id().len(), 26);
        assert_eq!(id_for("x").len(), 36);
    }

    #[test]
    fn the_envelope_embeds_data_as_json() {
        let event = StoredEvent {
            seq: 1,
            id: "evt_1".into(),
            kind: "advert.paused".into(),
            occurred_at: 1_000,
            customer_id: 7,
            advert_id: Some(9),
            data: r#"{"changed":["status"]}"#.into(),
        };
        let body: serde_json::Value =
            serde_json::from_slice(&event.body()).unwrap_or(serde_json::Value::Null);
        assert_eq!(
            body,
            serde_json::json!({"id": "evt_1", "type": "advert.paused",
                "occurred_at": "1970-01-01T00:00:01.000Z", "customer_id": 7, "advert_id": 9,
                "data": {"changed": ["status"]}})
        );
    }

    #[test]
    fn settings_name_their_key() {
        let mut s = EventSettings {
            amqp_url: "http://x".into(),
            exchange: "bad exchange".into(),
            clicks: false,
            retention_hours: 0,
            publish_timeout_ms: 5,
            poll_interval_ms: 0,
        };
        let problems = s.problems().join("\n");
        for key in [
            "events.amqp_url",
            "events.exchange",
            "events.retention_hours",
            "events.publish_timeout_ms",
            "events.poll_interval_ms",
        ] {
            assert!(problems.contains(key), "{key} missing in {problems}");
        }
        s.amqp_url = "amqp://guest:guest@127.0.0.1:5672/%2f".into();
        s.exchange = "reklama.events".into();
        s.retention_hours = 1;
        s.publish_timeout_ms = 5000;
        s.poll_interval_ms = 100;
        assert!(s.problems().is_empty(), "{:?}", s.problems());
    }
}
