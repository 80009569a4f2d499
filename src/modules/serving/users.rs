//! Per-user state in process memory (frequency histories, interest profiles), bounded in bytes:
//! `serving.user_state_bytes`, three quarters for histories and one quarter for profiles. Each
//! cache weighs a user by what its state holds plus the bookkeeping every cached user costs, and
//! evicts the least recently seen users when a new one would pass its share. An evicted user's
//! state is read back from Redis when there is one; without Redis it starts afresh.

use std::time::Duration;

use moka::policy::EvictionPolicy;

use super::tokens::UserKey;

/// What a cached user costs besides its state: the key, the `Arc` and `Mutex` around the state,
/// and the cache's entry, its place in the access and idle orders and its hash table slot.
pub const ENTRY_BYTES: usize = 192;

/// Of `serving.user_state_bytes`, the share of frequency histories (the rest is profiles').
pub fn histories_share(total: u64) -> u64 {
    total / 4 * 3
}

pub fn profiles_share(total: u64) -> u64 {
    total - histories_share(total)
}

/// A cache of users' state of at most `bytes`, `weigh` saying what one user's state takes
/// besides [`ENTRY_BYTES`]; a user not seen for `idle` goes.
pub fn cache<V>(bytes: u64, idle: Duration, weigh: fn(&V) -> usize) -> moka::sync::Cache<UserKey, V>
where
    V: Clone + Send + Sync + 'static,
{
    moka::sync::Cache::builder()
        .max_capacity(bytes)
        .weigher(move |_user, state| {
            u32::try_from(ENTRY_BYTES.saturating_add(weigh(state))).unwrap_or(u32::MAX)
        })
        .eviction_policy(EvictionPolicy::lru())
        .time_to_idle(idle)
        .build()
}
