//! The webhooks' tables: `webhooks` and `webhook_deliveries`. Every read and change that a
//! customer makes is filtered by its customer id, so another customer's webhook is "not found".

use diesel::prelude::*;

use crate::domain::CustomerId;
use crate::domain::events::EventType;
use crate::platform::db::schema::{webhook_deliveries, webhooks};
use crate::platform::db::{self, DbConnection, now_ms};

/// The stored form of "every event type".
pub const EVERY_EVENT: &str = "*";

/// The life of a delivery.
pub mod status {
    pub const PENDING: &str = "pending";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhooks)]
pub struct WebhookRow {
    pub id: i64,
    pub public_id: String,
    pub customer_id: i64,
    pub url: String,
    pub events: String,
    pub secret: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub disabled_at: Option<i64>,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<i64>,
}

impl WebhookRow {
    /// The subscribed event types as the API shows them (`*`, or names).
    pub fn event_names(&self) -> Vec<String> {
        self.events.split_whitespace().map(str::to_owned).collect()
    }

    /// Whether events of `kind` go to this webhook.
    pub fn wants(&self, kind: &str) -> bool {
        self.events
            .split_whitespace()
            .any(|name| name == EVERY_EVENT || name == kind)
    }
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_deliveries)]
pub struct DeliveryRow {
    pub id: i64,
    pub webhook_id: i64,
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub last_response_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub delivered_at: Option<i64>,
}

/// The stored `events` column for these subscriptions.
pub fn events_column(events: &[String]) -> String {
    events.join(" ")
}

pub fn insert(
    conn: &mut DbConnection,
    customer: CustomerId,
    public_id: &str,
    url: &str,
    events: &str,
    secret: &str,
) -> QueryResult<WebhookRow> {
    let now = now_ms();
    let id = diesel::insert_into(webhooks::table)
        .values((
            webhooks::public_id.eq(public_id),
            webhooks::customer_id.eq(customer.0),
            webhooks::url.eq(url),
            webhooks::events.eq(events),
            webhooks::secret.eq(secret),
            webhooks::created_at.eq(now),
            webhooks::updated_at.eq(now),
        ))
        .returning(webhooks::id)
        .get_result::<i64>(conn)?;
    by_id(conn, id)?.ok_or(diesel::result::Error::NotFound)
}

pub fn count(conn: &mut DbConnection, customer: CustomerId) -> QueryResult<i64> {
    webhooks::table
        .filter(webhooks::customer_id.eq(customer.0))
        .count()
        .get_result(conn)
}

pub fn list(conn: &mut DbConnection, customer: CustomerId) -> QueryResult<Vec<WebhookRow>> {
    webhooks::table
        .filter(webhooks::customer_id.eq(customer.0))
        .order(webhooks::id)
        .select(WebhookRow::as_select())
        .load(conn)
}

pub fn find(
    conn: &mut DbConnection,
    customer: CustomerId,
    public_id: &str,
) -> QueryResult<Option<WebhookRow>> {
    webhooks::table
        .filter(webhooks::customer_id.eq(customer.0))
        .filter(webhooks::public_id.eq(public_id))
        .select(WebhookRow::as_select())
        .first(conn)
        .optional()
}

pub fn by_id(conn: &mut DbConnection, id: i64) -> QueryResult<Option<WebhookRow>> {
    webhooks::table
        .find(id)
        .select(WebhookRow::as_select())
        .first(conn)
        .optional()
}

/// What a PATCH changes.
#[derive(Debug, Default, Clone)]
pub struct Change {
    pub url: Option<String>,
    pub events: Option<String>,
    pub enabled: Option<bool>,
}

/// Applies `change` to the customer's webhook; the webhook as it is now, `None` if there is no
/// such webhook among the customer's. Enabling clears the failure record; disabling by the
/// customer says so in `disabled_reason`.
pub fn update(
    conn: &mut DbConnection,
    customer: CustomerId,
    public_id: &str,
    change: &Change,
) -> QueryResult<Option<WebhookRow>> {
    db::transaction(conn, |conn| {
        let Some(current) = find(conn, customer, public_id)? else {
            return Ok(None);
        };
        let now = now_ms();
        let target = webhooks::table.find(current.id);
        diesel::update(target)
            .set(webhooks::updated_at.eq(now))
            .execute(conn)?;
        if let Some(url) = &change.url {
            diesel::update(target)
                .set(webhooks::url.eq(url))
                .execute(conn)?;
        }
        if let Some(events) = &change.events {
            diesel::update(target)
                .set(webhooks::events.eq(events))
                .execute(conn)?;
        }
        match change.enabled {
            Some(true) => {
                diesel::update(target)
                    .set((
                        webhooks::disabled_at.eq(None::<i64>),
                        webhooks::disabled_reason.eq(None::<String>),
                        webhooks::failing_since.eq(None::<i64>),
                    ))
                    .execute(conn)?;
            }
            Some(false) if current.disabled_at.is_none() => {
                diesel::update(target)
                    .set((
                        webhooks::disabled_at.eq(Some(now)),
                        webhooks::disabled_reason.eq(Some("disabled by the customer")),
                    ))
                    .execute(conn)?;
            }
            _ => {}
        }
        by_id(conn, current.id)
    })
}

/// Deletes the customer's webhook and its deliveries; whether there was one. Jobs still queued
/// for its deliveries find nothing and end.
pub fn delete(conn: &mut DbConnection, customer: CustomerId, public_id: &str) -> QueryResult<bool> {
    db::transaction(conn, |conn| {
        let Some(current) = find(conn, customer, public_id)? else {
            return Ok(false);
        };
        diesel::delete(
            webhook_deliveries::table.filter(webhook_deliveries::webhook_id.eq(current.id)),
        )
        .execute(conn)?;
        diesel::delete(webhooks::table.find(current.id)).execute(conn)?;
        Ok(true)
    })
}

/// The newest `limit` deliveries of a webhook, newest first.
pub fn deliveries(
    conn: &mut DbConnection,
    webhook: i64,
    limit: i64,
) -> QueryResult<Vec<DeliveryRow>> {
    webhook_deliveries::table
        .filter(webhook_deliveries::webhook_id.eq(webhook))
        .order(webhook_deliveries::id.desc())
        .limit(limit)
        .select(DeliveryRow::as_select())
        .load(conn)
}

/// The live (not disabled) webhooks of these customers.
pub fn live_of(conn: &mut DbConnection, customers: &[i64]) -> QueryResult<Vec<WebhookRow>> {
    webhooks::table
        .filter(webhooks::customer_id.eq_any(customers))
        .filter(webhooks::disabled_at.is_null())
        .select(WebhookRow::as_select())
        .load(conn)
}

/// Whether any live webhook subscribes to `stats.flushed`, and to `click.recorded`.
pub fn interest(conn: &mut DbConnection) -> QueryResult<(bool, bool)> {
    let subscriptions: Vec<String> = webhooks::table
        .filter(webhooks::disabled_at.is_null())
        .select(webhooks::events)
        .distinct()
        .load(conn)?;
    let wants = |kind: EventType| {
        subscriptions.iter().any(|events| {
            events
                .split_whitespace()
                .any(|n| n == EVERY_EVENT || n == kind.as_str())
        })
    };
    Ok((
        wants(EventType::StatsFlushed),
        wants(EventType::ClickRecorded),
    ))
}

pub fn insert_delivery(
    conn: &mut DbConnection,
    webhook: i64,
    event_id: &str,
    event_type: &str,
) -> QueryResult<i64> {
    let now = now_ms();
    diesel::insert_into(webhook_deliveries::table)
        .values((
            webhook_deliveries::webhook_id.eq(webhook),
            webhook_deliveries::event_id.eq(event_id),
            webhook_deliveries::event_type.eq(event_type),
            webhook_deliveries::status.eq(status::PENDING),
            webhook_deliveries::attempts.eq(0),
            webhook_deliveries::created_at.eq(now),
            webhook_deliveries::updated_at.eq(now),
        ))
        .returning(webhook_deliveries::id)
        .get_result(conn)
}

pub fn delivery(conn: &mut DbConnection, id: i64) -> QueryResult<Option<DeliveryRow>> {
    webhook_deliveries::table
        .find(id)
        .select(DeliveryRow::as_select())
        .first(conn)
        .optional()
}

/// The delivery succeeded: the endpoint answered `code` (2xx). The webhook is no longer failing.
pub fn succeeded(conn: &mut DbConnection, delivery: &DeliveryRow, code: u16) -> QueryResult<()> {
    let now = now_ms();
    db::transaction(conn, |conn| {
        diesel::update(webhook_deliveries::table.find(delivery.id))
            .set((
                webhook_deliveries::status.eq(status::SUCCEEDED),
                webhook_deliveries::attempts.eq(webhook_deliveries::attempts + 1),
                webhook_deliveries::last_response_code.eq(Some(i32::from(code))),
                webhook_deliveries::last_error.eq(None::<String>),
                webhook_deliveries::updated_at.eq(now),
                webhook_deliveries::delivered_at.eq(Some(now)),
            ))
            .execute(conn)?;
        diesel::update(webhooks::table.find(delivery.webhook_id))
            .set(webhooks::failing_since.eq(None::<i64>))
            .execute(conn)?;
        Ok(())
    })
}

/// One attempt failed: counted, with the answer's code (if any) and what went wrong; the
/// webhook is failing since now unless it already was. Returns when it started failing.
pub fn attempt_failed(
    conn: &mut DbConnection,
    delivery: &DeliveryRow,
    code: Option<u16>,
    error: &str,
) -> QueryResult<i64> {
    let now = now_ms();
    diesel::update(webhook_deliveries::table.find(delivery.id))
        .set((
            webhook_deliveries::attempts.eq(webhook_deliveries::attempts + 1),
            webhook_deliveries::last_response_code.eq(code.map(i32::from)),
            webhook_deliveries::last_error.eq(Some(error)),
            webhook_deliveries::updated_at.eq(now),
        ))
        .execute(conn)?;
    diesel::update(
        webhooks::table
            .find(delivery.webhook_id)
            .filter(webhooks::failing_since.is_null()),
    )
    .set(webhooks::failing_since.eq(Some(now)))
    .execute(conn)?;
    let since: Option<Option<i64>> = webhooks::table
        .find(delivery.webhook_id)
        .select(webhooks::failing_since)
        .first(conn)
        .optional()?;
    Ok(since.flatten().unwrap_or(now))
}

/// The delivery is given up: its attempts ran out, or its webhook was disabled.
pub fn give_up(conn: &mut DbConnection, delivery: i64, why: Option<&str>) -> QueryResult<()> {
    let now = now_ms();
    let target = webhook_deliveries::table
        .find(delivery)
        .filter(webhook_deliveries::status.eq(status::PENDING));
    match why {
        Some(why) => diesel::update(target)
            .set((
                webhook_deliveries::status.eq(status::FAILED),
                webhook_deliveries::last_error.eq(Some(why)),
                webhook_deliveries::updated_at.eq(now),
            ))
            .execute(conn)?,
        None => diesel::update(target)
            .set((
                webhook_deliveries::status.eq(status::FAILED),
                webhook_deliveries::updated_at.eq(now),
            ))
            .execute(conn)?,
    };
    Ok(())
}

/// Disables a live webhook; `true` if this call did (so that it is announced once).
pub fn disable(conn: &mut DbConnection, webhook: i64, reason: &str) -> QueryResult<bool> {
    let now = now_ms();
    let n = diesel::update(
        webhooks::table
            .find(webhook)
            .filter(webhooks::disabled_at.is_null()),
    )
    .set((
        webhooks::disabled_at.eq(Some(now)),
        webhooks::disabled_reason.eq(Some(reason)),
        webhooks::updated_at.eq(now),
    ))
    .execute(conn)?;
    Ok(n > 0)
}

/// Deletes finished deliveries last changed before `before_ms` (pending ones stay: their jobs
/// still need them); how many.
pub fn prune_deliveries(conn: &mut DbConnection, before_ms: i64) -> QueryResult<usize> {
    diesel::delete(
        webhook_deliveries::table
            .filter(webhook_deliveries::status.ne(status::PENDING))
            .filter(webhook_deliveries::updated_at.lt(before_ms)),
    )
    .execute(conn)
}
