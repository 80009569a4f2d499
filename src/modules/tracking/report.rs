//! Reports: counts per hour or day over a range, with totals and click-through rate, as JSON or
//! CSV. Buckets without any count are left out of the series. Split by placement, each bucket
//! (and the range) also lists every placement seen with its share; the generic card's share is
//! `placement: null` in JSON and an empty `placement` field in CSV. Split by creative, likewise
//! with `creative_id` (`null`: clicks without a token naming a creative, counts from before
//! creatives were). Split by device or by country, likewise with `device` or `country` (`null`:
//! not known).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::domain::AdvertId;
use crate::domain::creative::CreativeId;
use crate::domain::targeting::Device;

use super::conversions::ConvertedRow;
use super::counters::Counts;

pub use crate::domain::Granularity;

/// The end of a report that names none: every count ever stored lies before it.
pub const END_OF_TIME: i64 = i32::MAX as i64 * 4;

/// Parses `2026-11-26T10:00:00Z` or a plain date `2026-11-26` (midnight UTC) to Unix seconds.
pub fn parse_instant(raw: &str) -> Option<i64> {
    if let Ok(t) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Some(t.unix_timestamp());
    }
    time::Date::parse(raw, format_description!("[year]-[month]-[day]"))
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp())
}

pub(super) fn rfc3339(unix_secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// One hour or day with any count.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Point {
    /// The bucket's start, Unix seconds (for pages that draw the series).
    #[serde(skip)]
    pub start: i64,
    /// The bucket's start (RFC 3339, UTC).
    #[schema(format = DateTime, example = "2026-11-26T10:00:00Z")]
    pub bucket: String,
    #[serde(flatten)]
    pub counts: Counts,
    #[serde(flatten)]
    pub converted: Converted,
    /// With `granularity=day`: the distinct users served that day (approximate, as the
    /// report's `reach`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reach: Option<u64>,
    /// With `by=placement`: this bucket's counts per placement seen, the generic card first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placements: Option<Vec<PlacementCounts>>,
    /// With `by=creative`: this bucket's counts per creative seen, the unknown one first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creatives: Option<Vec<CreativeCounts>>,
    /// With `by=device`: this bucket's counts per device seen, the unknown one first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<DeviceCounts>>,
    /// With `by=country`: this bucket's counts per country seen, the unknown one first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub countries: Option<Vec<CountryCounts>>,
}

/// One placement's share of a bucket or of the whole range.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct PlacementCounts {
    /// The placement's name (`medium_rectangle`), or `null` for the generic card: cards served
    /// without a placement, links followed without a placement's impression token, and counts
    /// recorded before placements were.
    #[schema(example = "medium_rectangle")]
    pub placement: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
    #[serde(flatten)]
    pub converted: Converted,
}

/// One creative's share of a bucket or of the whole range.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CreativeCounts {
    /// The creative's number (see `GET /api/v1/adverts/{id}/creatives`), or `null` for clicks
    /// whose link carried no token naming one and counts recorded before creatives were.
    #[schema(value_type = Option<u32>, example = 2)]
    pub creative_id: Option<CreativeId>,
    #[serde(flatten)]
    pub counts: Counts,
    /// This creative's billable clicks per impression; 0 when it was not shown.
    pub ctr: f64,
    #[serde(flatten)]
    pub converted: Converted,
}

/// One device's share of a bucket or of the whole range.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct DeviceCounts {
    /// The viewer's device, as the serve's `device` parameter or the User-Agent named it;
    /// `null`: not known.
    pub device: Option<Device>,
    #[serde(flatten)]
    pub counts: Counts,
    /// Billable clicks per impression; 0 when nothing was shown.
    pub ctr: f64,
    #[serde(flatten)]
    pub converted: Converted,
}

/// One country's share of a bucket or of the whole range.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CountryCounts {
    /// The viewer's country (ISO 3166-1 alpha-2), as the serve's `country` parameter or
    /// `serving.country_header` named it; `null`: not known.
    #[schema(example = "DE")]
    pub country: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
    /// Billable clicks per impression; 0 when nothing was shown.
    pub ctr: f64,
    #[serde(flatten)]
    pub converted: Converted,
}

/// Conversions of the clicks of a bucket, a share or the range: counted in the hour of their
/// click, so `cvr` compares like with like.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Converted {
    /// Conversions reported for these clicks with `POST /api/v1/conversions` (each event of a
    /// click once).
    #[schema(example = 3)]
    pub conversions: u64,
    /// Their values added up, as numbers (see `currencies`).
    #[schema(example = 59.97)]
    pub conversion_value: f64,
    /// Conversions per billable click, 4 decimals; 0 without clicks.
    #[schema(example = 0.0714)]
    pub cvr: f64,
    #[serde(skip)]
    micros: i64,
}

impl Converted {
    /// The CSV header of the conversion columns.
    pub const CSV_HEADER: &'static str = "conversions,conversion_value,cvr";

    /// `conversions` worth `micros` in all, of `clicks` billable clicks.
    pub fn of(conversions: u64, micros: i64, clicks: u64) -> Self {
        let mut converted = Self::default();
        converted.add(conversions, micros);
        converted.rate(clicks);
        converted
    }

    fn add(&mut self, conversions: u64, micros: i64) {
        self.conversions += conversions;
        self.micros = self.micros.saturating_add(micros);
        self.conversion_value = self.micros as f64 / 1e6;
    }

    fn rate(&mut self, clicks: u64) {
        self.cvr = match clicks {
            0 => 0.0,
            n => (self.conversions as f64 / n as f64 * 10_000.0).round() / 10_000.0,
        };
    }

    fn csv(&self) -> String {
        format!(
            "{},{},{}",
            self.conversions, self.conversion_value, self.cvr
        )
    }
}

/// Counts per share (`None`, the rest, sorts first), zero shares left out.
type Split<K> = BTreeMap<Option<K>, Counts>;

fn split_list<K>(split: Split<K>) -> Vec<(Option<K>, Counts)> {
    split
        .into_iter()
        .filter(|(_, counts)| !counts.is_zero())
        .collect()
}

/// How a report splits its buckets, by the hourly shares of named placements, of known
/// creatives, or both (what the named ones leave of each hour's total is the rest's).
#[derive(Default)]
pub struct Shares<'a> {
    pub placements: Option<&'a [(i64, String, Counts)]>,
    pub creatives: Option<&'a [(i64, CreativeId, Counts)]>,
    pub devices: Option<&'a [(i64, String, Counts)]>,
    pub countries: Option<&'a [(i64, String, Counts)]>,
}

/// A series split by the shares of `K`: each bucket's sum and split, and the range's split.
struct Splits<K> {
    series: Vec<(i64, Counts, Split<K>)>,
    range: Split<K>,
    totals: Counts,
}

fn split_series<K: Ord + Clone>(
    hourly: &[(i64, Counts)],
    shares: Option<&[(i64, K, Counts)]>,
    step: i64,
) -> Splits<K> {
    let mut named_by_hour: HashMap<i64, Vec<(&K, &Counts)>> = HashMap::new();
    for (bucket, name, counts) in shares.unwrap_or_default() {
        named_by_hour
            .entry(*bucket)
            .or_default()
            .push((name, counts));
    }
    let mut splits = Splits {
        series: Vec::new(),
        range: Split::new(),
        totals: Counts::default(),
    };
    for (bucket, counts) in hourly {
        let start = bucket.div_euclid(step) * step;
        if !matches!(splits.series.last(), Some((last, _, _)) if *last == start) {
            splits.series.push((start, Counts::default(), Split::new()));
        }
        if let Some((_, sum, split)) = splits.series.last_mut() {
            *sum += counts;
            if shares.is_some() {
                let mut rest = *counts;
                for (name, share) in named_by_hour.get(bucket).into_iter().flatten() {
                    rest = rest.saturating_sub(share);
                    *split.entry(Some((*name).clone())).or_default() += *share;
                    *splits.range.entry(Some((*name).clone())).or_default() += *share;
                }
                *split.entry(None).or_default() += rest;
                *splits.range.entry(None).or_default() += rest;
            }
        }
        splits.totals += counts;
    }
    splits
}

/// A split's shares, the rest first, each key mapped by `key` (`None`: left out).
fn share_list<K, T: Share>(split: Split<K>, key: impl Fn(K) -> Option<T::Key>) -> Vec<T> {
    split_list(split)
        .into_iter()
        .filter_map(|(k, counts)| {
            let k = match k {
                None => None,
                Some(k) => Some(key(k)?),
            };
            Some(T::new(k, counts))
        })
        .collect()
}

/// A device's name from the store; a name no device has (a hand-edited row) is left out
/// rather than shown as unknown.
fn device(name: String) -> Option<Device> {
    Device::parse(&name).ok()
}

/// One advert's counts over `[from, to)`: totals and a series without empty buckets.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Report {
    #[schema(value_type = i64, example = 1)]
    pub advert_id: AdvertId,
    /// `hour` or `day`.
    #[schema(value_type = String, example = "hour")]
    pub granularity: &'static str,
    /// RFC 3339, UTC.
    #[schema(format = DateTime)]
    pub from: String,
    /// RFC 3339, UTC; exclusive.
    #[schema(format = DateTime)]
    pub to: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// Billable clicks per impression; 0 when nothing was shown.
    pub ctr: f64,
    #[serde(flatten)]
    pub converted: Converted,
    /// The currencies the range's conversions were reported in; values in different
    /// currencies are added up as numbers all the same.
    #[schema(example = json!(["EUR"]))]
    pub currencies: Vec<String>,
    /// Unique reach: the distinct users (`user_id`s) billably served the advert on the UTC days
    /// the range touches. Approximate: a HyperLogLog estimate with a standard error of 0.81 %
    /// (within 2 % at 100 000 users); small counts are nearly exact.
    #[schema(example = 1042)]
    pub reach: u64,
    /// With `by=placement`: the range's counts per placement seen, the generic card first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placements: Option<Vec<PlacementCounts>>,
    /// With `by=creative`: the range's counts and CTR per creative seen, the unknown one first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creatives: Option<Vec<CreativeCounts>>,
    /// With `by=device`: the range's counts, CTR and conversions per device seen, the unknown
    /// one first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<DeviceCounts>>,
    /// With `by=country`: the same per country seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub countries: Option<Vec<CountryCounts>>,
    pub series: Vec<Point>,
}

/// Builds a report from hourly rows (sorted by bucket) in `[from, to)`, split by `shares` (the
/// named placements' or creatives' hourly shares) when given.
pub fn build(
    advert: AdvertId,
    hourly: &[(i64, Counts)],
    shares: Shares<'_>,
    granularity: Granularity,
    from: i64,
    to: i64,
) -> Report {
    let step = granularity.seconds();
    let placements = split_series(hourly, shares.placements, step);
    let creatives = split_series(hourly, shares.creatives, step);
    let devices = split_series(hourly, shares.devices, step);
    let countries = split_series(hourly, shares.countries, step);
    let mut report = Report {
        advert_id: advert,
        granularity: granularity.as_str(),
        from: rfc3339(from),
        to: rfc3339(to),
        counts: placements.totals,
        ctr: placements.totals.ctr_rounded(),
        converted: Converted::default(),
        currencies: Vec::new(),
        reach: 0,
        placements: shares
            .placements
            .map(|_| share_list(placements.range, Some)),
        creatives: shares.creatives.map(|_| share_list(creatives.range, Some)),
        devices: shares.devices.map(|_| share_list(devices.range, device)),
        countries: shares.countries.map(|_| share_list(countries.range, Some)),
        series: Vec::with_capacity(placements.series.len()),
    };
    // Every split has the same buckets, in the same order.
    let mut by_creative = creatives.series.into_iter();
    let mut by_device = devices.series.into_iter();
    let mut by_country = countries.series.into_iter();
    for (start, counts, by_placement) in placements.series {
        let next = |split: &mut std::vec::IntoIter<(i64, Counts, Split<String>)>| {
            split
                .next()
                .map(|(_, _, shares)| shares)
                .unwrap_or_default()
        };
        let (devices, countries) = (next(&mut by_device), next(&mut by_country));
        let creatives = by_creative.next().map(|(_, _, s)| s).unwrap_or_default();
        report.series.push(Point {
            start,
            bucket: rfc3339(start),
            counts,
            converted: Converted::default(),
            reach: None,
            placements: shares.placements.map(|_| share_list(by_placement, Some)),
            creatives: shares.creatives.map(|_| share_list(creatives, Some)),
            devices: shares.devices.map(|_| share_list(devices, device)),
            countries: shares.countries.map(|_| share_list(countries, Some)),
        });
    }
    report
}

/// Adds the conversions of the range's clicks (hourly rows, sorted by hour) to a built report:
/// to the totals, to each bucket (one without counts is added) and to each share of a split (a
/// share without counts is added), then works out every `cvr`.
pub fn add_conversions(report: &mut Report, rows: &[ConvertedRow], step: i64) {
    let placements = report.placements.is_some();
    let creatives = report.creatives.is_some();
    let devices = report.devices.is_some();
    let countries = report.countries.is_some();
    for row in rows {
        let (n, micros) = (
            u64::try_from(row.conversions).unwrap_or(0),
            row.value_micros,
        );
        report.converted.add(n, micros);
        let start = row.bucket.div_euclid(step) * step;
        let at = match report.series.binary_search_by_key(&start, |p| p.start) {
            Ok(at) => at,
            Err(at) => {
                report.series.insert(
                    at,
                    Point {
                        start,
                        bucket: rfc3339(start),
                        counts: Counts::default(),
                        converted: Converted::default(),
                        reach: None,
                        placements: placements.then(Vec::new),
                        creatives: creatives.then(Vec::new),
                        devices: devices.then(Vec::new),
                        countries: countries.then(Vec::new),
                    },
                );
                at
            }
        };
        let point = &mut report.series[at];
        point.converted.add(n, micros);
        add_to(
            [point.placements.as_mut(), report.placements.as_mut()],
            row.placement.clone(),
            n,
            micros,
        );
        add_to(
            [point.creatives.as_mut(), report.creatives.as_mut()],
            row.creative_id(),
            n,
            micros,
        );
        add_to(
            [point.devices.as_mut(), report.devices.as_mut()],
            row.device.clone().and_then(device),
            n,
            micros,
        );
        add_to(
            [point.countries.as_mut(), report.countries.as_mut()],
            row.country.clone(),
            n,
            micros,
        );
    }
    report.converted.rate(report.counts.clicks);
    for point in &mut report.series {
        point.converted.rate(point.counts.clicks);
        rate_shares((
            point.placements.as_mut(),
            point.creatives.as_mut(),
            point.devices.as_mut(),
            point.countries.as_mut(),
        ));
    }
    rate_shares((
        report.placements.as_mut(),
        report.creatives.as_mut(),
        report.devices.as_mut(),
        report.countries.as_mut(),
    ));
}

/// Adds conversions to the share `key` of each list (the point's and the range's), a new one in
/// order (the rest first) when the list has none.
fn add_to<T: Share>(lists: [Option<&mut Vec<T>>; 2], key: Option<T::Key>, n: u64, micros: i64) {
    for list in lists.into_iter().flatten() {
        let at = match list.iter().position(|s| s.key() == key.as_ref()) {
            Some(at) => at,
            None => {
                let at = list.partition_point(|s| s.key() < key.as_ref());
                list.insert(at, T::new(key.clone(), Counts::default()));
                at
            }
        };
        list[at].converted_mut().add(n, micros);
    }
}

/// The splits of the report (over the range) or of a point.
type SplitLists<'a> = (
    Option<&'a mut Vec<PlacementCounts>>,
    Option<&'a mut Vec<CreativeCounts>>,
    Option<&'a mut Vec<DeviceCounts>>,
    Option<&'a mut Vec<CountryCounts>>,
);

/// Works out `cvr` of every share of the splits.
fn rate_shares((placements, creatives, devices, countries): SplitLists<'_>) {
    fn rate<T: Share>(list: Option<&mut Vec<T>>) {
        for share in list.into_iter().flatten() {
            let clicks = share.counts().clicks;
            share.converted_mut().rate(clicks);
        }
    }
    rate(placements);
    rate(creatives);
    rate(devices);
    rate(countries);
}

/// A share of a split: its key, its counts, and the conversions added to it.
trait Share {
    /// What the split is by; `None` is the rest, which sorts first.
    type Key: Clone + Ord;
    /// The share `key` had of `counts`, no conversions yet.
    fn new(key: Option<Self::Key>, counts: Counts) -> Self;
    fn key(&self) -> Option<&Self::Key>;
    /// The key as CSV writes it (the rest: an empty field).
    fn key_text(&self) -> String;
    fn counts(&self) -> &Counts;
    fn converted(&self) -> &Converted;
    fn converted_mut(&mut self) -> &mut Converted;
}

/// `Share` for a share type: its key field and type, how CSV writes the key, and `ctr` when the
/// type has one.
macro_rules! share {
    ($type:ty, $field:ident: $key:ty, $text:expr $(, $ctr:ident)?) => {
        impl Share for $type {
            type Key = $key;

            fn new(key: Option<$key>, counts: Counts) -> Self {
                Self {
                    $field: key,
                    $($ctr: counts.ctr_rounded(),)?
                    counts,
                    converted: Converted::default(),
                }
            }

            fn key(&self) -> Option<&$key> {
                self.$field.as_ref()
            }

            fn key_text(&self) -> String {
                self.$field.as_ref().map($text).unwrap_or_default()
            }

            fn counts(&self) -> &Counts {
                &self.counts
            }

            fn converted(&self) -> &Converted {
                &self.converted
            }

            fn converted_mut(&mut self) -> &mut Converted {
                &mut self.converted
            }
        }
    };
}

share!(PlacementCounts, placement: String, String::clone);
share!(CreativeCounts, creative_id: CreativeId, CreativeId::to_string, ctr);
share!(DeviceCounts, device: Device, |d: &Device| d.as_str().to_owned(), ctr);
share!(CountryCounts, country: String, String::clone, ctr);

/// One row of a split series in CSV: the share's key, its counts and its conversions.
type CsvShare<'a> = (String, &'a Counts, &'a Converted);

/// A split in CSV: its column, and the shares of a point.
type CsvSplit = (&'static str, fn(&Point) -> Vec<CsvShare<'_>>);

fn csv_shares<T: Share>(list: &Option<Vec<T>>) -> Vec<CsvShare<'_>> {
    list.iter()
        .flatten()
        .map(|s| (s.key_text(), s.counts(), s.converted()))
        .collect()
}

/// The series as CSV: a row per bucket, or with a split a row per bucket and share (the
/// rest's field empty). A report split several ways (JSON only) is written by its first split
/// of creative, placement, device, country.
pub fn to_csv(report: &Report) -> String {
    let split: Option<CsvSplit> = if report.creatives.is_some() {
        Some(("creative_id", |p| csv_shares(&p.creatives)))
    } else if report.placements.is_some() {
        Some(("placement", |p| csv_shares(&p.placements)))
    } else if report.devices.is_some() {
        Some(("device", |p| csv_shares(&p.devices)))
    } else if report.countries.is_some() {
        Some(("country", |p| csv_shares(&p.countries)))
    } else {
        None
    };
    let mut out = match split {
        Some((column, _)) => format!(
            "bucket,{column},{},{}\n",
            Counts::CSV_HEADER,
            Converted::CSV_HEADER
        ),
        None => format!("bucket,{},{}\n", Counts::CSV_HEADER, Converted::CSV_HEADER),
    };
    for p in &report.series {
        match split {
            Some((_, shares)) => {
                for (key, counts, converted) in shares(p) {
                    out.push_str(&format!(
                        "{},{key},{},{}\n",
                        p.bucket,
                        counts.csv(),
                        converted.csv()
                    ));
                }
            }
            None => out.push_str(&format!(
                "{},{},{}\n",
                p.bucket,
                p.counts.csv(),
                p.converted.csv()
            )),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn days_sum_their_hours_and_totals_sum_everything() {
        let day = 86_400;
        let rows = vec![
            (day, Counts::from_values([3, 1, 0, 10, 0, 0])),
            (day + 3600, Counts::from_values([2, 0, 1, 10, 0, 0])),
            (2 * day + 7200, Counts::from_values([5, 0, 0, 30, 0, 0])),
        ];
        let report = build(
            AdvertId(1),
            &rows,
            Shares::default(),
            Granularity::Day,
            0,
            3 * day,
        );
        assert!(report.placements.is_none());
        assert!(report.series[0].placements.is_none());
        assert_eq!(report.series.len(), 2);
        assert_eq!(report.series[0].counts.clicks, 5);
        assert_eq!(report.series[0].bucket, "1970-01-02T00:00:00Z");
        assert_eq!(report.series[1].counts.impressions, 30);
        assert_eq!(report.counts, Counts::from_values([10, 1, 1, 50, 0, 0]));
        assert_eq!(report.ctr, 0.2);
        let csv = to_csv(&report);
        assert_eq!(
            csv,
            "bucket,clicks,bot_clicks,duplicate_clicks,impressions,suspicious_clicks,suspicious_impressions,conversions,conversion_value,cvr\n\
             1970-01-02T00:00:00Z,5,1,1,20,0,0,0,0,0\n1970-01-03T00:00:00Z,5,0,0,30,0,0,0,0,0\n"
        );
    }

    #[test]
    fn a_split_gives_the_generic_card_what_named_placements_leave() {
        let day = 86_400;
        let rows = vec![
            (day, Counts::from_values([3, 1, 0, 10, 0, 0])),
            (day + 3600, Counts::from_values([2, 0, 1, 10, 0, 0])),
        ];
        let named = vec![
            (
                day,
                "medium_rectangle".to_owned(),
                Counts::from_values([2, 0, 0, 6, 0, 0]),
            ),
            (
                day + 3600,
                "leaderboard".to_owned(),
                Counts::from_values([0, 0, 0, 4, 0, 0]),
            ),
            (
                day + 3600,
                "medium_rectangle".to_owned(),
                Counts::from_values([2, 0, 1, 6, 0, 0]),
            ),
        ];
        let report = build(
            AdvertId(1),
            &rows,
            Shares {
                placements: Some(&named),
                creatives: None,
                ..Shares::default()
            },
            Granularity::Day,
            0,
            2 * day,
        );
        let split = |list: &Option<Vec<PlacementCounts>>| -> Vec<(Option<String>, u64, u64)> {
            list.iter()
                .flatten()
                .map(|p| (p.placement.clone(), p.counts.clicks, p.counts.impressions))
                .collect()
        };
        let expected = vec![
            (None, 1, 4),
            (Some("leaderboard".to_owned()), 0, 4),
            (Some("medium_rectangle".to_owned()), 4, 12),
        ];
        assert_eq!(split(&report.series[0].placements), expected);
        assert_eq!(split(&report.placements), expected);
        // The totals do not change with the split.
        assert_eq!((report.counts.clicks, report.counts.impressions), (5, 20));
        assert_eq!(
            to_csv(&report),
            "bucket,placement,clicks,bot_clicks,duplicate_clicks,impressions,suspicious_clicks,suspicious_impressions,conversions,conversion_value,cvr\n\
             1970-01-02T00:00:00Z,,1,1,0,4,0,0,0,0,0\n\
             1970-01-02T00:00:00Z,leaderboard,0,0,0,4,0,0,0,0,0\n\
             1970-01-02T00:00:00Z,medium_rectangle,4,0,1,12,0,0,0,0,0\n"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["series"][0]["placements"][0]["placement"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn a_creative_split_lists_each_creatives_counts_and_ctr() {
        let rows = vec![
            (0, Counts::from_values([3, 0, 0, 30, 0, 0])),
            (3600, Counts::from_values([1, 0, 0, 10, 0, 0])),
        ];
        let shares = vec![
            (0, CreativeId(1), Counts::from_values([2, 0, 0, 10, 0, 0])),
            (0, CreativeId(2), Counts::from_values([1, 0, 0, 15, 0, 0])),
            (
                3600,
                CreativeId(2),
                Counts::from_values([1, 0, 0, 10, 0, 0]),
            ),
        ];
        let report = build(
            AdvertId(1),
            &rows,
            Shares {
                placements: None,
                creatives: Some(&shares),
                ..Shares::default()
            },
            Granularity::Hour,
            0,
            7200,
        );
        assert!(report.placements.is_none());
        let range: Vec<(Option<CreativeId>, u64, u64, f64)> = report
            .creatives
            .iter()
            .flatten()
            .map(|c| (c.creative_id, c.counts.clicks, c.counts.impressions, c.ctr))
            .collect();
        assert_eq!(
            range,
            [
                (None, 0, 5, 0.0),
                (Some(CreativeId(1)), 2, 10, 0.2),
                (Some(CreativeId(2)), 2, 25, 0.08)
            ]
        );
        assert_eq!(report.series[1].creatives.as_ref().unwrap().len(), 1);
        assert_eq!(
            to_csv(&report),
            "bucket,creative_id,clicks,bot_clicks,duplicate_clicks,impressions,suspicious_clicks,suspicious_impressions,conversions,conversion_value,cvr\n\
             1970-01-01T00:00:00Z,,0,0,0,5,0,0,0,0,0\n\
             1970-01-01T00:00:00Z,1,2,0,0,10,0,0,0,0,0\n\
             1970-01-01T00:00:00Z,2,1,0,0,15,0,0,0,0,0\n\
             1970-01-01T01:00:00Z,2,1,0,0,10,0,0,0,0,0\n"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["creatives"][0]["creative_id"], serde_json::Value::Null);
        assert_eq!(json["creatives"][1]["ctr"], 0.2);
    }

    #[test]
    fn conversions_join_their_click_hour_share_and_range_and_give_cvr() {
        let rows = vec![
            (0, Counts::from_values([4, 0, 0, 40, 0, 0])),
            (3600, Counts::from_values([3, 0, 0, 30, 0, 0])),
        ];
        let named = vec![(
            0,
            "leaderboard".to_owned(),
            Counts::from_values([2, 0, 0, 20, 0, 0]),
        )];
        let mut report = build(
            AdvertId(1),
            &rows,
            Shares {
                placements: Some(&named),
                creatives: None,
                ..Shares::default()
            },
            Granularity::Hour,
            0,
            4 * 3600,
        );
        let converted = |bucket, placement: Option<&str>, n, micros| ConvertedRow {
            bucket,
            placement: placement.map(str::to_owned),
            creative: None,
            device: None,
            country: None,
            conversions: n,
            value_micros: micros,
        };
        add_conversions(
            &mut report,
            &[
                converted(0, Some("leaderboard"), 1, 19_990_000),
                converted(0, None, 1, 0),
                // A click hour without counts (the click was not counted) still shows.
                converted(7200, Some("medium_rectangle"), 2, 5_000_000),
            ],
            3600,
        );
        assert_eq!(report.converted.conversions, 4);
        assert_eq!(report.converted.conversion_value, 24.99);
        assert_eq!(report.converted.cvr, 0.5714);
        assert_eq!(report.series.len(), 3);
        assert_eq!(report.series[0].converted.conversions, 2);
        assert_eq!(report.series[0].converted.cvr, 0.5);
        assert_eq!(report.series[1].converted.conversions, 0);
        assert_eq!(report.series[2].bucket, "1970-01-01T02:00:00Z");
        assert_eq!(report.series[2].counts, Counts::default());
        assert_eq!(report.series[2].converted.cvr, 0.0, "no clicks: 0");
        let range: Vec<(Option<String>, u64, f64)> = report
            .placements
            .iter()
            .flatten()
            .map(|p| {
                (
                    p.placement.clone(),
                    p.converted.conversions,
                    p.converted.cvr,
                )
            })
            .collect();
        assert_eq!(
            range,
            [
                (None, 1, 0.2),
                (Some("leaderboard".into()), 1, 0.5),
                (Some("medium_rectangle".into()), 2, 0.0),
            ]
        );
        let csv = to_csv(&report);
        assert!(
            csv.contains("1970-01-01T00:00:00Z,leaderboard,2,0,0,20,0,0,1,19.99,0.5\n"),
            "{csv}"
        );
        assert!(csv.contains("1970-01-01T02:00:00Z,medium_rectangle,0,0,0,0,0,0,2,5,0\n"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["conversions"], 4);
        assert_eq!(json["series"][0]["cvr"], 0.5);
        assert_eq!(
            json["series"][0]["placements"][1]["conversion_value"],
            19.99
        );
    }

    #[test]
    fn instants_accept_rfc3339_and_plain_dates() {
        assert_eq!(parse_instant("1970-01-02"), Some(86_400));
        assert_eq!(parse_instant("1970-01-01T01:00:00Z"), Some(3600));
        assert_eq!(parse_instant("yesterday"), None);
    }
}
