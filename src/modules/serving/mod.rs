//! Serving (the most loaded module): answers a frontend's "adverts for this user" with compact
//! cards straight from memory, serves the compressed creatives, and loads the rest of an advert
//! from the cloud store in the background. No database or Redis round trip per request once warm.

mod announce;
mod bandit;
mod cards;
mod decide;
mod delivery;
mod frequency;
mod full;
mod http;
mod index;
mod media;
mod pacing;
mod profiles;
mod store;
mod tokens;
mod users;
mod viewers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::creative::{CreativeId, Shown};
use crate::domain::placement::PlacementCatalogue;
use crate::domain::targeting::Viewer;
use crate::domain::{AdvertId, Genre};
use crate::platform::client_addr::{TrustedProxies, block_key};
use crate::platform::cloud::CloudStore;
use crate::platform::db::{Db, DbError, now_ms};
use crate::platform::redis::SharedReads;
use crate::platform::telemetry::CacheUsage;
use crate::platform::urls::PublicUrls;
use crate::platform::window_counts::{WindowCounts, unix_now};

pub use announce::{AdvertEnded, CapReached};
pub use cards::{Card, Served, answer_json};
pub use http::{ApiDoc, configure};
pub use media::MediaService;
pub use tokens::{TokenClaims, UserKey};

use bandit::Bandit;
pub use delivery::Ledger;
use delivery::{Admission, Delivery};
use frequency::FrequencyCaps;
use full::FullRecords;
use index::{AdvertIndex, Entry, Pool};
use profiles::Profiles;
use tokens::TokenCodec;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingSettings {
    pub media_cache_bytes: u64,
    pub card_cache_bytes: u64,
    pub card_cache_ttl_secs: u64,
    pub cors_origins: Vec<String>,
    pub max_count: usize,
    pub frequency_cap: u32,
    pub frequency_window_secs: u64,
    pub refresh_interval_ms: u64,
    pub sync_interval_ms: u64,
    pub token_secret: String,
    pub profile_half_life_secs: u64,
    /// Bytes of per-user state (frequency histories, interest profiles) kept in memory; the
    /// least recently seen users go first.
    pub user_state_bytes: u64,
    /// Replaced by `user_state_bytes`; still read, so a configuration naming it is told so.
    #[serde(default, skip_serializing)]
    pub user_cache_capacity: Option<u64>,
    pub full_cache_capacity: u64,
    /// A click whose impression token is older than this is not billable
    /// (`suspicious_clicks`); 0: tokens never expire.
    pub token_ttl_secs: u64,
    /// Serves per client address (an IPv6 /64) per minute, per instance, past which the
    /// answer's impressions are `suspicious_impressions`; 0: no limit.
    pub max_serves_per_address_per_minute: u32,
    /// The header a CDN or proxy names the viewer's country in (`CF-IPCountry`); empty: none.
    pub country_header: String,
    /// The placements adverts are rendered for (`[[serving.placements]]`).
    pub placements: Vec<crate::domain::Placement>,
}

impl ServingSettings {
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=10).contains(&self.max_count) {
            problems.push("serving.max_count: must be 1 to 10".into());
        }
        if self.frequency_cap == 0 {
            problems.push("serving.frequency_cap: must be at least 1".into());
        }
        if self.frequency_window_secs == 0 {
            problems.push("serving.frequency_window_secs: must be at least 1".into());
        }
        if !(50..=1000).contains(&self.refresh_interval_ms) {
            problems.push("serving.refresh_interval_ms: must be 50 to 1000 (changes must reach every instance within 1 s)".into());
        }
        if !(10..=1000).contains(&self.sync_interval_ms) {
            problems.push("serving.sync_interval_ms: must be 10 to 1000".into());
        }
        for origin in &self.cors_origins {
            if origin != "*" && url::Url::parse(origin).is_err() {
                problems.push(format!("serving.cors_origins: {origin:?} is not an origin such as https://news.example.com"));
            }
        }
        problems.extend(crate::domain::Placement::problems(&self.placements));
        if !self.country_header.is_empty()
            && actix_web::http::header::HeaderName::try_from(self.country_header.as_str()).is_err()
        {
            problems.push(format!(
                "serving.country_header: {:?} is not a header name",
                self.country_header
            ));
        }
        if self.user_state_bytes < MIN_USER_STATE_BYTES {
            problems.push(format!(
                "serving.user_state_bytes: must be at least {MIN_USER_STATE_BYTES} (1 MiB)"
            ));
        }
        if self.user_cache_capacity.is_some() {
            problems.push(
                "serving.user_cache_capacity: replaced by serving.user_state_bytes, a bound in bytes (default 268435456, 256 MiB)".into(),
            );
        }
        if self.profile_half_life_secs == 0 {
            problems.push("serving.profile_half_life_secs: must be at least 1".into());
        }
        problems.extend(crate::platform::tokens::secret_problem(
            "serving.token_secret",
            &self.token_secret,
        ));
        problems
    }
}

/// The least `serving.user_state_bytes`: room for a few thousand users.
const MIN_USER_STATE_BYTES: u64 = 1 << 20;

/// How often capped adverts' shared delivery totals are checked against the database.
const RECONCILE_EVERY: Duration = Duration::from_secs(60);
/// How far back the first look for ended adverts reaches after a start.
const ENDED_LOOKBACK_MS: i64 = 24 * 3_600_000;
/// How often the sync loop looks for caps reached and ends passed (a walk over the capped
/// adverts, a range of the index's ends): events within about a second.
const ANNOUNCE_EVERY_MS: i64 = 1_000;

/// What serving needs to count impressions (tracking's counters implement it).
pub trait ImpressionSink: Send + Sync + 'static {
    /// One card of `advert` shown, built for the placement at this position of the catalogue
    /// (`None`: the generic card), showing `creative`, to the user whose [`reach_hash`] is
    /// `reached`, on `viewer`'s device and in its country; `billable` false for a serve past the
    /// address's rate.
    fn impression(
        &self,
        advert: AdvertId,
        placement: Option<usize>,
        creative: CreativeId,
        reached: u64,
        viewer: Viewer,
        billable: bool,
    );
}

/// A user as unique reach counts them: a hash of the frontend's user id that is the same on every
/// instance, across restarts and releases whatever `serving.token_secret` is (XXH3, a specified
/// algorithm, seeded for this use). Only sketches of it are kept, never the hash itself.
pub fn reach_hash(user_id: &str) -> u64 {
    const SEED: u64 = 0x7265_6163_6865_6431;
    xxhash_rust::xxh3::xxh3_64_with_seed(user_id.as_bytes(), SEED)
}

/// Who is asking: users' keys and impression tokens, what each was shown lately (frequency caps)
/// and what they are interested in (profiles). Shared with tracking (through main_app), so that
/// a click can be attributed to the user who saw the card.
pub struct Users {
    tokens: TokenCodec,
    frequency: FrequencyCaps,
    profiles: Profiles,
    /// Serves per client address, for `serving.max_serves_per_address_per_minute`.
    serve_rate: ServeRate,
}

impl Users {
    /// `reads`: the shared pipelines to Redis, `None` without Redis.
    pub fn new(
        reads: Option<SharedReads>,
        settings: &ServingSettings,
        catalogue: &PlacementCatalogue,
        proxies: TrustedProxies,
    ) -> anyhow::Result<Self> {
        let secret = if settings.token_secret.is_empty() {
            if reads.is_some() {
                tracing::warn!(
                    "serving.token_secret is empty: each instance signs impression tokens with its own \
                     random key, so clicks are attributed only on the instance that served the card"
                );
            }
            crate::platform::tokens::random_base62(43).into_bytes()
        } else {
            settings.token_secret.clone().into_bytes()
        };
        let tokens = TokenCodec::new(
            &secret,
            catalogue
                .placements()
                .iter()
                .map(|p| p.name.clone())
                .collect(),
            settings.token_ttl_secs,
        )?;
        Ok(Self {
            tokens,
            frequency: FrequencyCaps::new(
                settings.frequency_cap,
                Duration::from_secs(settings.frequency_window_secs),
                users::histories_share(settings.user_state_bytes),
                reads.clone(),
            ),
            profiles: Profiles::new(
                Duration::from_secs(settings.profile_half_life_secs),
                users::profiles_share(settings.user_state_bytes),
                reads,
            ),
            serve_rate: ServeRate {
                per_minute: WindowCounts::new(
                    settings.max_serves_per_address_per_minute,
                    SERVE_RATE_ADDRESSES_KEPT,
                ),
                proxies,
                past: AtomicU64::new(0),
                salt: std::hash::RandomState::new(),
            },
        })
    }

    /// What a genuine impression token for `advert` says: the user, and the placement the card
    /// was built for.
    pub fn visitor(&self, token: &str, advert: AdvertId) -> Option<TokenClaims> {
        self.tokens.verify(token, advert)
    }

    /// Pushes pending frequency and profile deltas to Redis; `false` if some did not arrive.
    async fn push(&self, now: i64) -> bool {
        let frequency = self.frequency.push().await;
        let profiles = self.profiles.push(now).await;
        frequency && profiles
    }
}

/// What may be served: the index of active adverts (kept current by change polling, on every
/// instance) and, for capped adverts, how much of each may still be delivered.
pub struct Inventory {
    db: Db,
    index: AdvertIndex,
    delivery: Delivery,
    /// Which creative each card shows, learnt from billable impressions and clicks.
    bandit: Bandit,
    /// Capped adverts whose settled totals could not be read yet (not served until they are):
    /// tried again at every poll.
    untracked: std::sync::Mutex<Vec<Arc<Entry>>>,
}

impl Inventory {
    /// `reads`: the shared pipelines to Redis, `None` without Redis.
    pub fn new(
        db: Db,
        reads: Option<SharedReads>,
        urls: PublicUrls,
        settings: &ServingSettings,
        catalogue: PlacementCatalogue,
        ledger: Arc<dyn Ledger>,
    ) -> Self {
        let redis = reads.as_ref().map(|reads| reads.redis().clone());
        let bandit = Bandit::new(
            redis.clone(),
            Some(db.clone()),
            catalogue
                .placements()
                .iter()
                .map(|p| p.name.clone())
                .collect(),
        );
        let cards = cards::Cards::new(
            db.clone(),
            reads,
            urls.clone(),
            settings.card_cache_bytes,
            Duration::from_secs(settings.card_cache_ttl_secs),
            catalogue.clone(),
        );
        Self {
            db: db.clone(),
            index: AdvertIndex::new(db.clone(), cards, urls, catalogue),
            delivery: Delivery::new(
                db,
                redis,
                ledger,
                Duration::from_millis(settings.sync_interval_ms),
            ),
            bandit,
            untracked: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Keeps delivery caps current for `entries` (changed adverts): a tracked advert takes its
    /// new caps; one capped for the first time is tracked from its settled totals, and until
    /// that succeeds it is not served (tried again at every poll).
    async fn track_capped(&self, entries: &[Arc<Entry>]) {
        let mut due =
            std::mem::take(&mut *self.untracked.lock().unwrap_or_else(|p| p.into_inner()));
        for entry in entries {
            let tracked = self.delivery.is_tracked(entry.id)
                && self
                    .delivery
                    .set_caps(entry.id, &entry.caps, &entry.zone, entry.schedule);
            if !tracked && entry.is_capped() {
                due.push(entry.clone());
            }
        }
        if due.is_empty() {
            return;
        }
        let adverts: Vec<_> = due
            .iter()
            .map(|e| (e.id, e.caps, e.zone.clone(), e.schedule))
            .collect();
        if let Err(e) = self.delivery.track(&adverts).await {
            tracing::warn!(adverts = due.len(), error = %e, "cannot settle delivery totals; capped adverts wait for the next poll");
            self.untracked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(due);
        }
    }

    /// What this instance learnt of adverts that left the index (the shared counts stay).
    fn forget(&self, removed: &[AdvertId]) {
        for advert in removed {
            self.bandit.forget(*advert);
        }
    }

    /// Loads the catalogue (cold start).
    pub async fn warm(&self) -> Result<usize, DbError> {
        let n = self.index.load().await?;
        self.track_capped(&self.index.entries_where(Entry::is_capped))
            .await;
        self.bandit.load().await?;
        Ok(n)
    }

    /// Picks up changes from every instance; returns the link codes of changed adverts.
    /// What to announce now: the caps reached, and the adverts whose end passed after `from`.
    fn notices(&self, from: i64, now: i64) -> Vec<announce::Notice> {
        let mut notices: Vec<announce::Notice> = self
            .delivery
            .reached(now)
            .into_iter()
            .map(announce::Notice::Cap)
            .collect();
        let ended = self.index.ending_within(from, now);
        notices.extend(ended.iter().filter_map(|e| {
            Some(announce::Notice::Ended {
                advert: e.id,
                ends_at: e.ends_at?,
            })
        }));
        notices
    }

    async fn poll_changes(&self) -> Result<Vec<String>, DbError> {
        let changes = self.index.poll().await?;
        self.forget(&changes.removed);
        self.track_capped(&changes.servable).await;
        Ok(changes.links)
    }

    /// Re-reads one advert now (it changed on this instance).
    pub async fn refresh(&self, advert: AdvertId) -> Result<(), DbError> {
        let changes = self.index.refresh(advert).await?;
        self.forget(&changes.removed);
        // Live counters stay: delivered totals do not depend on the caps, and re-reading them from
        // the database would lose what is still on its way there.
        self.track_capped(&changes.servable).await;
        Ok(())
    }
}

/// A billable click: it counts towards the advert's click cap, the creative its card showed
/// (when the token names it) and, when the user is known, the user's interests.
pub fn clicked(
    inventory: &Inventory,
    users: &Users,
    advert: AdvertId,
    claims: Option<&TokenClaims>,
) {
    inventory.delivery.click(advert);
    let user = claims.map(|c| c.user);
    // Only a card the learner chose among several counts for it, as only such impressions do.
    if let Some(creative) = claims
        .and_then(|c| c.creative)
        .filter(|shown| shown.among_several)
        .map(|shown| shown.creative)
    {
        let placement = claims
            .and_then(|c| c.placement)
            .and_then(|p| u8::try_from(p).ok())
            .unwrap_or(bandit::GENERIC);
        inventory.bandit.click(bandit::ArmKey {
            advert,
            placement,
            creative,
        });
    }
    // The advert's genre is looked up only for a known user: most clicks carry no token.
    if let Some(user) = user
        && let Some(entry) = inventory.index.entry(advert)
    {
        users.profiles.clicked(user, entry.genre, now_ms());
    }
}

/// How the background sync with Redis goes (exported as metrics).
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Sync rounds completed, failed or not.
    pub rounds: AtomicU64,
    /// Rounds in which some push or read did not reach Redis.
    pub failures: AtomicU64,
}

/// A validated serve request.
#[derive(Debug, Clone)]
pub struct ServeRequest {
    pub user_id: String,
    pub genres: Vec<Genre>,
    pub lang: Option<String>,
    pub count: usize,
    /// The placement's position in the catalogue: only adverts with a ready variant for it.
    pub placement: Option<usize>,
    /// The viewer's device and country, as far as known: only adverts targeting them (or not
    /// targeting by them).
    pub viewer: Viewer,
}

pub struct ServingService {
    users: Arc<Users>,
    inventory: Arc<Inventory>,
    syncs: Arc<SyncStats>,
    impressions: Arc<dyn ImpressionSink>,
    full: FullRecords,
    settings: ServingSettings,
    catalogue: PlacementCatalogue,
    /// `serving.country_header`, parsed once.
    country_header: Option<actix_web::http::header::HeaderName>,
}

/// Addresses (hashed, never kept) counted per minute at most; past it a new one is not counted.
const SERVE_RATE_ADDRESSES_KEPT: usize = 1_000_000;

/// `serving.max_serves_per_address_per_minute`: serves per client address in the current
/// minute, on this instance.
struct ServeRate {
    per_minute: Option<WindowCounts>,
    /// Serves past the rate since this instance started (for `/metrics`).
    past: AtomicU64,
    proxies: TrustedProxies,
    salt: std::hash::RandomState,
}

impl ServeRate {
    /// Whether a serve to this request's address is within the rate (and counts it).
    fn admits(&self, req: &actix_web::HttpRequest) -> bool {
        let Some(limit) = &self.per_minute else {
            return true;
        };
        let Some(ip) = self
            .proxies
            .client_ip(req.peer_addr().map(|a| a.ip()), req.headers())
        else {
            return true;
        };
        let address = block_key(&self.salt, ip);
        let admitted = limit.admit(unix_now() / 60, (0, address));
        if !admitted {
            self.past.fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }
}

impl ServingService {
    pub fn new(
        db: Db,
        users: Arc<Users>,
        inventory: Arc<Inventory>,
        impressions: Arc<dyn ImpressionSink>,
        cloud: Arc<dyn CloudStore>,
        settings: &ServingSettings,
        catalogue: PlacementCatalogue,
    ) -> Self {
        Self {
            users,
            inventory,
            syncs: Arc::default(),
            impressions,
            full: FullRecords::new(db, cloud, settings.full_cache_capacity),
            settings: settings.clone(),
            catalogue,
            country_header: actix_web::http::header::HeaderName::try_from(
                settings.country_header.as_str(),
            )
            .ok(),
        }
    }

    /// The header a CDN or proxy in front names the viewer's country in, when configured.
    pub fn country_header(&self) -> Option<&actix_web::http::header::HeaderName> {
        self.country_header.as_ref()
    }

    /// Whether a serve to this request's client address is within
    /// `serving.max_serves_per_address_per_minute` (counting it); past it the serve is answered
    /// with suspicious impressions.
    pub fn serve_is_billable(&self, req: &actix_web::HttpRequest) -> bool {
        self.users.serve_rate.admits(req)
    }

    /// Serves answered with suspicious impressions since this instance started.
    pub fn suspicious_serves(&self) -> u64 {
        self.users.serve_rate.past.load(Ordering::Relaxed)
    }

    pub fn settings(&self) -> &ServingSettings {
        &self.settings
    }

    pub fn catalogue(&self) -> &PlacementCatalogue {
        &self.catalogue
    }

    pub fn full_records(&self) -> &FullRecords {
        &self.full
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    pub fn sync_stats(&self) -> &SyncStats {
        &self.syncs
    }

    /// Per-user state in memory by kind: users held and the bytes they count against
    /// `serving.user_state_bytes`.
    pub fn user_state(&self) -> [(&'static str, (u64, u64)); 2] {
        [
            ("frequency", self.users.frequency.usage()),
            ("profiles", self.users.profiles.usage()),
        ]
    }

    /// Per-user state read from Redis by kind, each by result (`found`, `absent`, `failed`).
    pub fn user_state_reads(&self) -> [(&'static str, [(&'static str, u64); 3]); 2] {
        [
            ("frequency", self.users.frequency.reads()),
            ("profiles", self.users.profiles.reads()),
        ]
    }

    /// What the card and full-record caches hold (`reklama_cache_entries`, `reklama_cache_bytes`).
    pub async fn cache_usage(&self) -> [(&'static str, CacheUsage); 2] {
        [
            ("cards", self.inventory.index.cards().usage().await),
            ("full", self.full.usage().await),
        ]
    }

    /// Raises capped adverts' shared delivery totals to the database's (see
    /// `Delivery::reconcile`); the sync loop runs it every `RECONCILE_EVERY`.
    pub async fn reconcile_delivery(&self) -> Result<(), DbError> {
        self.inventory.delivery.reconcile().await
    }

    /// At shutdown: pushes every pending frequency and profile delta, reports delivered counts
    /// and gives every delivery lease back to the other instances.
    pub async fn shutdown(&self) {
        let users = self.users.push(now_ms()).await;
        let delivery = self.inventory.delivery.release_all().await;
        if !self.inventory.bandit.sync(true).await {
            tracing::warn!("the learner's last counts were not saved");
        }
        if !(users && delivery) {
            tracing::warn!(
                "the final sync with redis failed; leases held by this instance return when they expire"
            );
        }
    }

    /// The decision: eligible adverts for this user, weighted at random, counted as impressions.
    /// `billable` false (a serve past the address's rate): answered the same, but its
    /// impressions are suspicious and spend no delivery cap. The cards come with their click
    /// tokens; [`answer_json`] writes them as the API's answer.
    pub async fn serve(&self, request: &ServeRequest, billable: bool) -> Vec<Served> {
        let now = now_ms();
        let (users, inventory) = (&*self.users, &*self.inventory);
        let user = users.tokens.user_key(&request.user_id);
        let reached = reach_hash(&request.user_id);
        let snapshot = inventory.index.snapshot();
        // A user this instance has not seen is read from Redis: frequency counts and (for a
        // request without genres) the profile, both at once, so the wait is one read's.
        let (caps, ()) = tokio::join!(users.frequency.history(user, now), async {
            if request.genres.is_empty() {
                users.profiles.refresh(user, now).await;
            }
        });
        // Capped adverts a draw wanted while this instance held no lease for them.
        let starved = std::cell::RefCell::new(Vec::new());
        let eligible = |e: &Entry| {
            // Language and placement are the pools' (`Snapshot::pools`).
            e.is_scheduled(now)
                && e.is_for(&request.viewer, now)
                && users.frequency.allows(&caps, e.id, now)
                && (!e.is_capped()
                    || match inventory.delivery.admits(e.id, &e.caps, now) {
                        Admission::Yes => true,
                        Admission::No => false,
                        Admission::NeedsLease => {
                            starved.borrow_mut().push(e.id);
                            false
                        }
                    })
        };
        let mut rng = rand::rng();
        let pools = |genres: Option<&[Genre]>| -> Vec<&Pool> {
            snapshot.pools(genres, request.placement, request.lang.as_deref())
        };
        let mut chosen = if request.genres.is_empty() {
            let preferred = users.profiles.preferred(user, now);
            let mut chosen =
                decide::pick(&pools(Some(&preferred)), request.count, &mut rng, &eligible);
            if chosen.len() < request.count {
                // Fill up from everything else the user may see.
                let taken: Vec<AdvertId> = chosen.iter().map(|e| e.id).collect();
                let more =
                    decide::pick(&pools(None), request.count - chosen.len(), &mut rng, |e| {
                        !taken.contains(&e.id) && eligible(e)
                    });
                chosen.extend(more);
            }
            chosen
        } else {
            decide::pick(
                &pools(Some(&request.genres)),
                request.count,
                &mut rng,
                &eligible,
            )
        };
        let wanted = {
            let mut wanted = starved.take();
            wanted.sort_unstable();
            wanted.dedup();
            wanted
        };
        // Boxed: the lease's Redis round trip is rare here and would otherwise be most of every
        // serve's future (7 KB).
        if chosen.len() < request.count
            && !wanted.is_empty()
            && Box::pin(inventory.delivery.lease_now(&wanted)).await
        {
            let taken: Vec<AdvertId> = chosen.iter().map(|e| e.id).collect();
            let genres = (!request.genres.is_empty()).then_some(&request.genres[..]);
            let more = decide::pick(
                &pools(genres),
                request.count - chosen.len(),
                &mut rng,
                |e| !taken.contains(&e.id) && eligible(e),
            );
            chosen.extend(more);
        }
        chosen.truncate(request.count);
        // The placement's position in the catalogue, as cards and the learner key it.
        let placement = request.placement.and_then(|p| u8::try_from(p).ok());
        let found = inventory
            .index
            .cards()
            .get_all(chosen.iter().map(|e| cards::CardKey {
                advert: e.id,
                placement,
            }))
            .await;
        let arm_placement = placement.unwrap_or(bandit::GENERIC);
        let mut cards = Vec::with_capacity(chosen.len());
        for (e, card) in chosen.iter().zip(found) {
            // Only a card that can be shown counts as an impression.
            let card = match card {
                Ok(Some(card)) => card,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(advert_id = %e.id, error = %err, "card unavailable; skipped");
                    continue;
                }
            };
            let chosen = inventory.bandit.choose(
                e.id,
                arm_placement,
                card.creatives.iter().map(|c| c.id),
                &mut rng,
            );
            // A card without a servable creative (a composed placement whose creative is
            // paused) is kept in memory like any card, so skipping it costs no lookup.
            let Some(creative) = card.creatives.get(chosen) else {
                continue;
            };
            // A concurrent request may have taken the last of the budget since the decision.
            if billable && !inventory.delivery.impression(e.id, now) {
                continue;
            }
            let learning = card.creatives.len() > 1;
            if billable && learning {
                inventory.bandit.impression(bandit::ArmKey {
                    advert: e.id,
                    placement: arm_placement,
                    creative: creative.id,
                });
            }
            users.frequency.record(&caps, user, e.id, now);
            self.impressions.impression(
                e.id,
                request.placement,
                creative.id,
                reached,
                request.viewer,
                billable,
            );
            self.full.prefetch(e.id);
            let token = users.tokens.issue(
                user,
                e.id,
                request.placement,
                Shown {
                    creative: creative.id,
                    among_several: learning,
                },
            );
            cards.push(Served {
                card,
                creative: chosen,
                token,
            });
        }
        cards
    }

    /// Starts the loops that keep the catalogue current and shared counters in sync. `changed`
    /// receives the link codes of adverts changed on any instance.
    pub fn spawn(
        &self,
        cancel: CancellationToken,
        changed: Arc<dyn Fn(Vec<String>) + Send + Sync>,
    ) -> Vec<JoinHandle<()>> {
        let refresh = Duration::from_millis(self.settings.refresh_interval_ms);
        let sync = Duration::from_millis(self.settings.sync_interval_ms);
        let poller = {
            let inventory = self.inventory.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(refresh);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tick.tick() => match inventory.poll_changes().await {
                            Ok(codes) if !codes.is_empty() => changed(codes),
                            Ok(_) => {}
                            Err(e) => tracing::debug!(error = %e, "catalogue poll failed; serving from memory"),
                        },
                    }
                }
            })
        };
        let syncer = {
            let (users, inventory, syncs) = (
                self.users.clone(),
                self.inventory.clone(),
                self.syncs.clone(),
            );
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(sync);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut reconciled = std::time::Instant::now();
                let mut announced = announce::Announced::default();
                // Adverts that ended while no instance ran are announced within a day of it.
                let mut ends_seen_until = now_ms() - ENDED_LOOKBACK_MS;
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tick.tick() => {
                            let now = now_ms();
                            let users = users.push(now).await;
                            let delivery = inventory.delivery.sync(now).await;
                            let creatives = inventory.bandit.sync(false).await;
                            if !(users && delivery && creatives) {
                                syncs.failures.fetch_add(1, Ordering::Relaxed);
                            }
                            if now - ends_seen_until >= ANNOUNCE_EVERY_MS {
                                let notices = inventory.notices(ends_seen_until, now);
                                match announced.record(&inventory.db, notices).await {
                                    Ok(_) => ends_seen_until = now,
                                    Err(e) => tracing::debug!(error = %e, "cap and end events not recorded; tried again next round"),
                                }
                            }
                            syncs.rounds.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if reconciled.elapsed() >= RECONCILE_EVERY {
                        reconciled = std::time::Instant::now();
                        if let Err(e) = inventory.delivery.reconcile().await {
                            tracing::debug!(error = %e, "delivery totals not reconciled; tried again later");
                        }
                    }
                }
            })
        };
        vec![poller, syncer]
    }
}
