//! Per-user state in process memory (frequency histories, interest profiles), bounded in bytes:
//! `serving.user_state_bytes`, three quarters for histories and one quarter for profiles. Each
//! is a [`Table`] that weighs a user by what its state holds plus the bookkeeping every held
//! user costs, and evicts the least recently seen users when a new one would pass its share. An
//! evicted user's state is read back from Redis when there is one; without Redis it starts
//! afresh.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
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

/// Reads of users' state from Redis (a user this instance does not hold, or a profile due for a
/// refresh), by how they ended: `reklama_user_state_reads_total{kind, result}`. A failed read
/// leaves that user's serve to what this instance knows.
#[derive(Debug, Default)]
pub struct Reads {
    found: AtomicU64,
    absent: AtomicU64,
    failed: AtomicU64,
}

impl Reads {
    /// One read's end: `Some(true)` found, `Some(false)` no such key, `None` failed.
    pub fn record(&self, found: Option<bool>) {
        let counter = match found {
            Some(true) => &self.found,
            Some(false) => &self.absent,
            None => &self.failed,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub fn counts(&self) -> [(&'static str, u64); 3] {
        [
            ("found", self.found.load(Relaxed)),
            ("absent", self.absent.load(Relaxed)),
            ("failed", self.failed.load(Relaxed)),
        ]
    }
}
