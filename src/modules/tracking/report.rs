//! Reports: counts per hour or day over a range, with totals and click-through rate, as JSON or
//! CSV. Buckets without any count are left out of the series.

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::domain::AdvertId;

use super::counters::{Counts, Metric};

pub use crate::domain::Granularity;

/// Parses `2026-11-26T10:00:00Z` or a plain date `2026-11-26` (midnight UTC) to Unix seconds.
pub fn parse_instant(raw: &str) -> Option<i64> {
    if let Ok(t) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Some(t.unix_timestamp());
    }
    time::Date::parse(raw, format_description!("[year]-[month]-[day]"))
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp())
}

fn rfc3339(unix_secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// One hour or day with any count.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Point {
    /// The bucket's start (RFC 3339, UTC).
    #[schema(format = DateTime, example = "2026-11-26T10:00:00Z")]
    pub bucket: String,
    pub clicks: u64,
    pub bot_clicks: u64,
    pub duplicate_clicks: u64,
    pub impressions: u64,
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
    /// Billable clicks (neither bots nor repeats).
    pub clicks: u64,
    /// Clicks by recognised bots and link-preview fetchers.
    pub bot_clicks: u64,
    /// Repeat clicks by the same visitor within `tracking.duplicate_window_secs`.
    pub duplicate_clicks: u64,
    /// Times the advert was served by `/api/v1/serve`.
    pub impressions: u64,
    /// Billable clicks per impression; 0 when nothing was shown.
    pub ctr: f64,
    pub series: Vec<Point>,
}

pub fn ctr(counts: &Counts) -> f64 {
    let impressions = counts[Metric::Impression as usize];
    if impressions == 0 {
        0.0
    } else {
        let ratio = counts[Metric::Click as usize] as f64 / impressions as f64;
        (ratio * 10_000.0).round() / 10_000.0
    }
}

/// Builds a report from hourly rows (sorted by bucket) in `[from, to)`.
pub fn build(
    advert: AdvertId,
    hourly: &[(i64, Counts)],
    granularity: Granularity,
    from: i64,
    to: i64,
) -> Report {
    let step = granularity.seconds();
    let mut series: Vec<(i64, Counts)> = Vec::new();
    let mut totals: Counts = [0; 4];
    for (bucket, counts) in hourly {
        let start = bucket.div_euclid(step) * step;
        match series.last_mut() {
            Some((last, sum)) if *last == start => {
                for (s, n) in sum.iter_mut().zip(counts) {
                    *s += n;
                }
            }
            _ => series.push((start, *counts)),
        }
        for (t, n) in totals.iter_mut().zip(counts) {
            *t += n;
        }
    }
    Report {
        advert_id: advert,
        granularity: granularity.as_str(),
        from: rfc3339(from),
        to: rfc3339(to),
        clicks: totals[0],
        bot_clicks: totals[1],
        duplicate_clicks: totals[2],
        impressions: totals[3],
        ctr: ctr(&totals),
        series: series
            .into_iter()
            .map(|(bucket, c)| Point {
                bucket: rfc3339(bucket),
                clicks: c[0],
                bot_clicks: c[1],
                duplicate_clicks: c[2],
                impressions: c[3],
            })
            .collect(),
    }
}

pub fn to_csv(report: &Report) -> String {
    let mut out = String::from("bucket,clicks,bot_clicks,duplicate_clicks,impressions\n");
    for p in &report.series {
        out.push_str(&format!(
            "{},{},{},{},{}\n",
            p.bucket, p.clicks, p.bot_clicks, p.duplicate_clicks, p.impressions
        ));
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
            (day, [3, 1, 0, 10]),
            (day + 3600, [2, 0, 1, 10]),
            (2 * day + 7200, [5, 0, 0, 30]),
        ];
        let report = build(AdvertId(1), &rows, Granularity::Day, 0, 3 * day);
        assert_eq!(report.series.len(), 2);
        assert_eq!(report.series[0].clicks, 5);
        assert_eq!(report.series[0].bucket, "1970-01-02T00:00:00Z");
        assert_eq!(report.series[1].impressions, 30);
        assert_eq!(
            (
                report.clicks,
                report.bot_clicks,
                report.duplicate_clicks,
                report.impressions
            ),
            (10, 1, 1, 50)
        );
        assert_eq!(report.ctr, 0.2);
        let csv = to_csv(&report);
        assert_eq!(
            csv,
            "bucket,clicks,bot_clicks,duplicate_clicks,impressions\n\
             1970-01-02T00:00:00Z,5,1,1,20\n1970-01-03T00:00:00Z,5,0,0,30\n"
        );
    }

    #[test]
    fn instants_accept_rfc3339_and_plain_dates() {
        assert_eq!(parse_instant("1970-01-02"), Some(86_400));
        assert_eq!(parse_instant("1970-01-01T01:00:00Z"), Some(3600));
        assert_eq!(parse_instant("yesterday"), None);
    }
}
