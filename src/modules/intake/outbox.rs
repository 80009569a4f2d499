//! What a committed change of an advert leaves for others, written in the change's own
//! transaction: the jobs it queues (the cloud clone, its sync, the placements' rendering), each
//! naming the advert, the `updated_at` every instance polls to see it, and the events it
//! records for the outside world.

use diesel::dsl::case_when;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use serde::{Deserialize, Serialize};

use crate::domain::events::EventType;
use crate::domain::{Advert, AdvertId, AdvertStatus, CustomerId};
use crate::platform::db::DbConnection;
use crate::platform::db::schema::adverts;
use crate::platform::events::{self, NewEvent};
use crate::platform::urls::PublicUrls;

use super::view::AdvertView;

/// Copies the advert and its original to the cloud store.
pub const OFFLOAD_JOB: &str = "advert.offload";
/// Rewrites the JSON clone of an advert already in the cloud store after it changed.
pub const CLONE_SYNC_JOB: &str = "advert.sync_clone";
/// Renders the advert's placement variants.
pub const VARIANTS_JOB: &str = "advert.variants";

/// The payload of every advert job: the advert it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffloadPayload {
    pub advert_id: AdvertId,
}

impl OffloadPayload {
    pub fn to_json(self) -> String {
        format!("{{\"advert_id\":{}}}", self.advert_id)
    }
}

/// `updated_at` for a change made now: the clock, or one past the stored value if the clock has
/// not moved past it (two changes in one millisecond, or a clock step back), so every change
/// moves it forward and instances polling it see each one.
#[diesel::dsl::auto_type]
pub fn bumped_updated_at(now: i64) -> _ {
    let later: diesel::dsl::Add<adverts::updated_at, i64> = adverts::updated_at + 1i64;
    let when: diesel::dsl::case_when<diesel::dsl::Lt<adverts::updated_at, i64>, i64, BigInt> =
        case_when::<_, _, BigInt>(adverts::updated_at.lt(now), now);
    adverts::updated_at.eq(when.otherwise(later))
}

/// The `data` of `advert.created`, `advert.updated`, `advert.paused`, `advert.resumed` and
/// `advert.deleted`: the fields the change set and the advert as it is after it, exactly as
/// `GET /api/v1/adverts/{id}` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdvertChanged {
    /// The fields the change set, as the API names them (`images` for new images); empty for
    /// `advert.created`.
    #[schema(example = json!(["status"]))]
    pub changed: Vec<&'static str>,
    pub advert: AdvertView,
}

/// The `data` of `advert.offloaded`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdvertOffloaded {
    /// When the full record reached the cloud store (RFC 3339).
    #[schema(example = "2026-12-03T10:00:02.123Z")]
    pub offloaded_at: String,
}

/// The `data` of `advert.variants_ready`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VariantsReady {
    /// The placements with a creative ready to serve.
    #[schema(example = json!(["banner_300x250", "story_1080x1920"]))]
    pub ready: Vec<String>,
    /// The placements the advert cannot fill, with the reason (as in the variants list).
    pub unsuitable: Vec<UnsuitablePlacement>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UnsuitablePlacement {
    pub placement: String,
    pub reason: String,
}

/// Records intake's advert events in the change's own transaction. It holds the public URLs,
/// so that the advert in an event reads as the API shows it.
#[derive(Clone)]
pub struct AdvertEvents {
    urls: PublicUrls,
}

impl AdvertEvents {
    pub fn new(urls: PublicUrls) -> Self {
        Self { urls }
    }

    /// `advert.created`.
    pub fn created(&self, conn: &mut DbConnection, advert: &Advert) -> QueryResult<()> {
        self.record(conn, EventType::AdvertCreated, advert, Vec::new())
    }

    /// What a change of `changed` fields records: `advert.updated` when it set anything but the
    /// status, `advert.paused` or `advert.resumed` when the status really moved.
    pub fn updated(
        &self,
        conn: &mut DbConnection,
        advert: &Advert,
        changed: Vec<&'static str>,
        status_moved: bool,
    ) -> QueryResult<()> {
        if changed.iter().any(|f| *f != "status") {
            self.record(conn, EventType::AdvertUpdated, advert, changed.clone())?;
        }
        if status_moved {
            let kind = match advert.status {
                AdvertStatus::Paused => EventType::AdvertPaused,
                _ => EventType::AdvertResumed,
            };
            self.record(conn, kind, advert, vec!["status"])?;
        }
        Ok(())
    }

    /// `advert.deleted`.
    pub fn deleted(&self, conn: &mut DbConnection, advert: &Advert) -> QueryResult<()> {
        self.record(conn, EventType::AdvertDeleted, advert, vec!["status"])
    }

    fn record(
        &self,
        conn: &mut DbConnection,
        kind: EventType,
        advert: &Advert,
        changed: Vec<&'static str>,
    ) -> QueryResult<()> {
        let data = AdvertChanged {
            changed,
            advert: AdvertView::new(advert.clone(), &self.urls),
        };
        events::record(
            conn,
            &[NewEvent::new(
                kind,
                advert.customer_id,
                Some(advert.id),
                &data,
            )],
        )
    }
}

/// `advert.offloaded`, in the transaction that marks the advert offloaded.
pub fn record_offloaded(
    conn: &mut DbConnection,
    advert: AdvertId,
    customer: CustomerId,
    at_ms: i64,
) -> QueryResult<()> {
    let data = AdvertOffloaded {
        offloaded_at: events::rfc3339_ms(at_ms),
    };
    events::record(
        conn,
        &[NewEvent::new(
            EventType::AdvertOffloaded,
            customer,
            Some(advert),
            &data,
        )],
    )
}

/// Which copy to the cloud store failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CopyJob {
    /// The first copy of the advert and its original (`advert.offload`).
    Offload,
    /// Bringing the copy up to date after a change (`advert.sync_clone`).
    Sync,
}

/// The `data` of `advert.offload_failed`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdvertOffloadFailed {
    /// The advert's title, as it was when the copy failed.
    #[schema(example = "Winter sale")]
    pub title: String,
    pub job: CopyJob,
    /// The last attempt's error.
    #[schema(example = "the cloud store answered 503")]
    pub error: String,
}

/// Records `advert.offload_failed`.
pub fn record_copy_failed(
    conn: &mut DbConnection,
    advert: AdvertId,
    customer: CustomerId,
    title: String,
    job: CopyJob,
    error: &str,
) -> QueryResult<()> {
    let data = AdvertOffloadFailed {
        title,
        job,
        error: error.to_owned(),
    };
    events::record(
        conn,
        &[NewEvent::new(
            EventType::AdvertOffloadFailed,
            customer,
            Some(advert),
            &data,
        )],
    )
}

/// What a rendering made of each placement, from `(placement, reason it is unsuitable)` per
/// variant: a placement is ready when any of its variants is, else unsuitable for its first
/// variant's reason.
pub fn variants_ready<'a>(
    variants: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> VariantsReady {
    let mut verdicts: std::collections::BTreeMap<&str, Option<&str>> = Default::default();
    for (placement, unsuitable) in variants {
        verdicts
            .entry(placement)
            .and_modify(|seen| {
                if unsuitable.is_none() {
                    *seen = None;
                }
            })
            .or_insert(unsuitable);
    }
    let mut ready = VariantsReady {
        ready: Vec::new(),
        unsuitable: Vec::new(),
    };
    for (placement, verdict) in verdicts {
        match verdict {
            None => ready.ready.push(placement.to_owned()),
            Some(reason) => ready.unsuitable.push(UnsuitablePlacement {
                placement: placement.to_owned(),
                reason: reason.to_owned(),
            }),
        }
    }
    ready
}

/// `advert.variants_ready`, in the transaction that stores the variants.
pub fn record_variants_ready(
    conn: &mut DbConnection,
    advert: AdvertId,
    customer: CustomerId,
    data: &VariantsReady,
) -> QueryResult<()> {
    events::record(
        conn,
        &[NewEvent::new(
            EventType::AdvertVariantsReady,
            customer,
            Some(advert),
            data,
        )],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placement_is_ready_when_any_variant_is() {
        let made = variants_ready([
            ("story", Some("too small")),
            ("banner", None),
            ("story", None),
            ("wide", Some("too narrow")),
            ("wide", Some("other")),
        ]);
        assert_eq!(made.ready, ["banner", "story"]);
        assert_eq!(made.unsuitable.len(), 1);
        assert_eq!(made.unsuitable[0].placement, "wide");
        assert_eq!(made.unsuitable[0].reason, "too narrow");
    }
}
