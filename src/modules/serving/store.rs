//! Serving's database reads: the servable facts of adverts (read-only on intake's tables), and
//! delivery totals from tracking's counters to seed the live cap counters.

use diesel::prelude::*;
use diesel::sql_types::BigInt;

use crate::domain::AdvertId;
use crate::platform::db::schema::adverts;
use crate::platform::db::{DbConnection, DbError};

/// What serving needs of an advert.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct AdvertRow {
    pub id: i64,
    pub title: String,
    pub body: String,
    pub genre: String,
    pub lang: Option<String>,
    pub link_code: String,
    pub status: String,
    pub weight: i32,
    pub starts_at: Option<i64>,
    pub ends_at: Option<i64>,
    pub max_impressions: Option<i64>,
    pub max_clicks: Option<i64>,
    pub daily_max_impressions: Option<i64>,
    pub image_hash: String,
    pub updated_at: i64,
}

type Columns = (
    adverts::id,
    adverts::title,
    adverts::body,
    adverts::genre,
    adverts::lang,
    adverts::link_code,
    adverts::status,
    adverts::weight,
    adverts::starts_at,
    adverts::ends_at,
    adverts::max_impressions,
    adverts::max_clicks,
    adverts::daily_max_impressions,
    adverts::image_hash,
    adverts::updated_at,
);

const COLUMNS: Columns = (
    adverts::id,
    adverts::title,
    adverts::body,
    adverts::genre,
    adverts::lang,
    adverts::link_code,
    adverts::status,
    adverts::weight,
    adverts::starts_at,
    adverts::ends_at,
    adverts::max_impressions,
    adverts::max_clicks,
    adverts::daily_max_impressions,
    adverts::image_hash,
    adverts::updated_at,
);

/// Every active advert, for a cold start.
pub fn active_adverts(conn: &mut DbConnection) -> Result<Vec<AdvertRow>, DbError> {
    adverts::table
        .filter(adverts::status.eq("active"))
        .select(COLUMNS)
        .load(conn)
        .map_err(DbError::from)
}

/// Adverts changed at or after `since_ms`, whatever their status (a paused or deleted one must
/// leave the index).
pub fn changed_since(conn: &mut DbConnection, since_ms: i64) -> Result<Vec<AdvertRow>, DbError> {
    adverts::table
        .filter(adverts::updated_at.ge(since_ms))
        .select(COLUMNS)
        .load(conn)
        .map_err(DbError::from)
}

pub fn advert(conn: &mut DbConnection, id: AdvertId) -> Result<Option<AdvertRow>, DbError> {
    adverts::table
        .find(id.0)
        .select(COLUMNS)
        .first(conn)
        .optional()
        .map_err(DbError::from)
}

#[derive(QueryableByName)]
struct TotalsRow {
    #[diesel(sql_type = BigInt)]
    impressions: i64,
    #[diesel(sql_type = BigInt)]
    clicks: i64,
    #[diesel(sql_type = BigInt)]
    day_impressions: i64,
}

/// Flushed totals of one advert: (impressions, clicks, impressions since `day_start`).
pub fn delivered(
    conn: &mut DbConnection,
    id: AdvertId,
    day_start: i64,
) -> Result<(u64, u64, u64), DbError> {
    let row: TotalsRow = diesel::sql_query(
        "SELECT CAST(COALESCE(SUM(impressions), 0) AS BIGINT) AS impressions, \
           CAST(COALESCE(SUM(clicks), 0) AS BIGINT) AS clicks, \
           CAST(COALESCE(SUM(CASE WHEN bucket >= $2 THEN impressions ELSE 0 END), 0) AS BIGINT) \
             AS day_impressions \
         FROM advert_stats WHERE advert_id = $1",
    )
    .bind::<BigInt, _>(id.0)
    .bind::<BigInt, _>(day_start)
    .get_result(conn)?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok((n(row.impressions), n(row.clicks), n(row.day_impressions)))
}

/// The owner of a live (not deleted) advert.
pub fn owner(conn: &mut DbConnection, id: AdvertId) -> Result<Option<i64>, DbError> {
    adverts::table
        .find(id.0)
        .filter(adverts::status.ne("deleted"))
        .select(adverts::customer_id)
        .first(conn)
        .optional()
        .map_err(DbError::from)
}
