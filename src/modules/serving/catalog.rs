//! The in-memory catalogue of servable adverts, indexed by genre with cumulative weights, so one
//! decision samples in O(log n) instead of scanning. Readers take a snapshot (an `Arc`); changes
//! build a new snapshot. Kept current by polling `adverts.updated_at` (every instance sees every
//! change within the poll interval) and, on the instance that made a change, at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use crate::domain::advert::DeliveryCaps;
use crate::domain::{AdvertId, Genre};
use crate::platform::db::{Db, DbError, now_ms};
use crate::platform::urls::PublicUrls;

use super::cards::{CardData, Cards};
use super::store::{self, AdvertRow};
use crate::domain::placement::Catalogue;

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
    pub updated_at: i64,
    /// Bit i set: a ready variant exists for the catalogue's placement i.
    pub placements: u64,
}

impl Entry {
    fn from_row(row: &AdvertRow, placements: u64) -> Option<Self> {
        if row.status != "active" {
            return None;
        }
        let genre = Genre::parse(&row.genre).ok()?;
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
            },
            updated_at: row.updated_at,
            placements,
        })
    }

    pub fn has_placement(&self, index: usize) -> bool {
        index < 64 && self.placements & (1 << index) != 0
    }

    pub fn is_capped(&self) -> bool {
        self.caps != DeliveryCaps::default()
    }

    /// Within its schedule at `now_ms`.
    pub fn is_scheduled(&self, now_ms: i64) -> bool {
        self.starts_at.is_none_or(|s| s <= now_ms) && self.ends_at.is_none_or(|e| now_ms < e)
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

#[derive(Debug, Default)]
pub struct Snapshot {
    pub by_id: HashMap<AdvertId, Arc<Entry>>,
    pub by_genre: HashMap<Genre, Pool>,
    pub all: Pool,
}

impl Snapshot {
    fn build(by_id: HashMap<AdvertId, Arc<Entry>>) -> Self {
        let mut grouped: HashMap<Genre, Vec<Arc<Entry>>> = HashMap::new();
        for entry in by_id.values() {
            grouped.entry(entry.genre).or_default().push(entry.clone());
        }
        Self {
            all: Pool::from_entries(by_id.values().cloned().collect()),
            by_genre: grouped
                .into_iter()
                .map(|(genre, entries)| (genre, Pool::from_entries(entries)))
                .collect(),
            by_id,
        }
    }
}

pub struct Catalog {
    snapshot: RwLock<Arc<Snapshot>>,
    db: Db,
    cards: Cards,
    urls: PublicUrls,
    catalogue: Catalogue,
    seen_until: AtomicI64,
}

/// Ready placements per advert, as bit masks over the catalogue.
type Masks = HashMap<i64, u64>;

/// A link code whose advert changed, so the link cache can drop it.
pub type ChangedLink = String;

impl Catalog {
    pub fn new(db: Db, cards: Cards, urls: PublicUrls, catalogue: Catalogue) -> Self {
        Self {
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
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
        for (advert, name) in pairs {
            if let Some(i) = self
                .catalogue
                .placements()
                .iter()
                .position(|p| p.name == name)
            {
                *masks.entry(advert).or_default() |= 1 << i;
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

    /// Loads every active advert (cold start).
    pub async fn load(&self) -> Result<usize, DbError> {
        let started = now_ms();
        let rows = self.db.run(store::active_adverts).await?;
        let masks = self.masks(None).await?;
        let by_id = rows
            .iter()
            .filter_map(|r| Entry::from_row(r, masks.get(&r.id).copied().unwrap_or(0)))
            .map(|e| (e.id, Arc::new(e)))
            .collect();
        for row in &rows {
            if let Some(card) = CardData::from_row(row, &self.urls) {
                self.cards.put(AdvertId(row.id), card).await;
            }
        }
        let snapshot = Snapshot::build(by_id);
        let count = snapshot.by_id.len();
        self.replace(snapshot);
        self.seen_until.store(started, Ordering::Relaxed);
        Ok(count)
    }

    fn replace(&self, snapshot: Snapshot) {
        let mut guard = self.snapshot.write().unwrap_or_else(|p| p.into_inner());
        *guard = Arc::new(snapshot);
    }

    /// Applies changed rows to the index and the card tier; returns the link codes of adverts
    /// whose state changed.
    async fn apply(&self, rows: &[AdvertRow], masks: &Masks) -> Vec<ChangedLink> {
        let changed = self.apply_index(rows, masks);
        for row in rows.iter().filter(|r| changed.contains(&r.link_code)) {
            let id = AdvertId(row.id);
            self.cards.forget(id).await;
            if let Some(card) =
                CardData::from_row(row, &self.urls).filter(|_| row.status == "active")
            {
                self.cards.put(id, card).await;
            }
        }
        changed
    }

    fn apply_index(&self, rows: &[AdvertRow], masks: &Masks) -> Vec<ChangedLink> {
        let current = self.snapshot();
        let mut changed = Vec::new();
        let mut by_id: Option<HashMap<AdvertId, Arc<Entry>>> = None;
        for row in rows {
            let id = AdvertId(row.id);
            let known = current.by_id.get(&id);
            if known.is_some_and(|e| e.updated_at == row.updated_at) {
                continue;
            }
            let map = by_id.get_or_insert_with(|| current.by_id.clone());
            match Entry::from_row(row, masks.get(&row.id).copied().unwrap_or(0)) {
                Some(entry) => {
                    map.insert(id, Arc::new(entry));
                }
                None => {
                    if map.remove(&id).is_none() {
                        continue;
                    }
                }
            }
            changed.push(row.link_code.clone());
        }
        if let Some(by_id) = by_id {
            self.replace(Snapshot::build(by_id));
        }
        changed
    }

    /// Picks up changes made by any instance since the last poll.
    pub async fn poll(&self) -> Result<Vec<ChangedLink>, DbError> {
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
        let changed = self.apply(&rows, &masks).await;
        self.seen_until.store(started, Ordering::Relaxed);
        Ok(changed)
    }

    /// Re-reads one advert at once (after a change on this instance).
    pub async fn refresh(&self, id: AdvertId) -> Result<(), DbError> {
        if let Some(row) = self.db.run(move |conn| store::advert(conn, id)).await? {
            let masks = self.masks(Some(vec![id.0])).await?;
            self.apply(std::slice::from_ref(&row), &masks).await;
        }
        Ok(())
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
