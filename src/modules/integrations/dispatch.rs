//! The dispatcher: hands every new event of the outbox to the webhooks that want it.
//!
//! Each instance runs one. In one transaction it takes the oldest events not yet dispatched
//! (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so instances take disjoint batches; SQLite has a
//! single writer), writes for each live webhook of the event's customer subscribed to its type
//! (and made before the event) a delivery row and a `webhook.deliver` job, and marks the events
//! dispatched: a delivery exists exactly when its event was dispatched, and none twice. The
//! alerts among them become e-mails in that transaction too ([`super::alerts`]). Every
//! few seconds it also re-reads which kinds the webhooks subscribe to, for the outbox.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::platform::db::{self, Db, DbError};
use crate::platform::events;
use crate::platform::jobs::{Enqueuer, enqueue};

use super::WebhooksService;
use super::alerts::Alerts;
use super::deliver::{DELIVER_JOB, DeliverPayload};
use super::store;

/// Events taken per transaction.
const BATCH: i64 = 200;
/// How often the subscriptions are re-read for the outbox (changes on this instance are seen at
/// once).
const INTEREST_EVERY: Duration = Duration::from_secs(3);
/// How often finished deliveries past the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What one round did.
#[derive(Debug, Default)]
struct Round {
    /// Events dispatched.
    events: usize,
    /// Webhook deliveries queued.
    deliveries: usize,
    /// Alert e-mails queued.
    alerts: usize,
}

pub struct Dispatcher {
    db: Db,
    service: WebhooksService,
    alerts: Alerts,
    enqueuer: Enqueuer,
    max_attempts: u32,
    poll: Duration,
    retention: Duration,
}

impl Dispatcher {
    /// `poll`: how often an idle dispatcher looks for new events (`events.poll_interval_ms`);
    /// `retention`: how long finished deliveries are kept (`events.retention_hours`).
    pub fn new(
        db: Db,
        service: WebhooksService,
        alerts: Alerts,
        enqueuer: Enqueuer,
        max_attempts: u32,
        poll: Duration,
        retention: Duration,
    ) -> Self {
        Self {
            db,
            service,
            alerts,
            enqueuer,
            max_attempts,
            poll: poll.max(Duration::from_millis(10)),
            retention,
        }
    }

    pub fn spawn(self, cancel: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move { self.run(cancel).await })
    }

    async fn run(self, cancel: CancellationToken) {
        let mut next_interest = tokio::time::Instant::now();
        let mut next_prune = tokio::time::Instant::now();
        let mut warned = false;
        while !cancel.is_cancelled() {
            if tokio::time::Instant::now() >= next_prune {
                next_prune = tokio::time::Instant::now() + PRUNE_EVERY;
                self.prune().await;
            }
            if tokio::time::Instant::now() >= next_interest {
                next_interest = tokio::time::Instant::now() + INTEREST_EVERY;
                if let Err(e) = self.service.refresh_interest().await {
                    tracing::debug!(error = %e, "webhook subscriptions not re-read");
                }
            }
            let pause = match self.round().await {
                Ok(Round {
                    events,
                    deliveries,
                    alerts,
                }) => {
                    warned = false;
                    if deliveries + alerts > 0 {
                        self.enqueuer.waker.wake();
                    }
                    if deliveries > 0 {
                        metrics::counter!("reklama_webhook_deliveries_total")
                            .increment(deliveries as u64);
                    }
                    if alerts > 0 {
                        metrics::counter!("reklama_alert_emails_total").increment(alerts as u64);
                    }
                    if events > 0 {
                        continue;
                    }
                    self.poll
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "events not dispatched to webhooks; tried again");
                        warned = true;
                    }
                    self.poll.max(Duration::from_secs(1))
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Deletes finished deliveries older than the retention.
    async fn prune(&self) {
        let keep_ms = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX / 2);
        let before = crate::platform::db::now_ms().saturating_sub(keep_ms);
        match self
            .db
            .run(move |c| Ok::<_, DbError>(store::prune_deliveries(c, before)?))
            .await
        {
            Ok(n) if n > 0 => tracing::debug!(deleted = n, "old webhook deliveries pruned"),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "old webhook deliveries not pruned"),
        }
    }

    /// One batch, in one transaction.
    async fn round(&self) -> Result<Round, DbError> {
        let max_attempts = self.max_attempts;
        let alerts = self.alerts.clone();
        self.db
            .run(move |conn| {
                // Idle rounds only read: the write lock (SQLite) and row locks are taken when
                // there is something to dispatch.
                if !events::any_undispatched(conn)? {
                    return Ok(Round::default());
                }
                db::transaction(conn, |conn| {
                    let batch = events::undispatched(conn, BATCH)?;
                    if batch.is_empty() {
                        return Ok(Round::default());
                    }
                    let customers: Vec<i64> = batch
                        .iter()
                        .map(|e| e.customer_id)
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    let hooks = store::live_of(conn, &customers)?;
                    let mut made = 0;
                    for event in &batch {
                        for hook in hooks.iter().filter(|h| {
                            h.customer_id == event.customer_id
                                && h.created_at <= event.occurred_at
                                && h.wants(&event.kind)
                        }) {
                            let delivery =
                                store::insert_delivery(conn, hook.id, &event.id, &event.kind)?;
                            let payload = serde_json::to_string(&DeliverPayload { delivery })
                                .unwrap_or_else(|_| format!("{{\"delivery\":{delivery}}}"));
                            enqueue(conn, DELIVER_JOB, &payload, max_attempts)?;
                            made += 1;
                        }
                    }
                    let mails = alerts.queue(conn, &batch)?;
                    let seqs: Vec<i64> = batch.iter().map(|e| e.seq).collect();
                    events::mark_dispatched(conn, &seqs)?;
                    Ok::<_, diesel::result::Error>(Round {
                        events: batch.len(),
                        deliveries: made,
                        alerts: mails,
                    })
                })
                .map_err(DbError::from)
            })
            .await
    }
}
