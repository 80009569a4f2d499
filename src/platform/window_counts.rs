//! Counts per key within a fixed time window (an hour, a minute) against a limit, in memory,
//! bounded: the invalid-traffic thresholds' bookkeeping.

use std::sync::{Mutex, MutexGuard};

const SHARDS: usize = 16;

/// Events per key in the current window, against a limit. Each shard holds one window: the
/// first event of a new window empties it (and gives a large map's memory back), so memory
/// follows the keys active in this window (about 40 bytes each) and needs no sweep. Past `max_keys`, a new key is admitted without
/// being counted, so a flood of made-up keys cannot grow memory.
pub struct WindowCounts {
    limit: u32,
    max_keys_per_shard: usize,
    shards: Vec<Mutex<Shard>>,
}

#[derive(Default)]
struct Shard {
    window: u64,
    /// foldhash: each key holds a salted hash (an address, a visitor), and the map is looked up
    /// on every click or serve it limits.
    counts: foldhash::HashMap<(u64, u64), u32>,
}

impl WindowCounts {
    /// `None` for a limit of 0 (off).
    pub fn new(limit: u32, max_keys: usize) -> Option<Self> {
        (limit > 0).then(|| Self {
            limit,
            max_keys_per_shard: (max_keys / SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        })
    }

    fn shard(&self, window: u64, key: (u64, u64)) -> MutexGuard<'_, Shard> {
        // The key's second part is a hash already: its low bits pick the shard evenly.
        let index = (key.0 ^ key.1) as usize % SHARDS;
        let mut shard = self.shards[index].lock().unwrap_or_else(|p| p.into_inner());
        if shard.window != window {
            shard.window = window;
            // A large map from a busy window (or a flood) is given back rather than kept.
            if shard.counts.capacity() > 4096 {
                shard.counts = foldhash::HashMap::default();
            } else {
                shard.counts.clear();
            }
        }
        shard
    }

    /// Counts one event of `key` in `window` (a window number: Unix time divided by its
    /// length), unless the key has had `limit` already; `false` then.
    pub fn admit(&self, window: u64, key: (u64, u64)) -> bool {
        let mut shard = self.shard(window, key);
        let full = shard.counts.len() >= self.max_keys_per_shard;
        match shard.counts.get_mut(&key) {
            Some(n) if *n >= self.limit => false,
            Some(n) => {
                *n += 1;
                true
            }
            None => {
                if !full {
                    shard.counts.insert(key, 1);
                }
                true
            }
        }
    }

    /// Takes back an event [`WindowCounts::admit`] counted.
    pub fn give_back(&self, window: u64, key: (u64, u64)) {
        let mut shard = self.shard(window, key);
        if let Some(n) = shard.counts.get_mut(&key) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_gets_its_allowance_per_window_and_a_new_window_starts_over() {
        assert!(WindowCounts::new(0, 100).is_none(), "0 is off");
        let Some(limit) = WindowCounts::new(2, 1_000) else {
            panic!("a limit of 2 is on");
        };
        let key = (7, 42);
        assert!(limit.admit(10, key));
        assert!(limit.admit(10, key));
        assert!(!limit.admit(10, key), "the third within the window");
        assert!(limit.admit(10, (8, 42)), "another advert");
        assert!(limit.admit(10, (7, 43)), "another identity");
        limit.give_back(10, key);
        assert!(limit.admit(10, key), "an event given back is allowed again");
        assert!(!limit.admit(10, key));
        assert!(limit.admit(11, key), "a new window");
    }

    #[test]
    fn keys_past_the_bound_are_admitted_without_being_kept() {
        let Some(limit) = WindowCounts::new(1, 16) else {
            panic!("on");
        };
        // One key a shard fills every shard; keys beyond are never refused.
        for key in 0..16 {
            assert!(limit.admit(1, (0, key)));
        }
        for _ in 0..3 {
            assert!(limit.admit(1, (0, 16 + 1_000)), "not kept, so never over");
        }
        assert!(!limit.admit(1, (0, 3)), "kept keys still count");
        let kept: usize = limit
            .shards
            .iter()
            .map(|s| s.lock().map(|s| s.counts.len()).unwrap_or(0))
            .sum();
        assert_eq!(kept, 16);
    }
}
