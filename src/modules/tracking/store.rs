//! Tracking's database access: link lookups (read-only on adverts), additive counter upserts
//! recorded with their flush ids, and report queries.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use serde::Serialize;

use crate::domain::creative::CreativeId;
use crate::domain::events::EventType;
use crate::domain::{AdvertId, AdvertStatus, CustomerId, Metric};
use crate::platform::db::schema::{
    advert_creative_stats, advert_placement_stats, advert_stats, adverts, counter_flushes,
};
use crate::platform::db::{self, Bind, DbConnection, DbError, now_ms};
use crate::platform::events::{self, NewEvent};

use super::counters::{Batch, Counts, ViewerGroup};

/// What the redirect needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = adverts)]
pub struct LinkRow {
    #[diesel(column_name = id, deserialize_as = i64)]
    pub advert_id: AdvertId,
    pub target_url: String,
    pub status: AdvertStatus,
    pub conversion_tracking: bool,
}

pub fn find_link(conn: &mut DbConnection, code: &str) -> Result<Option<LinkRow>, DbError> {
    adverts::table
        .filter(adverts::link_code.eq(code))
        .select(LinkRow::as_select())
        .first(conn)
        .optional()
        .map_err(DbError::from)
}

pub fn advert_owner(conn: &mut DbConnection, id: AdvertId) -> Result<Option<CustomerId>, DbError> {
    adverts::table
        .find(id.0)
        .select(adverts::customer_id)
        .first::<i64>(conn)
        .optional()
        .map(|o| o.map(CustomerId))
        .map_err(DbError::from)
}

/// The outcome of applying a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// Some of the flush ids were applied before (a replay after a crash); nothing was written.
    AlreadyApplied(Vec<String>),
}

/// How many ids a look-up asks for at once.
const IDS_PER_STATEMENT: usize = 256;

/// A row's counts as stored, in [`Metric::ALL`] order.
fn stored_counts(counts: &Counts) -> [i64; Metric::ALL.len()] {
    counts
        .values()
        .map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// The count columns of every counter table, in [`Metric::ALL`] order.
const COUNT_COLUMNS: [&str; Metric::ALL.len()] = {
    let mut columns = [""; Metric::ALL.len()];
    let mut i = 0;
    while i < columns.len() {
        columns[i] = Metric::ALL[i].column();
        i += 1;
    }
    columns
};

/// One table's rows of a flush: the counts of equal keys added up, zero sums left out, in the
/// order of the table's key ([`db::sum_by_key`]; a flush at 100 000 adverts writes a row for most
/// of them).
///
/// `rows` points into the batch: sorting these references and adding up neighbours holds about a
/// sixth of what a map of the sums would (a key and a pointer a row, against a key, six counts
/// and the map's spare room), and each sum lives only until its statement is written.
fn key_ordered<K: Ord>(rows: Vec<(K, &Counts)>) -> impl Iterator<Item = (K, Counts)> {
    db::sum_by_key(rows, |first| *first, |sum, more| *sum += more).filter(|(_, sum)| !sum.is_zero())
}

/// Adds one table's rows of a flush, in key order ([`db::add_up`]: a few cached statements).
/// The rows are summed from the batch as their statement is filled, not for the whole flush at
/// once: a flush at 100 000 adverts writes hundreds of thousands of rows.
fn add_counts<'a, T: db::Table, K: Ord + Bind>(
    conn: &mut DbConnection,
    rows: impl Iterator<Item = (K, &'a Counts)>,
) -> QueryResult<()> {
    let rows = key_ordered(rows.collect()).map(|(key, counts)| (key, stored_counts(&counts)));
    db::add_up::<T, _, _>(conn, rows)
}

/// The counter tables a flush adds to, each keyed by its advert, its hour and what the row
/// counts apart, with the counts of [`COUNT_COLUMNS`].
macro_rules! counter_tables {
    ($($name:ident = $table:literal ($($key:literal),+);)+) => {$(
        struct $name;

        impl db::Table for $name {
            const NAME: &'static str = $table;
            const KEYS: &'static [&'static str] = &[$($key),+];
            const COUNTS: &'static [&'static str] = &COUNT_COLUMNS;
        }
    )+};
}

counter_tables! {
    AdvertStats = "advert_stats" ("advert_id", "bucket");
    PlacementStats = "advert_placement_stats" ("advert_id", "bucket", "placement");
    CreativeStats = "advert_creative_stats" ("advert_id", "bucket", "creative");
    DeviceStats = "advert_device_stats" ("advert_id", "bucket", "device");
    CountryStats = "advert_country_stats" ("advert_id", "bucket", "country");
}

/// Which of `ids` the database has recorded.
pub fn flush_ids_present(conn: &mut DbConnection, ids: &[String]) -> Result<Vec<String>, DbError> {
    counter_flushes::table
        .filter(counter_flushes::flush_id.eq_any(ids))
        .select(counter_flushes::flush_id)
        .load(conn)
        .map_err(DbError::from)
}

/// Settles the fate of a Redis drain whose data Redis lost: if the database holds
/// `drain_id`, the drain was applied (`false`, unless `lost_id` says it was settled as lost
/// before); otherwise both ids are recorded, in one transaction, so that the drain can no longer
/// be applied, and the drain is lost (`true`): its pushers push their shares again. Instances
/// settling the same drain at once, or one applying it meanwhile, meet on the unique flush id;
/// the loser asks again.
pub fn settle_lost_drain(
    conn: &mut DbConnection,
    drain_id: &str,
    lost_id: &str,
) -> Result<bool, DbError> {
    let attempt = |conn: &mut DbConnection| {
        db::transaction(conn, |conn| {
            diesel::sql_query("UPDATE counter_flushes SET applied_at = applied_at WHERE 1 = 0")
                .execute(conn)?;
            let ids = [drain_id.to_owned(), lost_id.to_owned()];
            let seen: Vec<String> = counter_flushes::table
                .filter(counter_flushes::flush_id.eq_any(&ids))
                .select(counter_flushes::flush_id)
                .load(conn)?;
            if seen.iter().any(|id| id == drain_id) {
                return Ok::<_, DbError>(seen.iter().any(|id| id == lost_id));
            }
            let now = now_ms();
            for id in &ids {
                diesel::insert_into(counter_flushes::table)
                    .values((
                        counter_flushes::flush_id.eq(id),
                        counter_flushes::applied_at.eq(now),
                    ))
                    .execute(conn)?;
            }
            Ok(true)
        })
    };
    match attempt(conn) {
        Err(e) if e.is_unique_violation() => attempt(conn),
        other => other,
    }
}

/// Adds `batch` to the stored counters and records `flush_ids`, in one transaction: either the
/// deltas and their ids are stored together, or neither is.
pub fn apply_batch(
    conn: &mut DbConnection,
    batch: &Batch,
    flush_ids: &[String],
    flush_events: bool,
) -> Result<Applied, DbError> {
    db::transaction(conn, |conn| {
        // A duplicate id fails the insert below (PostgreSQL also when another instance applies
        // the same id concurrently).
        let seen: Vec<String> = counter_flushes::table
            .filter(counter_flushes::flush_id.eq_any(flush_ids))
            .select(counter_flushes::flush_id)
            .load(conn)?;
        if !seen.is_empty() {
            return Ok(Applied::AlreadyApplied(seen));
        }
        let now = now_ms();
        for id in flush_ids {
            diesel::insert_into(counter_flushes::table)
                .values((
                    counter_flushes::flush_id.eq(id),
                    counter_flushes::applied_at.eq(now),
                ))
                .execute(conn)?;
        }
        // Each table's rows are gathered, written and dropped before the next table's.
        let deltas = &batch.deltas;
        add_counts::<AdvertStats, _>(
            conn,
            deltas.iter().map(|(k, c)| ((k.advert.0, k.bucket), c)),
        )?;
        // Named placements', known creatives', devices' and countries' shares, in the same
        // transaction as the totals they split.
        add_counts::<PlacementStats, _>(
            conn,
            deltas
                .iter()
                .filter_map(|(k, c)| Some(((k.advert.0, k.bucket, k.placement.as_deref()?), c))),
        )?;
        add_counts::<CreativeStats, _>(
            conn,
            deltas
                .iter()
                .filter_map(|(k, c)| Some(((k.advert.0, k.bucket, i64::from(k.creative?.0)), c))),
        )?;
        add_counts::<DeviceStats, _>(
            conn,
            batch
                .groups
                .iter()
                .filter_map(|((advert, bucket, group), c)| match group {
                    ViewerGroup::Device(d) => Some(((advert.0, *bucket, d.as_str()), c)),
                    ViewerGroup::Country(_) => None,
                }),
        )?;
        add_counts::<CountryStats, _>(
            conn,
            batch
                .groups
                .iter()
                .filter_map(|((advert, bucket, group), c)| match group {
                    ViewerGroup::Country(country) => {
                        Some(((advert.0, *bucket, country.as_str()), c))
                    }
                    ViewerGroup::Device(_) => None,
                }),
        )?;
        if flush_events {
            record_flushed(conn, batch, flush_ids)?;
        }
        Ok(Applied::Done)
    })
}

/// The `data` of `stats.flushed`: what one flush added to one advert's counts in one hour.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatsFlushed {
    /// The flush that added these counts: unique per flush, the same in a repeated message.
    #[schema(example = "drain:6c1f0b2e:17")]
    pub flush_id: String,
    /// The hour the counts belong to (RFC 3339, UTC).
    #[schema(example = "2026-12-03T10:00:00Z")]
    pub hour: String,
    /// What the flush added in that hour (deltas, not totals).
    pub deltas: Counts,
}

/// The owner of each of `adverts` (duplicates allowed), by advert id: events name the customer.
pub fn owners_of(
    conn: &mut DbConnection,
    adverts: impl IntoIterator<Item = i64>,
) -> QueryResult<std::collections::HashMap<i64, i64>> {
    let mut ids: Vec<i64> = adverts.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut owners = std::collections::HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let rows: Vec<(i64, i64)> = adverts::table
            .filter(adverts::id.eq_any(chunk))
            .select((adverts::id, adverts::customer_id))
            .load(conn)?;
        owners.extend(rows);
    }
    Ok(owners)
}

/// `stats.flushed` for every advert and hour the batch adds to, in the flush's transaction.
fn record_flushed(
    conn: &mut DbConnection,
    batch: &Batch,
    flush_ids: &[String],
) -> Result<(), DbError> {
    // Oldest hour first, then by advert: the order consumers see within one flush.
    let totals: Vec<((i64, AdvertId), Counts)> = key_ordered(
        batch
            .deltas
            .iter()
            .map(|(k, c)| ((k.bucket, k.advert), c))
            .collect(),
    )
    .collect();
    let owners = owners_of(conn, totals.iter().map(|((_, a), _)| a.0))?;
    let flush_id = flush_ids.first().cloned().unwrap_or_default();
    let new: Vec<NewEvent> = totals
        .into_iter()
        .filter_map(|((bucket, advert), deltas)| {
            let customer = owners.get(&advert.0)?;
            let data = StatsFlushed {
                flush_id: flush_id.clone(),
                hour: super::report::rfc3339(bucket),
                deltas,
            };
            Some(NewEvent::new(
                EventType::StatsFlushed,
                CustomerId(*customer),
                Some(advert),
                &data,
            ))
        })
        .collect();
    events::record(conn, &new)?;
    Ok(())
}

/// Forgets flush ids older than `before_ms`; replays never reach that far back.
pub fn prune_flush_ids(conn: &mut DbConnection, before_ms: i64) -> Result<usize, DbError> {
    diesel::delete(counter_flushes::table.filter(counter_flushes::applied_at.lt(before_ms)))
        .execute(conn)
        .map_err(DbError::from)
}

/// Stored counts, in [`Metric::ALL`] order (negative ones, which nothing writes, as 0).
fn to_counts(values: [i64; Metric::ALL.len()]) -> Counts {
    Counts::from_values(values.map(|n| u64::try_from(n).unwrap_or(0)))
}

/// The counts of a row that has one field per count column.
macro_rules! stored_counts {
    ($row:expr) => {
        to_counts([
            $row.clicks,
            $row.bot_clicks,
            $row.duplicate_clicks,
            $row.impressions,
            $row.suspicious_clicks,
            $row.suspicious_impressions,
        ])
    };
}

/// An hour of one advert's counts, as `advert_stats` stores it.
#[derive(Queryable, Selectable)]
#[diesel(table_name = advert_stats)]
struct HourRow {
    bucket: i64,
    clicks: i64,
    bot_clicks: i64,
    duplicate_clicks: i64,
    impressions: i64,
    suspicious_clicks: i64,
    suspicious_impressions: i64,
}

/// A named placement's share of an hour, as `advert_placement_stats` stores it.
#[derive(Queryable, Selectable)]
#[diesel(table_name = advert_placement_stats)]
struct PlacementHourRow {
    bucket: i64,
    placement: String,
    clicks: i64,
    bot_clicks: i64,
    duplicate_clicks: i64,
    impressions: i64,
    suspicious_clicks: i64,
    suspicious_impressions: i64,
}

/// Hourly rows of one advert with `from <= bucket < to` (Unix seconds).
pub fn hourly_rows(
    conn: &mut DbConnection,
    advert: AdvertId,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, Counts)>, DbError> {
    let rows = advert_stats::table
        .filter(advert_stats::advert_id.eq(advert.0))
        .filter(advert_stats::bucket.ge(from))
        .filter(advert_stats::bucket.lt(to))
        .order(advert_stats::bucket)
        .select(HourRow::as_select())
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let counts = stored_counts!(r);
            (r.bucket, counts)
        })
        .collect())
}

/// Named placements' hourly shares of one advert with `from <= bucket < to`, by bucket then
/// placement.
pub fn hourly_placement_rows(
    conn: &mut DbConnection,
    advert: AdvertId,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, String, Counts)>, DbError> {
    let rows = advert_placement_stats::table
        .filter(advert_placement_stats::advert_id.eq(advert.0))
        .filter(advert_placement_stats::bucket.ge(from))
        .filter(advert_placement_stats::bucket.lt(to))
        .order((
            advert_placement_stats::bucket,
            advert_placement_stats::placement,
        ))
        .select(PlacementHourRow::as_select())
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let counts = stored_counts!(r);
            (r.bucket, r.placement, counts)
        })
        .collect())
}

/// Which viewers a group table splits by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKind {
    Device,
    Country,
}

/// A known device's or country's share of an hour.
#[derive(QueryableByName)]
struct GroupHourRow {
    #[diesel(sql_type = BigInt)]
    bucket: i64,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    clicks: i64,
    #[diesel(sql_type = BigInt)]
    bot_clicks: i64,
    #[diesel(sql_type = BigInt)]
    duplicate_clicks: i64,
    #[diesel(sql_type = BigInt)]
    impressions: i64,
    #[diesel(sql_type = BigInt)]
    suspicious_clicks: i64,
    #[diesel(sql_type = BigInt)]
    suspicious_impressions: i64,
}

/// The hourly shares of known devices (or countries) of an advert in `[from, to)`, sorted by
/// hour and name.
pub fn hourly_group_rows(
    conn: &mut DbConnection,
    advert: AdvertId,
    kind: GroupKind,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, String, Counts)>, DbError> {
    let (table, column) = match kind {
        GroupKind::Device => ("advert_device_stats", "device"),
        GroupKind::Country => ("advert_country_stats", "country"),
    };
    // Only integers are spliced in.
    let sql = format!(
        "SELECT bucket, {column} AS name, {} FROM {table} \
         WHERE advert_id = {} AND bucket >= {from} AND bucket < {to} ORDER BY bucket, {column}",
        Metric::ALL.map(Metric::column).join(", "),
        advert.0
    );
    let rows: Vec<GroupHourRow> = diesel::sql_query(sql).load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let counts = stored_counts!(r);
            (r.bucket, r.name, counts)
        })
        .collect())
}

/// A known creative's share of an hour, as `advert_creative_stats` stores it.
#[derive(Queryable, Selectable)]
#[diesel(table_name = advert_creative_stats)]
struct CreativeHourRow {
    bucket: i64,
    creative: i32,
    clicks: i64,
    bot_clicks: i64,
    duplicate_clicks: i64,
    impressions: i64,
    suspicious_clicks: i64,
    suspicious_impressions: i64,
}

/// Known creatives' hourly shares of one advert with `from <= bucket < to`, by bucket then
/// creative.
pub fn hourly_creative_rows(
    conn: &mut DbConnection,
    advert: AdvertId,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, CreativeId, Counts)>, DbError> {
    let rows = advert_creative_stats::table
        .filter(advert_creative_stats::advert_id.eq(advert.0))
        .filter(advert_creative_stats::bucket.ge(from))
        .filter(advert_creative_stats::bucket.lt(to))
        .order((
            advert_creative_stats::bucket,
            advert_creative_stats::creative,
        ))
        .select(CreativeHourRow::as_select())
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let counts = stored_counts!(r);
            let creative = CreativeId(u32::try_from(r.creative).unwrap_or(0));
            (r.bucket, creative, counts)
        })
        .collect())
}

#[derive(QueryableByName)]
struct TotalsRow {
    #[diesel(sql_type = BigInt)]
    advert_id: i64,
    #[diesel(sql_type = Text)]
    title: String,
    #[diesel(sql_type = Text)]
    status: AdvertStatus,
    #[diesel(embed)]
    counts: CountColumns,
}

/// The six counts as a query names them.
#[derive(QueryableByName)]
struct CountColumns {
    #[diesel(sql_type = BigInt)]
    clicks: i64,
    #[diesel(sql_type = BigInt)]
    bot_clicks: i64,
    #[diesel(sql_type = BigInt)]
    duplicate_clicks: i64,
    #[diesel(sql_type = BigInt)]
    impressions: i64,
    #[diesel(sql_type = BigInt)]
    suspicious_clicks: i64,
    #[diesel(sql_type = BigInt)]
    suspicious_impressions: i64,
}

/// One advert's all-time totals in a customer summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertTotals {
    pub advert_id: AdvertId,
    pub title: String,
    pub status: AdvertStatus,
    pub counts: Counts,
    /// Conversions reported, and their values in millionths.
    pub conversions: u64,
    pub conversion_micros: i64,
}

#[derive(QueryableByName)]
struct ConvertedTotalsRow {
    #[diesel(sql_type = BigInt)]
    advert_id: i64,
    #[diesel(sql_type = BigInt)]
    conversions: i64,
    #[diesel(sql_type = BigInt)]
    value_micros: i64,
}

#[derive(QueryableByName)]
struct CustomerHourRow {
    #[diesel(sql_type = BigInt)]
    advert_id: i64,
    #[diesel(sql_type = Text)]
    title: String,
    #[diesel(sql_type = BigInt)]
    bucket: i64,
    #[diesel(embed)]
    counts: CountColumns,
}

/// One of a customer's adverts over a period: its title, its hours with counts, and the
/// conversions of clicks in the period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertHours {
    pub advert_id: AdvertId,
    pub title: String,
    /// `(hour's start in Unix seconds, counts)`, in order; hours without counts left out.
    pub hours: Vec<(i64, Counts)>,
    pub conversions: u64,
}

/// Every advert of `customer` with counts or conversions in `[from, to)` (Unix seconds, whole
/// hours), by advert id.
pub fn customer_hours(
    conn: &mut DbConnection,
    customer: CustomerId,
    from: i64,
    to: i64,
) -> Result<Vec<AdvertHours>, DbError> {
    let rows: Vec<CustomerHourRow> = diesel::sql_query(
        "SELECT s.advert_id AS advert_id, a.title AS title, s.bucket AS bucket, \
           s.clicks AS clicks, s.bot_clicks AS bot_clicks, \
           s.duplicate_clicks AS duplicate_clicks, s.impressions AS impressions, \
           s.suspicious_clicks AS suspicious_clicks, \
           s.suspicious_impressions AS suspicious_impressions \
         FROM advert_stats s JOIN adverts a ON a.id = s.advert_id \
         WHERE a.customer_id = $1 AND s.bucket >= $2 AND s.bucket < $3 \
         ORDER BY s.advert_id, s.bucket",
    )
    .bind::<BigInt, _>(customer.0)
    .bind::<BigInt, _>(from)
    .bind::<BigInt, _>(to)
    .load(conn)?;
    let converted: Vec<ConvertedTitleRow> = diesel::sql_query(
        "SELECT c.advert_id AS advert_id, a.title AS title, COUNT(*) AS conversions \
         FROM conversions c JOIN adverts a ON a.id = c.advert_id \
         WHERE c.customer_id = $1 AND c.clicked_at >= $2 AND c.clicked_at < $3 \
         GROUP BY c.advert_id, a.title",
    )
    .bind::<BigInt, _>(customer.0)
    .bind::<BigInt, _>(from)
    .bind::<BigInt, _>(to)
    .load(conn)?;
    let mut adverts: std::collections::BTreeMap<i64, AdvertHours> = Default::default();
    fn advert(
        adverts: &mut std::collections::BTreeMap<i64, AdvertHours>,
        id: i64,
        title: String,
    ) -> &mut AdvertHours {
        adverts.entry(id).or_insert_with(|| AdvertHours {
            advert_id: AdvertId(id),
            title,
            hours: Vec::new(),
            conversions: 0,
        })
    }
    for row in rows {
        let counts = stored_counts!(row.counts);
        advert(&mut adverts, row.advert_id, row.title)
            .hours
            .push((row.bucket, counts));
    }
    for row in converted {
        advert(&mut adverts, row.advert_id, row.title).conversions =
            u64::try_from(row.conversions).unwrap_or(0);
    }
    Ok(adverts.into_values().collect())
}

#[derive(QueryableByName)]
struct ConvertedTitleRow {
    #[diesel(sql_type = BigInt)]
    advert_id: i64,
    #[diesel(sql_type = Text)]
    title: String,
    #[diesel(sql_type = BigInt)]
    conversions: i64,
}

/// All-time totals of each of a customer's adverts, newest advert first.
pub fn customer_totals(
    conn: &mut DbConnection,
    customer: CustomerId,
) -> Result<Vec<AdvertTotals>, DbError> {
    let rows: Vec<TotalsRow> = diesel::sql_query(
        "SELECT a.id AS advert_id, a.title AS title, a.status AS status, \
           CAST(COALESCE(SUM(s.clicks), 0) AS BIGINT) AS clicks, \
           CAST(COALESCE(SUM(s.bot_clicks), 0) AS BIGINT) AS bot_clicks, \
           CAST(COALESCE(SUM(s.duplicate_clicks), 0) AS BIGINT) AS duplicate_clicks, \
           CAST(COALESCE(SUM(s.impressions), 0) AS BIGINT) AS impressions, \
           CAST(COALESCE(SUM(s.suspicious_clicks), 0) AS BIGINT) AS suspicious_clicks, \
           CAST(COALESCE(SUM(s.suspicious_impressions), 0) AS BIGINT) AS suspicious_impressions \
         FROM adverts a LEFT JOIN advert_stats s ON s.advert_id = a.id \
         WHERE a.customer_id = $1 \
         GROUP BY a.id, a.title, a.status \
         ORDER BY a.id DESC",
    )
    .bind::<BigInt, _>(customer.0)
    .load(conn)?;
    let converted: Vec<ConvertedTotalsRow> = diesel::sql_query(
        "SELECT advert_id, COUNT(*) AS conversions, \
           CAST(COALESCE(SUM(value_micros), 0) AS BIGINT) AS value_micros \
         FROM conversions WHERE customer_id = $1 GROUP BY advert_id",
    )
    .bind::<BigInt, _>(customer.0)
    .load(conn)?;
    let converted: std::collections::HashMap<i64, (i64, i64)> = converted
        .into_iter()
        .map(|c| (c.advert_id, (c.conversions, c.value_micros)))
        .collect();
    Ok(rows
        .into_iter()
        .map(|r| {
            let (conversions, micros) = converted.get(&r.advert_id).copied().unwrap_or_default();
            AdvertTotals {
                advert_id: AdvertId(r.advert_id),
                title: r.title,
                status: r.status,
                counts: stored_counts!(r.counts),
                conversions: u64::try_from(conversions).unwrap_or(0),
                conversion_micros: micros,
            }
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::modules::tracking::counters::{CounterKey, Metric, PlacementName};
    use crate::platform::db::Db;

    #[test]
    fn a_flushs_rows_go_in_key_order_summed_without_the_zero_ones() {
        let (mut one, mut two) = (Counts::default(), Counts::default());
        one[Metric::Click] = 1;
        two[Metric::Impression] = 2;
        let zero = Counts::default();
        let rows = vec![
            ((AdvertId(9), 3600), &one),
            ((AdvertId(2), 7200), &one),
            ((AdvertId(5), 0), &zero),
            ((AdvertId(2), 3600), &one),
            ((AdvertId(9), 3600), &two),
            ((AdvertId(5), 0), &zero),
            ((AdvertId(2), 7200), &one),
        ];
        let mut both = one;
        both[Metric::Impression] = 2;
        let mut twice = Counts::default();
        twice[Metric::Click] = 2;
        assert_eq!(
            key_ordered(rows).collect::<Vec<_>>(),
            [
                ((AdvertId(2), 3600), one),
                ((AdvertId(2), 7200), twice),
                ((AdvertId(9), 3600), both)
            ]
        );
    }

    #[test]
    fn counts_beyond_what_a_column_holds_are_stored_as_its_largest_value() {
        let counts = Counts::from_values([1, 2, 3, 4, 5, u64::MAX]);
        assert_eq!(stored_counts(&counts), [1, 2, 3, 4, 5, i64::MAX]);
    }

    #[tokio::test]
    async fn a_flush_of_several_statements_adds_every_row_once_and_a_replay_adds_nothing() {
        let (_dir, db) = Db::temporary();
        let adverts = 256 * 2 + 7;
        let placement: PlacementName = "medium_rect'angle".into();
        let mut batch = Batch::default();
        for i in 0..adverts {
            let advert = AdvertId(i as i64 + 1);
            batch.add(
                CounterKey::new(advert, 7200, None),
                Metric::Click,
                i as u64 + 1,
            );
            batch.add(
                CounterKey::new(advert, 7200, Some(placement.clone())),
                Metric::Impression,
                2,
            );
        }
        let batch = std::sync::Arc::new(batch);
        let apply = |id: &'static str| {
            let (db, batch) = (db.clone(), batch.clone());
            async move {
                db.run(move |conn| apply_batch(conn, &batch, &[id.to_owned()], true))
                    .await
                    .unwrap()
            }
        };
        assert_eq!(apply("first").await, Applied::Done);
        assert_eq!(apply("second").await, Applied::Done);
        assert_eq!(
            apply("first").await,
            Applied::AlreadyApplied(vec!["first".to_owned()])
        );
        let (totals, shares) = db
            .run(|conn| {
                let totals: Vec<(i64, i64, i64)> = advert_stats::table
                    .select((
                        advert_stats::advert_id,
                        advert_stats::clicks,
                        advert_stats::impressions,
                    ))
                    .order(advert_stats::advert_id)
                    .load(conn)?;
                let shares: Vec<(i64, String, i64)> = advert_placement_stats::table
                    .select((
                        advert_placement_stats::advert_id,
                        advert_placement_stats::placement,
                        advert_placement_stats::impressions,
                    ))
                    .order(advert_placement_stats::advert_id)
                    .load(conn)?;
                Ok::<_, DbError>((totals, shares))
            })
            .await
            .unwrap();
        let expected: Vec<(i64, i64, i64)> = (0..adverts)
            .map(|i| (i as i64 + 1, 2 * (i as i64 + 1), 4))
            .collect();
        assert_eq!(totals, expected);
        assert_eq!(shares.len(), adverts);
        assert!(
            shares
                .iter()
                .all(|(_, name, n)| name == "medium_rect'angle" && *n == 4),
            "{:?}",
            &shares[..3]
        );
    }

    /// Runs where the tests' PostgreSQL is configured (`REKLAMA_TEST_DATABASE=postgres`), in a
    /// database of its own. Each flush adds to the same hour's rows, as flushes within an hour
    /// do; the fifth one's updates are counted in its own transaction.
    #[tokio::test]
    async fn on_postgresql_a_flush_adds_to_its_rows_without_touching_their_index() {
        use diesel::connection::SimpleConnection;

        let Some(base) = db::test_postgres_server() else {
            return;
        };
        let name = format!("reklama_test_hot_{}_{}", std::process::id(), now_ms());
        let mut admin = diesel::PgConnection::establish(&format!("{base}/postgres")).unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        let (_dir, db) = Db::temporary_with(|settings| settings.url = format!("{base}/{name}"));
        let adverts = 2_000;
        let mut batch = Batch::default();
        for advert in 1..=adverts {
            batch.add(
                CounterKey::generic(AdvertId(advert), 3600),
                Metric::Impression,
                1,
            );
        }
        let batch = std::sync::Arc::new(batch);

        #[derive(QueryableByName)]
        struct Updates {
            #[diesel(sql_type = BigInt)]
            n_tup_upd: i64,
            #[diesel(sql_type = BigInt)]
            n_tup_hot_upd: i64,
        }
        let mut last = None;
        for flush in 1..=5 {
            let batch = batch.clone();
            let updates = db
                .run(move |conn| {
                    // The view holds what this connection did and has not yet reported,
                    // earlier transactions included: the flush's own is the difference.
                    let updates = |conn: &mut DbConnection| {
                        diesel::sql_query(
                            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables \
                             WHERE relname = 'advert_stats'",
                        )
                        .get_result::<Updates>(conn)
                    };
                    db::transaction(conn, |conn| {
                        let before = updates(conn)?;
                        apply_batch(conn, &batch, &[format!("flush-{flush}")], false)?;
                        let after = updates(conn)?;
                        Ok::<_, DbError>(Updates {
                            n_tup_upd: after.n_tup_upd - before.n_tup_upd,
                            n_tup_hot_upd: after.n_tup_hot_upd - before.n_tup_hot_upd,
                        })
                    })
                })
                .await
                .unwrap();
            last = Some(updates);
        }
        let added_up = db
            .run(|conn| {
                advert_stats::table
                    .filter(advert_stats::impressions.eq(5))
                    .count()
                    .get_result::<i64>(conn)
                    .map_err(DbError::from)
            })
            .await
            .unwrap();
        drop(db);
        admin
            .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .unwrap();
        assert_eq!(added_up, adverts, "every row holds its five flushes");
        let last = last.unwrap();
        assert_eq!(last.n_tup_upd, adverts);
        // Heap-only updates: the new version in the row's own page, no new index entry. In full
        // pages almost none is (a few dozen of 100 000 in a probe).
        assert!(
            last.n_tup_hot_upd * 4 >= last.n_tup_upd * 3,
            "{} of {} updates heap-only",
            last.n_tup_hot_upd,
            last.n_tup_upd
        );
    }
}
