//! `click.recorded`: one event per click, when `events.clicks` is on. The redirect hands the click
//! to an in-memory queue (no I/O on its path) and a background task writes the queue to the
//! outbox every quarter second, in one transaction per batch. Unlike the counts, which reach the
//! database through the journal, these events are not journaled: a crash loses the last quarter
//! second of them, and a database down for longer than the queue holds (`MAX_PENDING`) drops
//! the newest, counted in `reklama_events_clicks_dropped_total`. The counts are never affected.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::events::EventType;
use crate::domain::targeting::Viewer;
use crate::domain::{AdvertId, CustomerId, Metric};
use crate::platform::db::{self, Db, DbError, now_ms};
use crate::platform::events::{self, NewEvent, rfc3339_ms};

/// Clicks held while the database cannot take them; past it the newest are dropped.
const MAX_PENDING: usize = 100_000;
const WRITE_EVERY: Duration = Duration::from_millis(250);

/// The `data` of `click.recorded`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ClickRecorded {
    /// When the redirect answered (RFC 3339, milliseconds).
    #[schema(example = "2026-12-03T10:00:00.123Z")]
    pub clicked_at: String,
    /// `click` (billable), `bot_click`, `duplicate_click` or `suspicious_click`: how the click
    /// counts, as in the reports.
    #[schema(example = "click")]
    pub kind: &'static str,
    /// The placement of the card the click came from (`null`: the generic card or no token).
    pub placement: Option<String>,
    /// The creative the card showed (`null`: not known).
    pub creative_id: Option<u32>,
    /// `desktop`, `mobile`, `tablet` or `null` (not known).
    pub device: Option<&'static str>,
    /// ISO 3166-1 alpha-2 (from `serving.country_header`), or `null`.
    pub country: Option<String>,
}

/// One click waiting to be written.
#[derive(Debug, Clone)]
struct Pending {
    advert: AdvertId,
    data: ClickRecorded,
}

/// The queue of clicks on their way to the outbox.
#[derive(Clone, Default)]
pub struct ClickEvents {
    pending: Arc<Mutex<Vec<Pending>>>,
}

impl ClickEvents {
    /// Queues one click; never blocks and never fails the redirect.
    pub fn push(
        &self,
        advert: AdvertId,
        metric: Metric,
        placement: Option<&str>,
        creative: Option<u32>,
        viewer: Viewer,
    ) {
        let kind = match metric {
            Metric::Click => "click",
            Metric::BotClick => "bot_click",
            Metric::DuplicateClick => "duplicate_click",
            Metric::SuspiciousClick => "suspicious_click",
            Metric::Impression | Metric::SuspiciousImpression => return,
        };
        let data = ClickRecorded {
            clicked_at: rfc3339_ms(now_ms()),
            kind,
            placement: placement.map(str::to_owned),
            creative_id: creative,
            device: viewer.device.map(|d| d.as_str()),
            country: viewer.country.map(|c| c.as_str().to_owned()),
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= MAX_PENDING {
            metrics::counter!("reklama_events_clicks_dropped_total").increment(1);
            return;
        }
        pending.push(Pending { advert, data });
    }

    fn take(&self) -> Vec<Pending> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts a batch that could not be written back in front of what came since.
    fn restore(&self, mut batch: Vec<Pending>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let room = MAX_PENDING.saturating_sub(pending.len());
        batch.truncate(room);
        batch.append(&mut pending);
        *pending = batch;
    }

    /// Writes what is queued; the batch goes back to the queue when the database is unavailable.
    pub async fn write(&self, db: &Db) -> Result<usize, DbError> {
        let batch = self.take();
        if batch.is_empty() {
            return Ok(0);
        }
        let kept = batch.clone();
        let written = db
            .run(move |conn| {
                db::transaction(conn, |conn| {
                    let owners = super::store::owners_of(conn, batch.iter().map(|p| p.advert.0))?;
                    let new: Vec<NewEvent> = batch
                        .iter()
                        .filter_map(|p| {
                            let customer = owners.get(&p.advert.0)?;
                            Some(NewEvent::new(
                                EventType::ClickRecorded,
                                CustomerId(*customer),
                                Some(p.advert),
                                &p.data,
                            ))
                        })
                        .collect();
                    events::record(conn, &new)?;
                    Ok::<_, DbError>(new.len())
                })
            })
            .await;
        if written.is_err() {
            self.restore(kept);
        }
        written
    }

    /// The writer loop; writes what is left once more when `cancel` fires.
    pub fn spawn(&self, db: Db, cancel: CancellationToken) -> JoinHandle<()> {
        let events = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WRITE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let stopping = tokio::select! {
                    _ = cancel.cancelled() => true,
                    _ = tick.tick() => false,
                };
                if let Err(e) = events.write(&db).await {
                    tracing::debug!(error = %e, "click events not written yet; kept for the next round");
                }
                if stopping {
                    break;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clicks_are_queued_and_the_queue_is_bounded() {
        let events = ClickEvents::default();
        events.push(
            AdvertId(1),
            Metric::Impression,
            None,
            None,
            Viewer::default(),
        );
        events.push(
            AdvertId(1),
            Metric::BotClick,
            Some("banner"),
            Some(3),
            Viewer::default(),
        );
        let taken = events.take();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].data.kind, "bot_click");
        assert_eq!(taken[0].data.placement.as_deref(), Some("banner"));
        events.restore(taken);
        assert_eq!(events.take().len(), 1);
        for _ in 0..MAX_PENDING + 5 {
            events.push(AdvertId(2), Metric::Click, None, None, Viewer::default());
        }
        assert_eq!(events.take().len(), MAX_PENDING);
    }
}
