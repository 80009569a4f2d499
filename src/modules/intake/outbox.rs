//! What a committed change of an advert leaves for others, written in the change's own
//! transaction: the jobs it queues (the cloud clone, its sync, the placements' rendering), each
//! naming the advert, and the `updated_at` every instance polls to see it.

use diesel::dsl::case_when;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use serde::{Deserialize, Serialize};

use crate::domain::AdvertId;
use crate::platform::db::schema::adverts;

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
