//! Alerts by e-mail: an advert reached a cap or ended, a webhook was disabled, a copy to the
//! cloud store failed for good. They are read from the outbox's events by the dispatcher, in
//! the transaction that dispatches them, so each event gives its e-mail once, however many
//! instances run; the e-mail itself is a `mail.send` job (retried, never sent from a request).
//! A customer gets one e-mail per dispatched batch, listing every alert of that batch (many
//! adverts ending at midnight make one e-mail, not hundreds).

use std::collections::BTreeMap;

use maud::{Markup, html};
use serde::Deserialize;

use crate::domain::CustomerId;
use crate::domain::events::EventType;
use crate::platform::auth;
use crate::platform::db::DbConnection;
use crate::platform::events::StoredEvent;
use crate::platform::mail::{Email, MailQueue};
use crate::platform::urls::PublicUrls;

use super::letter;

/// The event types that alert the customer by e-mail.
pub const ALERTS: [EventType; 4] = [
    EventType::AdvertCapReached,
    EventType::AdvertEnded,
    EventType::WebhookDisabled,
    EventType::AdvertOffloadFailed,
];

const WHY: &str = "alerts go to the address of your account.";

/// Turns alert events into e-mails to their customers.
#[derive(Clone)]
pub struct Alerts {
    mail: MailQueue,
    urls: PublicUrls,
}

impl Alerts {
    pub fn new(mail: MailQueue, urls: PublicUrls) -> Self {
        Self { mail, urls }
    }

    /// Queues, inside the caller's transaction, one e-mail per customer with an address for the
    /// alerts among `batch`; how many it queued (none while mail is off).
    pub fn queue(
        &self,
        conn: &mut DbConnection,
        batch: &[StoredEvent],
    ) -> diesel::QueryResult<usize> {
        if !self.mail.enabled() {
            return Ok(0);
        }
        let mut by_customer: BTreeMap<CustomerId, Vec<Alert>> = BTreeMap::new();
        for event in batch {
            if let Some(alert) = Alert::read(event) {
                by_customer
                    .entry(CustomerId(event.customer_id))
                    .or_default()
                    .push(alert);
            }
        }
        if by_customer.is_empty() {
            return Ok(0);
        }
        let customers: Vec<CustomerId> = by_customer.keys().copied().collect();
        let addresses = auth::addresses_of(conn, &customers)?;
        let mut queued = 0;
        for (customer, alerts) in &by_customer {
            let Some(to) = addresses.get(customer) else {
                continue;
            };
            match self.email(to, alerts) {
                Ok(email) => {
                    if self.mail.enqueue(conn, &email)?.is_some() {
                        queued += 1;
                    }
                }
                // The address was checked when it was saved; one that no longer parses is left.
                Err(e) => tracing::warn!(%customer, error = %e, "alert e-mail not queued"),
            }
        }
        Ok(queued)
    }

    /// The e-mail telling `to` of `alerts` (at least one).
    fn email(&self, to: &str, alerts: &[Alert]) -> Result<Email, String> {
        let subject = match alerts {
            [one] => format!("reklama: {}", one.headline()),
            many => format!(
                "reklama: {} alerts about your adverts and webhooks",
                many.len()
            ),
        };
        let mut text = String::new();
        for alert in alerts {
            text.push_str(&format!("* {}\n  {}\n", alert.headline(), alert.detail()));
            if let Some((_, url)) = alert.link(&self.urls) {
                text.push_str(&format!("  {url}\n"));
            }
            text.push('\n');
        }
        text.push_str(&letter::text_footer(&self.urls, WHY));
        let body: Markup = html! {
            @for alert in alerts {
                h2 style="font-size:16px;margin:16px 0 4px" { (alert.headline()) }
                p style="margin:0 0 4px" { (alert.detail()) }
                @if let Some((label, url)) = alert.link(&self.urls) {
                    p style="margin:0" { a href=(url) { (label) } }
                }
            }
        };
        let title = match alerts {
            [one] => one.headline(),
            many => format!("{} alerts", many.len()),
        };
        let html = letter::html_page(&self.urls, &title, WHY, body);
        Email::new(to, subject, text, html)
    }
}

/// One alert, as its event's `data` tells it.
#[derive(Debug, Clone, PartialEq)]
enum Alert {
    Cap { advert: i64, data: CapData },
    Ended { advert: i64, data: EndedData },
    WebhookDisabled(WebhookData),
    CopyFailed { advert: i64, data: CopyData },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct CapData {
    #[serde(default)]
    title: String,
    cap: String,
    limit: u64,
    day: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct EndedData {
    #[serde(default)]
    title: String,
    ends_at: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct WebhookData {
    webhook_id: String,
    url: String,
    reason: String,
    failing_since: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct CopyData {
    #[serde(default)]
    title: String,
    job: String,
    error: String,
}

impl Alert {
    /// The alert an event is, if it is one (and its data reads).
    fn read(event: &StoredEvent) -> Option<Self> {
        let kind = EventType::parse(&event.kind).filter(|k| ALERTS.contains(k))?;
        let advert = event.advert_id.unwrap_or_default();
        let parsed = match kind {
            EventType::AdvertCapReached => {
                serde_json::from_str(&event.data).map(|data| Self::Cap { advert, data })
            }
            EventType::AdvertEnded => {
                serde_json::from_str(&event.data).map(|data| Self::Ended { advert, data })
            }
            EventType::WebhookDisabled => {
                serde_json::from_str(&event.data).map(Self::WebhookDisabled)
            }
            _ => serde_json::from_str(&event.data).map(|data| Self::CopyFailed { advert, data }),
        };
        parsed
            .map_err(
                |e| tracing::warn!(event = %event.id, error = %e, "an alert's data does not read"),
            )
            .ok()
    }

    fn headline(&self) -> String {
        match self {
            Self::Cap { advert, data } => format!(
                "{} reached its {}",
                advert_name(*advert, &data.title),
                cap_name(&data.cap, data.limit, data.day.as_deref())
            ),
            Self::Ended { advert, data } => {
                format!("{} ended", advert_name(*advert, &data.title))
            }
            Self::WebhookDisabled(data) => format!("Your webhook to {} was disabled", data.url),
            Self::CopyFailed { advert, data } => format!(
                "The cloud copy of {} failed",
                advert_name(*advert, &data.title)
            ),
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Cap { data, .. } if data.cap == "daily_max_impressions" => {
                "It is not served again until the next day in its time zone. Raise the cap to \
                 serve it today."
                    .into()
            }
            Self::Cap { .. } => "It is no longer served. Raise the cap to serve it again.".into(),
            Self::Ended { data, .. } => format!(
                "Its end time, {}, passed: it is no longer served. Move the end time to serve it \
                 again.",
                readable_time(&data.ends_at)
            ),
            Self::WebhookDisabled(data) => format!(
                "Deliveries to it failed since {} ({}). Nothing is sent to it until it is \
                 enabled again: PATCH /api/v1/webhooks/{} with {{\"enabled\": true}}.",
                readable_time(&data.failing_since),
                data.reason,
                data.webhook_id
            ),
            Self::CopyFailed { data, .. } => format!(
                "{} failed after every attempt ({}). The advert is still served and its \
                 original stays with reklama; a new image starts a new copy.",
                match data.job.as_str() {
                    "sync" => "Bringing its copy in the cloud store up to date",
                    _ => "Copying it to the cloud store",
                },
                data.error
            ),
        }
    }

    /// Where to act on it: the advert's dashboard page.
    fn link(&self, urls: &PublicUrls) -> Option<(&'static str, String)> {
        match self {
            Self::Cap { advert, .. }
            | Self::Ended { advert, .. }
            | Self::CopyFailed { advert, .. } => {
                Some(("Open the advert", letter::advert_url(urls, *advert)))
            }
            Self::WebhookDisabled(_) => None,
        }
    }
}

fn advert_name(advert: i64, title: &str) -> String {
    match title.trim() {
        "" => format!("advert {advert}"),
        title => format!("\u{201c}{title}\u{201d} (advert {advert})"),
    }
}

fn cap_name(cap: &str, limit: u64, day: Option<&str>) -> String {
    let limit = grouped(limit);
    match cap {
        "max_clicks" => format!("cap of {limit} clicks"),
        "daily_max_impressions" => match day {
            Some(day) => format!("daily cap of {limit} impressions on {day}"),
            None => format!("daily cap of {limit} impressions"),
        },
        _ => format!("cap of {limit} impressions"),
    }
}

/// `12345678` as `12,345,678`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `2026-12-31T23:00:00.000Z` as `2026-12-31 23:00 UTC` (anything else as it is).
fn readable_time(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(day), Some(time)) if rfc3339.ends_with('Z') => format!("{day} {time} UTC"),
        _ => rfc3339.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::platform::mail::MailSettings;

    fn event(kind: EventType, advert: Option<i64>, data: &str) -> StoredEvent {
        StoredEvent {
            seq: 1,
            id: "evt_1".into(),
            kind: kind.as_str().into(),
            occurred_at: 0,
            customer_id: 7,
            advert_id: advert,
            data: data.into(),
        }
    }

    fn alerts() -> Alerts {
        let settings = MailSettings {
            smtp_url: "smtp://127.0.0.1:2525".into(),
            from: "reklama <noreply@example.com>".into(),
            timeout_ms: 1000,
        };
        Alerts::new(
            MailQueue::new(&settings, 3),
            PublicUrls::new("https://ads.example.com/"),
        )
    }

    #[test]
    fn only_the_alert_types_are_alerts() {
        let created = event(EventType::AdvertCreated, Some(1), "{}");
        assert_eq!(Alert::read(&created), None);
        let cap = event(
            EventType::AdvertCapReached,
            Some(42),
            r#"{"title":"Winter sale","cap":"daily_max_impressions","limit":10000,"day":"2026-12-03"}"#,
        );
        let alert = Alert::read(&cap).expect("a cap is an alert");
        assert_eq!(
            alert.headline(),
            "\u{201c}Winter sale\u{201d} (advert 42) reached its daily cap of 10,000 impressions on 2026-12-03"
        );
        assert!(alert.detail().contains("next day"));
        // Data that does not read is skipped, not a failure of the batch.
        let broken = event(EventType::AdvertEnded, Some(1), "{\"nope\":1}");
        assert_eq!(Alert::read(&broken), None);
    }

    #[test]
    fn one_email_lists_every_alert_in_text_and_escaped_html() {
        let a = alerts();
        let list = vec![
            Alert::read(&event(
                EventType::AdvertEnded,
                Some(5),
                r#"{"title":"<b>Sale</b> & more","ends_at":"2026-12-31T23:00:00.000Z"}"#,
            ))
            .unwrap(),
            Alert::read(&event(
                EventType::AdvertOffloadFailed,
                Some(6),
                r#"{"title":"","job":"offload","error":"the cloud store answered 503"}"#,
            ))
            .unwrap(),
        ];
        let email = a.email("ops@example.com", &list).unwrap();
        assert_eq!(
            email.subject(),
            "reklama: 2 alerts about your adverts and webhooks"
        );
        let payload: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&email).unwrap()).unwrap();
        let text = payload["text"].as_str().unwrap();
        assert!(text.contains("ended"));
        assert!(text.contains("2026-12-31 23:00 UTC"));
        assert!(text.contains("The cloud copy of advert 6 failed"));
        assert!(text.contains("https://ads.example.com/dashboard/adverts/5"));
        assert!(text.contains("https://ads.example.com/dashboard/account"));
        let html = payload["html"].as_str().unwrap();
        assert!(html.contains("&lt;b&gt;Sale&lt;/b&gt; &amp; more"));
        assert!(!html.contains("<b>Sale"));
        assert!(html.contains("href=\"https://ads.example.com/dashboard/adverts/6\""));
    }

    #[test]
    fn numbers_are_grouped_and_times_readable() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(12_345_678), "12,345,678");
        assert_eq!(
            readable_time("2026-12-31T23:00:00.000Z"),
            "2026-12-31 23:00 UTC"
        );
        assert_eq!(readable_time("soon"), "soon");
    }
}
