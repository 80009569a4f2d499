//! Serving's database reads: the servable facts of adverts (read-only on intake's tables), and
//! delivery totals from tracking's counters to seed the live cap counters.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel::sql_types::BigInt;

use crate::domain::creative::{CreativeId, CreativeStatus, servable};
use crate::domain::{AdvertId, AdvertStatus, VariantStatus};
use crate::platform::db::schema::{
    advert_creatives, advert_images, advert_variants, adverts, creative_arms, creatives,
};
use crate::platform::db::{self, DbConnection, DbError};

/// What serving needs of an advert.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = adverts)]
pub struct AdvertRow {
    pub id: i64,
    pub title: String,
    pub body: String,
    pub genre: String,
    pub lang: Option<String>,
    pub link_code: String,
    pub status: AdvertStatus,
    pub weight: i32,
    pub starts_at: Option<i64>,
    pub ends_at: Option<i64>,
    pub max_impressions: Option<i64>,
    pub max_clicks: Option<i64>,
    pub daily_max_impressions: Option<i64>,
    pub image_hash: String,
    pub updated_at: i64,
    pub targeting: Option<String>,
    pub pacing: String,
}

impl AdvertRow {
    pub fn is_active(&self) -> bool {
        self.status == AdvertStatus::Active
    }
}

/// Every active advert, for a cold start.
pub fn active_adverts(conn: &mut DbConnection) -> Result<Vec<AdvertRow>, DbError> {
    adverts::table
        .filter(adverts::status.eq(AdvertStatus::Active))
        .select(AdvertRow::as_select())
        .load(conn)
        .map_err(DbError::from)
}

/// Adverts changed at or after `since_ms`, whatever their status (a paused or deleted one must
/// leave the index).
pub fn changed_since(conn: &mut DbConnection, since_ms: i64) -> Result<Vec<AdvertRow>, DbError> {
    adverts::table
        .filter(adverts::updated_at.ge(since_ms))
        .select(AdvertRow::as_select())
        .load(conn)
        .map_err(DbError::from)
}

pub fn advert(conn: &mut DbConnection, id: AdvertId) -> Result<Option<AdvertRow>, DbError> {
    adverts::table
        .find(id.0)
        .select(AdvertRow::as_select())
        .first(conn)
        .optional()
        .map_err(DbError::from)
}

/// A creative's words, as serving shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreativeCopy {
    pub id: CreativeId,
    /// Which of the advert's images it shows (0: the first).
    pub image_index: i32,
    /// That image's hash, for an image after the first (the first is the advert's own).
    pub image_hash: Option<String>,
    pub title: String,
    pub text: String,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = advert_creatives)]
struct CreativeRow {
    advert_id: i64,
    number: i32,
    image_index: i32,
    title: String,
    body: String,
    status: CreativeStatus,
}

/// The servable creatives of each advert that has some (the pinned ones if any, else the
/// active ones), by number. `None`: every active advert's.
pub fn servable_creatives(
    conn: &mut DbConnection,
    ids: Option<&[i64]>,
) -> Result<HashMap<i64, Vec<CreativeCopy>>, DbError> {
    // Bound the bound parameters of one statement (SQLite allows 32 766).
    if let Some(ids) = ids.filter(|ids| ids.len() > 500) {
        let mut all = HashMap::new();
        for chunk in ids.chunks(500) {
            all.extend(servable_creatives(conn, Some(chunk))?);
        }
        return Ok(all);
    }
    let (active, pinned) = (CreativeStatus::Active, CreativeStatus::Pinned);
    let order = (advert_creatives::advert_id, advert_creatives::number);
    let loaded: Vec<CreativeRow> = match ids {
        Some(ids) => advert_creatives::table
            .filter(advert_creatives::advert_id.eq_any(ids))
            .filter(
                advert_creatives::status
                    .eq(active)
                    .or(advert_creatives::status.eq(pinned)),
            )
            .select(CreativeRow::as_select())
            .order(order)
            .load(conn)?,
        None => advert_creatives::table
            .inner_join(adverts::table)
            .filter(adverts::status.eq(AdvertStatus::Active))
            .filter(
                advert_creatives::status
                    .eq(active)
                    .or(advert_creatives::status.eq(pinned)),
            )
            .select(CreativeRow::as_select())
            .order(order)
            .load(conn)?,
    };
    // The hashes of the images after the first, for the adverts whose creatives show one.
    let mut with_more: Vec<i64> = loaded
        .iter()
        .filter(|r| r.image_index > 0)
        .map(|r| r.advert_id)
        .collect();
    with_more.dedup();
    let more: HashMap<(i64, i32), String> = if with_more.is_empty() {
        HashMap::new()
    } else {
        advert_images::table
            .filter(advert_images::advert_id.eq_any(&with_more))
            .select((
                advert_images::advert_id,
                advert_images::image_index,
                advert_images::hash,
            ))
            .load::<(i64, i32, String)>(conn)?
            .into_iter()
            .map(|(advert, index, hash)| ((advert, index), hash))
            .collect()
    };
    let mut grouped: HashMap<i64, Vec<CreativeRow>> = HashMap::new();
    for row in loaded {
        grouped.entry(row.advert_id).or_default().push(row);
    }
    Ok(grouped
        .into_iter()
        .map(|(advert, rows)| {
            let id = |r: &CreativeRow| CreativeId(u32::try_from(r.number).unwrap_or(0));
            let statuses: Vec<(CreativeId, CreativeStatus)> =
                rows.iter().map(|r| (id(r), r.status)).collect();
            let chosen = servable(&statuses);
            let copies = rows
                .into_iter()
                .filter(|r| chosen.contains(&id(r)))
                // A creative whose image is gone (a PATCH just replaced the images) is not
                // served until its row follows.
                .filter(|r| r.image_index == 0 || more.contains_key(&(advert, r.image_index)))
                .map(|r| CreativeCopy {
                    id: id(&r),
                    image_index: r.image_index,
                    image_hash: more.get(&(advert, r.image_index)).cloned(),
                    title: r.title,
                    text: r.body,
                })
                .collect();
            (advert, copies)
        })
        .collect())
}

/// The servable creatives of one advert.
pub fn creatives_of(conn: &mut DbConnection, id: AdvertId) -> Result<Vec<CreativeCopy>, DbError> {
    Ok(servable_creatives(conn, Some(&[id.0]))?
        .remove(&id.0)
        .unwrap_or_default())
}

#[derive(QueryableByName)]
struct TotalsRow {
    #[diesel(sql_type = BigInt)]
    advert_id: i64,
    #[diesel(sql_type = BigInt)]
    impressions: i64,
    #[diesel(sql_type = BigInt)]
    clicks: i64,
    #[diesel(sql_type = BigInt)]
    day_impressions: i64,
}

/// Flushed totals of `ids`: [impressions, clicks, impressions since `day_start`] by advert
/// (adverts without any row are left out).
pub fn delivered(
    conn: &mut DbConnection,
    ids: &[AdvertId],
    day_start: i64,
) -> Result<HashMap<AdvertId, [u64; 3]>, DbError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    // Ids are integers: written into the statement, they cannot change its meaning.
    let list = ids
        .iter()
        .map(|id| id.0.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let rows: Vec<TotalsRow> = diesel::sql_query(format!(
        "SELECT advert_id, CAST(COALESCE(SUM(impressions), 0) AS BIGINT) AS impressions, \
           CAST(COALESCE(SUM(clicks), 0) AS BIGINT) AS clicks, \
           CAST(COALESCE(SUM(CASE WHEN bucket >= $1 THEN impressions ELSE 0 END), 0) AS BIGINT) \
             AS day_impressions \
         FROM advert_stats WHERE advert_id IN ({list}) GROUP BY advert_id"
    ))
    // Counts are kept per UTC hour: a day starting within an hour (a time zone a half or
    // three quarters of an hour off) counts that whole hour, so it may hold a few impressions of
    // the day before (a daily cap stops a little early, never late).
    .bind::<BigInt, _>(day_start.div_euclid(3600) * 3600)
    .load(conn)?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                AdvertId(r.advert_id),
                [n(r.impressions), n(r.clicks), n(r.day_impressions)],
            )
        })
        .collect())
}

/// The owner of a live (not deleted) advert.
pub fn owner(conn: &mut DbConnection, id: AdvertId) -> Result<Option<i64>, DbError> {
    adverts::table
        .find(id.0)
        .filter(adverts::status.ne(AdvertStatus::Deleted))
        .select(adverts::customer_id)
        .first(conn)
        .optional()
        .map_err(DbError::from)
}

/// The customer and title of an advert that is not deleted.
pub fn owner_and_title(
    conn: &mut DbConnection,
    id: AdvertId,
) -> Result<Option<(i64, String)>, DbError> {
    adverts::table
        .find(id.0)
        .filter(adverts::status.ne(AdvertStatus::Deleted))
        .select((adverts::customer_id, adverts::title))
        .first(conn)
        .optional()
        .map_err(DbError::from)
}

/// A ready placement variant, as a card shows it: one per image of the advert for a cropped
/// placement (`creative` 0), one per creative it was rendered for where composed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantCard {
    pub image_index: i32,
    pub creative: i32,
    pub title: String,
    pub text: String,
    pub width: i32,
    pub height: i32,
    pub hash: String,
    pub mime: String,
}

/// An active advert with its ready variants for `placement` (none: `None`).
pub fn variant_cards(
    conn: &mut DbConnection,
    id: AdvertId,
    placement: &str,
) -> Result<Option<(AdvertRow, Vec<VariantCard>)>, DbError> {
    let Some(row) = advert(conn, id)? else {
        return Ok(None);
    };
    type Found = (
        i32,
        i32,
        String,
        String,
        i32,
        i32,
        Option<String>,
        Option<String>,
    );
    let found: Vec<Found> = advert_variants::table
        .filter(advert_variants::advert_id.eq(id.0))
        .filter(advert_variants::placement.eq(placement))
        .filter(advert_variants::status.eq(VariantStatus::Ready))
        .select((
            advert_variants::image_index,
            advert_variants::creative,
            advert_variants::title,
            advert_variants::body,
            advert_variants::width,
            advert_variants::height,
            advert_variants::hash,
            advert_variants::mime,
        ))
        .order((advert_variants::image_index, advert_variants::creative))
        .load(conn)?;
    let variants: Vec<VariantCard> = found
        .into_iter()
        .filter_map(
            |(image_index, creative, title, text, width, height, hash, mime)| {
                Some(VariantCard {
                    image_index,
                    creative,
                    title,
                    text,
                    width,
                    height,
                    hash: hash?,
                    mime: mime?,
                })
            },
        )
        .collect();
    Ok((!variants.is_empty()).then_some((row, variants)))
}

/// An advert with a ready variant for a placement.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = advert_variants)]
pub struct ReadyPlacement {
    pub advert_id: i64,
    pub placement: String,
}

/// Every ready variant's (advert, placement), or those of `ids`.
pub fn ready_placements(
    conn: &mut DbConnection,
    ids: Option<&[i64]>,
) -> Result<Vec<ReadyPlacement>, DbError> {
    let mut query = advert_variants::table
        .filter(advert_variants::status.eq(VariantStatus::Ready))
        .select(ReadyPlacement::as_select())
        .into_boxed();
    if let Some(ids) = ids {
        query = query.filter(advert_variants::advert_id.eq_any(ids.to_vec()));
    }
    query.load(conn).map_err(DbError::from)
}

/// An image as `/media` serves it.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = creatives)]
pub struct StoredImage {
    pub hash: String,
    pub mime: String,
    pub bytes: Vec<u8>,
}

/// One of an advert's compressed images (the first, or one after it), if its hash is `hash`.
pub fn creative_image(
    conn: &mut DbConnection,
    id: AdvertId,
    hash: &str,
) -> Result<Option<StoredImage>, DbError> {
    let first = creatives::table
        .find(id.0)
        .filter(creatives::hash.eq(hash))
        .select(StoredImage::as_select())
        .first(conn)
        .optional()?;
    if first.is_some() {
        return Ok(first);
    }
    advert_images::table
        .filter(advert_images::advert_id.eq(id.0))
        .filter(advert_images::hash.eq(hash))
        .select((
            advert_images::hash,
            advert_images::mime,
            advert_images::bytes,
        ))
        .first::<(String, String, Vec<u8>)>(conn)
        .optional()
        .map(|found| found.map(|(hash, mime, bytes)| StoredImage { hash, mime, bytes }))
        .map_err(DbError::from)
}

/// A ready variant's image, if its hash is `hash`.
pub fn variant_image(
    conn: &mut DbConnection,
    id: AdvertId,
    placement: &str,
    hash: &str,
) -> Result<Option<StoredImage>, DbError> {
    type Found = (Option<String>, Option<String>, Option<Vec<u8>>);
    let row: Option<Found> = advert_variants::table
        .filter(advert_variants::advert_id.eq(id.0))
        .filter(advert_variants::placement.eq(placement))
        .filter(advert_variants::status.eq(VariantStatus::Ready))
        // Another hash reads nothing, the bytes least of all.
        .filter(advert_variants::hash.eq(hash))
        .select((
            advert_variants::hash,
            advert_variants::mime,
            advert_variants::bytes,
        ))
        .first(conn)
        .optional()?;
    Ok(row.and_then(|(hash, mime, bytes)| {
        Some(StoredImage {
            hash: hash?,
            mime: mime?,
            bytes: bytes?,
        })
    }))
}

/// One arm's new counts, to add: (advert, placement field, creative, [impressions, clicks]).
pub type ArmDelta<'a> = (AdvertId, &'a str, CreativeId, [u64; 2]);

/// One arm as stored: (advert, placement field, creative, impressions, clicks).
pub type ArmRow = (i64, String, i32, i64, i64);

const ARM_COLUMNS: (
    creative_arms::advert_id,
    creative_arms::placement,
    creative_arms::creative,
    creative_arms::impressions,
    creative_arms::clicks,
) = (
    creative_arms::advert_id,
    creative_arms::placement,
    creative_arms::creative,
    creative_arms::impressions,
    creative_arms::clicks,
);

/// Every stored arm of an active advert (a start-up without Redis learns on from them).
pub fn active_arms(conn: &mut DbConnection) -> Result<Vec<ArmRow>, DbError> {
    creative_arms::table
        .inner_join(adverts::table.on(adverts::id.eq(creative_arms::advert_id)))
        .filter(adverts::status.eq(AdvertStatus::Active))
        .select(ARM_COLUMNS)
        .load(conn)
        .map_err(DbError::from)
}

/// The learner's counts of each advert's creatives, per placement.
struct CreativeArms;

impl db::Table for CreativeArms {
    const NAME: &'static str = "creative_arms";
    const KEYS: &'static [&'static str] = &["advert_id", "placement", "creative"];
    const COUNTS: &'static [&'static str] = &["impressions", "clicks"];
}

/// Adds the learner's new counts (`deltas`) and reads back every arm of `adverts`, in one
/// transaction.
pub fn add_and_read_arms(
    conn: &mut DbConnection,
    deltas: &[ArmDelta<'_>],
    adverts: &[AdvertId],
) -> Result<Vec<ArmRow>, DbError> {
    let signed = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let rows = db::sum_by_key(
        deltas
            .iter()
            .map(|(advert, placement, creative, [impressions, clicks])| {
                let key = (advert.0, *placement, i64::from(creative.0));
                (key, [signed(*impressions), signed(*clicks)])
            })
            .collect(),
        |counts| counts,
        |sum, more| {
            for (sum, more) in sum.iter_mut().zip(more) {
                *sum = sum.saturating_add(more);
            }
        },
    );
    db::transaction(conn, |conn| {
        db::add_up::<CreativeArms, _, _>(conn, rows)?;
        let mut arms = Vec::new();
        // Bound the bound parameters of one statement (SQLite allows 32 766).
        for chunk in adverts.chunks(500) {
            let ids: Vec<i64> = chunk.iter().map(|a| a.0).collect();
            arms.extend(
                creative_arms::table
                    .filter(creative_arms::advert_id.eq_any(ids))
                    .select(ARM_COLUMNS)
                    .load::<ArmRow>(conn)?,
            );
        }
        Ok(arms)
    })
}
