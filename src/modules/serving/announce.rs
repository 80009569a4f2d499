//! Serving's events: an advert stopped delivering because it reached a cap, or because its
//! `ends_at` passed. Every instance looks after each sync; the event id is derived from what it
//! reports (advert, cap and day; advert and end), so however many instances see it, and however
//! often, it is recorded once.

use std::collections::HashSet;

use serde::Serialize;

use crate::domain::AdvertId;
use crate::domain::CustomerId;
use crate::domain::events::EventType;
use crate::platform::db::{Db, DbError};
use crate::platform::events::{self, NewEvent, rfc3339_ms};

use super::delivery::{CapKind, Reached};
use super::store;

/// The `data` of `advert.cap_reached`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CapReached {
    /// The advert's title.
    #[schema(example = "Winter sale")]
    pub title: String,
    pub cap: CapKind,
    /// The cap's value.
    #[schema(example = 10000)]
    pub limit: u64,
    /// For `daily_max_impressions`: the day (`YYYY-MM-DD`) in the advert's time zone; `null`
    /// for the other caps.
    #[schema(example = "2026-12-03")]
    pub day: Option<String>,
}

/// The `data` of `advert.ended`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdvertEnded {
    /// The advert's title.
    #[schema(example = "Winter sale")]
    pub title: String,
    /// The advert's `ends_at` (RFC 3339).
    #[schema(example = "2026-12-31T23:00:00.000Z")]
    pub ends_at: String,
}

/// One thing to announce, and the key it is recorded once under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Notice {
    Cap(Reached),
    Ended { advert: AdvertId, ends_at: i64 },
}

impl Notice {
    fn advert(&self) -> AdvertId {
        match self {
            Self::Cap(r) => r.advert,
            Self::Ended { advert, .. } => *advert,
        }
    }

    fn key(&self) -> String {
        match self {
            Self::Cap(r) => format!(
                "advert.cap_reached:{}:{:?}:{}",
                r.advert,
                r.cap,
                r.day.as_deref().unwrap_or("-")
            ),
            Self::Ended { advert, ends_at } => format!("advert.ended:{advert}:{ends_at}"),
        }
    }

    fn event(&self, customer: CustomerId, title: String) -> NewEvent {
        match self {
            Self::Cap(r) => NewEvent::new(
                EventType::AdvertCapReached,
                customer,
                Some(r.advert),
                &CapReached {
                    title,
                    cap: r.cap,
                    limit: r.limit,
                    day: r.day.clone(),
                },
            ),
            Self::Ended { advert, ends_at } => NewEvent::new(
                EventType::AdvertEnded,
                customer,
                Some(*advert),
                &AdvertEnded {
                    title,
                    ends_at: rfc3339_ms(*ends_at),
                },
            ),
        }
    }
}

/// The notices of the last round that this instance recorded (or found recorded), so a cap
/// that stays reached costs one write per instance. Only the last round's are kept: an end is
/// reported in one round only, and a cap no longer reported is no longer reached, so the set
/// stays as small as what is reached now (a cap reached again later is written again, and
/// `record_once` finds it recorded).
#[derive(Default)]
pub struct Announced {
    seen: HashSet<Notice>,
}

impl Announced {
    /// Records the notices not seen in the last round; if that fails, all of them are tried
    /// again next time.
    pub async fn record(&mut self, db: &Db, notices: Vec<Notice>) -> Result<usize, DbError> {
        let (fresh, known): (Vec<Notice>, Vec<Notice>) =
            notices.into_iter().partition(|n| !self.seen.contains(n));
        if fresh.is_empty() {
            self.seen = known.into_iter().collect();
            return Ok(0);
        }
        let batch = fresh.clone();
        let recorded = db
            .run(move |conn| {
                let mut recorded = 0;
                for notice in &batch {
                    let Some((customer, title)) = store::owner_and_title(conn, notice.advert())?
                    else {
                        continue;
                    };
                    let event = notice.event(CustomerId(customer), title);
                    if events::record_once(conn, &notice.key(), &event)? {
                        recorded += 1;
                    }
                }
                Ok::<_, DbError>(recorded)
            })
            .await?;
        self.seen = known.into_iter().chain(fresh).collect();
        Ok(recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_advert_the_cap_and_the_day() {
        let daily = |day: &str| {
            Notice::Cap(Reached {
                advert: AdvertId(7),
                cap: CapKind::DailyMaxImpressions,
                limit: 10,
                day: Some(day.into()),
            })
        };
        assert_eq!(daily("2026-12-03").key(), daily("2026-12-03").key());
        assert_ne!(daily("2026-12-03").key(), daily("2026-12-04").key());
        let ended = |at| Notice::Ended {
            advert: AdvertId(7),
            ends_at: at,
        };
        assert_ne!(ended(1).key(), ended(2).key());
    }
}
