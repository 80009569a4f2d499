//! An in-process table bounded in bytes, for state a request reads on its hot path (per-user
//! state, cards): sharded maps under plain locks, each entry stamped with its shard's own order
//! of use, and no work for a look-up beyond the map's (a general cache also queues every read to
//! replay it into its order later).
//!
//! - **Bytes.** Each entry weighs what its value says plus a fixed overhead. A shard holds its
//!   part of the bound; a shard that passes it evicts its expired entries, then its least
//!   recently used ones until it is a sixteenth below its part (the run is found by selection,
//!   not by sorting the shard), so that work is done once for a run of insertions.
//! - **Order.** Kept per shard, and a shard holds at least [`MIN_SHARD_BYTES`] (fewer shards
//!   when the bound is small), so the entries a full shard evicts are near the table's least
//!   recently used.
//! - **Life.** Every entry has a deadline. In a table with an idle time every look-up moves it
//!   to that long after; otherwise it is fixed at insertion. An entry past it is gone for
//!   look-ups at once, and is dropped from memory when found, when its shard is full, and at
//!   most once a minute when an entry is added to its shard.
//!
//! Times are the caller's, in milliseconds on any clock that does not go back.

use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Shards of a table, at most; fewer when its bytes would give each less than
/// [`MIN_SHARD_BYTES`].
const MAX_SHARDS: usize = 16;

/// A shard's bytes at least (when the table has that many): thousands of entries, so that a
/// shard's least recently used are near the table's.
pub const MIN_SHARD_BYTES: u64 = 1 << 20;

/// A full shard evicts until it is this fraction of its bytes below its part (one in so many).
pub const EVICT_FRACTION: u64 = 16;

/// How often a shard drops its expired entries when one is added to it, at most.
pub const SWEEP_EVERY_MS: i64 = 60_000;

pub struct Table<K, V> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    /// Chooses a key's shard (the shards' maps hash with seeds of their own).
    hasher: foldhash::fast::RandomState,
    shard_bytes: u64,
    /// What every entry costs besides its value's weight.
    overhead: usize,
    weigh: fn(&V) -> usize,
    /// With an idle time, a look-up renews an entry's life.
    idle_ms: Option<i64>,
}

struct Shard<K, V> {
    map: foldhash::HashMap<K, Slot<V>>,
    /// What the held entries weigh.
    bytes: u64,
    /// This shard's order of use: bumped by every look-up and insertion.
    tick: u64,
    next_sweep_ms: i64,
}

struct Slot<V> {
    value: V,
    weight: u64,
    /// The shard's `tick` when the entry was last used.
    used: u64,
    expires_ms: i64,
}

impl<K: Hash + Eq + Copy, V: Clone> Table<K, V> {
    /// A table of at most `bytes`, an entry weighing `overhead` plus what `weigh` says of its
    /// value; with `idle`, an entry not looked up for that long is gone.
    pub fn new(
        bytes: u64,
        overhead: usize,
        weigh: fn(&V) -> usize,
        idle: Option<Duration>,
    ) -> Self {
        let wanted = usize::try_from(bytes / MIN_SHARD_BYTES)
            .unwrap_or(MAX_SHARDS)
            .clamp(1, MAX_SHARDS);
        // A power of two, rounded down, so that a shard is chosen by the hash's bits.
        let shards = 1usize << wanted.ilog2();
        Self {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        map: foldhash::HashMap::default(),
                        bytes: 0,
                        tick: 0,
                        next_sweep_ms: 0,
                    })
                })
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            shard_bytes: bytes / shards as u64,
            overhead,
            weigh,
            idle_ms: idle.map(|idle| i64::try_from(idle.as_millis()).unwrap_or(i64::MAX)),
        }
    }

    fn shard(&self, key: &K) -> MutexGuard<'_, Shard<K, V>> {
        // The hash's high bits: its low ones pick the bucket in the shard's map.
        let index = (self.hasher.hash_one(key) >> 48) as usize & (self.shards.len() - 1);
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The deadline of an entry used now, in a table with an idle time (else none).
    fn renewed(&self, now: i64) -> Option<i64> {
        self.idle_ms.map(|idle| now.saturating_add(idle))
    }

    /// The deadline of an entry put now without one: the idle time's, or none.
    fn default_deadline(&self, now: i64) -> i64 {
        self.renewed(now).unwrap_or(i64::MAX)
    }

    /// The entry's value, if held and alive; counts as a use.
    pub fn get(&self, key: &K, now: i64) -> Option<V> {
        let renewed = self.renewed(now);
        self.shard(key).look_up(key, now, renewed)
    }

    /// The entry's value, or `init`'s, then held (and weighed): for the idle time, or until
    /// evicted in a table without one.
    pub fn get_with(&self, key: K, now: i64, init: impl FnOnce() -> V) -> V {
        let renewed = self.renewed(now);
        let mut shard = self.shard(&key);
        if let Some(found) = shard.look_up(&key, now, renewed) {
            return found;
        }
        let value = init();
        let expires_ms = self.default_deadline(now);
        self.put(&mut shard, key, value.clone(), now, expires_ms);
        value
    }

    /// Holds `value` for `key` (weighed anew): for the idle time, or until evicted in a table
    /// without one.
    pub fn insert(&self, key: K, value: V, now: i64) {
        self.insert_until(key, value, now, self.default_deadline(now));
    }

    /// Holds `value` for `key` (weighed anew) until `expires_ms` (renewed by look-ups in a
    /// table with an idle time).
    pub fn insert_until(&self, key: K, value: V, now: i64, expires_ms: i64) {
        let mut shard = self.shard(&key);
        self.put(&mut shard, key, value, now, expires_ms);
    }

    /// Replaces a live entry that `current` recognises with `with` (its value and deadline), or
    /// drops it for `None`; leaves any other entry, or none, as it is.
    pub fn replace_if(
        &self,
        key: K,
        now: i64,
        current: impl FnOnce(&V) -> bool,
        with: Option<(V, i64)>,
    ) {
        let mut shard = self.shard(&key);
        let recognised = shard
            .map
            .get(&key)
            .is_some_and(|slot| slot.expires_ms > now && current(&slot.value));
        if !recognised {
            return;
        }
        match with {
            Some((value, expires_ms)) => self.put(&mut shard, key, value, now, expires_ms),
            None => shard.remove(&key),
        }
    }

    pub fn remove(&self, key: &K) {
        self.shard(key).remove(key);
    }

    fn put(&self, shard: &mut Shard<K, V>, key: K, value: V, now: i64, expires_ms: i64) {
        let weight = self.overhead.saturating_add((self.weigh)(&value)) as u64;
        shard.tick += 1;
        let slot = Slot {
            value,
            weight,
            used: shard.tick,
            expires_ms,
        };
        match shard.map.insert(key, slot) {
            Some(replaced) => shard.bytes -= replaced.weight,
            None if now >= shard.next_sweep_ms => {
                shard.drop_expired(now);
                shard.next_sweep_ms = now.saturating_add(SWEEP_EVERY_MS);
            }
            None => {}
        }
        shard.bytes += weight;
        if shard.bytes > self.shard_bytes {
            shard.drop_expired(now);
            shard.evict_down_to(self.shard_bytes - self.shard_bytes / EVICT_FRACTION);
        }
    }

    /// Entries held and the bytes they are weighed at.
    pub fn usage(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(entries, bytes), shard| {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            (entries + shard.map.len() as u64, bytes + shard.bytes)
        })
    }

    /// Whether `key` is held, without counting as a use.
    #[cfg(test)]
    pub fn holds(&self, key: &K) -> bool {
        self.shard(key).map.contains_key(key)
    }
}

impl<K: Hash + Eq + Copy, V: Clone> Shard<K, V> {
    fn look_up(&mut self, key: &K, now: i64, renewed: Option<i64>) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let slot = self.map.get_mut(key)?;
        if slot.expires_ms <= now {
            self.remove(key);
            return None;
        }
        slot.used = tick;
        if let Some(renewed) = renewed {
            slot.expires_ms = slot.expires_ms.max(renewed);
        }
        Some(slot.value.clone())
    }

    fn remove(&mut self, key: &K) {
        if let Some(slot) = self.map.remove(key) {
            self.bytes -= slot.weight;
        }
    }

    /// Keeps the entries `keep` says to, and the weight of those alone.
    fn retain(&mut self, mut keep: impl FnMut(&Slot<V>) -> bool) {
        let mut freed = 0;
        self.map.retain(|_, slot| {
            let kept = keep(slot);
            if !kept {
                freed += slot.weight;
            }
            kept
        });
        self.bytes -= freed;
    }

    fn drop_expired(&mut self, now: i64) {
        self.retain(|slot| slot.expires_ms > now);
    }

    /// Evicts the least recently used entries until the shard weighs at most `target`: as many
    /// at a time as weigh the excess on average.
    fn evict_down_to(&mut self, target: u64) {
        while self.bytes > target && !self.map.is_empty() {
            let mut order: Vec<u64> = self.map.values().map(|slot| slot.used).collect();
            let excess = u128::from(self.bytes - target) * order.len() as u128;
            let run = usize::try_from(excess.div_ceil(u128::from(self.bytes)))
                .unwrap_or(usize::MAX)
                .clamp(1, order.len());
            let (_, &mut last, _) = order.select_nth_unstable(run - 1);
            self.retain(|slot| slot.used > last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVERHEAD: usize = 100;

    /// A value here weighs what it says.
    fn table(bytes: u64, idle_ms: Option<u64>) -> Table<u64, u64> {
        Table::new(
            bytes,
            OVERHEAD,
            |v| *v as usize,
            idle_ms.map(Duration::from_millis),
        )
    }

    #[test]
    fn an_entry_not_used_for_the_idle_time_is_gone_and_its_bytes_with_it() {
        let users = table(1 << 20, Some(1_000));
        users.insert(1, 8, 0);
        assert_eq!(users.get(&1, 999), Some(8));
        // Used at 999: idle from there.
        assert_eq!(users.get(&1, 1_998), Some(8));
        assert_eq!(users.get(&1, 2_998), None);
        assert_eq!(users.usage(), (0, 0));
        assert_eq!(users.get_with(1, 3_000, || 16), 16);
        assert_eq!(users.usage(), (1, (OVERHEAD + 16) as u64));
    }

    #[test]
    fn without_an_idle_time_an_entry_lives_until_its_deadline_however_often_it_is_used() {
        let cards = table(1 << 20, None);
        cards.insert_until(1, 8, 0, 1_000);
        assert_eq!(cards.get(&1, 999), Some(8));
        assert_eq!(cards.get(&1, 1_000), None);
        assert_eq!(cards.usage(), (0, 0));
    }

    #[test]
    fn expired_entries_elsewhere_in_a_shard_are_swept_when_one_is_added_a_minute_on() {
        let users = table(1 << 20, Some(1_000));
        for key in 0..100 {
            users.insert(key, 0, 0);
        }
        assert_eq!(users.usage().0, 100);
        users.insert(1_000, 0, SWEEP_EVERY_MS);
        assert_eq!(users.usage(), (1, OVERHEAD as u64));
    }

    #[test]
    fn inserting_again_replaces_the_weight() {
        let users = table(1 << 20, Some(60_000));
        users.insert(1, 64, 0);
        users.insert(1, 256, 1);
        assert_eq!(users.usage(), (1, (OVERHEAD + 256) as u64));
    }

    #[test]
    fn only_the_entry_recognised_is_replaced_or_dropped() {
        let cards = table(1 << 20, None);
        cards.insert_until(1, 8, 0, 1_000);
        cards.replace_if(1, 10, |v| *v == 9, Some((32, 2_000)));
        assert_eq!(cards.get(&1, 10), Some(8));
        cards.replace_if(1, 10, |v| *v == 8, Some((32, 2_000)));
        assert_eq!(cards.get(&1, 1_500), Some(32));
        assert_eq!(cards.usage(), (1, (OVERHEAD + 32) as u64));
        cards.replace_if(1, 1_500, |v| *v == 32, None);
        assert_eq!(cards.usage(), (0, 0));
        // Nothing held: nothing put.
        cards.replace_if(2, 1_500, |_| true, Some((32, 2_000)));
        assert!(!cards.holds(&2));
    }

    /// Several shards, each bound to its part: the table keeps within its bytes, and an entry
    /// used all along stays while the entries around it come and go.
    #[test]
    fn a_table_of_many_shards_stays_within_its_bytes_and_keeps_the_entries_used_lately() {
        let bytes = 8 << 20;
        let users = table(bytes, Some(3_600_000));
        assert_eq!(users.shards.len(), 8);
        let regular = u64::MAX;
        for key in 0..200_000u64 {
            users.get_with(key, 1, || 64);
            if key % 1_000 == 0 {
                users.get_with(regular, 1, || 64);
            }
        }
        let (held, weighed) = users.usage();
        assert!(weighed <= bytes, "{weighed} bytes");
        // Each shard keeps between its part less a sixteenth and its part.
        let most = bytes / (OVERHEAD + 64) as u64;
        assert!(held > most - most / EVICT_FRACTION - 8, "{held} of {most}");
        assert!(users.holds(&regular));
        assert!(users.holds(&199_999));
        assert!(!users.holds(&0));
    }
}
