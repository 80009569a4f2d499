//! Sending one event to one webhook: the `webhook.deliver` job.
//!
//! The request is a POST of the event's envelope (`content-type: application/json`) with the
//! Standard Webhooks headers: `webhook-id` (the event's id, the same in every retry),
//! `webhook-timestamp` (Unix seconds, when this attempt was signed) and `webhook-signature`
//! (`v1,` and the base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed with the
//! base64-decoded part of the secret after `whsec_`). A 2xx answer is success; anything else (a
//! redirect included: they are not followed), a timeout or a network error fails the attempt,
//! and the job queue retries it with backoff. A webhook failing for
//! `webhooks.disable_after_hours` without a success is disabled and a `webhook.disabled` event
//! recorded for its customer.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::CustomerId;
use crate::domain::events::EventType;
use crate::platform::db::{self, Db, DbError, now_ms};
use crate::platform::events::{self, NewEvent, StoredEvent, rfc3339_ms};
use crate::platform::jobs::JobHandler;

use super::guard;
use super::store::{self, DeliveryRow, WebhookRow, status};
use super::{WebhookDisabled, WebhookSettings};

/// The job kind.
pub const DELIVER_JOB: &str = "webhook.deliver";

/// The job's payload.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeliverPayload {
    pub delivery: i64,
}

/// `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` keyed with the secret's bytes
/// (`whsec_` and base64; a secret without the prefix is taken as base64 all the same).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

pub struct DeliverJob {
    db: Db,
    settings: WebhookSettings,
}

impl DeliverJob {
    pub fn new(db: Db, settings: &WebhookSettings) -> Self {
        Self {
            db,
            settings: settings.clone(),
        }
    }
}

/// What an attempt came to.
enum Outcome {
    /// The endpoint answered 2xx.
    Delivered(u16),
    /// It answered something else, or no answer came.
    Failed { code: Option<u16>, error: String },
}

#[async_trait]
impl JobHandler for DeliverJob {
    fn kind(&self) -> &'static str {
        DELIVER_JOB
    }

    async fn run(&self, payload: &str) -> Result<(), String> {
        let DeliverPayload { delivery } =
            serde_json::from_str(payload).map_err(|e| format!("bad payload: {e}"))?;
        let loaded = self
            .db
            .run(move |c| {
                let Some(delivery) = store::delivery(c, delivery)? else {
                    return Ok::<_, DbError>(None);
                };
                let webhook = store::by_id(c, delivery.webhook_id)?;
                let event = events::find(c, &delivery.event_id)?;
                Ok(Some((delivery, webhook, event)))
            })
            .await
            .map_err(|e| e.to_string())?;
        // Deleted with its webhook: nothing to do.
        let Some((delivery, webhook, event)) = loaded else {
            return Ok(());
        };
        if delivery.status != status::PENDING {
            return Ok(());
        }
        let why = match (&webhook, &event) {
            (None, _) => Some("the webhook was deleted"),
            (Some(w), _) if w.disabled_at.is_some() => Some("the webhook is disabled"),
            (_, None) => Some("the event is no longer kept"),
            _ => None,
        };
        let (Some(webhook), Some(event), None) = (webhook, event, why) else {
            let (id, why) = (delivery.id, why.map(str::to_owned));
            return self
                .db
                .run(move |c| Ok::<_, DbError>(store::give_up(c, id, why.as_deref())?))
                .await
                .map_err(|e| e.to_string());
        };
        match self.attempt(&webhook, &event).await {
            Outcome::Delivered(code) => self
                .db
                .run(move |c| Ok::<_, DbError>(store::succeeded(c, &delivery, code)?))
                .await
                .map_err(|e| e.to_string()),
            Outcome::Failed { code, error } => self.failed(delivery, webhook, code, error).await,
        }
    }

    async fn dead_lettered(&self, payload: &str, error: &str) {
        let Ok(DeliverPayload { delivery }) = serde_json::from_str(payload) else {
            return;
        };
        let error = format!("attempts ran out; last: {error}");
        let _ = self
            .db
            .run(move |c| Ok::<_, DbError>(store::give_up(c, delivery, Some(&error))?))
            .await;
    }
}

impl DeliverJob {
    /// Records a failed attempt; disables the webhook once it has failed long enough (then the
    /// delivery ends here), or asks the queue to retry.
    async fn failed(
        &self,
        delivery: DeliveryRow,
        webhook: WebhookRow,
        code: Option<u16>,
        error: String,
    ) -> Result<(), String> {
        let limit_ms = self.settings.disable_after_ms();
        let hours = self.settings.disable_after_hours;
        let stored_error = error.clone();
        let public_id = webhook.public_id.clone();
        let disabled = self
            .db
            .run(move |c| {
                db::transaction(c, |c| {
                    let since = store::attempt_failed(c, &delivery, code, &stored_error)?;
                    if now_ms().saturating_sub(since) < limit_ms {
                        return Ok(false);
                    }
                    let reason =
                        format!("deliveries failed for {hours} hours; last: {stored_error}");
                    if store::disable(c, webhook.id, &reason)? {
                        announce_disabled(c, &webhook, &reason, since)?;
                    }
                    store::give_up(c, delivery.id, Some(&stored_error))?;
                    Ok::<_, diesel::result::Error>(true)
                })
                .map_err(DbError::from)
            })
            .await
            .map_err(|e| e.to_string())?;
        if disabled {
            tracing::warn!(webhook = %public_id, %error, "webhook disabled after failing");
            Ok(())
        } else {
            Err(error)
        }
    }

    async fn attempt(&self, webhook: &WebhookRow, event: &StoredEvent) -> Outcome {
        let body = event.body();
        let timestamp = now_ms().div_euclid(1000);
        let Some(signature) = sign(&webhook.secret, &event.id, timestamp, &body) else {
            return Outcome::Failed {
                code: None,
                error: "the webhook's secret is not usable".into(),
            };
        };
        let url = match url::Url::parse(&webhook.url) {
            Ok(url) => url,
            Err(e) => {
                return Outcome::Failed {
                    code: None,
                    error: format!("the URL is not valid: {e}"),
                };
            }
        };
        let timeout = self.settings.timeout();
        let started = tokio::time::Instant::now();
        let pinned = match guard::check(&url, self.settings.allow_private_targets, timeout).await {
            Ok(pinned) => pinned,
            Err(e) => {
                return Outcome::Failed {
                    code: None,
                    error: e.to_string(),
                };
            }
        };
        let left = timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(100));
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(left)
            .timeout(left)
            .user_agent(concat!("reklama-webhooks/", env!("CARGO_PKG_VERSION")));
        if let Some((host, address)) = &pinned {
            // Connect to the address just checked, never to what a second lookup might say.
            builder = builder.resolve(host, *address);
        }
        let client = match builder.build() {
            Ok(client) => client,
            Err(e) => {
                return Outcome::Failed {
                    code: None,
                    error: format!("no HTTP client: {e}"),
                };
            }
        };
        let sent = client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                Outcome::Delivered(response.status().as_u16())
            }
            Ok(response) => {
                let code = response.status().as_u16();
                let error = if response.status().is_redirection() {
                    format!("the endpoint answered {code} (redirects are not followed)")
                } else {
                    format!("the endpoint answered {code}")
                };
                Outcome::Failed {
                    code: Some(code),
                    error,
                }
            }
            Err(e) if e.is_timeout() => Outcome::Failed {
                code: None,
                error: format!("no answer within {} ms", self.settings.timeout_ms),
            },
            Err(e) => Outcome::Failed {
                code: None,
                error: format!("request failed: {}", error_chain(&e)),
            },
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Tells the customer its webhook was disabled, in the transaction that disabled it: a
/// `webhook.disabled` event (which its other webhooks and the broker receive, and which the
/// dispatcher turns into an e-mail).
fn announce_disabled(
    conn: &mut crate::platform::db::DbConnection,
    webhook: &WebhookRow,
    reason: &str,
    failing_since: i64,
) -> diesel::QueryResult<()> {
    let data = WebhookDisabled {
        webhook_id: webhook.public_id.clone(),
        url: webhook.url.clone(),
        reason: reason.to_owned(),
        failing_since: rfc3339_ms(failing_since),
    };
    events::record(
        conn,
        &[NewEvent::new(
            EventType::WebhookDisabled,
            CustomerId(webhook.customer_id),
            None,
            &data,
        )],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The test vector of the Standard Webhooks reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, id, 1_614_265_330, body).as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert_ne!(
            sign(secret, id, 1_614_265_331, body),
            sign(secret, id, 1_614_265_330, body)
        );
        assert_eq!(sign("whsec_not base64!", id, 1, body), None);
    }
}
