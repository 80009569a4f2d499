//! The card tier: the important business part of each advert (title, text, creative URL, tracked
//! link), in a [`Table`] bounded by bytes (least recently served evicted) with a TTL, in front
//! of Redis (shared by instances), in front of the database. A cold start fills it from the same
//! read that builds the index, so a warm instance never leaves the process for a card. Each card
//! lives a jittered 80-100 % of the TTL, so cards loaded together do not all expire in the same
//! second, and a card served past half its TTL is reloaded in the background, so a card in use
//! never expires under load: the reload has at least three tenths of the TTL to finish before
//! the card's earliest expiry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::domain::creative::CreativeId;
use crate::domain::placement::{Layout, PlacementCatalogue};
use crate::domain::shorten::shorten;
use crate::domain::{AdvertId, Genre, Placement};
use crate::platform::db::{Db, DbError};
use crate::platform::redis::{Redis, SharedReads};
use crate::platform::shared_loads::SharedLoads;
use crate::platform::table::Table;
use crate::platform::telemetry::{CacheMetrics, CacheUsage};
use crate::platform::urls::PublicUrls;

use super::store::{self, AdvertRow, CreativeCopy};

/// One card: the important business part of an advert.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Card {
    #[schema(value_type = i64, example = 1)]
    pub advert_id: AdvertId,
    /// The creative this card shows (one combination of the advert's titles and texts; see
    /// `GET /api/v1/adverts/{id}/creatives`). Its click is credited to it.
    #[schema(value_type = u32, example = 1)]
    pub creative_id: CreativeId,
    pub title: String,
    pub text: String,
    pub genre: Genre,
    /// The image of this creative (its image's compressed creative, or the placement's variant
    /// of it; a composed placement's drawn with its words), immutable (cache it forever).
    pub image_url: String,
    /// The tracked link with this user's signed impression token: put it on the card's link.
    pub click_url: String,
    /// With `placement` (or `size`): the placement's name and the variant's exact pixel size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// With `placement` (or `size`): `crop` when the image is the picture alone (show the
    /// card's title and text beside it), `composed` when the title, text and call to action are
    /// drawn into the image (show the image alone).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "composed")]
    pub layout: Option<Layout>,
}

/// One creative of a card: its number, its words as the card shows them, and its image where
/// it is not the card's (a composed placement draws each creative's words into its own image).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardCreative {
    pub id: CreativeId,
    pub title: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
}

impl CardCreative {
    /// The image this creative is shown with on `card`.
    pub fn image_url<'a>(&'a self, card: &'a CardData) -> &'a str {
        self.image_url.as_deref().unwrap_or(&card.image_url)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardData {
    /// The creatives serving chooses among for this card (none: the card is never shown).
    pub creatives: Vec<CardCreative>,
    pub genre: Genre,
    pub image_url: String,
    pub tracked_url: String,
    /// A placement variant's exact size (absent for the plain creative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// A placement card's layout: its image alone (`crop`) or with the words drawn in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
}

/// A card of an advert, plain or for one placement (its position in the catalogue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CardKey {
    pub advert: AdvertId,
    pub placement: Option<u8>,
}

impl CardData {
    /// The plain card of an advert with these servable creatives (with none, a card that is
    /// never shown).
    pub fn from_row(
        row: &AdvertRow,
        creatives: &[CreativeCopy],
        urls: &PublicUrls,
    ) -> Option<Self> {
        Some(Self {
            creatives: creatives
                .iter()
                .map(|c| CardCreative {
                    id: c.id,
                    title: c.title.clone(),
                    text: c.text.clone(),
                    image_url: c
                        .image_hash
                        .as_ref()
                        .map(|hash| urls.creative(AdvertId(row.id), hash)),
                })
                .collect(),
            genre: Genre::parse(&row.genre).ok()?,
            image_url: urls.creative(AdvertId(row.id), &row.image_hash),
            tracked_url: urls.tracked_link(&row.link_code),
            width: None,
            height: None,
            layout: None,
        })
    }

    /// A placement's card. A cropped placement shows any servable creative with its image's
    /// variant, its words shortened to the placement's limits; a composed one shows the
    /// servable creatives its images were rendered for (a bounded number, see
    /// `MAX_COMPOSED`), each with its own image, and none while none of those is servable
    /// (paused, or others pinned): the card is kept, and serving skips it until the variants
    /// are rendered again.
    fn from_variants(
        row: &AdvertRow,
        variants: &[store::VariantCard],
        creatives: &[CreativeCopy],
        placement: &Placement,
        urls: &PublicUrls,
    ) -> Option<Self> {
        let advert = AdvertId(row.id);
        let url = |v: &store::VariantCard| urls.variant(advert, &placement.name, &v.hash, &v.mime);
        let mut chosen: Vec<(CardCreative, &store::VariantCard)> = Vec::new();
        for c in creatives {
            let found = match placement.layout {
                Layout::Composed => variants
                    .iter()
                    .find(|v| u32::try_from(v.creative) == Ok(c.id.0))
                    .map(|v| (v.title.clone(), v.text.clone(), v)),
                Layout::Crop => variants
                    .iter()
                    .find(|v| v.creative == 0 && v.image_index == c.image_index)
                    .map(|v| {
                        (
                            shorten(&c.title, placement.title_chars),
                            shorten(&c.text, placement.text_chars),
                            v,
                        )
                    }),
            };
            if let Some((title, text, variant)) = found {
                let creative = CardCreative {
                    id: c.id,
                    title,
                    text,
                    image_url: Some(url(variant)),
                };
                chosen.push((creative, variant));
            }
        }
        // The card's own image: its first creative's, or, with none servable, any variant's.
        let first = chosen.first().map_or(variants.first()?, |(_, v)| *v);
        let image_url = url(first);
        let creatives = chosen
            .into_iter()
            .map(|(mut c, _)| {
                if c.image_url.as_deref() == Some(image_url.as_str()) {
                    c.image_url = None;
                }
                c
            })
            .collect();
        Some(Self {
            creatives,
            genre: Genre::parse(&row.genre).ok()?,
            image_url,
            tracked_url: urls.tracked_link(&row.link_code),
            width: u32::try_from(first.width).ok(),
            height: u32::try_from(first.height).ok(),
            layout: Some(placement.layout),
        })
    }
}

/// What stands for the click token while a card is serialised. JSON writes it as `\u0001`; the
/// last such escape in a card is the click URL's, as the fields after it (a placement's
/// snake_case name, a size, a layout) cannot hold one.
const TOKEN_MARK: &str = "\u{1}";
const TOKEN_MARK_JSON: &str = "\\u0001";

/// One creative of a card ready to be served: its number, and its card as a serve answers it
/// in JSON, cut where the click token goes.
#[derive(Debug)]
pub struct ReadyCreative {
    pub id: CreativeId,
    /// Up to the click URL's `?t=`.
    head: Box<str>,
    /// From the click URL's closing quote.
    tail: Box<str>,
}

/// A card as memory holds it: each of its creatives' card as a serve answers it, in JSON (the
/// API's [`Card`] serialised when the card is loaded), so that a serve writes two pieces around
/// the click token instead of copying and serialising the card's fields. The words and URLs
/// are held in the JSON only.
#[derive(Debug)]
pub struct ReadyCard {
    /// In the order of the card's creatives; one that could not be written is left out (not
    /// served).
    pub creatives: Box<[ReadyCreative]>,
}

impl ReadyCard {
    /// `placement`: the name of the catalogue placement the card is for (`None`: the plain
    /// card).
    pub fn new(advert: AdvertId, placement: Option<&str>, data: &CardData) -> Self {
        let creatives = data
            .creatives
            .iter()
            .filter_map(|creative| {
                let card = Card {
                    advert_id: advert,
                    creative_id: creative.id,
                    title: creative.title.clone(),
                    text: creative.text.clone(),
                    genre: data.genre,
                    image_url: creative.image_url(data).to_owned(),
                    click_url: format!("{}?t={TOKEN_MARK}", data.tracked_url),
                    placement: placement.map(str::to_owned),
                    width: data.width,
                    height: data.height,
                    layout: data.layout,
                };
                let text = serde_json::to_string(&card).ok()?;
                let (head, tail) = text.rsplit_once(TOKEN_MARK_JSON)?;
                Some(ReadyCreative {
                    id: creative.id,
                    head: head.into(),
                    tail: tail.into(),
                })
            })
            .collect();
        Self { creatives }
    }

    /// The bytes memory holds for it: the JSON pieces and their bookkeeping.
    fn weight(&self) -> usize {
        let bytes: usize = self
            .creatives
            .iter()
            .map(|c| c.head.len() + c.tail.len() + 48)
            .sum();
        bytes + 96
    }
}

/// A card chosen for a serve: the card, the creative it shows (its position) and the click
/// token issued for it.
pub struct Served {
    pub card: Arc<ReadyCard>,
    pub creative: usize,
    pub token: String,
}

/// A serve's answer, `{"adverts":[...]}`, as [`Card`]s serialise in it.
pub fn answer_json(served: &[Served]) -> String {
    let pieces = served
        .iter()
        .filter_map(|s| Some((s.card.creatives.get(s.creative)?, &s.token)));
    let len: usize = pieces
        .clone()
        .map(|(j, token)| j.head.len() + token.len() + j.tail.len() + 1)
        .sum();
    let mut out = String::with_capacity(len + 16);
    out.push_str("{\"adverts\":[");
    for (i, (json, token)) in pieces.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&json.head);
        out.push_str(token);
        out.push_str(&json.tail);
    }
    out.push_str("]}");
    out
}

/// A card as the memory tier holds it: when it was loaded decides when it is refreshed.
#[derive(Clone)]
struct Cached {
    card: Arc<ReadyCard>,
    /// On the tier's clock ([`Cards::now_ms`]).
    loaded_ms: i64,
}

/// A card's life: the TTL less up to a fifth, at random.
fn jittered(ttl: Duration) -> Duration {
    ttl.mul_f64(rand::random_range(0.8..=1.0))
}

/// Background refreshes running at once, at most: past it a due card waits for the next hit.
const MAX_REFRESHES: usize = 4;

/// The background refreshes' slots: one is taken without waiting and given back when its
/// permit drops.
fn refresh_slots() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_REFRESHES))
}

#[derive(Clone)]
pub struct Cards {
    cache: Arc<Table<CardKey, Cached>>,
    /// The tier's clock: cards' loads and lives are measured from here.
    started: Instant,
    /// Misses being loaded: a burst of requests for one cold card is one load, and a
    /// `replace` overtakes the loads under way (a load that started before it holds nothing).
    loads: Arc<SharedLoads<CardKey, Option<Arc<ReadyCard>>>>,
    /// Cards being reloaded in the background, at most [`MAX_REFRESHES`].
    refreshes: Arc<Semaphore>,
    catalogue: PlacementCatalogue,
    /// Redis, when configured: a miss's read of the card it holds goes in the pipelines it
    /// shares with other reads; writes and deletions go to the Redis those reads go to.
    reads: Option<SharedReads>,
    db: Db,
    urls: PublicUrls,
    ttl: Duration,
    metrics: CacheMetrics,
}

impl Cards {
    pub fn new(
        db: Db,
        reads: Option<SharedReads>,
        urls: PublicUrls,
        max_bytes: u64,
        ttl: Duration,
        catalogue: PlacementCatalogue,
    ) -> Self {
        Self {
            catalogue,
            cache: Arc::new(Table::new(max_bytes, 0, |v: &Cached| v.card.weight(), None)),
            started: Instant::now(),
            loads: Arc::default(),
            refreshes: refresh_slots(),
            reads,
            db,
            urls,
            ttl,
            metrics: CacheMetrics::new("cards"),
        }
    }

    fn placement(&self, key: CardKey) -> Option<&Placement> {
        key.placement
            .and_then(|i| self.catalogue.placements().get(usize::from(i)))
    }

    fn placement_name(&self, key: CardKey) -> Option<&str> {
        self.placement(key).map(|p| p.name.as_str())
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// A card just loaded, ready to be served as `key`.
    fn ready(&self, key: CardKey, card: &CardData) -> ReadyCard {
        ReadyCard::new(key.advert, self.placement_name(key), card)
    }

    /// A card just loaded, ready to be served as `key`, and the end of its jittered life.
    fn fresh(&self, key: CardKey, card: CardData) -> (Cached, i64) {
        let now = self.now_ms();
        let life = i64::try_from(jittered(self.ttl).as_millis()).unwrap_or(i64::MAX);
        let cached = Cached {
            card: Arc::new(self.ready(key, &card)),
            loaded_ms: now,
        };
        (cached, now.saturating_add(life))
    }

    /// Holds a card just loaded for its life.
    fn keep(&self, key: CardKey, card: CardData) -> Arc<ReadyCard> {
        let (cached, expires_ms) = self.fresh(key, card);
        let ready = cached.card.clone();
        let now = cached.loaded_ms;
        self.cache.insert_until(key, cached, now, expires_ms);
        ready
    }

    fn redis_key(&self, redis: &Redis, key: CardKey) -> String {
        match self.placement_name(key) {
            Some(name) => redis.key(&format!("card:{}:{name}", key.advert.0)),
            None => redis.key(&format!("card:{}", key.advert.0)),
        }
    }

    /// The cards held in memory and the bytes they weigh against `serving.card_cache_bytes`.
    pub async fn usage(&self) -> CacheUsage {
        let (entries, bytes) = self.cache.usage();
        CacheUsage {
            entries,
            bytes: Some(bytes),
        }
    }

    /// Puts a plain card in memory (cold start, or a change read from the database).
    pub async fn put(&self, id: AdvertId, card: CardData) {
        let key = CardKey {
            advert: id,
            placement: None,
        };
        self.keep(key, card);
    }

    /// A card from memory, else Redis, else the database.
    pub async fn get(&self, key: CardKey) -> Result<Option<Arc<ReadyCard>>, DbError> {
        let now = self.now_ms();
        if let Some(hit) = self.cache.get(&key, now) {
            self.metrics.memory(true);
            if now - hit.loaded_ms > self.ttl_ms() / 2 {
                self.refresh(key, hit.card.clone());
            }
            return Ok(Some(hit.card));
        }
        self.metrics.memory(false);
        // Boxed: the load from Redis or the database is most of this future's size (16 KB),
        // which every serve would otherwise carry and move, hit or miss.
        Box::pin(self.load_shared(key)).await
    }

    /// The cards of `keys`, in their order, as [`Cards::get`] gives each: those missing from
    /// memory load side by side (their Redis reads share one batch), not one after another.
    pub async fn get_all(
        &self,
        mut keys: impl ExactSizeIterator<Item = CardKey>,
    ) -> Vec<Result<Option<Arc<ReadyCard>>, DbError>> {
        if keys.len() == 1
            && let Some(key) = keys.next()
        {
            return vec![self.get(key).await];
        }
        futures_util::future::join_all(keys.map(|key| self.get(key))).await
    }

    /// Loads a card missing from memory and holds it; requests missing it meanwhile wait for
    /// the same load. A card that does not exist, or a failed load, is not held.
    async fn load_shared(&self, key: CardKey) -> Result<Option<Arc<ReadyCard>>, DbError> {
        let shared = self.loads.share(key);
        self.loads
            .run(key, &shared, |generation| async move {
                match self.load(key).await {
                    Ok(card) => Ok(card.map(|card| {
                        if self.loads.is_current(generation) {
                            self.keep(key, card)
                        } else {
                            Arc::new(self.ready(key, &card))
                        }
                    })),
                    Err(e) => Err(e.into_reason()),
                }
            })
            .await
            .map_err(DbError::Unavailable)
    }

    /// Reloads a card in use before it expires (once at a time per card, a few at once in all),
    /// as a load a miss of the same card would share. The reload replaces only the card it was
    /// started for: one dropped meanwhile (its advert changed) stays dropped.
    fn refresh(&self, key: CardKey, stale: Arc<ReadyCard>) {
        let Ok(slot) = self.refreshes.clone().try_acquire_owned() else {
            return;
        };
        let Some(shared) = self.loads.start(key) else {
            return;
        };
        let cards = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let this = &cards;
            let refreshed = this
                .loads
                .run(key, &shared, |_| async move {
                    let loaded = this.load(key).await.map_err(DbError::into_reason)?;
                    let loaded = loaded.map(|card| this.fresh(key, card));
                    let ready = loaded.as_ref().map(|(cached, _)| cached.card.clone());
                    this.cache.replace_if(
                        key,
                        this.now_ms(),
                        |current| Arc::ptr_eq(&current.card, &stale),
                        loaded,
                    );
                    Ok(ready)
                })
                .await;
            // Still served from memory until it expires; the next hit tries again.
            if let Err(e) = refreshed {
                tracing::debug!(advert_id = %key.advert, error = %e, "card refresh failed");
            }
        });
    }

    async fn load(&self, card: CardKey) -> Result<Option<CardData>, DbError> {
        let id = card.advert;
        if let Some(reads) = &self.reads {
            let cached = reads.bytes(self.redis_key(reads.redis(), card)).await;
            if let Ok(Some(json)) = cached
                && let Ok(card) = serde_json::from_slice::<CardData>(&json)
            {
                self.metrics.redis(true);
                return Ok(Some(card));
            }
            self.metrics.redis(false);
        }
        let loaded = match self.placement(card).cloned() {
            None => self
                .db
                .run(move |conn| {
                    let Some(row) = store::advert(conn, id)? else {
                        return Ok::<_, DbError>(None);
                    };
                    Ok(Some((row, store::creatives_of(conn, id)?)))
                })
                .await?
                .and_then(|(r, creatives)| CardData::from_row(&r, &creatives, &self.urls)),
            Some(placement) => {
                let lookup = placement.name.clone();
                self.db
                    .run(move |conn| {
                        let Some(found) = store::variant_cards(conn, id, &lookup)? else {
                            return Ok::<_, DbError>(None);
                        };
                        Ok(Some((found, store::creatives_of(conn, id)?)))
                    })
                    .await?
                    .and_then(|((row, variants), creatives)| {
                        CardData::from_variants(&row, &variants, &creatives, &placement, &self.urls)
                    })
            }
        };
        let Some(found) = loaded else {
            return Ok(None);
        };
        if let (Some(redis), Ok(json)) = (
            self.reads.as_ref().map(SharedReads::redis),
            serde_json::to_string(&found),
        ) {
            let key = self.redis_key(redis, card);
            let ttl = self.ttl.as_secs().max(1);
            // Best effort: Redis only spares other instances a database read.
            let _ = redis
                .with(|mut conn| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(json)
                        .arg("EX")
                        .arg(ttl)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await;
        }
        Ok(Some(found))
    }

    /// An advert changed: its plain card becomes `card` (or is dropped), and its placement
    /// cards are dropped, in memory and in Redis. The new card is in memory before anything is
    /// dropped, so a request in between never misses it.
    pub async fn replace(&self, id: AdvertId, card: Option<CardData>) {
        let count = u8::try_from(self.catalogue.placements().len()).unwrap_or(u8::MAX);
        let keys: Vec<CardKey> = std::iter::once(None)
            .chain((0..count).map(Some))
            .map(|placement| CardKey {
                advert: id,
                placement,
            })
            .collect();
        // A miss from now on loads the changed advert afresh, not with a load under way.
        self.loads.overtake(keys.iter().copied());
        match card {
            Some(card) => {
                self.keep(keys[0], card);
            }
            None => self.cache.remove(&keys[0]),
        }
        for key in &keys[1..] {
            self.cache.remove(key);
        }
        if let Some(redis) = self.reads.as_ref().map(SharedReads::redis) {
            let names: Vec<String> = keys.iter().map(|k| self.redis_key(redis, *k)).collect();
            let _ = redis
                .with(|mut conn| async move {
                    redis::cmd("DEL")
                        .arg(names)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A card tier of 1 MiB and a minute's TTL over an empty database, without Redis or
    /// placements (the database goes with the directory).
    fn cards_over_an_empty_database() -> (tempfile::TempDir, Cards) {
        let (dir, db) = Db::temporary();
        let cards = Cards::new(
            db,
            None,
            PublicUrls::new("http://127.0.0.1"),
            1 << 20,
            Duration::from_secs(60),
            PlacementCatalogue(Arc::new(Vec::new())),
        );
        (dir, cards)
    }

    /// actix copies every handler's future into a box, so what a hit's future carries costs
    /// every serve: the load from Redis or the database it does not make must not be in it.
    #[tokio::test]
    async fn getting_a_card_is_a_small_future() {
        let (_dir, cards) = cards_over_an_empty_database();
        let getting = cards.get(CardKey {
            advert: AdvertId(1),
            placement: None,
        });
        let size = std::mem::size_of_val(&getting);
        assert!(size <= 2048, "{size} bytes");
    }

    fn empty_card() -> CardData {
        CardData {
            creatives: Vec::new(),
            genre: Genre::Travel,
            image_url: String::new(),
            tracked_url: String::new(),
            width: None,
            height: None,
            layout: None,
        }
    }

    /// A card put is served from memory, weighed against the tier's bytes, and gone once its
    /// advert is dropped; a card the database does not have is not held.
    #[tokio::test]
    async fn cards_in_memory_are_weighed_and_dropped_with_their_advert() {
        let (_dir, cards) = cards_over_an_empty_database();
        let plain = |id| CardKey {
            advert: AdvertId(id),
            placement: None,
        };
        cards.put(AdvertId(1), empty_card()).await;
        let first = cards.get(plain(1)).await.ok().flatten();
        let again = cards.get(plain(1)).await.ok().flatten();
        assert!(first.is_some());
        assert!(matches!((&first, &again), (Some(a), Some(b)) if Arc::ptr_eq(a, b)));
        let weight = first.map(|c| c.weight() as u64);
        assert_eq!(cards.usage().await.bytes, weight);
        assert!(matches!(cards.get(plain(2)).await, Ok(None)));
        assert_eq!(cards.usage().await.entries, 1);
        cards.replace(AdvertId(1), None).await;
        assert_eq!(
            cards.usage().await,
            CacheUsage {
                entries: 0,
                bytes: Some(0)
            }
        );
    }

    /// Words JSON must escape (quotes, a backslash, control characters, the token's own stand-in
    /// among them), and a second creative with its own image.
    fn card_with_awkward_words() -> CardData {
        CardData {
            creatives: vec![
                CardCreative {
                    id: CreativeId(3),
                    title: "Say \"hi\" \\ \u{1} \u{7f} ünï 🚀 </script>".into(),
                    text: "line\nbreak\t\u{0}\u{1}?t=".into(),
                    image_url: None,
                },
                CardCreative {
                    id: CreativeId(4),
                    title: "Plain".into(),
                    text: "Words".into(),
                    image_url: Some("https://cdn.example/v/4\"q.webp".into()),
                },
            ],
            genre: Genre::Travel,
            image_url: "https://ads.example/c/42/abc.jpg".into(),
            tracked_url: "https://ads.example/r/Ab3dE5gH7jK9".into(),
            width: Some(300),
            height: Some(250),
            layout: Some(Layout::Crop),
        }
    }

    /// A serve writes the cards it picked from pieces serialised at load: byte for byte what
    /// serialising the API's cards with their click URLs gives.
    #[test]
    fn a_served_answer_is_the_api_cards_serialised_with_their_tokens() {
        #[derive(Serialize)]
        struct Answer {
            adverts: Vec<Card>,
        }
        for placement in [None, Some("medium_rectangle")] {
            let data = card_with_awkward_words();
            let ready = Arc::new(ReadyCard::new(AdvertId(42), placement, &data));
            let served: Vec<Served> = [1, 0, 1]
                .into_iter()
                .map(|creative| Served {
                    card: ready.clone(),
                    creative,
                    token: format!("tok-{creative}_Zz9"),
                })
                .collect();
            let cards: Vec<Card> = served
                .iter()
                .map(|s| {
                    let c = &data.creatives[s.creative];
                    Card {
                        advert_id: AdvertId(42),
                        creative_id: c.id,
                        title: c.title.clone(),
                        text: c.text.clone(),
                        genre: data.genre,
                        image_url: c.image_url(&data).to_owned(),
                        click_url: format!("{}?t={}", data.tracked_url, s.token),
                        placement: placement.map(str::to_owned),
                        width: data.width,
                        height: data.height,
                        layout: data.layout,
                    }
                })
                .collect();
            for n in 0..=served.len() {
                let expected = Answer {
                    adverts: cards[..n].to_vec(),
                };
                let expected = serde_json::to_string(&expected).unwrap_or_default();
                assert_eq!(
                    answer_json(&served[..n]),
                    expected,
                    "{placement:?}, {n} cards"
                );
            }
        }
        assert_eq!(answer_json(&[]), r#"{"adverts":[]}"#);
    }

    /// Memory holds each creative's JSON once, and weighs it.
    #[test]
    fn a_ready_card_is_weighed_by_its_json() {
        let data = card_with_awkward_words();
        let ready = ReadyCard::new(AdvertId(42), Some("medium_rectangle"), &data);
        let ids: Vec<CreativeId> = ready.creatives.iter().map(|c| c.id).collect();
        assert_eq!(ids, [CreativeId(3), CreativeId(4)]);
        let json: usize = ready
            .creatives
            .iter()
            .map(|c| c.head.len() + c.tail.len())
            .sum();
        let words: usize = data
            .creatives
            .iter()
            .map(|c| c.title.len() + c.text.len())
            .sum();
        assert!(json > words + 2 * data.tracked_url.len(), "{json} bytes");
        assert!(ready.weight() > json, "{} for {json}", ready.weight());
    }

    #[test]
    fn cards_live_between_four_fifths_of_the_ttl_and_all_of_it_at_random() {
        let ttl = Duration::from_secs(100);
        let lives: Vec<Duration> = (0..200).map(|_| jittered(ttl)).collect();
        assert!(
            lives
                .iter()
                .all(|d| *d >= Duration::from_secs(80) && *d <= ttl)
        );
        let shortest = lives.iter().min().copied().unwrap_or_default();
        let longest = lives.iter().max().copied().unwrap_or_default();
        assert!(
            longest - shortest > Duration::from_secs(10),
            "{shortest:?}..{longest:?}"
        );
    }

    #[test]
    fn at_most_four_refreshes_run_at_once_and_each_gives_its_slot_back() {
        let running = refresh_slots();
        let slots: Vec<_> = (0..MAX_REFRESHES)
            .filter_map(|_| running.clone().try_acquire_owned().ok())
            .collect();
        assert_eq!(slots.len(), MAX_REFRESHES);
        assert!(
            running.clone().try_acquire_owned().is_err(),
            "a fifth waits"
        );
        drop(slots);
        assert_eq!(running.available_permits(), MAX_REFRESHES);
        assert!(running.try_acquire_owned().is_ok());
    }
}
