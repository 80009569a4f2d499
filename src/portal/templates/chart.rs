//! The advert page's chart, drawn on the server as inline SVG: impressions (dashed, left axis) and
//! billable clicks (solid, right axis) per hour or day, one marked point per bucket with data,
//! with a `<title>`, a `<desc>` and a legend. The page shows the same numbers as a table.

use maud::{Markup, html};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::domain::{Counts, Granularity};
use crate::modules::tracking::Point;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = WIDTH - 64.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = HEIGHT - 64.0;
const TICKS: u64 = 4;

const CLICKS_COLOUR: &str = "#1d4ed8";
const IMPRESSIONS_COLOUR: &str = "#c2410c";

/// Buckets a chart shows: the last 48 hours or the last 30 days.
pub fn buckets_shown(granularity: Granularity) -> i64 {
    match granularity {
        Granularity::Hour => 48,
        Granularity::Day => 30,
    }
}

/// The chart's `[from, to)`: the last 48 hours or 30 days, the current bucket included.
pub fn window(granularity: Granularity, now: i64) -> (i64, i64) {
    let step = granularity.seconds();
    let to = (now.div_euclid(step) + 1) * step;
    (to - buckets_shown(granularity) * step, to)
}

/// One bucket of the chart's window, empty or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Unix seconds, UTC.
    pub start: i64,
    pub counts: Counts,
}

impl Bucket {
    pub fn has_data(&self) -> bool {
        !self.counts.is_zero()
    }
}

/// Every bucket of the window starting at `from`, with the series' counts where it has any.
pub fn fill(series: &[Point], from: i64, granularity: Granularity) -> Vec<Bucket> {
    let step = granularity.seconds();
    let mut buckets: Vec<Bucket> = (0..buckets_shown(granularity))
        .map(|i| Bucket {
            start: from + i * step,
            counts: Counts::default(),
        })
        .collect();
    for point in series {
        let offset = point.start - from;
        if offset < 0 {
            continue;
        }
        if let Some(bucket) = usize::try_from(offset / step)
            .ok()
            .and_then(|i| buckets.get_mut(i))
        {
            bucket.counts += point.counts;
        }
    }
    buckets
}

/// The smallest of 1, 2, 5, 10, 20, 50, ... times `TICKS` that is at least `max` (and at least
/// `TICKS`, so an empty chart still has an axis of whole numbers).
pub fn axis_max(max: u64) -> u64 {
    let per_tick = max.div_ceil(TICKS).max(1);
    let mut power: u64 = 1;
    loop {
        for m in [1, 2, 5] {
            let step = m * power;
            if step >= per_tick {
                return step * TICKS;
            }
        }
        power = power.saturating_mul(10);
    }
}

fn x_of(i: usize, n: usize) -> f64 {
    LEFT + (i as f64 + 0.5) * (RIGHT - LEFT) / n.max(1) as f64
}

fn y_of(value: u64, max: u64) -> f64 {
    BOTTOM - (value as f64 / max.max(1) as f64) * (BOTTOM - TOP)
}

fn coord(v: f64) -> String {
    format!("{v:.1}")
}

fn utc(start: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(start).ok()
}

/// `2026-11-26T10:00:00Z`, for attributes.
pub fn rfc3339(start: i64) -> String {
    utc(start)
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn day_label(t: OffsetDateTime) -> String {
    let month = MONTHS
        .get(usize::from(u8::from(t.month())) - 1)
        .copied()
        .unwrap_or_default();
    format!("{} {month}", t.day())
}

/// How a bucket is named in the table and in tooltips: `2026-11-26 10:00` or `2026-11-26`.
pub fn bucket_label(start: i64, granularity: Granularity) -> String {
    let Some(t) = utc(start) else {
        return start.to_string();
    };
    match granularity {
        Granularity::Hour => format!(
            "{:04}-{:02}-{:02} {:02}:00",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour()
        ),
        Granularity::Day => format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn polyline(buckets: &[Bucket], max: u64, value: impl Fn(&Counts) -> u64) -> String {
    buckets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                "{},{}",
                coord(x_of(i, buckets.len())),
                coord(y_of(value(&b.counts), max))
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The chart of `buckets` (the whole window, oldest first).
pub fn render(buckets: &[Bucket], granularity: Granularity) -> Markup {
    let n = buckets.len();
    let impressions_max = axis_max(
        buckets
            .iter()
            .map(|b| b.counts.impressions)
            .max()
            .unwrap_or(0),
    );
    let clicks_max = axis_max(buckets.iter().map(|b| b.counts.clicks).max().unwrap_or(0));
    let total_clicks: u64 = buckets.iter().map(|b| b.counts.clicks).sum();
    let total_impressions: u64 = buckets.iter().map(|b| b.counts.impressions).sum();
    let with_data = buckets.iter().filter(|b| b.has_data()).count();
    let (unit, period, label_every) = match granularity {
        Granularity::Hour => ("hour", "the last 48 hours", 6),
        Granularity::Day => ("day", "the last 30 days", 5),
    };
    let title = format!("Clicks and impressions per {unit}, {period} (UTC)");
    let busiest = buckets
        .iter()
        .filter(|b| b.counts.clicks > 0)
        .max_by_key(|b| (b.counts.clicks, -b.start));
    let desc = format!(
        "{} and {} in {period}, in {} with any. {}Impressions are the dashed line on the left \
         axis, clicks the solid line on the right axis. The table below the chart lists the same \
         numbers.",
        plural(total_impressions, "impression", "impressions"),
        plural(total_clicks, "click", "clicks"),
        plural(with_data as u64, unit, &format!("{unit}s")),
        busiest
            .map(|b| format!(
                "Most clicks: {} in {}. ",
                b.counts.clicks,
                bucket_label(b.start, granularity)
            ))
            .unwrap_or_default(),
    );
    let ticks: Vec<u64> = (0..=TICKS).collect();
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) }
            role="img" aria-labelledby="chart-title chart-desc"
            data-granularity=(granularity.as_str()) data-buckets=(n) {
            title #chart-title { (title) }
            desc #chart-desc { (desc) }
            // Horizontal grid lines at the ticks (shared by both axes: both have TICKS steps).
            g.grid stroke="currentColor" stroke-opacity="0.15" {
                @for t in &ticks {
                    @let y = coord(y_of(*t, TICKS));
                    line x1=(LEFT) x2=(RIGHT) y1=(y) y2=(y) {}
                }
            }
            g.axis.axis-impressions font-size="12" fill="currentColor" {
                line x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(BOTTOM) stroke="currentColor" {}
                @for t in &ticks {
                    text x=(LEFT - 8.0) y=(coord(y_of(*t, TICKS) + 4.0)) text-anchor="end" {
                        (impressions_max / TICKS * t)
                    }
                }
                text x="0" y="0" text-anchor="middle" fill=(IMPRESSIONS_COLOUR)
                    transform={ "translate(16 " (coord((TOP + BOTTOM) / 2.0)) ") rotate(-90)" } {
                    "Impressions"
                }
            }
            g.axis.axis-clicks font-size="12" fill="currentColor" {
                line x1=(RIGHT) x2=(RIGHT) y1=(TOP) y2=(BOTTOM) stroke="currentColor" {}
                @for t in &ticks {
                    text x=(RIGHT + 8.0) y=(coord(y_of(*t, TICKS) + 4.0)) text-anchor="start" {
                        (clicks_max / TICKS * t)
                    }
                }
                text x="0" y="0" text-anchor="middle" fill=(CLICKS_COLOUR)
                    transform={ "translate(" (WIDTH - 14.0) " " (coord((TOP + BOTTOM) / 2.0)) ") rotate(90)" } {
                    "Clicks"
                }
            }
            g.axis.axis-time font-size="12" fill="currentColor" {
                line x1=(LEFT) x2=(RIGHT) y1=(BOTTOM) y2=(BOTTOM) stroke="currentColor" {}
                @for (i, bucket) in buckets.iter().enumerate() {
                    @if i % label_every == 0 || i + 1 == n {
                        @let x = coord(x_of(i, n));
                        line x1=(x) x2=(x) y1=(BOTTOM) y2=(BOTTOM + 5.0) stroke="currentColor" {}
                        @if let Some(t) = utc(bucket.start) {
                            @match granularity {
                                Granularity::Hour => {
                                    text x=(x) y=(BOTTOM + 18.0) text-anchor="middle" {
                                        (format!("{:02}:00", t.hour()))
                                    }
                                    @if i == 0 || t.hour() < 6 {
                                        text x=(x) y=(BOTTOM + 32.0) text-anchor="middle" { (day_label(t)) }
                                    }
                                }
                                Granularity::Day => {
                                    text x=(x) y=(BOTTOM + 18.0) text-anchor="middle" { (day_label(t)) }
                                }
                            }
                        }
                    }
                }
                text x=(coord((LEFT + RIGHT) / 2.0)) y=(HEIGHT - 8.0) text-anchor="middle" {
                    @match granularity {
                        Granularity::Hour => "Hour (UTC)",
                        Granularity::Day => "Day (UTC)",
                    }
                }
            }
            polyline.series.series-impressions fill="none" stroke=(IMPRESSIONS_COLOUR)
                stroke-width="2" stroke-dasharray="6 4"
                points=(polyline(buckets, impressions_max, |c| c.impressions)) {}
            polyline.series.series-clicks fill="none" stroke=(CLICKS_COLOUR) stroke-width="2.5"
                points=(polyline(buckets, clicks_max, |c| c.clicks)) {}
            g.points {
                @for (i, bucket) in buckets.iter().enumerate() {
                    @if bucket.has_data() {
                        @let x = coord(x_of(i, n));
                        @let label = bucket_label(bucket.start, granularity);
                        g.point data-bucket=(rfc3339(bucket.start))
                            data-clicks=(bucket.counts.clicks)
                            data-impressions=(bucket.counts.impressions) {
                            circle.point-impressions cx=(x)
                                cy=(coord(y_of(bucket.counts.impressions, impressions_max)))
                                r="4" fill=(IMPRESSIONS_COLOUR) {
                                title { (label) ": " (plural(bucket.counts.impressions, "impression", "impressions")) }
                            }
                            rect.point-clicks x=(coord(x_of(i, n) - 4.0))
                                y=(coord(y_of(bucket.counts.clicks, clicks_max) - 4.0))
                                width="8" height="8" fill=(CLICKS_COLOUR) {
                                title { (label) ": " (plural(bucket.counts.clicks, "click", "clicks")) }
                            }
                        }
                    }
                }
            }
            g.legend font-size="13" fill="currentColor" transform={ "translate(" (LEFT) " 18)" } {
                line x1="0" x2="28" y1="0" y2="0" stroke=(IMPRESSIONS_COLOUR) stroke-width="2"
                    stroke-dasharray="6 4" {}
                circle cx="14" cy="0" r="4" fill=(IMPRESSIONS_COLOUR) {}
                text x="36" y="4" { "Impressions (left axis)" }
                line x1="240" x2="268" y1="0" y2="0" stroke=(CLICKS_COLOUR) stroke-width="2.5" {}
                rect x="250" y="-4" width="8" height="8" fill=(CLICKS_COLOUR) {}
                text x="276" y="4" { "Clicks (right axis)" }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn counts(clicks: u64, impressions: u64) -> Counts {
        Counts {
            clicks,
            impressions,
            ..Counts::default()
        }
    }

    fn point(start: i64, counts: Counts) -> Point {
        Point {
            start,
            bucket: String::new(),
            counts,
            converted: Default::default(),
            reach: None,
            placements: None,
            creatives: None,
            devices: None,
            countries: None,
        }
    }

    #[test]
    fn the_window_ends_with_the_current_bucket() {
        let now = 10 * 86_400 + 5 * 3600 + 17;
        assert_eq!(
            window(Granularity::Hour, now),
            (10 * 86_400 + 6 * 3600 - 48 * 3600, 10 * 86_400 + 6 * 3600)
        );
        assert_eq!(
            window(Granularity::Day, now),
            (11 * 86_400 - 30 * 86_400, 11 * 86_400)
        );
    }

    #[test]
    fn axes_round_up_to_whole_ticks() {
        assert_eq!(axis_max(0), 4);
        assert_eq!(axis_max(1), 4);
        assert_eq!(axis_max(4), 4);
        assert_eq!(axis_max(5), 8);
        assert_eq!(axis_max(9), 20);
        assert_eq!(axis_max(37), 40);
        assert_eq!(axis_max(41), 80);
        assert_eq!(axis_max(1234), 2000);
    }

    #[test]
    fn fill_places_points_in_their_buckets_and_drops_the_rest() {
        let series = [
            point(0, counts(9, 9)),
            point(7200, counts(1, 2)),
            point(7200 + 47 * 3600, counts(3, 0)),
            point(7200 + 48 * 3600, counts(5, 5)),
        ];
        let buckets = fill(&series, 7200, Granularity::Hour);
        assert_eq!(buckets.len(), 48);
        assert_eq!(buckets[0].counts, counts(1, 2));
        assert_eq!(buckets[47].counts, counts(3, 0));
        assert_eq!(buckets.iter().filter(|b| b.has_data()).count(), 2);
    }

    #[test]
    fn the_svg_marks_each_bucket_with_data_at_its_value() {
        let mut buckets = fill(&[], 0, Granularity::Day);
        buckets[3].counts = counts(2, 8);
        buckets[10].counts = counts(4, 0);
        let svg = render(&buckets, Granularity::Day).into_string();
        assert_eq!(svg.matches("<g class=\"point\"").count(), 2, "{svg}");
        assert!(svg.contains(
            r#"<g class="point" data-bucket="1970-01-04T00:00:00Z" data-clicks="2" data-impressions="8">"#
        ));
        // Clicks: axis 0..4, so 4 clicks are at the top and 2 half-way.
        assert!(
            svg.contains(&format!(r#"y="{}""#, coord(TOP - 4.0))),
            "{svg}"
        );
        assert!(svg.contains(&format!(r#"y="{}""#, coord((TOP + BOTTOM) / 2.0 - 4.0))));
        assert!(svg.contains("<title id=\"chart-title\">Clicks and impressions per day"));
        assert!(svg.contains("8 impressions and 6 clicks in the last 30 days, in 2 days"));
        assert!(
            !svg.contains("<circle class=\"point-impressions\" cx=\"0"),
            "{svg}"
        );
    }
}
