//! Intake's database access: adverts, their creatives and staged originals, and the outbox job
//! that is written in the same transaction.

use diesel::prelude::*;

use crate::domain::advert::{
    AdvertPatch, AdvertText, CallToAction, CreativeInfo, DeliveryCaps, Lang, OffloadStatus, Pacing,
    Title, time_from_ms, time_to_ms,
};
use crate::domain::targeting::Targeting;
use crate::domain::{Advert, AdvertId, AdvertStatus, CustomerId, Genre, NewAdvert, TargetUrl};
use crate::platform::db::schema::{advert_images, advert_originals, adverts, creatives};
use crate::platform::db::{self, DbConnection, DbError, now_ms};
use crate::platform::jobs;
use crate::platform::tokens::random_base62;

use super::creative::Creative;
use super::error::IntakeError;
use super::input::schedule_error;
use super::outbox::{
    AdvertEvents, CLONE_SYNC_JOB, OFFLOAD_JOB, OffloadPayload, VARIANTS_JOB, bumped_updated_at,
};

/// Length of a tracked link's code: 12 base62 characters, about 71 bits, so codes cannot be
/// guessed or enumerated.
pub const LINK_CODE_LEN: usize = crate::domain::LINK_CODE_LEN;

/// An advert as its row stores it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = adverts)]
struct AdvertRow {
    id: i64,
    customer_id: i64,
    title: String,
    body: String,
    genre: String,
    lang: Option<String>,
    target_url: String,
    link_code: String,
    status: AdvertStatus,
    weight: i32,
    starts_at: Option<i64>,
    ends_at: Option<i64>,
    max_impressions: Option<i64>,
    max_clicks: Option<i64>,
    daily_max_impressions: Option<i64>,
    image_hash: String,
    image_width: i32,
    image_height: i32,
    source_format: String,
    source_width: i32,
    source_height: i32,
    offload_status: OffloadStatus,
    offloaded_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    cta: Option<String>,
    more_titles: String,
    more_texts: String,
    targeting: Option<String>,
    conversion_tracking: bool,
    pacing: String,
}

/// A list of titles or texts as a JSON array of strings (the columns `more_titles`,
/// `more_texts`).
pub(super) fn stored_list<T: AsRef<str>>(values: &[T]) -> String {
    let values: Vec<&str> = values.iter().map(AsRef::as_ref).collect();
    serde_json::to_string(&values).unwrap_or_else(|_| "[]".to_owned())
}

/// Reads a stored list back, each value parsed as on intake.
fn parse_list<T>(
    raw: &str,
    parse: impl Fn(&str) -> Result<T, crate::domain::advert::Invalid>,
) -> Result<Vec<T>, String> {
    let values: Vec<String> = serde_json::from_str(raw).map_err(|e| e.to_string())?;
    values
        .iter()
        .map(|v| parse(v).map_err(|e| e.message))
        .collect()
}

/// Rebuilds an `Advert` from its row. Rows are written only by this module from validated
/// values, so a value that no longer parses means the database was edited by hand: it is
/// reported as a query error rather than trusted.
/// An image after the first, as `advert_images` stores it (without its bytes).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = advert_images)]
struct MoreImageRow {
    advert_id: i64,
    hash: String,
    width: i32,
    height: i32,
    source_format: String,
    source_width: i32,
    source_height: i32,
}

fn dimension(v: i32) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// The images after the first of each of these adverts, in order.
fn more_images(
    conn: &mut DbConnection,
    ids: &[i64],
) -> QueryResult<std::collections::HashMap<i64, Vec<CreativeInfo>>> {
    let rows: Vec<MoreImageRow> = advert_images::table
        .filter(advert_images::advert_id.eq_any(ids))
        .order((advert_images::advert_id, advert_images::image_index))
        .select(MoreImageRow::as_select())
        .load(conn)?;
    let mut by_advert: std::collections::HashMap<i64, Vec<CreativeInfo>> = Default::default();
    for row in rows {
        by_advert
            .entry(row.advert_id)
            .or_default()
            .push(CreativeInfo {
                hash: row.hash,
                width: dimension(row.width),
                height: dimension(row.height),
                source_mime: row.source_format,
                source_width: dimension(row.source_width),
                source_height: dimension(row.source_height),
            });
    }
    Ok(by_advert)
}

/// Adverts from their rows, each with its images after the first.
fn adverts_from_rows(
    conn: &mut DbConnection,
    rows: Vec<AdvertRow>,
) -> Result<Vec<Advert>, DbError> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut more = more_images(conn, &ids)?;
    rows.into_iter()
        .map(|row| {
            let images = more.remove(&row.id).unwrap_or_default();
            advert_from_row(row).map(|mut advert| {
                advert.more_images = images;
                advert
            })
        })
        .collect()
}

fn advert_from_row(row: AdvertRow) -> Result<Advert, DbError> {
    let id = row.id;
    let corrupt = |what: &str, detail: String| {
        DbError::Query(diesel::result::Error::DeserializationError(
            format!("advert {id}: stored {what} is invalid: {detail}").into(),
        ))
    };
    let unsigned = |v: Option<i64>| v.and_then(|n| u64::try_from(n).ok());
    Ok(Advert {
        id: AdvertId(row.id),
        customer_id: CustomerId(row.customer_id),
        title: Title::parse(&row.title).map_err(|e| corrupt("title", e.message))?,
        text: AdvertText::parse(&row.body).map_err(|e| corrupt("text", e.message))?,
        more_titles: parse_list(&row.more_titles, Title::parse)
            .map_err(|e| corrupt("more_titles", e))?,
        more_texts: parse_list(&row.more_texts, AdvertText::parse)
            .map_err(|e| corrupt("more_texts", e))?,
        genre: Genre::parse(&row.genre).map_err(|e| corrupt("genre", e.to_string()))?,
        lang: match &row.lang {
            Some(l) => Some(Lang::parse(l).map_err(|e| corrupt("lang", e.message))?),
            None => None,
        },
        cta: match &row.cta {
            Some(c) => Some(CallToAction::parse(c).map_err(|e| corrupt("cta", e.message))?),
            None => None,
        },
        target_url: TargetUrl::parse(&row.target_url)
            .map_err(|e| corrupt("target_url", e.to_string()))?,
        status: row.status,
        offload_status: row.offload_status,
        link_code: row.link_code,
        weight: u32::try_from(row.weight).unwrap_or(1),
        starts_at: row.starts_at.map(time_from_ms),
        ends_at: row.ends_at.map(time_from_ms),
        caps: DeliveryCaps {
            max_impressions: unsigned(row.max_impressions),
            max_clicks: unsigned(row.max_clicks),
            daily_max_impressions: unsigned(row.daily_max_impressions),
            pacing: Pacing::from_stored(&row.pacing)
                .ok_or_else(|| corrupt("pacing", format!("unknown pacing {:?}", row.pacing)))?,
        },
        targeting: Targeting::from_stored(row.targeting.as_deref())
            .map_err(|e| corrupt("targeting", e))?,
        conversion_tracking: row.conversion_tracking,
        creative: CreativeInfo {
            hash: row.image_hash,
            width: dimension(row.image_width),
            height: dimension(row.image_height),
            source_mime: row.source_format,
            source_width: dimension(row.source_width),
            source_height: dimension(row.source_height),
        },
        more_images: Vec::new(),
        offloaded_at: row.offloaded_at.map(time_from_ms),
        created_at: time_from_ms(row.created_at),
        updated_at: time_from_ms(row.updated_at),
    })
}

fn signed(v: Option<u64>) -> Option<i64> {
    v.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// Stores a new advert, its images (the first's creative and original; the others' in
/// `advert_images`) and its jobs, all or nothing. Retries with a fresh link code in the
/// (astronomically unlikely) event of a collision.
pub fn insert_advert(
    conn: &mut DbConnection,
    customer: CustomerId,
    advert: &NewAdvert,
    images: &[NewImage<'_>],
    max_attempts: u32,
    events: &AdvertEvents,
) -> Result<Advert, DbError> {
    let Some((first, more)) = images.split_first() else {
        return Err(DbError::Query(diesel::result::Error::QueryBuilderError(
            "an advert needs an image".into(),
        )));
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let code = random_base62(LINK_CODE_LEN);
        match db::transaction(conn, |conn| {
            insert_once(conn, customer, advert, (first, more), max_attempts, &code).and_then(
                |advert| {
                    events.created(conn, &advert)?;
                    Ok(advert)
                },
            )
        }) {
            Err(e) if e.is_unique_violation() && attempt < 3 => continue,
            other => return other,
        }
    }
}

fn insert_once(
    conn: &mut DbConnection,
    customer: CustomerId,
    advert: &NewAdvert,
    (image, more_images): (&NewImage<'_>, &[NewImage<'_>]),
    max_attempts: u32,
    code: &str,
) -> Result<Advert, DbError> {
    let (creative, original) = (image.creative, image.original);
    let now = now_ms();
    let id: i64 = diesel::insert_into(adverts::table)
        .values((
            adverts::customer_id.eq(customer.0),
            adverts::title.eq(advert.title.as_str()),
            adverts::body.eq(advert.text.as_str()),
            adverts::more_titles.eq(stored_list(&advert.more_titles)),
            adverts::more_texts.eq(stored_list(&advert.more_texts)),
            adverts::genre.eq(advert.genre.as_str()),
            adverts::lang.eq(advert.lang.as_ref().map(Lang::as_str)),
            adverts::cta.eq(advert.cta.as_ref().map(CallToAction::as_str)),
            adverts::target_url.eq(advert.target_url.as_str()),
            adverts::link_code.eq(code),
            adverts::status.eq(AdvertStatus::Active),
            adverts::weight.eq(i32::try_from(advert.weight).unwrap_or(1)),
            adverts::starts_at.eq(advert.starts_at.map(time_to_ms)),
            adverts::ends_at.eq(advert.ends_at.map(time_to_ms)),
            (
                adverts::max_impressions.eq(signed(advert.caps.max_impressions)),
                adverts::max_clicks.eq(signed(advert.caps.max_clicks)),
                adverts::daily_max_impressions.eq(signed(advert.caps.daily_max_impressions)),
                adverts::pacing.eq(advert.caps.pacing.as_str()),
            ),
            (
                adverts::targeting.eq(advert.targeting.to_stored()),
                adverts::conversion_tracking.eq(advert.conversion_tracking),
            ),
            (
                adverts::image_hash.eq(&creative.hash),
                adverts::image_width.eq(i32::try_from(creative.width).unwrap_or(0)),
                adverts::image_height.eq(i32::try_from(creative.height).unwrap_or(0)),
                adverts::source_format.eq(creative.source_format.mime()),
                adverts::source_width.eq(i32::try_from(creative.source_width).unwrap_or(0)),
                adverts::source_height.eq(i32::try_from(creative.source_height).unwrap_or(0)),
            ),
            adverts::offload_status.eq(OffloadStatus::Pending),
            adverts::created_at.eq(now),
            adverts::updated_at.eq(now),
        ))
        .returning(adverts::id)
        .get_result(conn)?;
    diesel::insert_into(creatives::table)
        .values((
            creatives::advert_id.eq(id),
            creatives::hash.eq(&creative.hash),
            creatives::mime.eq(creative.mime),
            creatives::width.eq(i32::try_from(creative.width).unwrap_or(0)),
            creatives::height.eq(i32::try_from(creative.height).unwrap_or(0)),
            creatives::bytes.eq(&creative.bytes),
        ))
        .execute(conn)?;
    diesel::insert_into(advert_originals::table)
        .values((
            advert_originals::advert_id.eq(id),
            advert_originals::mime.eq(creative.source_format.mime()),
            advert_originals::bytes.eq(original),
        ))
        .execute(conn)?;
    let payload = OffloadPayload {
        advert_id: AdvertId(id),
    };
    jobs::enqueue(conn, OFFLOAD_JOB, &payload.to_json(), max_attempts)?;
    jobs::enqueue(conn, VARIANTS_JOB, &payload.to_json(), max_attempts)?;
    if !more_images.is_empty() {
        put_more_images(conn, AdvertId(id), more_images)?;
    }
    let advert = find_advert(conn, AdvertId(id), None)?
        .ok_or(DbError::Query(diesel::result::Error::NotFound))?;
    super::creatives::sync(conn, &advert, now)?;
    Ok(advert)
}

/// One advert. With `owner`, what that customer's API sees: only their own, and not deleted.
/// Without, any advert, deleted or not (for the offload job).
pub fn find_advert(
    conn: &mut DbConnection,
    id: AdvertId,
    owner: Option<CustomerId>,
) -> Result<Option<Advert>, DbError> {
    let mut query = adverts::table
        .filter(adverts::id.eq(id.0))
        .select(AdvertRow::as_select())
        .into_boxed();
    if let Some(owner) = owner {
        query = query
            .filter(adverts::customer_id.eq(owner.0))
            .filter(adverts::status.ne(AdvertStatus::Deleted));
    }
    let Some(row) = query.first::<AdvertRow>(conn).optional()? else {
        return Ok(None);
    };
    Ok(adverts_from_rows(conn, vec![row])?.pop())
}

/// A customer's adverts (deleted ones left out), newest first, `limit` at a time, starting below
/// `before` (an id).
pub fn list_adverts(
    conn: &mut DbConnection,
    owner: CustomerId,
    before: Option<AdvertId>,
    limit: i64,
) -> Result<Vec<Advert>, DbError> {
    let mut query = adverts::table
        .filter(adverts::customer_id.eq(owner.0))
        .filter(adverts::status.ne(AdvertStatus::Deleted))
        .select(AdvertRow::as_select())
        .order(adverts::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(adverts::id.lt(before.0));
    }
    let rows = query.load::<AdvertRow>(conn)?;
    adverts_from_rows(conn, rows)
}

/// A new image for an advert: its creative and the original upload it was made from.
pub struct NewImage<'a> {
    pub creative: &'a Creative,
    pub original: &'a [u8],
}

impl<'a> From<&'a (Creative, Vec<u8>)> for NewImage<'a> {
    fn from((creative, original): &'a (Creative, Vec<u8>)) -> Self {
        Self { creative, original }
    }
}

/// Replaces the advert's images after the first with these (none: it has one image).
fn put_more_images(
    conn: &mut DbConnection,
    id: AdvertId,
    images: &[NewImage<'_>],
) -> Result<(), DbError> {
    diesel::delete(advert_images::table.filter(advert_images::advert_id.eq(id.0))).execute(conn)?;
    for (i, image) in images.iter().enumerate() {
        let c = image.creative;
        diesel::insert_into(advert_images::table)
            .values((
                advert_images::advert_id.eq(id.0),
                advert_images::image_index.eq(i32::try_from(i + 1).unwrap_or(i32::MAX)),
                advert_images::hash.eq(&c.hash),
                advert_images::mime.eq(c.mime),
                advert_images::width.eq(i32::try_from(c.width).unwrap_or(0)),
                advert_images::height.eq(i32::try_from(c.height).unwrap_or(0)),
                advert_images::bytes.eq(&c.bytes),
                advert_images::source_format.eq(c.source_format.mime()),
                advert_images::source_width.eq(i32::try_from(c.source_width).unwrap_or(0)),
                advert_images::source_height.eq(i32::try_from(c.source_height).unwrap_or(0)),
                advert_images::original.eq(image.original),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// The original upload of the advert's image at `index` (1 or 2): the placements of that image
/// are rendered from it.
pub fn find_more_original(
    conn: &mut DbConnection,
    id: AdvertId,
    index: i32,
) -> Result<Option<Vec<u8>>, DbError> {
    advert_images::table
        .find((id.0, index))
        .select(advert_images::original)
        .first(conn)
        .optional()
        .map_err(DbError::from)
}

/// Applies a customer's change to their advert and returns it as it now is. The owner check is
/// in the UPDATE itself (0 rows: not theirs, deleted or unknown). The schedule is checked on the
/// result, stored values included, and an inconsistent one rolls everything back.
///
/// A new title, text or image marks the placement variants pending and queues their rendering in
/// the same transaction, so no variant of the old content is served once this commits. A new
/// image replaces the creative and the staged original and queues the offload again (which
/// uploads the original and rewrites the clone); other changes queue a clone sync.
pub fn update_advert(
    conn: &mut DbConnection,
    id: AdvertId,
    owner: CustomerId,
    patch: &AdvertPatch,
    images: Option<&[NewImage<'_>]>,
    max_attempts: u32,
    events: &AdvertEvents,
) -> Result<Advert, IntakeError> {
    let now = now_ms();
    db::transaction(conn, |conn| {
        let updated = diesel::update(visible_to(id.0, owner.0))
            .set((
                patch.titles.as_deref().and_then(|t| {
                    let (first, more) = t.split_first()?;
                    Some((
                        adverts::title.eq(first.as_str()),
                        adverts::more_titles.eq(stored_list(more)),
                    ))
                }),
                patch.texts.as_deref().and_then(|t| {
                    let (first, more) = t.split_first()?;
                    Some((
                        adverts::body.eq(first.as_str()),
                        adverts::more_texts.eq(stored_list(more)),
                    ))
                }),
                patch
                    .cta
                    .as_ref()
                    .map(|c| adverts::cta.eq(c.as_ref().map(CallToAction::as_str))),
                patch
                    .weight
                    .map(|w| adverts::weight.eq(i32::try_from(w).unwrap_or(i32::MAX))),
                patch
                    .starts_at
                    .map(|t| adverts::starts_at.eq(t.map(time_to_ms))),
                patch
                    .ends_at
                    .map(|t| adverts::ends_at.eq(t.map(time_to_ms))),
                patch
                    .max_impressions
                    .map(|n| adverts::max_impressions.eq(signed(n))),
                patch.max_clicks.map(|n| adverts::max_clicks.eq(signed(n))),
                patch
                    .daily_max_impressions
                    .map(|n| adverts::daily_max_impressions.eq(signed(n))),
                (
                    patch
                        .targeting
                        .as_ref()
                        .map(|t| adverts::targeting.eq(t.to_stored())),
                    patch
                        .conversion_tracking
                        .map(|on| adverts::conversion_tracking.eq(on)),
                    patch.pacing.map(|p| adverts::pacing.eq(p.as_str())),
                ),
                bumped_updated_at(now),
            ))
            .execute(conn)?;
        if updated == 0 {
            return Err(IntakeError::NotFound);
        }
        // Apart, so that the event says whether the status really moved.
        let status_moved = match patch.status {
            Some(status) => {
                diesel::update(adverts::table.find(id.0).filter(adverts::status.ne(status)))
                    .set(adverts::status.eq(status))
                    .execute(conn)?
                    > 0
            }
            None => false,
        };
        if let Some((first, more)) = images.and_then(<[NewImage<'_>]>::split_first) {
            replace_image(conn, id, first)?;
            put_more_images(conn, id, more)?;
        }
        let advert = find_advert(conn, id, Some(owner))?.ok_or(IntakeError::NotFound)?;
        if let Some(error) = schedule_error(advert.starts_at, advert.ends_at) {
            return Err(IntakeError::Invalid(vec![error]));
        }
        if patch.titles.is_some() || patch.texts.is_some() || images.is_some() {
            super::creatives::sync(conn, &advert, now)?;
            super::creatives::ensure_servable(conn, id)?;
        }
        let payload = OffloadPayload { advert_id: id }.to_json();
        if patch.changes_content() || images.is_some() {
            super::variants::store::mark_pending(conn, id, now)?;
            jobs::enqueue(conn, VARIANTS_JOB, &payload, max_attempts)?;
        }
        if images.is_some() {
            jobs::enqueue(conn, OFFLOAD_JOB, &payload, max_attempts)?;
        } else {
            enqueue_clone_sync(conn, id, max_attempts)?;
        }
        let mut changed = patch.fields();
        if images.is_some() {
            changed.push("images");
        }
        events.updated(conn, &advert, changed, status_moved)?;
        Ok(advert)
    })
}

/// Swaps the advert's creative and staged original for new ones. The advert's offload starts
/// again: the new original is in the database until the offload job has put it in the cloud
/// store.
fn replace_image(
    conn: &mut DbConnection,
    id: AdvertId,
    image: &NewImage<'_>,
) -> Result<(), DbError> {
    let creative = image.creative;
    diesel::update(adverts::table.find(id.0))
        .set((
            adverts::image_hash.eq(&creative.hash),
            adverts::image_width.eq(i32::try_from(creative.width).unwrap_or(0)),
            adverts::image_height.eq(i32::try_from(creative.height).unwrap_or(0)),
            adverts::source_format.eq(creative.source_format.mime()),
            adverts::source_width.eq(i32::try_from(creative.source_width).unwrap_or(0)),
            adverts::source_height.eq(i32::try_from(creative.source_height).unwrap_or(0)),
            adverts::offload_status.eq(OffloadStatus::Pending),
            adverts::offloaded_at.eq(None::<i64>),
        ))
        .execute(conn)?;
    diesel::update(creatives::table.find(id.0))
        .set((
            creatives::hash.eq(&creative.hash),
            creatives::mime.eq(creative.mime),
            creatives::width.eq(i32::try_from(creative.width).unwrap_or(0)),
            creatives::height.eq(i32::try_from(creative.height).unwrap_or(0)),
            creatives::bytes.eq(&creative.bytes),
        ))
        .execute(conn)?;
    diesel::delete(advert_originals::table.find(id.0)).execute(conn)?;
    diesel::insert_into(advert_originals::table)
        .values((
            advert_originals::advert_id.eq(id.0),
            advert_originals::mime.eq(creative.source_format.mime()),
            advert_originals::bytes.eq(image.original),
        ))
        .execute(conn)?;
    Ok(())
}

/// Queues a rewrite of the advert's cloud clone, so that it follows the change.
fn enqueue_clone_sync(
    conn: &mut DbConnection,
    id: AdvertId,
    max_attempts: u32,
) -> QueryResult<i64> {
    let payload = OffloadPayload { advert_id: id };
    jobs::enqueue(conn, CLONE_SYNC_JOB, &payload.to_json(), max_attempts)
}

/// Soft-deletes a customer's advert: its status becomes `deleted` and the row stays (its link
/// answers 410, its counters stay). Returns its link code, or `None` if it was not theirs,
/// already deleted or unknown.
pub fn delete_advert(
    conn: &mut DbConnection,
    id: AdvertId,
    owner: CustomerId,
    max_attempts: u32,
    events: &AdvertEvents,
) -> Result<Option<String>, DbError> {
    let now = now_ms();
    db::transaction(conn, |conn| {
        let code: Option<String> = diesel::update(visible_to(id.0, owner.0))
            .set((
                adverts::status.eq(AdvertStatus::Deleted),
                bumped_updated_at(now),
            ))
            .returning(adverts::link_code)
            .get_result(conn)
            .optional()?;
        if code.is_some() {
            enqueue_clone_sync(conn, id, max_attempts)?;
            if let Some(advert) = find_advert(conn, id, None)? {
                events.deleted(conn, &advert)?;
            }
        }
        Ok(code)
    })
}

/// The advert `id` if `owner` owns it and it is not deleted: the target of a customer's change.
#[diesel::dsl::auto_type]
fn visible_to(id: i64, owner: i64) -> _ {
    let deleted: AdvertStatus = AdvertStatus::Deleted;
    adverts::table
        .filter(adverts::id.eq(id))
        .filter(adverts::customer_id.eq(owner))
        .filter(adverts::status.ne(deleted))
}

/// An original upload as staged in the database.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = advert_originals)]
pub struct Original {
    pub mime: String,
    pub bytes: Vec<u8>,
}

/// The original upload, kept in the database until it is safely in the cloud store.
pub fn find_original(conn: &mut DbConnection, id: AdvertId) -> Result<Option<Original>, DbError> {
    advert_originals::table
        .find(id.0)
        .select(Original::as_select())
        .first(conn)
        .optional()
        .map_err(DbError::from)
}

/// Records that the clone is in the cloud store and drops the staged original, in one step, if
/// the advert's image is still the one uploaded (`image_hash`). Returns false, changing nothing,
/// when the image was replaced meanwhile: the staged original is then the new one, and the
/// offload job queued with that change uploads it.
pub fn mark_offloaded(
    conn: &mut DbConnection,
    id: AdvertId,
    image_hash: &str,
    at_ms: i64,
) -> Result<bool, DbError> {
    db::transaction(conn, |conn| {
        let marked = diesel::update(
            adverts::table
                .find(id.0)
                .filter(adverts::image_hash.eq(image_hash)),
        )
        .set((
            adverts::offload_status.eq(OffloadStatus::Done),
            adverts::offloaded_at.eq(at_ms),
        ))
        .execute(conn)?;
        if marked == 0 {
            return Ok(false);
        }
        diesel::delete(advert_originals::table.find(id.0)).execute(conn)?;
        let customer: i64 = adverts::table
            .find(id.0)
            .select(adverts::customer_id)
            .first(conn)?;
        super::outbox::record_offloaded(conn, id, CustomerId(customer), at_ms)?;
        Ok(true)
    })
}

/// Marks the advert's first copy to the cloud store as failed for good and records
/// `advert.offload_failed`, in one transaction.
pub fn mark_offload_failed(
    conn: &mut DbConnection,
    id: AdvertId,
    error: &str,
) -> Result<(), DbError> {
    db::transaction(conn, |conn| {
        diesel::update(adverts::table.find(id.0))
            .set(adverts::offload_status.eq(OffloadStatus::Failed))
            .execute(conn)?;
        record_copy_failed(conn, id, super::outbox::CopyJob::Offload, error)
    })
}

/// Records `advert.offload_failed` for a copy of the advert that will not be tried again (an
/// advert deleted since records nothing).
pub fn record_copy_failed(
    conn: &mut DbConnection,
    id: AdvertId,
    job: super::outbox::CopyJob,
    error: &str,
) -> Result<(), DbError> {
    let owner: Option<(i64, String)> = adverts::table
        .find(id.0)
        .select((adverts::customer_id, adverts::title))
        .first(conn)
        .optional()?;
    if let Some((customer, title)) = owner {
        super::outbox::record_copy_failed(conn, id, CustomerId(customer), title, job, error)?;
    }
    Ok(())
}
