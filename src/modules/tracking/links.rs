//! Tracked links: code -> where to send the visitor. An in-process table in front of Redis (when
//! configured) in front of the database; unknown codes are remembered briefly too, so a flood of
//! them cannot reach the database.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix_web::http::header::HeaderValue;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::domain::LINK_CODE_LEN;
use crate::domain::creative::CreativeId;
use crate::domain::url_macros::{self, Macro, Piece};
use crate::domain::{AdvertId, AdvertStatus};
use crate::platform::db::{Db, DbError};
use crate::platform::limits::MissBudget;
use crate::platform::redis::Redis;
use crate::platform::shared_loads::SharedLoads;
use crate::platform::telemetry::{CacheMetrics, CacheUsage};

use super::store::{self, LinkRow};

/// What a code leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// An active advert: redirect to `location`, or when `fill` says so, to a location made
    /// for each click.
    Live {
        advert: AdvertId,
        location: HeaderValue,
        fill: Option<Box<Fill>>,
    },
    /// A paused or deleted advert.
    Gone { advert: AdvertId },
    /// No such code.
    Unknown,
    /// Not in memory, and the instance's look-up budget is spent: ask again shortly.
    Deferred,
}

impl Link {
    fn from_row(row: Option<LinkRow>) -> Self {
        match row {
            None => Self::Unknown,
            Some(row) if row.status == AdvertStatus::Active => {
                match HeaderValue::from_str(&row.target_url) {
                    Ok(location) => Self::Live {
                        advert: row.advert_id,
                        location,
                        fill: Fill::of(&row),
                    },
                    // Stored targets are validated ASCII; a value that is not a header is unusable.
                    Err(_) => Self::Gone {
                        advert: row.advert_id,
                    },
                }
            }
            Some(row) => Self::Gone {
                advert: row.advert_id,
            },
        }
    }

    /// The Redis form: `advert_id \t status \t conversion_tracking (0|1) \t target`.
    fn encode(row: &LinkRow) -> String {
        format!(
            "{}\t{}\t{}\t{}",
            row.advert_id.0,
            row.status.as_str(),
            u8::from(row.conversion_tracking),
            row.target_url
        )
    }

    fn decode(text: &str) -> Option<LinkRow> {
        let mut parts = text.splitn(4, '\t');
        Some(LinkRow {
            advert_id: AdvertId(parts.next()?.parse().ok()?),
            status: AdvertStatus::from_stored(parts.next()?)?,
            conversion_tracking: match parts.next()? {
                "0" => false,
                "1" => true,
                _ => return None,
            },
            target_url: parts.next()?.to_owned(),
        })
    }
}

/// What a click fills into its location: the target's macros, and `rk_click` when the advert
/// tracks conversions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    pub pieces: Vec<Piece>,
    pub conversion_tracking: bool,
}

/// What one click fills in.
pub struct ClickValues<'a> {
    pub advert: AdvertId,
    pub placement: Option<&'a str>,
    pub creative: Option<CreativeId>,
    /// The click's id, when the location needs one ([`Fill::needs_click_id`]).
    pub click_id: Option<&'a str>,
}

impl Fill {
    /// `None` when the stored target is the location of every click. A target whose braces are
    /// not macros (stored before they were checked) is sent as it is.
    fn of(row: &LinkRow) -> Option<Box<Self>> {
        let pieces = url_macros::pieces(&row.target_url).ok()?;
        (url_macros::has_macros(&pieces) || row.conversion_tracking).then(|| {
            Box::new(Self {
                pieces,
                conversion_tracking: row.conversion_tracking,
            })
        })
    }

    pub fn needs_click_id(&self) -> bool {
        self.conversion_tracking || self.pieces.contains(&Piece::Macro(Macro::ClickId))
    }

    /// The location of one click: macros filled in (URL-encoded), then `rk_click` added to the
    /// query, before any fragment.
    pub fn location(&self, values: &ClickValues<'_>) -> Option<HeaderValue> {
        let mut out = String::with_capacity(256);
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Macro(Macro::AdvertId) => out.push_str(&values.advert.0.to_string()),
                Piece::Macro(Macro::Placement) => {
                    out.extend(utf8_percent_encode(
                        values.placement.unwrap_or_default(),
                        VALUE,
                    ));
                }
                Piece::Macro(Macro::CreativeId) => {
                    if let Some(c) = values.creative {
                        out.push_str(&c.0.to_string());
                    }
                }
                Piece::Macro(Macro::ClickId) => {
                    out.extend(utf8_percent_encode(
                        values.click_id.unwrap_or_default(),
                        VALUE,
                    ));
                }
            }
        }
        if self.conversion_tracking
            && let Some(id) = values.click_id
        {
            let fragment = out.find('#').map(|at| out.split_off(at));
            match out.find('?') {
                None => out.push('?'),
                Some(_) if out.ends_with(['?', '&']) => {}
                Some(_) => out.push('&'),
            }
            out.push_str("rk_click=");
            out.extend(utf8_percent_encode(id, VALUE));
            out.extend(fragment);
        }
        HeaderValue::from_str(&out).ok()
    }
}

/// What a filled-in value keeps as it is: RFC 3986's unreserved characters.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Shards of the in-process tier: lookups from different threads rarely meet on one lock.
const SHARDS: usize = 16;

/// A code as the in-process tables hold it: its bytes inline, so that comparing a key reads no
/// other memory than the map's own slot (with 100 000 links held, a key behind a pointer was
/// one more cache miss per redirect), and its hash, taken once per look-up for both tables and
/// their shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CodeKey {
    hash: u64,
    bytes: [u8; LINK_CODE_LEN],
}

impl Hash for CodeKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// What the tables' maps hash a [`CodeKey`] with: the hash it carries.
#[derive(Default)]
struct CarriedHash(u64);

impl Hasher for CarriedHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (by `CodeKey`); any other input is still mixed in whole.
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The in-process tier: code -> link, each with its own expiry, in sharded maps. An entry costs
/// the code, the link and a deadline (about 200 bytes with the target's bytes), where a general
/// cache's per-entry bookkeeping costs several hundred more; every link clicked adds one.
///
/// When a shard is full, expired entries go first, then an arbitrary eighth of the shard (the
/// map's order follows the codes' hashes). Unknown codes live in a table of their own, so a flood
/// of made-up codes can only evict other unknown codes, never the links that work.
struct LinkTable {
    shards: Box<[Shard]>,
    per_shard: usize,
    started: Instant,
}

type Shard = RwLock<HashMap<CodeKey, Slot, BuildHasherDefault<CarriedHash>>>;

struct Slot {
    link: Arc<Link>,
    /// Milliseconds since the table's start.
    expires_ms: u64,
}

impl LinkTable {
    fn new(capacity: u64) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            per_shard: (capacity / SHARDS).max(1),
            started: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn shard(&self, key: &CodeKey) -> &Shard {
        // Bits the maps' own bucket index and tags leave alone, so that a shard's keys still
        // differ in those.
        let index = (key.hash >> 32) as usize % SHARDS;
        &self.shards[index]
    }

    fn get(&self, key: &CodeKey) -> Option<Arc<Link>> {
        let now = self.now_ms();
        let shard = self.shard(key).read().unwrap_or_else(|p| p.into_inner());
        shard
            .get(key)
            .filter(|slot| slot.expires_ms > now)
            .map(|slot| slot.link.clone())
    }

    fn insert(&self, key: CodeKey, link: Arc<Link>, ttl: Duration) {
        let now = self.now_ms();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let mut shard = self.shard(&key).write().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, slot| slot.expires_ms > now);
            if shard.len() >= self.per_shard {
                let mut evict = shard.len() - self.per_shard * 7 / 8;
                shard.retain(|_, _| {
                    let keep = evict == 0;
                    evict = evict.saturating_sub(1);
                    keep
                });
            }
        }
        shard.insert(
            key,
            Slot {
                link,
                expires_ms: now.saturating_add(ttl_ms),
            },
        );
    }

    /// The entry for `key`, expired or not (what was last known of it).
    fn get_even_expired(&self, key: &CodeKey) -> Option<Arc<Link>> {
        let shard = self.shard(key).read().unwrap_or_else(|p| p.into_inner());
        shard.get(key).map(|slot| slot.link.clone())
    }

    /// Marks `key`'s entry expired, keeping it (see `get_even_expired`).
    fn expire(&self, key: &CodeKey) {
        let mut shard = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = shard.get_mut(key) {
            slot.expires_ms = 0;
        }
    }

    fn remove(&self, key: &CodeKey) {
        let mut shard = self.shard(key).write().unwrap_or_else(|p| p.into_inner());
        shard.remove(key);
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().map(|s| s.len()).unwrap_or(0))
            .sum()
    }
}

#[derive(Clone)]
pub struct LinkResolver {
    inner: Arc<Resolver>,
}

struct Resolver {
    /// Hashes the codes for both tables (keyed per process: codes in requests are anyone's).
    hasher: RandomState,
    known: LinkTable,
    unknown: LinkTable,
    /// Misses being loaded: a burst of requests for one cold link is one lookup, and a
    /// `forget` overtakes the loads under way (a load that started before it keeps nothing).
    loads: SharedLoads<CodeKey, Arc<Link>>,
    db: Db,
    redis: Option<Redis>,
    ttl: Duration,
    negative_ttl: Duration,
    metrics: CacheMetrics,
    misses: MissBudget,
    /// Answers made once, so refusing a code costs no allocation.
    unknown_link: Arc<Link>,
    deferred_link: Arc<Link>,
}

impl LinkResolver {
    pub fn new(
        db: Db,
        redis: Option<Redis>,
        capacity: u64,
        ttl: Duration,
        negative_ttl: Duration,
        misses: MissBudget,
    ) -> Self {
        Self {
            inner: Arc::new(Resolver {
                hasher: RandomState::new(),
                known: LinkTable::new(capacity),
                unknown: LinkTable::new((capacity / 8).max(1024)),
                loads: SharedLoads::default(),
                db,
                redis,
                ttl,
                negative_ttl,
                metrics: CacheMetrics::new("links"),
                misses,
                unknown_link: Arc::new(Link::Unknown),
                deferred_link: Arc::new(Link::Deferred),
            }),
        }
    }

    /// Links held in memory (bounded by `tracking.link_cache_capacity`), and the unknown codes
    /// remembered beside them.
    pub fn usage(&self) -> [(&'static str, CacheUsage); 2] {
        let entries = |table: &LinkTable| CacheUsage {
            entries: table.len() as u64,
            bytes: None,
        };
        [
            ("links", entries(&self.inner.known)),
            ("unknown_links", entries(&self.inner.unknown)),
        ]
    }

    /// Resolves a code; only a cold miss leaves the process.
    pub async fn resolve(&self, code: &str) -> Result<Arc<Link>, DbError> {
        let this = &self.inner;
        // Codes are made by intake with exactly this shape: nothing else is worth a look-up.
        let key = match this.key(code) {
            Some(key) if key.bytes.iter().all(u8::is_ascii_alphanumeric) => key,
            _ => return Ok(this.unknown_link.clone()),
        };
        if let Some(hit) = this.known.get(&key).or_else(|| this.unknown.get(&key)) {
            this.metrics.memory(true);
            return Ok(hit);
        }
        this.metrics.memory(false);
        // An expired link answers at once and is read again in the background: it was right
        // when it was read, and changes are read again as they happen (`forget`), so only a
        // link never seen here waits for Redis or the database.
        if let Some(stale) = this.known.get_even_expired(&key) {
            self.refresh_in_background(key, code);
            return Ok(stale);
        }
        // Joining a look-up already under way costs the backends nothing more; a new one spends
        // the miss budget (checked under the same lock, so a burst for one code spends it once).
        let Some(shared) = this.loads.join(key, || this.misses.try_spend()) else {
            return Ok(this.deferred_link.clone());
        };
        // Boxed: the load from Redis or the database is most of this future's size (7 KB),
        // which every redirect would otherwise carry and move, hit or miss.
        Box::pin(this.loads.run(key, &shared, |generation| {
            this.load_and_keep(code, generation)
        }))
        .await
        .map_err(DbError::Unavailable)
    }

    /// Reads an expired link again, once at a time per code (sharing the load of a miss).
    fn refresh_in_background(&self, key: CodeKey, code: &str) {
        let Some(shared) = self.inner.loads.start(key) else {
            return;
        };
        let resolver = self.clone();
        let code = code.to_owned();
        tokio::spawn(async move {
            let this = &resolver.inner;
            let _ = this
                .loads
                .run(key, &shared, |generation| {
                    this.load_and_keep(&code, generation)
                })
                .await;
        });
    }

    /// Forgets a code everywhere this instance can reach (its advert changed), then reads it
    /// again if this instance holds it: until the database answers, the link it held stays, so
    /// a link whose advert changed just before a database outage still redirects during it.
    pub async fn forget(&self, code: &str) {
        self.inner.forget(code).await;
    }
}

impl Resolver {
    /// The tables' key for `code`; `None` for a code of another length, which no table holds.
    fn key(&self, code: &str) -> Option<CodeKey> {
        let bytes = code.as_bytes().try_into().ok()?;
        Some(CodeKey {
            hash: self.hasher.hash_one(code),
            bytes,
        })
    }

    /// Loads a code and keeps the answer, unless a `forget` overtook the load.
    async fn load_and_keep(&self, code: &str, generation: u64) -> Result<Arc<Link>, String> {
        let loaded = self
            .load(code.to_owned(), generation)
            .await
            .map_err(DbError::into_reason);
        if let Ok(link) = &loaded
            && self.loads.is_current(generation)
        {
            self.keep(code, link.clone());
        }
        loaded
    }

    /// Holds an answer: links in their table, unknown codes briefly in theirs.
    fn keep(&self, code: &str, link: Arc<Link>) {
        let Some(key) = self.key(code) else {
            return;
        };
        match *link {
            Link::Unknown => {
                self.known.remove(&key);
                self.unknown.insert(key, link, self.negative_ttl);
            }
            _ => self.known.insert(key, link, self.ttl),
        }
    }

    async fn load(&self, code: String, generation: u64) -> Result<Arc<Link>, DbError> {
        self.load_from(code, generation, true).await
    }

    /// `load`, asking Redis first only when `ask_redis`.
    async fn load_from(
        &self,
        code: String,
        generation: u64,
        ask_redis: bool,
    ) -> Result<Arc<Link>, DbError> {
        if let Some(redis) = self.redis.as_ref().filter(|_| ask_redis) {
            let key = redis.key(&format!("lnk:{code}"));
            let cached: Result<Option<String>, _> =
                redis
                    .with(|mut conn| async move {
                        redis::cmd("GET").arg(key).query_async(&mut conn).await
                    })
                    .await;
            if let Ok(Some(text)) = cached
                && let Some(row) = Link::decode(&text)
            {
                self.metrics.redis(true);
                return Ok(Arc::new(Link::from_row(Some(row))));
            }
            self.metrics.redis(false);
        }
        let lookup = code.clone();
        let row = self
            .db
            .run(move |conn| store::find_link(conn, &lookup))
            .await?;
        // A change forgotten meanwhile may have read the row before it: Redis keeps only answers
        // no `forget` has overtaken.
        if let (Some(redis), Some(row)) = (&self.redis, &row)
            && self.loads.is_current(generation)
        {
            let key = redis.key(&format!("lnk:{code}"));
            let value = Link::encode(row);
            let ttl = self.ttl.as_secs().max(1);
            // Best effort: the database answered, Redis only saves the next instance a query.
            let _ = redis
                .with(|mut conn| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(value)
                        .arg("EX")
                        .arg(ttl)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await;
        }
        Ok(Arc::new(Link::from_row(row)))
    }

    /// Forgets a code in Redis and reads it again from the database when this instance holds
    /// it; the entry held is replaced only by that answer (see `LinkResolver::forget`).
    async fn forget(&self, code: &str) {
        let key = self.key(code);
        let generation = self.loads.overtake(key);
        if let Some(key) = &key {
            self.unknown.remove(key);
        }
        let held = key.is_some_and(|key| self.known.get_even_expired(&key).is_some());
        if let Some(redis) = &self.redis {
            let key = redis.key(&format!("lnk:{code}"));
            let _ = redis
                .with(|mut conn| async move {
                    redis::cmd("DEL")
                        .arg(key)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await;
        }
        if !held {
            return;
        }
        match self.load_from(code.to_owned(), generation, false).await {
            Ok(link) if self.loads.is_current(generation) => self.keep(code, link),
            // Overtaken by a later change: a miss reads it again.
            Ok(_) => key.iter().for_each(|key| self.known.remove(key)),
            Err(e) => {
                // Kept, but expired: each hit answers with it and reads it again in the
                // background until the database answers.
                key.iter().for_each(|key| self.known.expire(key));
                tracing::warn!(code, error = %e, "a changed link cannot be read again; it redirects as before until the database answers");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use diesel::RunQueryDsl;

    fn live(id: i64) -> Arc<Link> {
        Arc::new(Link::Live {
            advert: AdvertId(id),
            location: HeaderValue::from_static("https://example.com/"),
            fill: None,
        })
    }

    fn fill(target: &str, conversion_tracking: bool) -> Option<Box<Fill>> {
        Fill::of(&LinkRow {
            advert_id: AdvertId(7),
            target_url: target.into(),
            status: AdvertStatus::Active,
            conversion_tracking,
        })
    }

    #[test]
    fn a_plain_target_needs_no_filling_and_macros_are_filled_url_encoded() {
        assert_eq!(fill("https://example.com/a?b=1", false), None);
        let f = fill(
            "https://example.com/{placement}?ad={advert_id}&cr={creative_id}&c={click_id}#top",
            false,
        )
        .unwrap();
        assert!(f.needs_click_id());
        let values = ClickValues {
            advert: AdvertId(7),
            placement: Some("medium_rectangle"),
            creative: Some(CreativeId(2)),
            click_id: Some("Ab-_9"),
        };
        assert_eq!(
            f.location(&values).unwrap(),
            "https://example.com/medium_rectangle?ad=7&cr=2&c=Ab-_9#top"
        );
        let generic = ClickValues {
            placement: None,
            creative: None,
            ..values
        };
        assert_eq!(
            f.location(&generic).unwrap(),
            "https://example.com/?ad=7&cr=&c=Ab-_9#top"
        );
        // Braces stored before they were checked are sent as they are.
        assert_eq!(fill("https://example.com/{x}", false), None);
    }

    #[test]
    fn rk_click_joins_the_query_before_the_fragment() {
        let values = |id| ClickValues {
            advert: AdvertId(7),
            placement: None,
            creative: None,
            click_id: Some(id),
        };
        for (target, expected) in [
            ("https://example.com", "https://example.com?rk_click=X1"),
            ("https://example.com/p", "https://example.com/p?rk_click=X1"),
            (
                "https://example.com/p?a=1",
                "https://example.com/p?a=1&rk_click=X1",
            ),
            (
                "https://example.com/p?",
                "https://example.com/p?rk_click=X1",
            ),
            (
                "https://example.com/p?a=1&",
                "https://example.com/p?a=1&rk_click=X1",
            ),
            (
                "https://example.com/p#f?g",
                "https://example.com/p?rk_click=X1#f?g",
            ),
            (
                "https://example.com/p?a=1#f",
                "https://example.com/p?a=1&rk_click=X1#f",
            ),
            (
                "https://example.com/?ad={advert_id}",
                "https://example.com/?ad=7&rk_click=X1",
            ),
        ] {
            let f = fill(target, true).unwrap();
            assert!(f.needs_click_id());
            assert_eq!(f.location(&values("X1")).unwrap(), expected, "{target}");
        }
    }

    #[test]
    fn the_redis_form_round_trips_and_refuses_older_forms() {
        let row = LinkRow {
            advert_id: AdvertId(7),
            target_url: "https://example.com/\tx".into(),
            status: AdvertStatus::Paused,
            conversion_tracking: true,
        };
        let back = Link::decode(&Link::encode(&row)).unwrap();
        assert_eq!(back.advert_id, row.advert_id);
        assert_eq!(back.target_url, row.target_url);
        assert_eq!(back.status, row.status);
        assert!(back.conversion_tracking);
        assert!(Link::decode("7\tactive\thttps://example.com/").is_none());
    }

    #[test]
    fn a_full_table_keeps_its_bound_and_the_newest_entry_and_entries_expire() {
        let hasher = RandomState::new();
        let key = |code: &str| CodeKey {
            hash: hasher.hash_one(code),
            bytes: code.as_bytes().try_into().unwrap(),
        };
        let table = LinkTable::new(SHARDS as u64 * 8);
        for i in 0..5_000 {
            let code = key(&format!("code{i:08}"));
            table.insert(code, live(i), Duration::from_secs(60));
            assert!(table.get(&code).is_some(), "the entry just added");
            assert!(table.len() <= SHARDS * 8, "{} entries", table.len());
        }
        table.insert(key("brief0000000"), live(1), Duration::ZERO);
        assert!(
            table.get(&key("brief0000000")).is_none(),
            "an expired entry is not a hit"
        );
        table.insert(key("kept00000000"), live(2), Duration::from_secs(60));
        table.remove(&key("kept00000000"));
        assert!(table.get(&key("kept00000000")).is_none());
    }

    /// actix copies every handler's future into a box, so what a hit's future carries costs
    /// every redirect: the load from Redis or the database it does not make must not be in it.
    #[tokio::test]
    async fn resolving_a_code_is_a_small_future() {
        let (_dir, db) = Db::temporary();
        let links = LinkResolver::new(
            db,
            None,
            1024,
            Duration::from_secs(60),
            Duration::from_secs(60),
            MissBudget::new(1),
        );
        let resolving = links.resolve("Abcdefghijk1");
        let size = std::mem::size_of_val(&resolving);
        assert!(size <= 512, "{size} bytes");
    }

    #[tokio::test]
    async fn codes_of_another_shape_and_codes_past_the_budget_are_answered_from_memory() {
        let (_dir, db) = Db::temporary();
        let links = LinkResolver::new(
            db.clone(),
            None,
            1024,
            Duration::from_secs(60),
            Duration::from_secs(60),
            MissBudget::new(1),
        );
        let before = db.checkouts();
        for code in [
            "",
            "short",
            "Elevenchars",
            "Thirteenchars",
            "Twelve-chars",
            "Twelve chars",
        ] {
            assert_eq!(
                *links.resolve(code).await.unwrap(),
                Link::Unknown,
                "{code:?}"
            );
        }
        assert_eq!(
            db.checkouts(),
            before,
            "no look-up for a code of another shape"
        );
        assert_eq!(*links.resolve("Unknown00001").await.unwrap(), Link::Unknown);
        assert_eq!(db.checkouts(), before + 1);
        // The budget (one a second) is soon spent: then answered from memory, nothing asked.
        let mut deferred = None;
        for n in 2..50 {
            let code = format!("Unknown{n:0>5}");
            let asked = db.checkouts();
            if *links.resolve(&code).await.unwrap() == Link::Deferred {
                assert_eq!(db.checkouts(), asked, "a deferred code costs no look-up");
                deferred = Some(code);
                break;
            }
        }
        assert!(deferred.is_some(), "the budget ran out");
        // A code known to be unknown is answered from memory, budget or not.
        assert_eq!(*links.resolve("Unknown00001").await.unwrap(), Link::Unknown);
    }

    #[tokio::test]
    async fn made_up_codes_never_evict_working_links_and_a_burst_of_misses_is_one_lookup() {
        let (_dir, db) = Db::temporary();
        db.run(|conn| {
            diesel::sql_query(
                "INSERT INTO customers (name, key_id, key_hash, created_at) VALUES ('c', 'k', 'h', 0)",
            )
            .execute(conn)?;
            diesel::sql_query(
                "INSERT INTO adverts (customer_id, title, body, genre, target_url, link_code, \
                 status, image_hash, image_width, image_height, source_format, source_width, \
                 source_height, offload_status, created_at, updated_at) VALUES (1, 't', 'b', \
                 'travel', 'https://example.com/x', 'Working00001', 'active', 'h', 1, 1, 'jpeg', 1, 1, \
                 'done', 0, 0)",
            )
            .execute(conn)
            .map_err(DbError::from)
        })
        .await
        .unwrap();
        // 16 entries per shard at most for each table.
        let links = LinkResolver::new(
            db.clone(),
            None,
            SHARDS as u64 * 16,
            Duration::from_secs(60),
            Duration::from_secs(60),
            MissBudget::default(),
        );
        assert!(matches!(
            *links.resolve("Working00001").await.unwrap(),
            Link::Live { .. }
        ));
        for i in 0..2_000 {
            let link = links.resolve(&format!("madeup{i:0>6}")).await.unwrap();
            assert_eq!(*link, Link::Unknown);
        }
        let before = db.checkouts();
        assert!(matches!(
            *links.resolve("Working00001").await.unwrap(),
            Link::Live { .. }
        ));
        assert_eq!(
            db.checkouts(),
            before,
            "the working link is still in memory"
        );

        let burst = (0..32).map(|_| links.resolve("Coldcode0001"));
        let answers = futures_util::future::join_all(burst).await;
        assert!(
            answers
                .iter()
                .all(|a| matches!(a.as_deref(), Ok(Link::Unknown)))
        );
        assert_eq!(
            db.checkouts(),
            before + 1,
            "32 concurrent misses, one query"
        );

        links.forget("Working00001").await;
        links.resolve("Working00001").await.unwrap();
        assert_eq!(
            db.checkouts(),
            before + 2,
            "a forgotten link is looked up again"
        );
    }
}
