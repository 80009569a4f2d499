//! Per-user state in process memory (frequency histories, interest profiles), bounded in bytes:
//! `serving.user_state_bytes`, three quarters for histories and one quarter for profiles. Each
//! table weighs a user by what its state holds plus the bookkeeping every held user costs, and
//! evicts the least recently seen users when a new one would pass its share. An evicted user's
//! state is read back from Redis when there is one; without Redis it starts afresh.
//!
//! A serve reads its user's state once, so the table is built for that look-up: sharded maps
//! under plain locks, each entry stamped with its shard's own order of use, and no work for a
//! look-up beyond the map's. The order is kept per shard, and a shard holds at least
//! [`MIN_SHARD_BYTES`], so the users a full shard evicts are its least recently seen.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::tokens::UserKey;

/// What a held user costs besides its state: its key, value and order in the table's map (with
/// the map's room to grow), and the `Arc` and `Mutex` around the state.
pub const ENTRY_BYTES: usize = 192;

/// Shards of a table, at most; fewer when its bytes would give each less than
/// [`MIN_SHARD_BYTES`].
const MAX_SHARDS: usize = 16;

/// A shard's bytes at least (when the table has that many): thousands of users, so that a
/// shard's least recently seen are near the table's.
const MIN_SHARD_BYTES: u64 = 1 << 20;

/// A full shard evicts until it is this fraction of its bytes below its share (one in so many):
/// the work of finding the least recently seen is done once for a run of new users.
const EVICT_FRACTION: u64 = 16;

/// How often a shard drops the users idle for longer than the table keeps them, at most
/// (checked when a user is added to it).
const SWEEP_EVERY_MS: i64 = 60_000;

/// Of `serving.user_state_bytes`, the share of frequency histories (the rest is profiles').
pub fn histories_share(total: u64) -> u64 {
    total / 4 * 3
}

pub fn profiles_share(total: u64) -> u64 {
    total - histories_share(total)
}

/// Users' state of at most `bytes`, `weigh` saying what one user's state takes besides
/// [`ENTRY_BYTES`]; a user not seen for `idle` is gone. Times are the callers' (milliseconds
/// since the Unix epoch, as the serve reads them once).
pub struct UserTable<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    shard_bytes: u64,
    idle_ms: i64,
    weigh: fn(&V) -> usize,
}

struct Shard<V> {
    /// foldhash: a user's key is already a keyed hash.
    map: foldhash::HashMap<UserKey, Slot<V>>,
    /// What the held users weigh.
    bytes: u64,
    /// This shard's order of use: bumped by every look-up and insertion.
    tick: u64,
    next_sweep_ms: i64,
}

struct Slot<V> {
    value: V,
    weight: u64,
    /// The shard's `tick` when the user was last seen.
    seen: u64,
    seen_ms: i64,
}

impl<V: Clone> UserTable<V> {
    pub fn new(bytes: u64, idle: Duration, weigh: fn(&V) -> usize) -> Self {
        let wanted = usize::try_from(bytes / MIN_SHARD_BYTES)
            .unwrap_or(MAX_SHARDS)
            .clamp(1, MAX_SHARDS);
        // A power of two, rounded down, so that a shard is chosen by the key's bits.
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
            shard_bytes: bytes / shards as u64,
            idle_ms: i64::try_from(idle.as_millis()).unwrap_or(i64::MAX),
            weigh,
        }
    }

    fn shard(&self, user: UserKey) -> MutexGuard<'_, Shard<V>> {
        // The key's high bits: the map's own hash of it decides its bucket.
        let index = (user.0 >> 40) as usize & (self.shards.len() - 1);
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The user's state, if held and seen within the idle time; counts as seeing the user.
    pub fn get(&self, user: UserKey, now: i64) -> Option<V> {
        let mut shard = self.shard(user);
        shard.look_up(user, now, self.idle_ms)
    }

    /// The user's state, or `init`'s, then held (and weighed).
    pub fn get_with(&self, user: UserKey, now: i64, init: impl FnOnce() -> V) -> V {
        let mut shard = self.shard(user);
        if let Some(found) = shard.look_up(user, now, self.idle_ms) {
            return found;
        }
        let value = init();
        self.put(&mut shard, user, value.clone(), now);
        value
    }

    /// Holds `value` as the user's state, weighed anew (a state that grew is inserted again).
    pub fn insert(&self, user: UserKey, value: V, now: i64) {
        let mut shard = self.shard(user);
        self.put(&mut shard, user, value, now);
    }

    fn put(&self, shard: &mut Shard<V>, user: UserKey, value: V, now: i64) {
        let weight = ENTRY_BYTES.saturating_add((self.weigh)(&value)) as u64;
        shard.tick += 1;
        let slot = Slot {
            value,
            weight,
            seen: shard.tick,
            seen_ms: now,
        };
        match shard.map.insert(user, slot) {
            Some(replaced) => shard.bytes -= replaced.weight,
            None if now >= shard.next_sweep_ms => {
                shard.drop_idle(now, self.idle_ms);
                shard.next_sweep_ms = now.saturating_add(SWEEP_EVERY_MS);
            }
            None => {}
        }
        shard.bytes += weight;
        if shard.bytes > self.shard_bytes {
            shard.drop_idle(now, self.idle_ms);
            shard.evict_down_to(self.shard_bytes - self.shard_bytes / EVICT_FRACTION);
        }
    }

    /// Users held and the bytes they are weighed at.
    pub fn usage(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(users, bytes), shard| {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            (users + shard.map.len() as u64, bytes + shard.bytes)
        })
    }

    /// Whether the user is held, without counting as seeing them.
    #[cfg(test)]
    pub fn holds(&self, user: UserKey) -> bool {
        self.shard(user).map.contains_key(&user)
    }
}

impl<V: Clone> Shard<V> {
    fn look_up(&mut self, user: UserKey, now: i64, idle_ms: i64) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let slot = self.map.get_mut(&user)?;
        if now.saturating_sub(slot.seen_ms) >= idle_ms {
            let weight = slot.weight;
            self.map.remove(&user);
            self.bytes -= weight;
            return None;
        }
        slot.seen = tick;
        slot.seen_ms = slot.seen_ms.max(now);
        Some(slot.value.clone())
    }

    fn drop_idle(&mut self, now: i64, idle_ms: i64) {
        let mut freed = 0;
        self.map.retain(|_, slot| {
            let live = now.saturating_sub(slot.seen_ms) < idle_ms;
            if !live {
                freed += slot.weight;
            }
            live
        });
        self.bytes -= freed;
    }

    /// Evicts the least recently seen users until the shard weighs at most `target`: as many
    /// at a time as weigh the excess on average, found by their order of use without sorting
    /// the shard.
    fn evict_down_to(&mut self, target: u64) {
        while self.bytes > target && !self.map.is_empty() {
            let mut order: Vec<u64> = self.map.values().map(|slot| slot.seen).collect();
            let excess = u128::from(self.bytes - target) * order.len() as u128;
            let run = usize::try_from(excess.div_ceil(u128::from(self.bytes)))
                .unwrap_or(usize::MAX)
                .clamp(1, order.len());
            let (_, &mut last, _) = order.select_nth_unstable(run - 1);
            let mut freed = 0;
            self.map.retain(|_, slot| {
                let keep = slot.seen > last;
                if !keep {
                    freed += slot.weight;
                }
                keep
            });
            self.bytes -= freed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(bytes: u64, idle_ms: u64) -> UserTable<u64> {
        // A user's state here weighs what its value says.
        UserTable::new(bytes, Duration::from_millis(idle_ms), |v| *v as usize)
    }

    #[test]
    fn a_user_not_seen_for_the_idle_time_is_gone_and_its_bytes_with_it() {
        let users = table(1 << 20, 1_000);
        users.insert(UserKey(1), 8, 0);
        assert_eq!(users.get(UserKey(1), 999), Some(8));
        // Seen at 999: idle from there.
        assert_eq!(users.get(UserKey(1), 1_998), Some(8));
        assert_eq!(users.get(UserKey(1), 2_998), None);
        assert_eq!(users.usage(), (0, 0));
        assert_eq!(users.get_with(UserKey(1), 3_000, || 16), 16);
        assert_eq!(users.usage(), (1, (ENTRY_BYTES + 16) as u64));
    }

    #[test]
    fn users_idle_elsewhere_in_a_shard_are_swept_when_a_user_is_added_a_minute_on() {
        let users = table(1 << 20, 1_000);
        for u in 0..100 {
            users.insert(UserKey(u), 0, 0);
        }
        assert_eq!(users.usage().0, 100);
        users.insert(UserKey(1_000), 0, SWEEP_EVERY_MS);
        assert_eq!(users.usage(), (1, ENTRY_BYTES as u64));
    }

    #[test]
    fn reweighing_a_user_replaces_its_weight() {
        let users = table(1 << 20, 60_000);
        users.insert(UserKey(1), 64, 0);
        users.insert(UserKey(1), 256, 1);
        assert_eq!(users.usage(), (1, (ENTRY_BYTES + 256) as u64));
    }

    /// Several shards, each bound to its part: the table keeps within its bytes, and a user
    /// seen all along stays while the users around it come and go.
    #[test]
    fn a_table_of_many_shards_stays_within_its_bytes_and_keeps_the_users_seen_lately() {
        let bytes = 8 << 20;
        let users = table(bytes, 3_600_000);
        assert_eq!(users.shards.len(), 8);
        let regular = UserKey(u64::MAX);
        for u in 0..200_000u64 {
            // Keys spread over the shards as keyed hashes do.
            let user = UserKey(u.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            users.get_with(user, 1, || 64);
            if u % 1_000 == 0 {
                users.get_with(regular, 1, || 64);
            }
        }
        let (held, weighed) = users.usage();
        assert!(weighed <= bytes, "{weighed} bytes");
        // Each shard keeps between its share less a sixteenth and its share.
        let per_user = (ENTRY_BYTES + 64) as u64;
        let most = bytes / per_user;
        assert!(
            held > most - most / EVICT_FRACTION - 8,
            "{held} of {most} users"
        );
        assert!(users.holds(regular));
        assert!(users.holds(UserKey(199_999u64.wrapping_mul(0x9e37_79b9_7f4a_7c15))));
        assert!(!users.holds(UserKey(0u64.wrapping_mul(0x9e37_79b9_7f4a_7c15))));
    }
}
