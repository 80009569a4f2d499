//! An advert's creatives: every combination of its image, titles and texts, numbered within the
//! advert (`advert_creatives`), with the customer's say over each (`active`, `paused`,
//! `pinned`). A combination keeps its number while it stays on the advert, so counts per
//! creative keep their meaning across edits; one that leaves is `retired`.
//!
//! `GET /api/v1/adverts/{id}/creatives` lists them; `PATCH .../creatives/{creative_id}` sets a
//! status (both in `http.rs`).

use diesel::prelude::*;
use serde::Serialize;

use crate::domain::creative::{CreativeId, CreativeStatus, combinations, servable};
use crate::domain::{Advert, AdvertId, AdvertStatus, CustomerId};
use crate::platform::db::schema::{advert_creatives, adverts};
use crate::platform::db::{self, DbConnection, DbError};

use super::error::IntakeError;
use super::outbox::bumped_updated_at;

/// A creative as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = advert_creatives)]
pub struct CreativeRow {
    pub number: i32,
    pub image_index: i32,
    pub title: String,
    pub body: String,
    pub status: CreativeStatus,
}

impl CreativeRow {
    pub fn id(&self) -> CreativeId {
        CreativeId(u32::try_from(self.number).unwrap_or(0))
    }
}

fn statuses(rows: &[CreativeRow]) -> Vec<(CreativeId, CreativeStatus)> {
    rows.iter().map(|r| (r.id(), r.status)).collect()
}

/// The advert's servable creatives (the pinned ones if any, else the active ones), by number.
pub fn servable_rows(conn: &mut DbConnection, advert: AdvertId) -> QueryResult<Vec<CreativeRow>> {
    let all = rows(conn, advert)?;
    let chosen = servable(&statuses(&all));
    Ok(all
        .into_iter()
        .filter(|r| chosen.contains(&r.id()))
        .collect())
}

fn rows(conn: &mut DbConnection, advert: AdvertId) -> QueryResult<Vec<CreativeRow>> {
    advert_creatives::table
        .filter(advert_creatives::advert_id.eq(advert.0))
        .select(CreativeRow::as_select())
        .order(advert_creatives::number)
        .load(conn)
}

/// Brings the advert's creatives in line with its titles and texts (in the transaction that
/// changed them): a combination already numbered keeps its number and status (a retired one
/// becomes active again), a new one gets the next number, one no longer on the advert is
/// retired.
pub fn sync(conn: &mut DbConnection, advert: &Advert, now: i64) -> Result<(), DbError> {
    let existing = rows(conn, advert.id)?;
    let wanted = combinations(advert.images().count(), &advert.titles(), &advert.texts());
    let mut next = existing.iter().map(|r| r.number).max().unwrap_or(0) + 1;
    let mut kept = Vec::with_capacity(wanted.len());
    for combination in &wanted {
        let image = i32::try_from(combination.image).unwrap_or(0);
        match existing.iter().find(|r| {
            r.image_index == image && r.title == combination.title && r.body == combination.text
        }) {
            Some(row) => {
                kept.push(row.number);
                if row.status == CreativeStatus::Retired {
                    set(conn, advert.id, row.number, CreativeStatus::Active)?;
                }
            }
            None => {
                diesel::insert_into(advert_creatives::table)
                    .values((
                        advert_creatives::advert_id.eq(advert.id.0),
                        advert_creatives::number.eq(next),
                        advert_creatives::image_index.eq(image),
                        advert_creatives::title.eq(&combination.title),
                        advert_creatives::body.eq(&combination.text),
                        advert_creatives::status.eq(CreativeStatus::Active),
                        advert_creatives::created_at.eq(now),
                    ))
                    .execute(conn)?;
                kept.push(next);
                next += 1;
            }
        }
    }
    diesel::update(
        advert_creatives::table
            .filter(advert_creatives::advert_id.eq(advert.id.0))
            .filter(advert_creatives::number.ne_all(kept)),
    )
    .set(advert_creatives::status.eq(CreativeStatus::Retired))
    .execute(conn)?;
    Ok(())
}

/// Refuses a change that leaves the advert nothing to serve (every creative it still has is
/// paused): its transaction then rolls back.
pub fn ensure_servable(conn: &mut DbConnection, advert: AdvertId) -> Result<(), IntakeError> {
    if servable(&statuses(&rows(conn, advert)?)).is_empty() {
        return Err(last_creative());
    }
    Ok(())
}

fn last_creative() -> IntakeError {
    IntakeError::Conflict {
        code: "last_creative",
        message: "the advert would have no creative to serve: resume a creative, or pause the \
                  advert instead"
            .into(),
    }
}

fn set(
    conn: &mut DbConnection,
    advert: AdvertId,
    number: i32,
    status: CreativeStatus,
) -> QueryResult<usize> {
    diesel::update(advert_creatives::table.find((advert.0, number)))
        .set(advert_creatives::status.eq(status))
        .execute(conn)
}

/// Whether `owner` owns the live advert `id`.
fn owns(conn: &mut DbConnection, id: AdvertId, owner: CustomerId) -> QueryResult<bool> {
    let found: Option<i64> = adverts::table
        .filter(adverts::id.eq(id.0))
        .filter(adverts::customer_id.eq(owner.0))
        .filter(adverts::status.ne(AdvertStatus::Deleted))
        .select(adverts::id)
        .first(conn)
        .optional()?;
    Ok(found.is_some())
}

/// The creatives of a customer's advert, by number.
pub fn list(
    conn: &mut DbConnection,
    id: AdvertId,
    owner: CustomerId,
) -> Result<Vec<CreativeRow>, IntakeError> {
    if !owns(conn, id, owner)? {
        return Err(IntakeError::NotFound);
    }
    Ok(rows(conn, id)?)
}

/// Sets a creative's status. A retired creative cannot be set, and the last servable creative
/// cannot be paused (the advert would be served with nothing: pause the advert instead). Bumps
/// the advert's `updated_at`, so every instance reloads its cards, and queues a rendering of
/// the variants (composed placements are drawn for servable creatives only).
pub fn set_status(
    conn: &mut DbConnection,
    id: AdvertId,
    owner: CustomerId,
    change: (CreativeId, CreativeStatus),
    now: i64,
    max_attempts: u32,
) -> Result<(CreativeRow, String), IntakeError> {
    let (creative, status) = change;
    db::transaction(conn, |conn| {
        let link_code: Option<String> = diesel::update(
            adverts::table
                .filter(adverts::id.eq(id.0))
                .filter(adverts::customer_id.eq(owner.0))
                .filter(adverts::status.ne(AdvertStatus::Deleted)),
        )
        .set(bumped_updated_at(now))
        .returning(adverts::link_code)
        .get_result(conn)
        .optional()?;
        let link_code = link_code.ok_or(IntakeError::NotFound)?;
        let mut all = rows(conn, id)?;
        let number = i32::try_from(creative.0).map_err(|_| IntakeError::NoCreative)?;
        let Some(at) = all.iter().position(|r| r.number == number) else {
            return Err(IntakeError::NoCreative);
        };
        if all[at].status == CreativeStatus::Retired {
            return Err(IntakeError::Conflict {
                code: "retired",
                message: "the creative's title or text is no longer on the advert".into(),
            });
        }
        let before = servable(&statuses(&all));
        all[at].status = status;
        let after = servable(&statuses(&all));
        if after.is_empty() {
            return Err(last_creative());
        }
        set(conn, id, number, status)?;
        if before != after {
            let payload = super::outbox::OffloadPayload { advert_id: id };
            crate::platform::jobs::enqueue(
                conn,
                super::outbox::VARIANTS_JOB,
                &payload.to_json(),
                max_attempts,
            )?;
        }
        Ok((all.swap_remove(at), link_code))
    })
}

/// A creative as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreativeView {
    /// The creative's number within the advert: `creative_id` in cards and reports.
    #[schema(value_type = u32, example = 2)]
    pub creative_id: CreativeId,
    /// The position of its image on the advert (0: the first).
    pub image_index: u32,
    pub title: String,
    pub text: String,
    pub status: CreativeStatus,
}

impl From<CreativeRow> for CreativeView {
    fn from(row: CreativeRow) -> Self {
        Self {
            creative_id: row.id(),
            image_index: u32::try_from(row.image_index).unwrap_or(0),
            title: row.title,
            text: row.body,
            status: row.status,
        }
    }
}
