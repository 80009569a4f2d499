//! The advert index: every servable advert in memory, indexed by genre with cumulative weights, so one
//! decision samples in O(log n) instead of scanning. Readers take a snapshot (an `Arc`); a change
//! builds a new snapshot that shares every pool it does not touch. Kept current by polling
//! `adverts.updated_at` (every instance sees every change within the poll interval) and, on the
//! instance that made a change, at once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use crate::domain::advert::{DeliveryCaps, Pacing};
use crate::domain::targeting::{Audience, Targeting, Viewer, Zone};
use crate::domain::{AdvertId, Genre};
use crate::platform::db::{Db, DbError, now_ms};
use crate::platform::urls::PublicUrls;

use crate::domain::placement::PlacementCatalogue;

use super::cards::{CardData, Cards};
use super::pacing::Schedule;
use super::store::{self, AdvertRow};

/// Changes are read again this far back, so that clocks a little apart across instances, or two
/// changes in one millisecond, are never missed. Re-reading a change is harmless.
const POLL_OVERLAP_MS: i64 = 5_000;

/// One servable advert.
#[derive(Debug)]
pub struct Entry {
    pub id: AdvertId,
    pub genre: Genre,
    pub lang: Option<Box<str>>,
    pub weight: u32,
    pub starts_at: Option<i64>,
    pub ends_at: Option<i64>,
    pub caps: DeliveryCaps,
    /// Who and when it is for; `None`: everyone at any time.
    pub audience: Option<Audience>,
    /// Its time zone: the day of `daily_max_impressions`.
    pub zone: Zone,
    /// Its active time (targeted days and hours within its flight), over which even pacing
    /// spreads its caps.
    pub schedule: Schedule,
    pub updated_at: i64,
    /// Bit i set: a ready variant exists for the catalogue's placement i.
    pub placements: u64,
}

impl Entry {
    fn from_row(row: &AdvertRow, placements: u64) -> Option<Self> {
        if !row.is_active() {
            return None;
        }
        let genre = Genre::parse(&row.genre).ok()?;
        // Targeting that cannot be read is not taken for "everyone": the advert waits for a
        // readable row.
        let targeting = match Targeting::from_stored(row.targeting.as_deref()) {
            Ok(targeting) => targeting,
            Err(e) => {
                tracing::warn!(advert_id = row.id, error = %e, "stored targeting unreadable; advert not served");
                return None;
            }
        };
        let unsigned = |v: Option<i64>| v.and_then(|n| u64::try_from(n).ok());
        Some(Self {
            id: AdvertId(row.id),
            genre,
            lang: row.lang.as_deref().map(Into::into),
            weight: u32::try_from(row.weight).unwrap_or(1).max(1),
            starts_at: row.starts_at,
            ends_at: row.ends_at,
            caps: DeliveryCaps {
                max_impressions: unsigned(row.max_impressions),
                max_clicks: unsigned(row.max_clicks),
                daily_max_impressions: unsigned(row.daily_max_impressions),
                // A value this version does not know is spent as soon as possible.
                pacing: Pacing::from_stored(&row.pacing).unwrap_or_default(),
            },
            schedule: Schedule::new(targeting.active_time(), row.starts_at, row.ends_at),
            audience: targeting.narrows().then(|| targeting.audience()),
            zone: targeting.timezone,
            updated_at: row.updated_at,
            placements,
        })
    }

    pub fn is_capped(&self) -> bool {
        !self.caps.is_unlimited()
    }

    /// Within its schedule at `now_ms`.
    pub fn is_scheduled(&self, now_ms: i64) -> bool {
        self.starts_at.is_none_or(|s| s <= now_ms) && self.ends_at.is_none_or(|e| now_ms < e)
    }

    /// For this viewer at `now_ms` (its targeting's devices, countries, days and hours).
    pub fn is_for(&self, viewer: &Viewer, now_ms: i64) -> bool {
        self.audience
            .as_ref()
            .is_none_or(|a| a.admits(viewer, now_ms.div_euclid(1000)))
    }
}

/// Adverts with their running weight totals, for weighted sampling by binary search.
#[derive(Debug, Default)]
pub struct Pool {
    pub entries: Vec<Arc<Entry>>,
    cumulative: Vec<u64>,
}

impl Pool {
    /// A pool of `entries` in id order.
    #[cfg(test)]
    pub fn from_entries(mut entries: Vec<Arc<Entry>>) -> Self {
        entries.sort_by_key(|e| e.id);
        let mut pool = Self::default();
        for entry in entries {
            pool.push(entry);
        }
        pool
    }

    fn push(&mut self, entry: Arc<Entry>) {
        let total = self.total() + u64::from(entry.weight);
        self.entries.push(entry);
        self.cumulative.push(total);
    }

    pub fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// The entry whose weight interval holds `point` (0 <= point < total).
    pub fn at(&self, point: u64) -> Option<&Arc<Entry>> {
        let i = self.cumulative.partition_point(|&c| c <= point);
        self.entries.get(i)
    }
}

/// One genre's adverts, and the same adverts narrowed by what a serve may ask for: a placement
/// (ready variants), a language (adverts in it, and adverts without one), or both. A serve
/// samples the pools that hold exactly what it may show, so a rare language or a placement few
/// adverts suit costs no more draws than a plain serve. An advert ready for k placements is in
/// 2k + 2 pools of 16 bytes an entry.
#[derive(Debug, Default)]
pub struct Shelf {
    /// Every advert of the genre, in any language.
    any: Narrowed,
    /// The adverts without a language: shown whatever language a serve asks for.
    neutral: Narrowed,
    /// The adverts in each language.
    by_lang: HashMap<Box<str>, Narrowed>,
}

/// A set of adverts, and its subsets ready for each placement of the catalogue.
#[derive(Debug, Default)]
struct Narrowed {
    all: Pool,
    /// Index: the placement's position in the catalogue.
    by_placement: Vec<Pool>,
}

impl Narrowed {
    /// Adds `entry` (callers add in id order).
    fn push(&mut self, entry: &Arc<Entry>) {
        self.all.push(entry.clone());
        let mut placements = entry.placements;
        while placements != 0 {
            let i = placements.trailing_zeros() as usize;
            placements &= placements - 1;
            if self.by_placement.len() <= i {
                self.by_placement.resize_with(i + 1, Pool::default);
            }
            self.by_placement[i].push(entry.clone());
        }
    }

    fn get(&self, placement: Option<usize>) -> Option<&Pool> {
        match placement {
            None => Some(&self.all),
            Some(i) => self.by_placement.get(i),
        }
    }
}

impl Shelf {
    pub fn from_entries(mut entries: Vec<Arc<Entry>>) -> Self {
        entries.sort_by_key(|e| e.id);
        let mut shelf = Self::default();
        for entry in &entries {
            shelf.any.push(entry);
            match &entry.lang {
                None => shelf.neutral.push(entry),
                Some(lang) => shelf.by_lang.entry(lang.clone()).or_default().push(entry),
            }
        }
        shelf
    }

    /// Every advert of the genre, in id order.
    pub fn entries(&self) -> &[Arc<Entry>] {
        &self.any.all.entries
    }

    /// Adds the pools (disjoint) that hold exactly this genre's adverts ready for `placement`
    /// (any: `None`) that may be shown in `lang` (any: `None`).
    fn narrowed<'a>(
        &'a self,
        placement: Option<usize>,
        lang: Option<&str>,
        pools: &mut Vec<&'a Pool>,
    ) {
        let found = match lang {
            None => [self.any.get(placement), None],
            Some(lang) => [
                self.neutral.get(placement),
                self.by_lang.get(lang).and_then(|n| n.get(placement)),
            ],
        };
        pools.extend(found.into_iter().flatten().filter(|p| p.total() > 0));
    }
}

/// What a decision samples from: one shelf per genre. Readers hold an `Arc` of it; a change
/// replaces only the shelves of the genres it touches, so its cost follows the size of those
/// genres, not of the whole catalogue.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub by_genre: HashMap<Genre, Arc<Shelf>>,
}

impl Snapshot {
    /// The pools (disjoint) holding exactly the adverts of `genres` (every genre: `None`) ready
    /// for `placement` that may be shown in `lang`.
    pub fn pools(
        &self,
        genres: Option<&[Genre]>,
        placement: Option<usize>,
        lang: Option<&str>,
    ) -> Vec<&Pool> {
        let mut pools = Vec::new();
        match genres {
            None => {
                for shelf in self.by_genre.values() {
                    shelf.narrowed(placement, lang, &mut pools);
                }
            }
            Some(genres) => {
                for shelf in genres.iter().filter_map(|g| self.by_genre.get(g)) {
                    shelf.narrowed(placement, lang, &mut pools);
                }
            }
        }
        pools
    }
}

/// Every servable advert by id, and the ends of those that have one in time order.
#[derive(Debug, Default)]
struct Entries {
    by_id: HashMap<AdvertId, Arc<Entry>>,
    /// `(ends_at, id)`: the adverts whose end falls in a span, without a walk over all.
    by_end: BTreeSet<(i64, AdvertId)>,
}

impl Entries {
    fn get(&self, id: &AdvertId) -> Option<&Arc<Entry>> {
        self.by_id.get(id)
    }

    fn insert(&mut self, entry: Arc<Entry>) {
        if let Some(end) = entry.ends_at {
            self.by_end.insert((end, entry.id));
        }
        if let Some(old) = self.by_id.insert(entry.id, entry.clone()) {
            self.forget_end(&old, entry.ends_at);
        }
    }

    fn remove(&mut self, id: &AdvertId) -> Option<Arc<Entry>> {
        let old = self.by_id.remove(id)?;
        self.forget_end(&old, None);
        Some(old)
    }

    /// The ids of the adverts whose end is after `from` and no later than `until`, earliest first.
    fn ending_within(&self, from: i64, until: i64) -> impl Iterator<Item = AdvertId> + '_ {
        let span = (from.saturating_add(1), AdvertId(i64::MIN))..=(until, AdvertId(i64::MAX));
        (from < until)
            .then(|| self.by_end.range(span))
            .into_iter()
            .flatten()
            .map(|(_, id)| *id)
    }

    /// Drops `old`'s end unless it is `kept` (the new entry's).
    fn forget_end(&mut self, old: &Entry, kept: Option<i64>) {
        if let Some(end) = old.ends_at.filter(|end| Some(*end) != kept) {
            self.by_end.remove(&(end, old.id));
        }
    }
}

pub struct AdvertIndex {
    snapshot: RwLock<Arc<Snapshot>>,
    /// Every servable advert. Its write lock also orders writers, so two changes applied at once
    /// cannot lose one another.
    entries: RwLock<Entries>,
    db: Db,
    cards: Cards,
    urls: PublicUrls,
    catalogue: PlacementCatalogue,
    seen_until: AtomicI64,
}

/// Ready placements per advert, as bit masks over the catalogue.
type Masks = HashMap<i64, u64>;

/// What one batch of rows changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// The link codes of adverts whose state changed, so the link cache can drop them.
    pub links: Vec<String>,
    /// The changed adverts that are servable now.
    pub servable: Vec<Arc<Entry>>,
    /// The adverts that left the index.
    pub removed: Vec<AdvertId>,
}

impl AdvertIndex {
    pub fn new(db: Db, cards: Cards, urls: PublicUrls, catalogue: PlacementCatalogue) -> Self {
        Self {
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            entries: RwLock::new(Entries::default()),
            db,
            cards,
            urls,
            catalogue,
            seen_until: AtomicI64::new(0),
        }
    }

    /// Reads which placements the given adverts (all, with `None`) have ready variants for.
    async fn masks(&self, ids: Option<Vec<i64>>) -> Result<Masks, DbError> {
        let pairs = self
            .db
            .run(move |conn| store::ready_placements(conn, ids.as_deref()))
            .await?;
        let mut masks = Masks::new();
        for ready in pairs {
            if let Some(i) = self
                .catalogue
                .placements()
                .iter()
                .position(|p| p.name == ready.placement)
            {
                *masks.entry(ready.advert_id).or_default() |= 1 << i;
            }
        }
        Ok(masks)
    }

    pub fn cards(&self) -> &Cards {
        &self.cards
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The servable advert with this id.
    pub fn entry(&self, id: AdvertId) -> Option<Arc<Entry>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries.get(&id).cloned()
    }

    /// The servable adverts `filter` accepts.
    pub fn entries_where(&self, filter: impl Fn(&Entry) -> bool) -> Vec<Arc<Entry>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .by_id
            .values()
            .filter(|e| filter(e))
            .cloned()
            .collect()
    }

    /// The servable adverts whose `ends_at` is after `from` and no later than `until`.
    pub fn ending_within(&self, from: i64, until: i64) -> Vec<Arc<Entry>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .ending_within(from, until)
            .filter_map(|id| entries.get(&id).cloned())
            .collect()
    }

    /// Loads every active advert (cold start).
    pub async fn load(&self) -> Result<usize, DbError> {
        let started = now_ms();
        let (rows, creatives) = self
            .db
            .run(|conn| {
                Ok::<_, DbError>((
                    store::active_adverts(conn)?,
                    store::servable_creatives(conn, None)?,
                ))
            })
            .await?;
        let masks = self.masks(None).await?;
        let loaded: HashMap<AdvertId, Arc<Entry>> = rows
            .iter()
            .filter_map(|r| Entry::from_row(r, masks.get(&r.id).copied().unwrap_or(0)))
            .map(|e| (e.id, Arc::new(e)))
            .collect();
        for row in &rows {
            let of_advert = creatives.get(&row.id).map_or(&[][..], Vec::as_slice);
            if let Some(card) = CardData::from_row(row, of_advert, &self.urls) {
                self.cards.put(AdvertId(row.id), card).await;
            }
        }
        let count = loaded.len();
        let mut grouped: HashMap<Genre, Vec<Arc<Entry>>> = HashMap::new();
        for entry in loaded.values() {
            grouped.entry(entry.genre).or_default().push(entry.clone());
        }
        let snapshot = Snapshot {
            by_genre: grouped
                .into_iter()
                .map(|(genre, list)| (genre, Arc::new(Shelf::from_entries(list))))
                .collect(),
        };
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        *entries = Entries::default();
        for entry in loaded.into_values() {
            entries.insert(entry);
        }
        self.replace(snapshot);
        drop(entries);
        self.seen_until.store(started, Ordering::Relaxed);
        Ok(count)
    }

    fn replace(&self, snapshot: Snapshot) {
        let mut guard = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        *guard = Arc::new(snapshot);
    }

    /// Applies changed rows to the index and the card tier.
    async fn apply(&self, rows: &[AdvertRow], masks: &Masks) -> Changes {
        // The creatives are read first, so that a changed advert enters the index with its card
        // ready in the same step, as before creatives were read at all.
        let ids: Vec<i64> = rows
            .iter()
            .filter(|r| r.is_active())
            .map(|r| r.id)
            .collect();
        let creatives = if ids.is_empty() {
            Ok(HashMap::new())
        } else {
            self.db
                .run(move |conn| store::servable_creatives(conn, Some(&ids)))
                .await
        };
        let changes = self.apply_index(rows, masks);
        let changed: HashSet<&str> = changes.links.iter().map(String::as_str).collect();
        for row in rows
            .iter()
            .filter(|r| changed.contains(r.link_code.as_str()))
        {
            // Without its creatives (the database just failed), the old card is dropped and the
            // next request loads it.
            let card = match &creatives {
                Ok(creatives) => {
                    let of_advert = creatives.get(&row.id).map_or(&[][..], Vec::as_slice);
                    CardData::from_row(row, of_advert, &self.urls).filter(|_| row.is_active())
                }
                Err(_) => None,
            };
            self.cards.replace(AdvertId(row.id), card).await;
        }
        changes
    }

    fn apply_index(&self, rows: &[AdvertRow], masks: &Masks) -> Changes {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let mut changes = Changes::default();
        let mut touched: HashSet<AdvertId> = HashSet::new();
        let mut genres: HashSet<Genre> = HashSet::new();
        for row in rows {
            let id = AdvertId(row.id);
            let known = entries.get(&id);
            if known.is_some_and(|e| e.updated_at == row.updated_at) {
                continue;
            }
            let before = known.map(|e| e.genre);
            match Entry::from_row(row, masks.get(&row.id).copied().unwrap_or(0)) {
                Some(entry) => {
                    let entry = Arc::new(entry);
                    genres.insert(entry.genre);
                    changes.servable.push(entry.clone());
                    entries.insert(entry);
                }
                None if entries.remove(&id).is_none() => continue,
                None => changes.removed.push(id),
            }
            genres.extend(before);
            touched.insert(id);
            changes.links.push(row.link_code.clone());
        }
        if genres.is_empty() {
            return changes;
        }
        let mut by_genre = self.snapshot().by_genre.clone();
        for genre in genres {
            let mut list: Vec<Arc<Entry>> = by_genre.get(&genre).map_or_else(Vec::new, |shelf| {
                shelf
                    .entries()
                    .iter()
                    .filter(|e| !touched.contains(&e.id))
                    .cloned()
                    .collect()
            });
            list.extend(
                touched
                    .iter()
                    .filter_map(|id| entries.get(id))
                    .filter(|e| e.genre == genre)
                    .cloned(),
            );
            if list.is_empty() {
                by_genre.remove(&genre);
            } else {
                by_genre.insert(genre, Arc::new(Shelf::from_entries(list)));
            }
        }
        self.replace(Snapshot { by_genre });
        changes
    }

    /// Picks up changes made by any instance since the last poll.
    pub async fn poll(&self) -> Result<Changes, DbError> {
        let started = now_ms();
        let since = self.seen_until.load(Ordering::Relaxed) - POLL_OVERLAP_MS;
        let rows = self
            .db
            .run(move |conn| store::changed_since(conn, since))
            .await?;
        let masks = if rows.is_empty() {
            Masks::new()
        } else {
            self.masks(Some(rows.iter().map(|r| r.id).collect()))
                .await?
        };
        let changes = self.apply(&rows, &masks).await;
        self.seen_until.store(started, Ordering::Relaxed);
        Ok(changes)
    }

    /// Re-reads one advert at once (after a change on this instance).
    pub async fn refresh(&self, id: AdvertId) -> Result<Changes, DbError> {
        let Some(row) = self.db.run(move |conn| store::advert(conn, id)).await? else {
            return Ok(Changes::default());
        };
        let masks = self.masks(Some(vec![id.0])).await?;
        Ok(self.apply(std::slice::from_ref(&row), &masks).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64, weight: u32) -> Arc<Entry> {
        Arc::new(Entry {
            id: AdvertId(id),
            genre: Genre::Travel,
            lang: None,
            weight,
            starts_at: None,
            ends_at: None,
            caps: DeliveryCaps::default(),
            schedule: Schedule::default(),
            audience: None,
            zone: Zone::utc(),
            updated_at: 0,
            placements: 0,
        })
    }

    #[test]
    fn a_point_falls_in_the_interval_of_its_weight() {
        let pool = Pool::from_entries(vec![entry(3, 1), entry(1, 1), entry(2, 3)]);
        assert_eq!(pool.total(), 5);
        let ids: Vec<i64> = (0..5)
            .map(|p| pool.at(p).map(|e| e.id.0).unwrap_or(0))
            .collect();
        assert_eq!(ids, [1, 2, 2, 2, 3]);
        assert!(pool.at(5).is_none());
    }

    /// Adverts in Russian, in English and without a language, ready for different placements:
    /// each combination of genre, placement and language gets exactly the adverts it may show,
    /// each once.
    #[test]
    fn a_serve_samples_exactly_the_adverts_for_its_genre_placement_and_language() {
        let advert = |id: i64, genre: Genre, lang: Option<&str>, placements: u64| {
            let mut e = Arc::try_unwrap(entry(id, 1)).unwrap_or_else(|_| unreachable!());
            e.genre = genre;
            e.lang = lang.map(Into::into);
            e.placements = placements;
            Arc::new(e)
        };
        let travel = [
            advert(1, Genre::Travel, None, 0b011),
            advert(2, Genre::Travel, Some("ru"), 0b001),
            advert(3, Genre::Travel, Some("en"), 0b110),
            advert(4, Genre::Travel, Some("ru"), 0b100),
            advert(5, Genre::Travel, None, 0),
        ];
        let food = [
            advert(6, Genre::Food, Some("ru"), 0b010),
            advert(7, Genre::Food, None, 0b001),
        ];
        let snapshot = Snapshot {
            by_genre: HashMap::from([
                (
                    Genre::Travel,
                    Arc::new(Shelf::from_entries(travel.to_vec())),
                ),
                (Genre::Food, Arc::new(Shelf::from_entries(food.to_vec()))),
            ]),
        };
        let ids = |genres: Option<&[Genre]>, placement: Option<usize>, lang: Option<&str>| {
            let mut ids: Vec<i64> = snapshot
                .pools(genres, placement, lang)
                .iter()
                .flat_map(|p| p.entries.iter().map(|e| e.id.0))
                .collect();
            ids.sort_unstable();
            ids
        };
        let travel = Some(&[Genre::Travel][..]);
        assert_eq!(ids(travel, None, None), [1, 2, 3, 4, 5]);
        assert_eq!(ids(travel, Some(0), None), [1, 2]);
        assert_eq!(ids(travel, Some(2), None), [3, 4]);
        assert_eq!(ids(travel, Some(5), None), Vec::<i64>::new());
        assert_eq!(ids(travel, None, Some("ru")), [1, 2, 4, 5]);
        assert_eq!(ids(travel, None, Some("fi")), [1, 5]);
        assert_eq!(ids(travel, Some(0), Some("ru")), [1, 2]);
        assert_eq!(ids(travel, Some(1), Some("en")), [1, 3]);
        assert_eq!(ids(travel, Some(2), Some("fi")), Vec::<i64>::new());
        assert_eq!(ids(None, Some(1), Some("ru")), [1, 6]);
        assert_eq!(ids(None, None, None), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(ids(Some(&[Genre::Food, Genre::Games]), Some(0), None), [7]);
        // The weights of a narrowed pool are its own adverts'.
        let pools = snapshot.pools(travel, Some(2), None);
        assert_eq!(pools.iter().map(|p| p.total()).sum::<u64>(), 2);
    }

    /// Ends kept in time order follow every insert, change and removal.
    #[test]
    fn the_ends_in_a_span_follow_changes_to_the_adverts() {
        let ending = |id: i64, end: Option<i64>| {
            let mut e = Arc::try_unwrap(entry(id, 1)).unwrap_or_else(|_| unreachable!());
            e.ends_at = end;
            Arc::new(e)
        };
        let mut entries = Entries::default();
        entries.insert(ending(1, Some(100)));
        entries.insert(ending(2, Some(200)));
        entries.insert(ending(3, None));
        entries.insert(ending(4, Some(200)));
        let within = |entries: &Entries, from: i64, until: i64| -> Vec<i64> {
            entries.ending_within(from, until).map(|id| id.0).collect()
        };
        assert_eq!(within(&entries, 0, 1000), [1, 2, 4]);
        assert_eq!(within(&entries, 100, 200), [2, 4]);
        assert_eq!(within(&entries, 0, 99), Vec::<i64>::new());
        assert_eq!(within(&entries, 200, 100), Vec::<i64>::new());
        // A changed end moves; the same end stays once; an end removed or an advert gone leaves.
        entries.insert(ending(1, Some(300)));
        entries.insert(ending(2, Some(200)));
        entries.insert(ending(4, None));
        entries.insert(ending(3, Some(150)));
        assert_eq!(within(&entries, 0, 1000), [3, 2, 1]);
        assert!(entries.remove(&AdvertId(2)).is_some());
        assert!(entries.remove(&AdvertId(2)).is_none());
        assert_eq!(within(&entries, 0, 1000), [3, 1]);
        assert_eq!(entries.by_end.len(), 2);
        assert_eq!(entries.by_id.len(), 3);
    }

    #[test]
    fn schedules_are_half_open() {
        let mut e = Arc::try_unwrap(entry(1, 1)).unwrap_or_else(|_| unreachable!());
        e.starts_at = Some(100);
        e.ends_at = Some(200);
        assert!(!e.is_scheduled(99));
        assert!(e.is_scheduled(100));
        assert!(e.is_scheduled(199));
        assert!(!e.is_scheduled(200));
    }
}
