//! Tracking (product view): every advert's tracked link, the redirect at `/r/{code}`, click and
//! impression counters buffered in the cache tier and moved to the database on conditions (a
//! report, an interval, a threshold), and the reports built from them.

mod ascii;
mod click_events;
mod clicks;
mod conversions;
mod counters;
mod http;
mod journal;
mod links;
mod pipeline;
mod reach;
mod redis_tier;
mod report;
mod store;
mod visitors;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderValue;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::creative::{CreativeId, Shown, Tally};
use crate::domain::events::EventType;
use crate::domain::targeting::Viewer;
use crate::domain::{AdvertId, CustomerId};
use crate::platform::client_addr::TrustedProxies;
use crate::platform::db::{Db, DbError};
use crate::platform::events::Outbox;
use crate::platform::limits::MissBudget;
use crate::platform::redis::Redis;
use crate::platform::telemetry::CacheUsage;

pub use click_events::ClickRecorded;
pub use clicks::{BadClickId, Click, ClickIds};
pub use counters::Metric;
pub use http::{ApiDoc, REDIRECT_PREFIX, REDIRECT_ROUTE, configure, configure_redirect};
pub use pipeline::PipelineStats;
pub use report::{
    Converted, CountryCounts, CreativeCounts, DeviceCounts, END_OF_TIME, Granularity,
    PlacementCounts, Point, Report, to_csv,
};
pub use store::{AdvertHours, AdvertTotals, StatsFlushed};

use counters::PlacementName;
use links::LinkResolver;
use pipeline::{CounterPipeline, FlushError, PipelineSettings, Reach};
use visitors::Visitors;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingSettings {
    pub redirect_status: u16,
    pub referrer_policy: String,
    pub link_cache_capacity: u64,
    pub link_cache_ttl_secs: u64,
    pub negative_cache_ttl_secs: u64,
    pub duplicate_window_secs: u64,
    pub trust_forwarded_for: bool,
    pub push_interval_ms: u64,
    pub flush_interval_secs: u64,
    pub flush_threshold: u64,
    pub journal_dir: String,
    pub journal_warn_bytes: u64,
    /// With Redis: memory for the pushes an instance keeps until the database holds them (a
    /// copy against a loss of Redis); past it, counts go to the journal instead.
    pub redis_kept_bytes: u64,
    pub journal_fsync: bool,
    /// Billable clicks on one advert from one address (an IPv6 /64) per UTC hour, per
    /// instance; more are `suspicious_clicks`. 0: no limit.
    pub max_billable_clicks_per_address_per_hour: u32,
    /// The same per user (the impression token's user); 0: no limit.
    pub max_billable_clicks_per_user_per_hour: u32,
    /// How long after a click a conversion is still attributed to it, in days.
    pub attribution_window_days: u32,
}

impl TrackingSettings {
    /// Problems with these settings, each starting with its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !matches!(self.redirect_status, 302 | 307) {
            problems.push("tracking.redirect_status: must be 302 or 307".into());
        }
        if HeaderValue::from_str(&self.referrer_policy).is_err() || self.referrer_policy.is_empty()
        {
            problems.push("tracking.referrer_policy: must be a Referrer-Policy value".into());
        }
        if self.push_interval_ms == 0 || self.push_interval_ms > 50 {
            problems.push("tracking.push_interval_ms: must be 1 to 50".into());
        }
        if self.flush_interval_secs == 0 {
            problems.push("tracking.flush_interval_secs: must be at least 1".into());
        }
        if self.flush_threshold == 0 {
            problems.push("tracking.flush_threshold: must be at least 1".into());
        }
        if !(1..=365).contains(&self.attribution_window_days) {
            problems.push("tracking.attribution_window_days: must be 1 to 365".into());
        }
        if self.journal_dir.trim().is_empty() {
            problems.push("tracking.journal_dir: must not be empty".into());
        }
        problems
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    #[error("advert not found")]
    NotFound,
    #[error("counters are not reachable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Db(DbError),
}

impl From<DbError> for TrackingError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(reason) => Self::Unavailable(reason),
            other => Self::Db(other),
        }
    }
}

impl From<FlushError> for TrackingError {
    fn from(e: FlushError) -> Self {
        match e {
            FlushError::Db(db) => db.into(),
            FlushError::Journal(io) => Self::Unavailable(io.to_string()),
            FlushError::Redis(e) => Self::Unavailable(e.to_string()),
            FlushError::Recovering => {
                Self::Unavailable("counts redis lost are being pushed again".into())
            }
        }
    }
}

/// Why a reported conversion was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    #[error("invalid conversion")]
    Invalid(Vec<crate::platform::http::FieldError>),
    #[error("click id {0}")]
    BadClickId(clicks::BadClickId),
    #[error("the click id belongs to an advert of another customer")]
    Foreign,
    #[error("the click is older than the attribution window of {days} days")]
    Expired { days: i64 },
    #[error(transparent)]
    Tracking(#[from] TrackingError),
}

/// A conversion taken.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConversionTaken {
    /// The advert the click was on.
    #[schema(value_type = i64, example = 1)]
    pub advert_id: AdvertId,
    #[schema(example = "purchase")]
    pub event: String,
    /// This (click id, event) was reported before: nothing changed, the first report stands.
    pub duplicate: bool,
}

/// What a genuine impression token says about a click.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribution {
    /// The visitor the card was served to.
    pub visitor: u64,
    /// The placement the card was built for (its position in the catalogue); `None` for the
    /// generic card.
    pub placement: Option<usize>,
    /// The token is older than `serving.token_ttl_secs`: the click is not billable.
    pub expired: bool,
    /// The creative the card showed (`None` for tokens from before creatives).
    pub creative: Option<Shown>,
}

/// How a report splits its counts, beside the totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Breakdown {
    /// Each placement's share.
    pub placement: bool,
    /// Each creative's share.
    pub creative: bool,
    /// Each device's share.
    pub device: bool,
    /// Each country's share.
    pub country: bool,
}

/// What tracking needs from whoever issues impression tokens (serving, wired by main_app).
pub trait ClickHooks: Send + Sync + 'static {
    /// What a genuine token (`t` on the tracked link) says for this advert; `None` for a missing,
    /// forged or foreign one.
    fn attribute(&self, token: &str, advert: AdvertId) -> Option<Attribution>;
    /// A billable click, after bots and duplicates were set apart.
    fn clicked(&self, advert: AdvertId, attribution: Option<&Attribution>);
    /// Who is clicking, as far as the request's headers tell: the device and country the click
    /// counts under and its click id carries.
    fn viewer(&self, req: &actix_web::HttpRequest) -> crate::domain::targeting::Viewer;
}

/// The tracking module's service, shared by its handlers and by whoever records impressions.
pub struct TrackingService {
    hooks: Arc<dyn ClickHooks>,
    links: LinkResolver,
    visitors: Visitors,
    pipeline: Arc<CounterPipeline>,
    /// The catalogue's placement names, by position (what impressions and tokens refer to).
    placements: Vec<PlacementName>,
    /// Users served per advert and day, until merged into the database.
    reach: Arc<reach::ReachCounter>,
    /// How often `reach` is merged (`tracking.flush_interval_secs`).
    reach_every: Duration,
    /// Issues the click ids of adverts that track conversions, and checks those reported back.
    click_ids: clicks::ClickIds,
    /// `tracking.attribution_window_days`, in seconds.
    attribution_window_secs: i64,
    /// `click.recorded` events on their way to the outbox (`events.clicks`).
    click_events: Option<click_events::ClickEvents>,
    /// Whether `click.recorded` is wanted at the moment (a broker, or a webhook subscribed).
    outbox: Outbox,
    db: Db,
    redirect_status: StatusCode,
    referrer_policy: HeaderValue,
}

/// The edge's protections the redirect works behind: whose forwarded addresses to believe, and
/// the budget of lookups for unknown codes.
pub struct Edge {
    pub proxies: TrustedProxies,
    pub misses: MissBudget,
}

impl TrackingService {
    pub async fn build(
        db: Db,
        redis: Option<Redis>,
        settings: &TrackingSettings,
        placements: &[crate::domain::Placement],
        edge: Edge,
        hooks: Arc<dyn ClickHooks>,
        outbox: &Outbox,
    ) -> anyhow::Result<Self> {
        let Edge { proxies, misses } = edge;
        let journal = journal::Journal::open(
            &PathBuf::from(&settings.journal_dir),
            settings.journal_fsync,
        )?;
        let pipeline = CounterPipeline::new(
            db.clone(),
            journal,
            redis.clone().map(redis_tier::RedisCounters::new),
            PipelineSettings {
                push_interval: Duration::from_millis(settings.push_interval_ms),
                flush_interval: Duration::from_secs(settings.flush_interval_secs),
                flush_threshold: settings.flush_threshold,
                journal_warn_bytes: settings.journal_warn_bytes,
                redis_kept_bytes: settings.redis_kept_bytes,
                outbox: outbox.clone(),
            },
        );
        let click_ids = clicks::ClickIds::load(&db).await?;
        Ok(Self {
            hooks,
            click_ids,
            attribution_window_secs: i64::from(settings.attribution_window_days) * 86_400,
            click_events: outbox
                .clicks_enabled()
                .then(click_events::ClickEvents::default),
            outbox: outbox.clone(),
            links: LinkResolver::new(
                db.clone(),
                redis,
                settings.link_cache_capacity,
                Duration::from_secs(settings.link_cache_ttl_secs),
                Duration::from_secs(settings.negative_cache_ttl_secs),
                misses,
            ),
            visitors: Visitors::new(
                Duration::from_secs(settings.duplicate_window_secs),
                visitors::ClickLimits {
                    per_address_per_hour: settings.max_billable_clicks_per_address_per_hour,
                    per_user_per_hour: settings.max_billable_clicks_per_user_per_hour,
                },
                proxies,
            ),
            pipeline: Arc::new(pipeline),
            placements: placements.iter().map(|p| p.name.as_str().into()).collect(),
            reach: Arc::default(),
            reach_every: Duration::from_secs(settings.flush_interval_secs),
            db,
            redirect_status: StatusCode::from_u16(settings.redirect_status)
                .unwrap_or(StatusCode::FOUND),
            referrer_policy: HeaderValue::from_str(&settings.referrer_policy)
                .unwrap_or_else(|_| HeaderValue::from_static("strict-origin-when-cross-origin")),
        })
    }

    /// Starts the background push and flush loops, and the merge of reach sketches.
    pub fn spawn(&self, cancel: CancellationToken) -> Vec<JoinHandle<()>> {
        let mut loops = self.pipeline.spawn(cancel.clone());
        if let Some(events) = &self.click_events {
            loops.push(events.spawn(self.db.clone(), cancel.clone()));
        }
        let (reach, db, every) = (self.reach.clone(), self.db.clone(), self.reach_every);
        loops.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tick.tick() => if let Err(e) = reach.merge(&db).await {
                        tracing::warn!(error = %e, "reach not merged into the database; tried again later");
                    },
                }
            }
        }));
        loops
    }

    /// Pushes and flushes what is pending, and merges reach, within `deadline` (graceful
    /// shutdown).
    pub async fn shutdown(&self, deadline: Duration) {
        let started = std::time::Instant::now();
        self.pipeline.drain_on_shutdown(deadline).await;
        let left = deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, self.reach.merge(&self.db)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "the last reach was not merged"),
            Err(_) => tracing::warn!("the last reach was not merged in time"),
        }
    }

    /// A billable impression of `advert` was served to `user` (a keyed hash of the frontend's
    /// user id): it counts toward the advert's unique reach.
    pub fn served(&self, advert: AdvertId, user: u64) {
        self.reach
            .served(advert, user, crate::platform::db::now_ms().div_euclid(1000));
    }

    /// Counts one event of `advert`, for the placement at this position of the catalogue
    /// (`None`: the generic card), the creative shown (`None`: not known) and the viewer's
    /// device and country (each as far as known). Serving's hot path for impressions.
    pub fn record(
        &self,
        advert: AdvertId,
        metric: Metric,
        placement: Option<usize>,
        creative: Option<CreativeId>,
        viewer: Viewer,
    ) {
        let placement = placement.and_then(|i| self.placements.get(i));
        if let Some(events) = &self.click_events
            && self.outbox.wants(EventType::ClickRecorded)
        {
            events.push(
                advert,
                metric,
                placement.map(|p| &**p),
                creative.map(|c| c.0),
                viewer,
            );
        }
        self.pipeline
            .record(advert, placement, creative, viewer, metric);
    }

    /// The location of one click of an advert whose target has macros or that tracks
    /// conversions (`None`: the filled-in text is not a header value; the stored target is
    /// sent instead).
    fn filled_location(
        &self,
        fill: &links::Fill,
        advert: AdvertId,
        placement: Option<usize>,
        creative: Option<CreativeId>,
        viewer: Viewer,
    ) -> Option<HeaderValue> {
        let placement = placement.and_then(|i| self.placements.get(i)).map(|p| &**p);
        let click_id = fill.needs_click_id().then(|| {
            self.click_ids.issue(&clicks::Click {
                advert,
                clicked_at: crate::platform::db::now_ms().div_euclid(1000),
                placement: placement.map(str::to_owned),
                creative,
                viewer,
            })
        });
        fill.location(&links::ClickValues {
            advert,
            placement,
            creative,
            click_id: click_id.as_deref(),
        })
    }

    /// The signer of click ids: what the redirect appends and conversions are checked against.
    pub fn click_ids(&self) -> &ClickIds {
        &self.click_ids
    }

    pub fn stats(&self) -> &PipelineStats {
        self.pipeline.stats()
    }

    /// Suspicious clicks judged by this instance, by reason.
    pub fn suspicious_clicks(&self) -> &visitors::SuspiciousClicks {
        self.visitors.suspicious()
    }

    /// What the link caches hold (`reklama_cache_entries`).
    pub fn cache_usage(&self) -> [(&'static str, CacheUsage); 2] {
        self.links.usage()
    }

    /// Bytes of counts waiting in the local journal (the database or Redis did not take them yet).
    pub fn journal_bytes(&self) -> u64 {
        self.pipeline.journal_bytes()
    }

    /// The generations of Redis pushes this instance keeps until the database holds them, and
    /// about how many bytes they take (`reklama_counter_kept_*`).
    pub fn kept(&self) -> (usize, usize) {
        self.pipeline.kept()
    }

    /// Clicks counted but not yet moved to the database.
    pub fn pending_clicks(&self) -> u64 {
        self.pipeline.pending_clicks()
    }

    /// Moves every pending count, this instance's and (through Redis) every other's, to the
    /// database now. Fails rather than answer with counts known to be incomplete.
    pub async fn flush(&self) -> Result<(), TrackingError> {
        Ok(self.pipeline.flush(Reach::Everything).await?)
    }

    /// At start-up: moves what an earlier run left in the journal (or Redis) to the database, if
    /// it can; otherwise the background flush does it later.
    pub async fn settle(&self) {
        if let Err(e) = self.pipeline.flush(Reach::BestEffort).await {
            tracing::warn!(error = %e, "pending counts from an earlier run wait for the next flush");
        }
    }

    /// Drops a cached link, after its advert changed.
    pub async fn forget_link(&self, code: &str) {
        self.links.forget(code).await;
    }

    async fn owned(&self, customer: CustomerId, advert: AdvertId) -> Result<(), TrackingError> {
        let owner = self
            .db
            .run(move |conn| store::advert_owner(conn, advert))
            .await?;
        if owner == Some(customer) {
            Ok(())
        } else {
            Err(TrackingError::NotFound)
        }
    }

    /// Takes a conversion reported by `customer` (the body of `POST /api/v1/conversions`).
    pub async fn convert(
        &self,
        customer: CustomerId,
        body: &[u8],
    ) -> Result<ConversionTaken, ConversionError> {
        let reported = conversions::parse(body).map_err(ConversionError::Invalid)?;
        let click = self
            .click_ids
            .verify(&reported.click_id)
            .map_err(ConversionError::BadClickId)?;
        let now = crate::platform::db::now_ms().div_euclid(1000);
        let advert = click.advert;
        let owner = self
            .db
            .run(move |conn| store::advert_owner(conn, advert))
            .await
            .map_err(TrackingError::from)?;
        if owner != Some(customer) {
            return Err(ConversionError::Foreign);
        }
        if now - click.clicked_at > self.attribution_window_secs {
            return Err(ConversionError::Expired {
                days: self.attribution_window_secs / 86_400,
            });
        }
        let event = reported.event.clone();
        let stored = self
            .db
            .run(move |conn| conversions::record(conn, customer, &click, &reported, now))
            .await
            .map_err(TrackingError::from)?;
        Ok(ConversionTaken {
            advert_id: advert,
            event,
            duplicate: !stored,
        })
    }

    pub async fn report(
        &self,
        customer: CustomerId,
        advert: AdvertId,
        granularity: Granularity,
        breakdown: Breakdown,
        from: i64,
        to: i64,
    ) -> Result<Report, TrackingError> {
        self.owned(customer, advert).await?;
        self.flush().await?;
        self.reach.merge(&self.db).await?;
        let (rows, splits, (reach, daily_reach), (converted, currencies)) = self
            .db
            .run(move |conn| {
                let rows = store::hourly_rows(conn, advert, from, to)?;
                let converted = conversions::hourly(conn, advert, from, to)?;
                let currencies = conversions::currencies(conn, advert, from, to)?;
                let reach = reach::stored_reach(
                    conn,
                    advert,
                    reach::utc_day(from),
                    reach::utc_day(to - 1),
                )?;
                let placements = match breakdown.placement {
                    true => Some(store::hourly_placement_rows(conn, advert, from, to)?),
                    false => None,
                };
                let creatives = match breakdown.creative {
                    true => Some(store::hourly_creative_rows(conn, advert, from, to)?),
                    false => None,
                };
                let mut groups = |wanted: bool, kind| match wanted {
                    true => store::hourly_group_rows(conn, advert, kind, from, to).map(Some),
                    false => Ok(None),
                };
                let devices = groups(breakdown.device, store::GroupKind::Device)?;
                let countries = groups(breakdown.country, store::GroupKind::Country)?;
                let splits = (placements, creatives, devices, countries);
                Ok::<_, DbError>((rows, splits, reach, (converted, currencies)))
            })
            .await?;
        let (placements, creatives, devices, countries) = splits;
        let shares = report::Shares {
            placements: placements.as_deref(),
            creatives: creatives.as_deref(),
            devices: devices.as_deref(),
            countries: countries.as_deref(),
        };
        let mut report = report::build(advert, &rows, shares, granularity, from, to);
        report::add_conversions(&mut report, &converted, granularity.seconds());
        report.currencies = currencies;
        report.reach = reach;
        if granularity == Granularity::Day {
            let by_day: HashMap<i64, u64> = daily_reach.into_iter().collect();
            for point in &mut report.series {
                point.reach = Some(by_day.get(&point.start).copied().unwrap_or(0));
            }
        }
        Ok(report)
    }

    /// Each creative's billable impressions and clicks over the last `days` days, as flushed
    /// (what the variants job ranks composed creatives by).
    pub async fn creative_tallies(
        &self,
        advert: AdvertId,
        days: i64,
    ) -> Result<HashMap<CreativeId, Tally>, TrackingError> {
        let to = crate::platform::db::now_ms() / 1000 + 3600;
        let from = to - days * 86_400;
        let rows = self
            .db
            .run(move |conn| store::hourly_creative_rows(conn, advert, from, to))
            .await?;
        let mut tallies: HashMap<CreativeId, Tally> = HashMap::new();
        for (_, creative, counts) in rows {
            let tally = tallies.entry(creative).or_default();
            tally.impressions += counts.impressions;
            tally.clicks += counts.clicks;
        }
        Ok(tallies)
    }

    /// Every advert of `customer` with counts or conversions in `[from, to)` (Unix seconds,
    /// whole hours), with its hours: what the report e-mail shows. This instance's pending
    /// counts are flushed first.
    pub async fn customer_hours(
        &self,
        customer: CustomerId,
        from: i64,
        to: i64,
    ) -> Result<Vec<AdvertHours>, TrackingError> {
        self.flush().await?;
        Ok(self
            .db
            .run(move |conn| store::customer_hours(conn, customer, from, to))
            .await?)
    }

    pub async fn summary(&self, customer: CustomerId) -> Result<Vec<AdvertTotals>, TrackingError> {
        self.flush().await?;
        Ok(self
            .db
            .run(move |conn| store::customer_totals(conn, customer))
            .await?)
    }
}
