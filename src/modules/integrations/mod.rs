//! Integrations: a customer's webhooks. A customer registers HTTPS endpoints with the event
//! types it wants (`/api/v1/webhooks`); the [`Dispatcher`] of every instance hands each new
//! event in the outbox to the customer's live webhooks subscribed to it (a delivery row and a
//! `webhook.deliver` job, in one transaction), and [`DeliverJob`] POSTs the event's envelope,
//! signed as the Standard Webhooks specification says, retried with backoff by the job queue.
//! A webhook whose deliveries fail for `webhooks.disable_after_hours` is disabled and the
//! customer told (a `webhook.disabled` event, and an e-mail). The same dispatcher turns the
//! events that alert a customer into e-mails ([`alerts`]); [`ReportJob`] sends the daily or
//! weekly report e-mail. Targets are checked against the SSRF guard
//! ([`guard`]) when a webhook is saved and at every delivery.

mod alerts;
mod deliver;
mod dispatch;
mod guard;
mod http;
mod letter;
mod reports;
mod store;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::platform::db::{Db, DbError};
use crate::platform::events::WebhookInterest;

pub use alerts::{ALERTS, Alerts};
pub use deliver::{DELIVER_JOB, DeliverJob, sign};
pub use dispatch::Dispatcher;
pub use http::{ApiDoc, configure};
pub use reports::{
    AdvertPeriod, GRACE_SECS, Period, REPORTS_JOB, ReportJob, ReportSource, next_run, report_email,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Allow targets on loopback, private, link-local and metadata addresses (a test, or a
    /// deployment whose customers are all trusted); off: refused.
    pub allow_private_targets: bool,
    /// A webhook whose deliveries have failed for this many hours without a success is
    /// disabled, and the customer told.
    pub disable_after_hours: f64,
    /// The longest a delivery may take: resolving, connecting and the whole answer.
    pub timeout_ms: u64,
    /// Attempts per delivery (retried with the job queue's backoff) before it is given up.
    pub max_attempts: u32,
}

impl WebhookSettings {
    /// What is wrong with these settings, each message naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.disable_after_hours.is_finite() && self.disable_after_hours > 0.0) {
            problems.push("webhooks.disable_after_hours: must be a number of hours above 0".into());
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            problems.push("webhooks.timeout_ms: must be between 100 and 60000".into());
        }
        if self.max_attempts == 0 {
            problems.push("webhooks.max_attempts: must be at least 1".into());
        }
        problems
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// `disable_after_hours` in milliseconds.
    pub fn disable_after_ms(&self) -> i64 {
        (self.disable_after_hours * 3_600_000.0)
            .round()
            .clamp(1.0, 1e15) as i64
    }
}

/// The `data` of a `webhook.disabled` event.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookDisabled {
    /// The webhook's id (`wh_...`).
    #[schema(example = "wh_3kT9bQx0aZ7mP1vR5sW2")]
    pub webhook_id: String,
    pub url: String,
    /// Why it was disabled.
    #[schema(example = "deliveries failed for 72 hours; last: the endpoint answered 500")]
    pub reason: String,
    /// When its deliveries started failing (RFC 3339, milliseconds).
    pub failing_since: String,
}

/// The webhooks' service: what the endpoints call, and the subscription summary the outbox
/// reads.
#[derive(Clone)]
pub struct WebhooksService {
    db: Db,
    settings: WebhookSettings,
    interest: WebhookInterest,
}

impl WebhooksService {
    pub fn new(db: Db, settings: &WebhookSettings, interest: WebhookInterest) -> Self {
        Self {
            db,
            settings: settings.clone(),
            interest,
        }
    }

    /// Reads again whether live webhooks want `stats.flushed` or `click.recorded`, so that the
    /// outbox records them (or stops).
    pub async fn refresh_interest(&self) -> Result<(), DbError> {
        let (stats, clicks) = self
            .db
            .run(|c| Ok::<_, DbError>(store::interest(c)?))
            .await?;
        self.interest.set(stats, clicks);
        Ok(())
    }
}
