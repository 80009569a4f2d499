//! Variants in the database: one row per advert, placement, image and composed creative,
//! replaced whole when regenerated.

use diesel::prelude::*;

use crate::domain::{AdvertId, AdvertStatus, CustomerId, VariantStatus};
use crate::platform::db::schema::{advert_images, advert_variants, adverts};
use crate::platform::db::{self, DbConnection, DbError};

use super::super::outbox;
use super::{Outcome, Rendered};

/// What the customer sees of a variant (the image itself is served from `/media`).
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct VariantRow {
    pub placement: String,
    pub image_index: i32,
    /// The creative drawn in (composed placements); 0 where the words are not drawn.
    pub creative: i32,
    pub fingerprint: String,
    pub status: VariantStatus,
    pub reason: Option<String>,
    pub width: i32,
    pub height: i32,
    pub mime: Option<String>,
    pub hash: Option<String>,
    pub byte_len: i32,
    pub title: String,
    pub text: String,
    /// The part of the source the image shows (zeros when there is none).
    pub crop: (i32, i32, i32, i32),
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// What variants are rendered from: an advert's images (their creatives' hashes, the first
/// first) and words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub image_hashes: Vec<String>,
    pub title: String,
    pub text: String,
    /// The titles and texts after the first, as stored (composed creatives draw them).
    pub more_titles: String,
    pub more_texts: String,
    /// The advert's own call to action (`None`: its language's default).
    pub cta: Option<String>,
}

/// Replaces the advert's variants and bumps its `updated_at`, so every instance's serving picks
/// the new variants up with its next change poll. Only if the advert still has the content they
/// were rendered from: otherwise nothing is written and `false` returned (the change that
/// replaced the content queued a rendering of its own).
pub fn save(
    conn: &mut DbConnection,
    advert: AdvertId,
    content: &Content,
    rendered: &[Rendered],
    now: i64,
) -> Result<bool, DbError> {
    let saved = db::transaction(conn, |conn| {
        // The first statement writes: on PostgreSQL it locks the advert's row, so a content
        // change waits for this transaction or it for one.
        let Some((first_image, more_images)) = content.image_hashes.split_first() else {
            return Ok(false);
        };
        let same = adverts::table
            .find(advert.0)
            .filter(adverts::image_hash.eq(first_image))
            .filter(adverts::title.eq(&content.title))
            .filter(adverts::body.eq(&content.text))
            .filter(adverts::more_titles.eq(&content.more_titles))
            .filter(adverts::more_texts.eq(&content.more_texts));
        let bump = outbox::bumped_updated_at(now);
        let current = match &content.cta {
            Some(cta) => diesel::update(same.filter(adverts::cta.eq(cta)))
                .set(bump)
                .execute(conn)?,
            None => diesel::update(same.filter(adverts::cta.is_null()))
                .set(bump)
                .execute(conn)?,
        };
        if current == 0 {
            return Ok(false);
        }
        let stored_more: Vec<String> = advert_images::table
            .filter(advert_images::advert_id.eq(advert.0))
            .order(advert_images::image_index)
            .select(advert_images::hash)
            .load(conn)?;
        if stored_more != more_images {
            // Rolls the bump back too.
            return Err(DbError::Query(diesel::result::Error::RollbackTransaction));
        }
        diesel::delete(advert_variants::table.filter(advert_variants::advert_id.eq(advert.0)))
            .execute(conn)?;
        for variant in rendered {
            let base = (
                advert_variants::advert_id.eq(advert.0),
                advert_variants::placement.eq(&variant.placement),
                advert_variants::image_index.eq(int(variant.image)),
                advert_variants::creative.eq(int(variant.creative.0)),
                advert_variants::fingerprint.eq(&variant.fingerprint),
                advert_variants::updated_at.eq(now),
            );
            match &variant.outcome {
                Outcome::Ready(ready) => {
                    diesel::insert_into(advert_variants::table)
                        .values((
                            base,
                            advert_variants::status.eq(VariantStatus::Ready),
                            advert_variants::reason.eq(None::<String>),
                            advert_variants::width.eq(int(ready.width)),
                            advert_variants::height.eq(int(ready.height)),
                            advert_variants::mime.eq(Some(ready.mime)),
                            advert_variants::hash.eq(Some(&ready.hash)),
                            advert_variants::bytes.eq(Some(&ready.bytes)),
                            advert_variants::byte_len
                                .eq(i32::try_from(ready.bytes.len()).unwrap_or(i32::MAX)),
                            advert_variants::title.eq(&ready.title),
                            advert_variants::body.eq(&ready.text),
                            (
                                advert_variants::crop_x.eq(int(ready.crop.x)),
                                advert_variants::crop_y.eq(int(ready.crop.y)),
                                advert_variants::crop_w.eq(int(ready.crop.width)),
                                advert_variants::crop_h.eq(int(ready.crop.height)),
                            ),
                        ))
                        .execute(conn)?;
                }
                Outcome::Unsuitable(reason) => {
                    diesel::insert_into(advert_variants::table)
                        .values((
                            base,
                            advert_variants::status.eq(VariantStatus::Unsuitable),
                            advert_variants::reason.eq(Some(reason)),
                            advert_variants::width.eq(0),
                            advert_variants::height.eq(0),
                            advert_variants::mime.eq(None::<&str>),
                            advert_variants::hash.eq(None::<String>),
                            advert_variants::bytes.eq(None::<Vec<u8>>),
                            advert_variants::byte_len.eq(0),
                            advert_variants::title.eq(""),
                            advert_variants::body.eq(""),
                            (
                                advert_variants::crop_x.eq(0),
                                advert_variants::crop_y.eq(0),
                                advert_variants::crop_w.eq(0),
                                advert_variants::crop_h.eq(0),
                            ),
                        ))
                        .execute(conn)?;
                }
            }
        }
        let customer: i64 = adverts::table
            .find(advert.0)
            .select(adverts::customer_id)
            .first(conn)?;
        let ready = outbox::variants_ready(rendered.iter().map(|r| {
            let unsuitable = match &r.outcome {
                Outcome::Ready(_) => None,
                Outcome::Unsuitable(reason) => Some(reason.as_str()),
            };
            (r.placement.as_str(), unsuitable)
        }));
        outbox::record_variants_ready(conn, advert, CustomerId(customer), &ready)?;
        Ok(true)
    });
    match saved {
        // The images changed meanwhile: nothing was written.
        Err(DbError::Query(diesel::result::Error::RollbackTransaction)) => Ok(false),
        other => other,
    }
}

/// Marks every variant of the advert pending (its content changed): none is served, and the
/// variants list shows them pending, until the variants job has rendered the new content.
pub fn mark_pending(conn: &mut DbConnection, advert: AdvertId, now: i64) -> QueryResult<usize> {
    diesel::update(advert_variants::table.filter(advert_variants::advert_id.eq(advert.0)))
        .set((
            advert_variants::status.eq(VariantStatus::Pending),
            advert_variants::updated_at.eq(now),
        ))
        .execute(conn)
}

pub fn list(conn: &mut DbConnection, advert: AdvertId) -> Result<Vec<VariantRow>, DbError> {
    advert_variants::table
        .filter(advert_variants::advert_id.eq(advert.0))
        .select((
            advert_variants::placement,
            advert_variants::image_index,
            advert_variants::creative,
            advert_variants::fingerprint,
            advert_variants::status,
            advert_variants::reason,
            advert_variants::width,
            advert_variants::height,
            advert_variants::mime,
            advert_variants::hash,
            advert_variants::byte_len,
            advert_variants::title,
            advert_variants::body,
            (
                advert_variants::crop_x,
                advert_variants::crop_y,
                advert_variants::crop_w,
                advert_variants::crop_h,
            ),
        ))
        .order((
            advert_variants::placement,
            advert_variants::image_index,
            advert_variants::creative,
        ))
        .load(conn)
        .map_err(DbError::from)
}

/// The creatives the advert's composed placements were last drawn for, if every variant stored
/// is current (rendered for these fingerprints, none pending); `None` when a rendering is due
/// anyway.
pub fn composed_creatives(
    conn: &mut DbConnection,
    advert: AdvertId,
    fingerprints: &[String],
) -> Result<Option<std::collections::BTreeSet<i32>>, DbError> {
    let rows: Vec<(String, i32, VariantStatus)> = advert_variants::table
        .filter(advert_variants::advert_id.eq(advert.0))
        .select((
            advert_variants::fingerprint,
            advert_variants::creative,
            advert_variants::status,
        ))
        .load(conn)?;
    if rows.is_empty()
        || rows
            .iter()
            .any(|(f, _, status)| *status == VariantStatus::Pending || !fingerprints.contains(f))
    {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter()
            .map(|(_, creative, _)| creative)
            .filter(|c| *c != 0)
            .collect(),
    ))
}

/// Every advert that is not deleted (for a rebuild).
pub fn live_adverts(conn: &mut DbConnection) -> Result<Vec<AdvertId>, DbError> {
    adverts::table
        .filter(adverts::status.ne(AdvertStatus::Deleted))
        .select(adverts::id)
        .load::<i64>(conn)
        .map(|ids| ids.into_iter().map(AdvertId).collect())
        .map_err(DbError::from)
}
