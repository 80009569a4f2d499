//! Per-user state in process memory (frequency histories, interest profiles), bounded in bytes:
//! `serving.user_state_bytes`, three quarters for histories and one quarter for profiles. Each
//! is a [`Table`] that weighs a user by what its state holds plus the bookkeeping every held
//! user costs, and evicts the least recently seen users when a new one would pass its share. An
//! evicted user's state is read back from Redis when there is one; without Redis it starts
//! afresh.

use std::time::Duration;

use crate::platform::table::Table;

use super::tokens::UserKey;

/// What a held user costs besides its state: its key, value and order in the table's map (with
/// the map's room to grow), and the `Arc` and `Mutex` around the state.
pub const ENTRY_BYTES: usize = 192;

/// Of `serving.user_state_bytes`, the share of frequency histories (the rest is profiles').
pub fn histories_share(total: u64) -> u64 {
    total / 4 * 3
}

pub fn profiles_share(total: u64) -> u64 {
    total - histories_share(total)
}

pub type UserTable<V> = Table<UserKey, V>;

/// Users' state of at most `bytes`, `weigh` saying what one user's state takes besides
/// [`ENTRY_BYTES`]; a user not seen for `idle` is gone. Times are milliseconds since the Unix
/// epoch, as the serve reads them once.
pub fn table<V: Clone>(bytes: u64, idle: Duration, weigh: fn(&V) -> usize) -> UserTable<V> {
    Table::new(bytes, ENTRY_BYTES, weigh, Some(idle))
}
