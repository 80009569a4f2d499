//! The report e-mail: each customer with an address who chose `daily` or `weekly` gets, after
//! every whole period (a UTC day; a week from Monday 00:00 UTC), the totals of its adverts in it
//! and a small chart per advert, in plain text and HTML.
//!
//! One recurring job, `mail.reports`, runs on any instance [`GRACE_SECS`] after each midnight
//! (UTC), so the counts of the period's last minutes have reached the database. For every
//! customer whose report is due it builds the e-mail, then in one transaction moves the
//! customer's `report_sent_until` to the period's end and queues a `mail.send` job: a period is
//! reported once, however many instances run the job or how often it is retried; a run missed
//! while every instance was down happens at the next start, for the latest period.

use std::sync::Arc;

use async_trait::async_trait;
use maud::{Markup, html};
use time::OffsetDateTime;

use crate::domain::{AdvertId, CustomerId};
use crate::platform::auth::{self, ReportEmail};
use crate::platform::db::{self, Db, DbConnection, DbError, now_ms};
use crate::platform::jobs::{self, JobHandler};
use crate::platform::mail::{Email, MailQueue};
use crate::platform::urls::PublicUrls;

use super::alerts::grouped;
use super::letter;

/// The job that queues the reports due.
pub const REPORTS_JOB: &str = "mail.reports";
/// How long after a period ends its report is made: counts reach the database within
/// `tracking.flush_interval_secs` (and a Redis tier's drain) of being counted.
pub const GRACE_SECS: i64 = 600;
/// The most adverts an e-mail lists, the busiest first; the rest are on the dashboard.
const MAX_ADVERTS: usize = 25;

const DAY: i64 = 86_400;
const WEEK: i64 = 7 * DAY;
/// 1970-01-05, the first Monday after the Unix epoch (a Thursday).
const FIRST_MONDAY: i64 = 4 * DAY;

/// One of a customer's adverts over a report's period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertPeriod {
    pub advert: AdvertId,
    pub title: String,
    /// `(hour's start in Unix seconds, impressions, billable clicks)`; hours without counts
    /// may be left out.
    pub hours: Vec<(i64, u64, u64)>,
    /// Conversions of clicks in the period.
    pub conversions: u64,
}

/// Where the report's counts come from (tracking, wired by the composition root).
#[async_trait]
pub trait ReportSource: Send + Sync + 'static {
    /// The customer's adverts with any count or conversion in `[from, to)` (Unix seconds).
    async fn adverts(
        &self,
        customer: CustomerId,
        from: i64,
        to: i64,
    ) -> Result<Vec<AdvertPeriod>, String>;
}

/// One report's period: `[from, to)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub report: ReportEmail,
    pub from: i64,
    pub to: i64,
}

impl Period {
    /// The latest whole period of `report` that ended at least [`GRACE_SECS`] before `now`
    /// (Unix seconds); `None` for `off`.
    pub fn latest(report: ReportEmail, now: i64) -> Option<Self> {
        let settled = now - GRACE_SECS;
        let (to, length) = match report {
            ReportEmail::Off => return None,
            ReportEmail::Daily => (settled - settled.rem_euclid(DAY), DAY),
            ReportEmail::Weekly => (settled - (settled - FIRST_MONDAY).rem_euclid(WEEK), WEEK),
        };
        Some(Self {
            report,
            from: to - length,
            to,
        })
    }

    /// The chart's step: hours of a day, days of a week.
    fn step(&self) -> i64 {
        match self.report {
            ReportEmail::Weekly => DAY,
            _ => 3600,
        }
    }

    /// What a chart's bar stands for.
    fn unit(&self) -> &'static str {
        match self.report {
            ReportEmail::Weekly => "by day",
            _ => "by hour (UTC)",
        }
    }

    fn buckets(&self) -> usize {
        usize::try_from((self.to - self.from) / self.step()).unwrap_or(0)
    }

    /// `2026-12-02`, or `2026-11-23 to 2026-11-29`.
    pub fn label(&self) -> String {
        match self.report {
            ReportEmail::Weekly => format!("{} to {}", day_of(self.from), day_of(self.to - DAY)),
            _ => day_of(self.from),
        }
    }

    /// A bucket's label under its bar: the hour, or the weekday.
    fn bucket_label(&self, index: usize) -> String {
        match self.report {
            ReportEmail::Weekly => ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
                .get(index)
                .copied()
                .unwrap_or("")
                .to_owned(),
            _ => format!("{index:02}"),
        }
    }
}

/// When the job runs after `now` (Unix seconds): the next midnight (UTC) plus [`GRACE_SECS`].
pub fn next_run(now: i64) -> i64 {
    let midnight = now - now.rem_euclid(DAY);
    let today = midnight + GRACE_SECS;
    if today > now { today } else { today + DAY }
}

fn day_of(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| t.date().to_string())
        .unwrap_or_default()
}

/// Queues the customers' report e-mails when they are due.
pub struct ReportJob {
    db: Db,
    source: Arc<dyn ReportSource>,
    mail: MailQueue,
    urls: PublicUrls,
    max_attempts: u32,
}

impl ReportJob {
    pub fn new(
        db: Db,
        source: Arc<dyn ReportSource>,
        mail: MailQueue,
        urls: PublicUrls,
        max_attempts: u32,
    ) -> Self {
        Self {
            db,
            source,
            mail,
            urls,
            max_attempts,
        }
    }

    /// Makes sure the job waits for its next run (at start-up; each run schedules the next).
    /// Nothing while mail is off.
    pub async fn schedule(&self) -> Result<(), DbError> {
        if !self.mail.enabled() {
            return Ok(());
        }
        let attempts = self.max_attempts;
        let at = next_run(now_ms() / 1000) * 1000;
        self.db
            .run(move |conn| {
                jobs::enqueue_once_at(conn, REPORTS_JOB, "{}", attempts, at)?;
                Ok::<_, DbError>(())
            })
            .await
    }

    /// Queues every report due at `now` (Unix seconds); how many. A customer whose counts
    /// cannot be read fails the run (retried), after the others are queued.
    pub async fn send_due(&self, now: i64) -> Result<usize, String> {
        if !self.mail.enabled() {
            return Ok(0);
        }
        let mut queued = 0;
        let mut failed = None;
        for report in [ReportEmail::Daily, ReportEmail::Weekly] {
            let Some(period) = Period::latest(report, now) else {
                continue;
            };
            let due = self
                .db
                .run(move |conn| Ok::<_, DbError>(auth::reports_due(conn, report, period.to)?))
                .await
                .map_err(|e| e.to_string())?;
            for (customer, address) in due {
                match self.queue(customer, &address, period).await {
                    Ok(true) => queued += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(%customer, error = %e, "report e-mail not queued; tried again");
                        failed = Some(e);
                    }
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(queued),
        }
    }

    /// Builds and queues one customer's report; `false` when another run queued it first.
    async fn queue(
        &self,
        customer: CustomerId,
        address: &str,
        period: Period,
    ) -> Result<bool, String> {
        let adverts = self
            .source
            .adverts(customer, period.from, period.to)
            .await?;
        let email = report_email(&self.urls, address, period, &adverts)?;
        let mail = self.mail;
        self.db
            .run(move |conn: &mut DbConnection| {
                db::transaction(conn, |conn| {
                    if !auth::mark_report_sent(conn, customer, period.report, period.to)? {
                        return Ok(false);
                    }
                    Ok::<_, diesel::result::Error>(mail.enqueue(conn, &email)?.is_some())
                })
                .map_err(DbError::from)
            })
            .await
            .map_err(|e| e.to_string())
    }
}

#[async_trait]
impl JobHandler for ReportJob {
    fn kind(&self) -> &'static str {
        REPORTS_JOB
    }

    async fn run(&self, _payload: &str) -> Result<(), String> {
        // The next run first: a failure of this one is retried without losing the schedule.
        self.schedule().await.map_err(|e| e.to_string())?;
        let queued = self.send_due(now_ms() / 1000).await?;
        if queued > 0 {
            tracing::info!(queued, "report e-mails queued");
            metrics::counter!("reklama_report_emails_total").increment(queued as u64);
        }
        Ok(())
    }

    async fn dead_lettered(&self, _payload: &str, error: &str) {
        tracing::error!(%error, "report e-mails not queued; the next run tries again");
    }
}

/// One advert's totals and its chart's buckets `(impressions, clicks)`.
struct Row<'a> {
    advert: &'a AdvertPeriod,
    impressions: u64,
    clicks: u64,
    buckets: Vec<(u64, u64)>,
}

impl<'a> Row<'a> {
    fn new(advert: &'a AdvertPeriod, period: Period) -> Self {
        let mut buckets = vec![(0, 0); period.buckets()];
        let (mut impressions, mut clicks) = (0, 0);
        for &(hour, i, c) in &advert.hours {
            impressions += i;
            clicks += c;
            let index = usize::try_from((hour - period.from) / period.step()).ok();
            if let Some(bucket) = index.and_then(|k| buckets.get_mut(k)) {
                bucket.0 += i;
                bucket.1 += c;
            }
        }
        Self {
            advert,
            impressions,
            clicks,
            buckets,
        }
    }

    fn name(&self) -> String {
        match self.advert.title.trim() {
            "" => format!("Advert {}", self.advert.advert),
            title => title.to_owned(),
        }
    }

    fn figures(&self) -> String {
        figures(self.impressions, self.clicks, self.advert.conversions)
    }
}

fn figures(impressions: u64, clicks: u64, conversions: u64) -> String {
    let mut text = format!(
        "{} impressions, {} clicks, CTR {}",
        grouped(impressions),
        grouped(clicks),
        ctr(impressions, clicks)
    );
    if conversions > 0 {
        text.push_str(&format!(", {} conversions", grouped(conversions)));
    }
    text
}

/// Clicks per impression as a percentage with two decimals; `-` without impressions.
fn ctr(impressions: u64, clicks: u64) -> String {
    if impressions == 0 {
        return "-".into();
    }
    format!("{:.2} %", clicks as f64 * 100.0 / impressions as f64)
}

/// `values` as a line of eighth blocks, the highest a full one; a zero is a space-like dot.
fn sparkline(values: impl Iterator<Item = u64> + Clone) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.clone().max().unwrap_or(0);
    values
        .map(|v| match (v, max) {
            (0, _) | (_, 0) => '·',
            _ => {
                BARS[usize::try_from((v * 8).div_ceil(max) - 1)
                    .unwrap_or(7)
                    .min(7)]
            }
        })
        .collect()
}

/// The report e-mail of one customer's `adverts` over `period`.
pub fn report_email(
    urls: &PublicUrls,
    to: &str,
    period: Period,
    adverts: &[AdvertPeriod],
) -> Result<Email, String> {
    let cadence = period.report.as_str();
    let label = period.label();
    let subject = format!("reklama: your {cadence} report for {label}");
    let mut rows: Vec<Row> = adverts.iter().map(|a| Row::new(a, period)).collect();
    rows.sort_by(|a, b| {
        (b.impressions, b.clicks, b.advert.conversions)
            .cmp(&(a.impressions, a.clicks, a.advert.conversions))
            .then(a.advert.advert.cmp(&b.advert.advert))
    });
    let impressions: u64 = rows.iter().map(|r| r.impressions).sum();
    let clicks: u64 = rows.iter().map(|r| r.clicks).sum();
    let conversions: u64 = rows.iter().map(|r| r.advert.conversions).sum();
    let total = figures(impressions, clicks, conversions);
    let hidden = rows.len().saturating_sub(MAX_ADVERTS);
    rows.truncate(MAX_ADVERTS);
    let why = format!("you chose a {cadence} report.");
    let unit = period.unit();

    let mut text = format!("Your adverts, {label} (UTC)\n\nIn all: {total}\n");
    if rows.is_empty() {
        text.push_str("\nNone of your adverts was served or clicked in this period.\n");
    }
    for row in &rows {
        text.push_str(&format!(
            "\n{} (advert {})\n  {}\n  impressions {unit}: {}\n  clicks {unit}:      {}\n  {}\n",
            row.name(),
            row.advert.advert,
            row.figures(),
            sparkline(row.buckets.iter().map(|b| b.0)),
            sparkline(row.buckets.iter().map(|b| b.1)),
            letter::advert_url(urls, row.advert.advert.0),
        ));
    }
    if hidden > 0 {
        text.push_str(&format!(
            "\nAnd {hidden} more adverts: {}/dashboard\n",
            urls.base()
        ));
    }
    text.push_str(&letter::text_footer(urls, &why));

    let body: Markup = html! {
        p style="margin:0 0 4px;color:#6b7280" { (label) " (UTC)" }
        p style="margin:0 0 16px;font-size:16px" { strong { "In all: " } (total) }
        @if rows.is_empty() {
            p { "None of your adverts was served or clicked in this period." }
        }
        @for row in &rows {
            h2 style="font-size:16px;margin:20px 0 2px" {
                a href=(letter::advert_url(urls, row.advert.advert.0)) style="color:#1d2330" { (row.name()) }
            }
            p style="margin:0 0 6px;color:#374151" { (row.figures()) }
            (chart(period, &row.buckets))
        }
        @if hidden > 0 {
            p style="margin:16px 0 0" {
                "And " (hidden) " more adverts: "
                a href={ (urls.base()) "/dashboard" } { "see the dashboard" } "."
            }
        }
    };
    let title = format!("Your {cadence} report, {label}");
    let html = letter::html_page(urls, &title, &why, body);
    Email::new(to, subject, text, html)
}

/// Bars of impressions (blue) above bars of clicks (green), one column per bucket, each
/// column's title naming its figures. Tables and fixed heights: what mail clients draw.
fn chart(period: Period, buckets: &[(u64, u64)]) -> Markup {
    const TALL: u64 = 40;
    const SHORT: u64 = 20;
    let max_impressions = buckets.iter().map(|b| b.0).max().unwrap_or(0).max(1);
    let max_clicks = buckets.iter().map(|b| b.1).max().unwrap_or(0).max(1);
    let height = |v: u64, max: u64, full: u64| if v == 0 { 0 } else { (v * full).div_ceil(max) };
    html! {
        table role="presentation" cellpadding="0" cellspacing="1" style="width:100%;table-layout:fixed;border-collapse:separate" {
            tr {
                @for (k, b) in buckets.iter().enumerate() {
                    td valign="bottom" style={ "height:" (TALL) "px;padding:0" } title={ (period.bucket_label(k)) ": " (grouped(b.0)) " impressions, " (grouped(b.1)) " clicks" } {
                        div style={ "height:" (height(b.0, max_impressions, TALL)) "px;background:#3b82f6;font-size:0;line-height:0" } { }
                    }
                }
            }
            tr {
                @for (k, b) in buckets.iter().enumerate() {
                    td valign="top" style={ "height:" (SHORT) "px;padding:0" } title={ (period.bucket_label(k)) ": " (grouped(b.1)) " clicks" } {
                        div style={ "height:" (height(b.1, max_clicks, SHORT)) "px;background:#10b981;font-size:0;line-height:0" } { }
                    }
                }
            }
            tr {
                @for k in 0..buckets.len() {
                    td style="font-size:9px;color:#9ca3af;text-align:center;padding:0" {
                        @if period.report == ReportEmail::Weekly || k % 6 == 0 { (period.bucket_label(k)) }
                    }
                }
            }
        }
        p style="margin:2px 0 0;font-size:11px;color:#6b7280" {
            span style="color:#3b82f6" { "■" } " impressions  "
            span style="color:#10b981" { "■" } " clicks, " (period.unit())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const DEC_3_2026: i64 = 1_796_256_000; // 2026-12-03 00:00:00 UTC, a Thursday

    #[test]
    fn periods_are_whole_utc_days_and_weeks_from_monday_after_the_grace() {
        assert_eq!(day_of(DEC_3_2026), "2026-12-03");
        let just_after = DEC_3_2026 + 60;
        // Within the grace the day before yesterday is still the latest settled one.
        let daily = Period::latest(ReportEmail::Daily, just_after).unwrap();
        assert_eq!(
            (daily.from, daily.to),
            (DEC_3_2026 - 2 * DAY, DEC_3_2026 - DAY)
        );
        let daily = Period::latest(ReportEmail::Daily, DEC_3_2026 + GRACE_SECS).unwrap();
        assert_eq!((daily.from, daily.to), (DEC_3_2026 - DAY, DEC_3_2026));
        assert_eq!(daily.label(), "2026-12-02");
        assert_eq!(daily.buckets(), 24);
        // 2026-11-30 was a Monday: the week before it ran 11-23 to 11-29.
        let weekly = Period::latest(ReportEmail::Weekly, DEC_3_2026).unwrap();
        assert_eq!(day_of(weekly.to), "2026-11-30");
        assert_eq!(weekly.label(), "2026-11-23 to 2026-11-29");
        assert_eq!(weekly.buckets(), 7);
        assert_eq!(Period::latest(ReportEmail::Off, DEC_3_2026), None);
    }

    #[test]
    fn the_job_runs_after_each_midnight_plus_the_grace() {
        assert_eq!(next_run(DEC_3_2026), DEC_3_2026 + GRACE_SECS);
        assert_eq!(
            next_run(DEC_3_2026 + GRACE_SECS),
            DEC_3_2026 + DAY + GRACE_SECS
        );
        assert_eq!(
            next_run(DEC_3_2026 + 13 * 3600),
            DEC_3_2026 + DAY + GRACE_SECS
        );
    }

    fn advert(id: i64, title: &str, hours: Vec<(i64, u64, u64)>) -> AdvertPeriod {
        AdvertPeriod {
            advert: AdvertId(id),
            title: title.into(),
            hours,
            conversions: 0,
        }
    }

    fn parts(email: &Email) -> (String, String) {
        let v: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(email).unwrap()).unwrap();
        (
            v["text"].as_str().unwrap().to_owned(),
            v["html"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn a_daily_report_totals_each_advert_busiest_first_with_its_hours() {
        let urls = PublicUrls::new("https://ads.example.com");
        let period = Period::latest(ReportEmail::Daily, DEC_3_2026 + GRACE_SECS).unwrap();
        let mut busy = advert(
            2,
            "Busy <one>",
            vec![(period.from, 100, 3), (period.from + 5 * 3600, 300, 9)],
        );
        busy.conversions = 2;
        let quiet = advert(1, "Quiet", vec![(period.from + 3600, 10, 0)]);
        let email = report_email(&urls, "ops@example.com", period, &[quiet, busy]).unwrap();
        assert_eq!(email.subject(), "reklama: your daily report for 2026-12-02");
        let (text, html) = parts(&email);
        assert!(text.contains("In all: 410 impressions, 12 clicks, CTR 2.93 %, 2 conversions"));
        let busy_at = text.find("Busy <one> (advert 2)").unwrap();
        let quiet_at = text.find("Quiet (advert 1)").unwrap();
        assert!(busy_at < quiet_at, "busiest first:\n{text}");
        assert!(text.contains("400 impressions, 12 clicks, CTR 3.00 %, 2 conversions"));
        // 24 hours: the first and sixth have counts, the highest full.
        assert!(text.contains("▃····█··················"), "{text}");
        assert!(html.contains("Busy &lt;one&gt;"));
        assert!(html.contains("title=\"05: 300 impressions, 9 clicks\""));
        assert!(html.contains("https://ads.example.com/dashboard/adverts/2"));
    }

    #[test]
    fn a_period_without_counts_says_so_and_long_lists_are_cut() {
        let urls = PublicUrls::new("https://ads.example.com");
        let period = Period::latest(ReportEmail::Weekly, DEC_3_2026).unwrap();
        let email = report_email(&urls, "ops@example.com", period, &[]).unwrap();
        let (text, _) = parts(&email);
        assert!(text.contains("None of your adverts was served"));
        assert!(text.contains("In all: 0 impressions, 0 clicks, CTR -"));
        let many: Vec<AdvertPeriod> = (1..=30)
            .map(|i| advert(i, "", vec![(period.from + DAY, 10 * i as u64, 1)]))
            .collect();
        let email = report_email(&urls, "ops@example.com", period, &many).unwrap();
        let (text, html) = parts(&email);
        assert!(text.contains("Advert 30 (advert 30)"));
        assert!(!text.contains("(advert 5)\n"));
        assert!(text.contains("And 5 more adverts"));
        assert!(html.contains("title=\"Tue: 300 impressions, 1 clicks\""));
    }
}
