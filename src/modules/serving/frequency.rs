//! Frequency caps: at most `cap` impressions of one advert to one user per window. Kept in
//! process (bounded in bytes: see [`users`](super::users)); with Redis, increments are pushed in
//! batches and a user first seen on this instance is read once from Redis (reads of many new
//! users at once share one pipeline), so instances behind a load balancer share the counts.
//!
//! In Redis a user's history is one string, `fq:{user}`, to which each push appends a
//! [`RECORD`]-byte record per advert shown since the last push, and which expires at least one
//! window after the last push for the user, at most a sixteenth of a window later (a push sets
//! the expiry only when the last one this instance set would end within a window of it).
//! Reading it back is one `GET` of a few bytes per impression and a loop over fixed-size
//! records; an advert's window starts where the record says, not when the history is read. A
//! string kept alive by a user who keeps coming back would gather expired records without end:
//! once a history shows that at least half of its string has expired, the next push rewrites
//! the string with its live records ([`COMPACT_SCRIPT`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{self, Script, Value};

use crate::domain::AdvertId;
use crate::platform::redis::SharedReads;

use super::tokens::UserKey;
use super::users;

/// One advert shown to the user in its current window: 16 bytes.
#[derive(Debug, Clone, Copy)]
struct Seen {
    advert: i64,
    /// Window start, in seconds since the Unix epoch (rounded up).
    start_secs: u32,
    count: u16,
}

/// The adverts a user was shown within their windows, sorted by advert, so that a check during a
/// draw is a binary search. Expired entries go when the list would otherwise grow.
#[derive(Debug, Default)]
struct History {
    seen: Vec<Seen>,
    /// Redis holds impressions this history lacks (reading it failed, or another instance
    /// appended to the user's string since): read again at the user's next serve.
    unread: bool,
    /// The length of the user's string in Redis this history accounts for: what was read, plus
    /// what this instance appended (less what a rewrite dropped). A push finding the string at
    /// another length means another instance appended too.
    known_len: u64,
    /// Until when the expiry this instance last set keeps the user's string in Redis, in
    /// seconds on [`FrequencyCaps`]'s monotonic clock (rounded down, and counted from before
    /// Redis set it: the string lives at least that long). 0: not known (a history read from
    /// Redis, or a string another instance appended to or Redis lost).
    expires_secs: u32,
}

/// Whole seconds, rounded up: a window may end up to a second late, never early.
fn secs(ms: i64) -> u32 {
    u32::try_from(ms.saturating_add(999).div_euclid(1000)).unwrap_or(if ms < 0 {
        0
    } else {
        u32::MAX
    })
}

impl History {
    fn live(seen: &Seen, now: i64, window_ms: i64) -> bool {
        now - i64::from(seen.start_secs) * 1000 < window_ms
    }

    fn count(&self, advert: AdvertId, now: i64, window_ms: i64) -> u32 {
        match self.seen.binary_search_by_key(&advert.0, |s| s.advert) {
            Ok(i) if Self::live(&self.seen[i], now, window_ms) => u32::from(self.seen[i].count),
            _ => 0,
        }
    }

    /// Counts `n` impressions of `advert` in a window that started at `start_secs` (or earlier,
    /// when the history holds an earlier live start). Returns the window's start.
    fn add(&mut self, advert: AdvertId, n: u32, start_secs: u32, now: i64, window_ms: i64) -> u32 {
        let n = u16::try_from(n).unwrap_or(u16::MAX);
        let fresh = Seen {
            advert: advert.0,
            start_secs,
            count: n,
        };
        match self.seen.binary_search_by_key(&advert.0, |s| s.advert) {
            Ok(i) if Self::live(&self.seen[i], now, window_ms) => {
                let seen = &mut self.seen[i];
                seen.count = seen.count.saturating_add(n);
                seen.start_secs = seen.start_secs.min(start_secs);
                seen.start_secs
            }
            Ok(i) => {
                self.seen[i] = fresh;
                start_secs
            }
            Err(mut at) => {
                if self.seen.len() == self.seen.capacity() {
                    self.seen.retain(|s| Self::live(s, now, window_ms));
                    at = self.seen.partition_point(|s| s.advert < advert.0);
                }
                self.seen.insert(at, fresh);
                start_secs
            }
        }
    }

    /// The live records of a user's string (see [`RECORD`]), `bytes` long in Redis. Records of
    /// one advert add up, from the earliest start among them; what does not make a whole record
    /// (a push cut short) is ignored. The records are sorted once rather than each inserted in
    /// order: a history of hundreds of adverts (a user shown many within a long window) is read
    /// in one pass and a sort, not a shift of the list per record. Its room is what inserting
    /// the adverts one by one would have grown to (a power of two, at least [`FIRST_ROOM`]), so
    /// the history weighs what it did.
    fn from_records(bytes: &[u8], now: i64, window_ms: i64) -> History {
        let room = |adverts: usize| adverts.max(FIRST_ROOM).next_power_of_two();
        // Each advert has a record at least: the room the records take is room enough.
        let mut seen = Vec::with_capacity(room(bytes.len() / RECORD));
        seen.extend(
            bytes
                .chunks_exact(RECORD)
                .map(decode)
                .filter(|seen| seen.count > 0 && Self::live(seen, now, window_ms)),
        );
        seen.sort_unstable_by_key(|s| s.advert);
        seen.dedup_by(|later, kept| {
            let same = later.advert == kept.advert;
            if same {
                kept.count = kept.count.saturating_add(later.count);
                kept.start_secs = kept.start_secs.min(later.start_secs);
            }
            same
        });
        seen.shrink_to(room(seen.len()));
        History {
            seen,
            unread: false,
            known_len: bytes.len() as u64,
            expires_secs: 0,
        }
    }

    /// This history read again (see `unread`): what Redis holds (`bytes`), plus what
    /// this instance counted and has not pushed yet (`waiting`), each advert at least at its
    /// count here (a push on its way may be missing from the answer).
    fn read_again(
        &self,
        bytes: Option<&[u8]>,
        waiting: impl Fn(AdvertId) -> u32,
        now: i64,
        window_ms: i64,
    ) -> History {
        let mut merged = History {
            // Reading the string changes nothing of its expiry.
            expires_secs: self.expires_secs,
            ..History::from_records(bytes.unwrap_or_default(), now, window_ms)
        };
        for seen in self.seen.iter().filter(|s| Self::live(s, now, window_ms)) {
            let advert = AdvertId(seen.advert);
            let remote = merged.count(advert, now, window_ms);
            let wanted = remote
                .saturating_add(waiting(advert))
                .max(u32::from(seen.count));
            merged.add(advert, wanted - remote, seen.start_secs, now, window_ms);
        }
        merged
    }

    /// This instance's push found the user's string at `before` bytes and left it at `after`
    /// (appended to, or rewritten with its live records): a string of another length than the
    /// one this history accounts for means another instance appended too (or the key expired
    /// and began anew). Answers whether the string was the length this history knew.
    fn wrote(&mut self, before: u64, after: u64) -> bool {
        let as_known = self.known_len == before;
        if !as_known {
            self.unread = true;
            // Whoever else wrote it, or Redis losing it, may have changed its expiry.
            self.expires_secs = 0;
        }
        self.known_len = after;
        as_known
    }

    /// Whether the next push should rewrite the user's string with its live records: at least
    /// [`COMPACT_AT`] records, and at least half of the string, have expired. Each record counts
    /// at least one impression, so the string holds at most as many live records as the live
    /// impressions here; the rest of its records have expired. A history that does not account
    /// for the whole string (`unread`) cannot tell.
    fn worth_compacting(&self, now: i64, window_ms: i64) -> bool {
        let records = self.known_len / RECORD as u64;
        // Fewer records than the least worth dropping: no need to count the live ones.
        if self.unread || records < COMPACT_AT {
            return false;
        }
        let live: u64 = self
            .seen
            .iter()
            .filter(|s| Self::live(s, now, window_ms))
            .map(|s| u64::from(s.count))
            .sum();
        let expired = records.saturating_sub(live);
        expired >= live.max(COMPACT_AT)
    }
}

/// Bytes of one record in a user's string in Redis: the advert (i64), the window's start in
/// seconds since the Unix epoch (u32) and the impressions (u16), each little-endian.
const RECORD: usize = 14;

/// Expired records a user's string holds before a push rewrites it (448 bytes).
const COMPACT_AT: u64 = 32;

/// A push for a user whose string is mostly expired records: keeps the string's live records
/// (whole ones, whose window has not ended: the test [`History::live`] makes), appends the
/// push's, and sets the expiry as a plain push does. Answers the string's length before and
/// after. In Redis, so that another instance's append cannot fall between the read and the
/// write.
///
/// KEYS[1] the user's string; ARGV[1] the push's records, ARGV[2] now in milliseconds since the
/// Unix epoch, ARGV[3] the window in milliseconds, ARGV[4] the expiry in milliseconds.
const COMPACT_SCRIPT: &str = r"
local held = redis.call('GET', KEYS[1]) or ''
local now, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local live = {}
for at = 1, #held - 13, 14 do
  local a, b, c, d = string.byte(held, at + 8, at + 11)
  local start = a + 256 * (b + 256 * (c + 256 * d))
  if now - start * 1000 < window then
    live[#live + 1] = string.sub(held, at, at + 13)
  end
end
live[#live + 1] = ARGV[1]
local written = table.concat(live)
redis.call('SET', KEYS[1], written, 'PX', ARGV[4])
return {#held, #written}
";

fn encode(out: &mut Vec<u8>, advert: AdvertId, start_secs: u32, count: u16) {
    out.extend_from_slice(&advert.0.to_le_bytes());
    out.extend_from_slice(&start_secs.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
}

/// One whole record (`RECORD` bytes).
fn decode(record: &[u8]) -> Seen {
    let mut advert = [0; 8];
    let mut start = [0; 4];
    let mut count = [0; 2];
    advert.copy_from_slice(&record[..8]);
    start.copy_from_slice(&record[8..12]);
    count.copy_from_slice(&record[12..RECORD]);
    Seen {
        advert: i64::from_le_bytes(advert),
        start_secs: u32::from_le_bytes(start),
        count: u16::from_le_bytes(count),
    }
}

type Shared = Arc<Mutex<History>>;

/// The adverts a new user's history has room for. A history that grows is inserted into the
/// table again to be weighed anew, which costs more than the rest of recording an impression;
/// with this room a user's first impressions need no second insertion (and `Vec` would grow
/// to the same room on the first one).
const FIRST_ROOM: usize = 4;

/// How far past one window the expiry a push sets reaches, as a part of the window: a push
/// for a user whose string the instance's own last expiry keeps for a window yet sets none, so
/// a user served again within this part of the window costs Redis an `APPEND` alone. A string
/// outlives its last record's window by at most this.
const EXPIRY_SLACK: i64 = 16;

/// What a history holds: 16 bytes for each advert it has room for.
fn history_bytes(history: &Shared) -> usize {
    history
        .lock()
        .map(|h| h.seen.capacity() * std::mem::size_of::<Seen>())
        .unwrap_or(0)
}

pub struct FrequencyCaps {
    cap: u32,
    window_ms: i64,
    users: users::UserTable<Shared>,
    /// Redis, when configured: histories read in shared pipelines, pushed to the same Redis.
    reads: Option<SharedReads>,
    /// Increments not yet pushed to Redis, by user and advert, with their window's start. One
    /// flat map, sized at each push for the interval before: recording an impression allocates
    /// nothing. foldhash: a user's key is already a keyed hash, and adverts are the catalogue's.
    unpushed: Mutex<foldhash::HashMap<(UserKey, AdvertId), Unpushed>>,
    reads_done: users::Reads,
    compact: Script,
    /// The expiry a push sets, in milliseconds: a window and a sixteenth ([`EXPIRY_SLACK`]).
    expiry_ms: i64,
    /// The monotonic clock histories' `expires_secs` are counted on.
    origin: Instant,
    /// Strings whose expiry a push found may be gone (another instance appended, or Redis lost
    /// them) and could not set: set by the next push.
    unexpired: Mutex<Vec<String>>,
}

impl FrequencyCaps {
    pub fn new(cap: u32, window: Duration, bytes: u64, reads: Option<SharedReads>) -> Self {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        Self {
            cap,
            window_ms,
            users: users::table(bytes, window, history_bytes),
            reads,
            unpushed: Mutex::default(),
            reads_done: users::Reads::default(),
            compact: Script::new(COMPACT_SCRIPT),
            expiry_ms: window_ms.saturating_add(window_ms / EXPIRY_SLACK),
            origin: Instant::now(),
            unexpired: Mutex::default(),
        }
    }

    /// Milliseconds on the monotonic clock of `expires_secs`.
    fn clock_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Until when an expiry set at `clock_ms` keeps a string (see `History::expires_secs`).
    fn expires_secs(&self, clock_ms: u64) -> u32 {
        let until = clock_ms.saturating_add(self.expiry_ms.unsigned_abs()) / 1000;
        u32::try_from(until).unwrap_or(u32::MAX)
    }

    /// Whether a push at `clock_ms` for a user whose string the instance's last expiry keeps
    /// until `expires_secs` must set it again: the string is to live a window past the push.
    fn renews(&self, expires_secs: u32, clock_ms: u64) -> bool {
        u64::from(expires_secs) * 1000 < clock_ms.saturating_add(self.window_ms.unsigned_abs())
    }

    fn key(&self, user: UserKey) -> Option<String> {
        self.reads
            .as_ref()
            .map(|r| r.redis().key(&format!("fq:{:016x}", user.0)))
    }

    /// The user's history; a user this instance has not seen is read from Redis, and read
    /// again at the next serve after a read failed or another instance appended to it (which
    /// this instance learns from its own next push for the user).
    pub async fn history(&self, user: UserKey, now: i64) -> UserCaps {
        if let Some(found) = self.users.get(&user, now) {
            if self.reads.is_some() && found.lock().is_ok_and(|h| h.unread) {
                self.read_again(user, &found, now).await;
            }
            return UserCaps { history: found };
        }
        // A user Redis has no string for starts empty, with a new user's room.
        let (bytes, unread) = match self.read(user).await {
            Some(Ok(bytes)) => (bytes, false),
            Some(Err(())) => (None, true),
            None => (None, false),
        };
        let history = History {
            unread,
            ..History::from_records(bytes.as_deref().unwrap_or_default(), now, self.window_ms)
        };
        let history = Arc::new(Mutex::new(history));
        let history = self.users.get_with(user, now, || history);
        UserCaps { history }
    }

    /// The user's string in Redis (`None` without Redis; `Some(Err)` when the read failed).
    async fn read(&self, user: UserKey) -> Option<Result<Option<Vec<u8>>, ()>> {
        let (reads, key) = (self.reads.as_ref()?, self.key(user)?);
        let read = reads.bytes(key).await.map_err(|_| ());
        self.reads_done
            .record(read.as_ref().ok().map(Option::is_some));
        Some(read)
    }

    /// A history Redis has more of (its read failed, or another instance appended), read
    /// again ([`History::read_again`]); while Redis fails it stays as it is, to be read at the
    /// next serve.
    async fn read_again(&self, user: UserKey, history: &Shared, now: i64) {
        let Some(Ok(bytes)) = self.read(user).await else {
            return;
        };
        let grew = {
            let (Ok(mut local), Ok(unpushed)) = (history.lock(), self.unpushed.lock()) else {
                return;
            };
            let waiting = |advert| unpushed.get(&(user, advert)).map_or(0, |u| u.count);
            let merged = local.read_again(bytes.as_deref(), waiting, now, self.window_ms);
            let grew = merged.seen.capacity() != local.seen.capacity();
            *local = merged;
            grew
        };
        if grew {
            self.users.insert(user, history.clone(), now);
        }
    }

    pub fn allows(&self, caps: &UserCaps, advert: AdvertId, now: i64) -> bool {
        caps.history
            .lock()
            .map(|h| h.count(advert, now, self.window_ms) < self.cap)
            .unwrap_or(true)
    }

    pub fn record(&self, caps: &UserCaps, user: UserKey, advert: AdvertId, now: i64) {
        let Ok((start_secs, grew)) = caps.history.lock().map(|mut h| {
            let room = h.seen.capacity();
            let start_secs = h.add(advert, 1, secs(now), now, self.window_ms);
            (start_secs, h.seen.capacity() != room)
        }) else {
            return;
        };
        if grew {
            // Weighed again (the table weighs on insertion), so the bound holds as it grows.
            self.users.insert(user, caps.history.clone(), now);
        }
        if self.reads.is_some()
            && let Ok(mut unpushed) = self.unpushed.lock()
        {
            let entry = unpushed.entry((user, advert)).or_default();
            entry.count = entry.count.saturating_add(1);
            entry.start_secs = start_secs;
        }
    }

    /// Users held and the bytes they are weighed at.
    pub fn usage(&self) -> (u64, u64) {
        self.users.usage()
    }

    /// Histories read from Redis, by result.
    pub fn reads(&self) -> [(&'static str, u64); 3] {
        self.reads_done.counts()
    }

    /// Pushes the increments of the last interval to Redis in one pipeline: per user, one
    /// `APPEND` of a record per advert and, unless the instance's own last expiry keeps the
    /// string a window yet, the key's expiry a window and [`EXPIRY_SLACK`] from now; for a user
    /// whose string is mostly expired records, [`COMPACT_SCRIPT`] instead. A string found at
    /// another length than its history knew (another instance appended, or Redis lost it) has
    /// its expiry set at once by a second pipeline.
    pub async fn push(&self) -> bool {
        let Some(redis) = self.reads.as_ref().map(SharedReads::redis) else {
            return true;
        };
        let mut batch: Vec<((UserKey, AdvertId), Unpushed)> = match self.unpushed.lock() {
            Ok(mut unpushed) => {
                let room =
                    foldhash::HashMap::with_capacity_and_hasher(unpushed.len(), Default::default());
                std::mem::replace(&mut *unpushed, room)
                    .into_iter()
                    .collect()
            }
            Err(_) => return false,
        };
        let unexpired = self
            .unexpired
            .lock()
            .map(|mut keys| std::mem::take(&mut *keys))
            .unwrap_or_default();
        if batch.is_empty() && unexpired.is_empty() {
            return true;
        }
        // A user's adverts side by side: one key, one append and at most one expiry per user.
        batch.sort_unstable_by_key(|((user, _), _)| *user);
        let now = crate::platform::db::now_ms();
        let clock = self.clock_ms();
        // Every user's records, one after another; per user, its key, its records' end in
        // `records`, its history when held, and how its string is written.
        let mut records = Vec::new();
        let mut users = Vec::new();
        for same_user in batch.chunk_by(|((a, _), _), ((b, _), _)| a == b) {
            let Some((user, key)) = same_user
                .first()
                .and_then(|((user, _), _)| Some((*user, self.key(*user)?)))
            else {
                continue;
            };
            for ((_, advert), unpushed) in same_user {
                // Past u16::MAX impressions in one interval, one record per u16::MAX.
                let mut left = unpushed.count;
                while left > 0 {
                    let count = u16::try_from(left).unwrap_or(u16::MAX);
                    encode(&mut records, *advert, unpushed.start_secs, count);
                    left -= u32::from(count);
                }
            }
            let history = self.users.get(&user, now);
            // A user not held has no expiry known: it is set.
            let write = history
                .as_ref()
                .and_then(|h| h.lock().ok())
                .map_or(Write::Renew, |h| {
                    if h.worth_compacting(now, self.window_ms) {
                        Write::Compact
                    } else if self.renews(h.expires_secs, clock) {
                        Write::Renew
                    } else {
                        Write::Append
                    }
                });
            users.push((key, records.len(), history, write));
        }
        let mut pipe = redis::pipe();
        for key in &unexpired {
            pipe.cmd("PEXPIRE").arg(key).arg(self.expiry_ms).ignore();
        }
        if users.iter().any(|(.., write)| *write == Write::Compact) {
            pipe.load_script(&self.compact).ignore();
        }
        let mut from = 0;
        for (key, end, _, write) in &users {
            let pushed = &records[from..*end];
            from = *end;
            if *write == Write::Compact {
                pipe.invoke_script(
                    self.compact
                        .key(key)
                        .arg(pushed)
                        .arg(now)
                        .arg(self.window_ms)
                        .arg(self.expiry_ms),
                );
            } else {
                pipe.cmd("APPEND").arg(key).arg(pushed);
                if *write == Write::Renew {
                    pipe.cmd("PEXPIRE").arg(key).arg(self.expiry_ms).ignore();
                }
            }
        }
        let answers = match redis
            .with(|mut conn| async move { pipe.query_async::<Vec<Value>>(&mut conn).await })
            .await
        {
            Ok(answers) => answers,
            Err(e) => {
                // Local caps still hold; other instances may overshoot by this batch.
                tracing::debug!(error = %e, "frequency cap push failed");
                self.expire_later(unexpired);
                return false;
            }
        };
        let expires_secs = self.expires_secs(clock);
        // Strings appended to without an expiry that another may have changed.
        let mut unsure = Vec::new();
        let mut from = 0;
        for ((key, end, history, write), answer) in users.into_iter().zip(answers) {
            let added = (end - from) as u64;
            from = end;
            let lengths = match answer {
                // `APPEND`: the string's new length.
                Value::Int(after) => u64::try_from(after)
                    .ok()
                    .map(|after| (after.saturating_sub(added), after)),
                // The rewrite: its length before and after.
                Value::Array(lengths) => match lengths.as_slice() {
                    [Value::Int(before), Value::Int(after)] => {
                        u64::try_from(*before).ok().zip(u64::try_from(*after).ok())
                    }
                    _ => None,
                },
                _ => None,
            };
            let Some(history) = history else { continue };
            let Ok(mut h) = history.lock() else { continue };
            let as_known = lengths.is_some_and(|(before, after)| h.wrote(before, after));
            if write != Write::Append {
                h.expires_secs = expires_secs;
            } else if !as_known {
                drop(h);
                unsure.push((key, history));
            }
        }
        if !unsure.is_empty() {
            self.expire(unsure).await;
        }
        true
    }

    /// Sets the expiry of strings whose own may be gone (see [`push`](Self::push)); what
    /// cannot be set now the next push sets.
    async fn expire(&self, unsure: Vec<(String, Shared)>) {
        let Some(redis) = self.reads.as_ref().map(SharedReads::redis) else {
            return;
        };
        let clock = self.clock_ms();
        let mut pipe = redis::pipe();
        for (key, _) in &unsure {
            pipe.cmd("PEXPIRE").arg(key).arg(self.expiry_ms).ignore();
        }
        let set = redis
            .with(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
            .await;
        match set {
            Ok(()) => {
                let expires_secs = self.expires_secs(clock);
                for (_, history) in unsure {
                    if let Ok(mut h) = history.lock() {
                        h.expires_secs = expires_secs;
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "frequency cap expiry failed");
                self.expire_later(unsure.into_iter().map(|(key, _)| key).collect());
            }
        }
    }

    fn expire_later(&self, keys: Vec<String>) {
        if let Ok(mut unexpired) = self.unexpired.lock() {
            unexpired.extend(keys);
        }
    }
}

/// How a push writes a user's string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// `APPEND` alone: the instance's last expiry keeps the string a window past the push.
    Append,
    /// `APPEND` and `PEXPIRE`.
    Renew,
    /// [`COMPACT_SCRIPT`], which sets the expiry too.
    Compact,
}

/// Impressions of one advert to one user since the last push, and their window's start.
#[derive(Debug, Default, Clone, Copy)]
struct Unpushed {
    count: u32,
    start_secs: u32,
}

/// One user's cap state for the length of a request.
pub struct UserCaps {
    history: Shared,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advert_in_a_history_takes_16_bytes() {
        assert_eq!(std::mem::size_of::<Seen>(), 16);
    }

    #[test]
    fn many_adverts_keep_their_own_counts_and_expired_ones_make_room() {
        let window = 10_000;
        let mut h = History::default();
        for advert in (0..100).rev() {
            h.add(AdvertId(advert), 1, secs(0), 0, window);
        }
        h.add(AdvertId(42), 2, secs(1_000), 1_000, window);
        assert_eq!(h.count(AdvertId(42), 1_000, window), 3);
        assert_eq!(h.count(AdvertId(7), 1_000, window), 1);
        assert_eq!(h.count(AdvertId(100), 1_000, window), 0);
        // After the window, adding past the capacity drops what expired.
        let capacity = h.seen.capacity();
        for advert in 1_000..1_000 + capacity as i64 {
            h.add(AdvertId(advert), 1, secs(20_000), 20_000, window);
        }
        assert_eq!(h.count(AdvertId(42), 20_000, window), 0);
        assert!(h.seen.len() <= capacity, "{} entries", h.seen.len());
        assert!(h.seen.windows(2).all(|w| w[0].advert < w[1].advert));
    }

    /// 64 KiB for 3 000 users shown 10 adverts each: the table keeps within its bytes, the
    /// users seen last (and one seen again all along) stay, the first ones went; a history that
    /// grows past what it was weighed at is weighed again.
    #[tokio::test]
    async fn user_state_stays_within_its_bytes_and_the_least_recently_seen_go_first() {
        let bytes = 64 * 1024;
        let caps = FrequencyCaps::new(3, Duration::from_secs(3600), bytes, None);
        let now = 1_000_000;
        let regular = UserKey(u64::MAX);
        // Seen often, but not lately: recency decides, not frequency.
        let former = UserKey(u64::MAX - 1);
        for _ in 0..50 {
            caps.history(former, now).await;
        }
        for u in 0..3_000 {
            let user = UserKey(u);
            let history = caps.history(user, now).await;
            for advert in 0..10 {
                caps.record(&history, user, AdvertId(advert), now);
            }
            if u % 50 == 0 {
                let seen = caps.history(regular, now).await;
                caps.record(&seen, regular, AdvertId(u as i64), now);
            }
        }
        let (kept, weighed) = caps.usage();
        assert!(weighed <= bytes, "{weighed} bytes");
        // 192 bytes of bookkeeping and room for 16 adverts each: at most 146 users, and a
        // sixteenth fewer just after an eviction.
        assert!((130..=146).contains(&kept), "{kept} users kept");
        assert!(caps.users.holds(&UserKey(2_999)));
        assert!(caps.users.holds(&regular));
        assert!(!caps.users.holds(&UserKey(0)));
        assert!(!caps.users.holds(&former));
        // The regular user's history grew to 60 adverts after it was first weighed at one.
        let regular_weight = (users::ENTRY_BYTES + 64 * 16) as u64;
        let others = (kept - 1) * (users::ENTRY_BYTES as u64 + 16 * 16);
        assert_eq!(weighed, regular_weight + others);
    }

    /// Weighed once, when first seen, for the room its first impressions take.
    #[tokio::test]
    async fn a_new_user_is_weighed_with_room_for_its_first_impressions() {
        let caps = FrequencyCaps::new(3, Duration::from_secs(3600), 1 << 20, None);
        let (user, now) = (UserKey(7), 1_000_000);
        let history = caps.history(user, now).await;
        let first = (users::ENTRY_BYTES + FIRST_ROOM * 16) as u64;
        assert_eq!(caps.usage(), (1, first));
        for advert in 0..FIRST_ROOM as i64 {
            caps.record(&history, user, AdvertId(advert), now);
        }
        assert_eq!(caps.usage(), (1, first));
        caps.record(&history, user, AdvertId(100), now);
        assert!(caps.usage().1 > first, "{:?}", caps.usage());
        assert!(caps.allows(&history, AdvertId(100), now));
    }

    /// Records pushed by several instances: one advert's add up from the earliest start, an
    /// expired one is left out, a cut-off tail is ignored, and each window ends where its record
    /// began it rather than a window after the read.
    #[test]
    fn a_history_read_from_redis_keeps_each_adverts_window() {
        let window = 150_000;
        let mut bytes = Vec::new();
        encode(&mut bytes, AdvertId(1), 100, 2);
        encode(&mut bytes, AdvertId(2), 10, 3);
        encode(&mut bytes, AdvertId(1), 150, 1);
        encode(&mut bytes, AdvertId(-3), 195, u16::MAX);
        assert_eq!(bytes.len(), 4 * RECORD);
        bytes.extend_from_slice(&[7; RECORD - 1]);
        let now = 200_000;
        let h = History::from_records(&bytes, now, window);
        assert_eq!(h.known_len, bytes.len() as u64);
        assert_eq!(h.count(AdvertId(1), now, window), 3);
        assert_eq!(h.count(AdvertId(2), now, window), 0, "expired at 160 s");
        assert_eq!(h.count(AdvertId(-3), now, window), u32::from(u16::MAX));
        assert_eq!(h.seen.len(), 2);
        assert_eq!(h.count(AdvertId(1), 249_999, window), 3);
        assert_eq!(h.count(AdvertId(1), 250_000, window), 0);
    }

    /// A long history read at once equals its records added one by one: many records of each
    /// advert in no order, expired ones among them, counts that saturate, and the same room.
    #[test]
    fn a_long_history_read_at_once_equals_its_records_added_one_by_one() {
        let (window, now) = (86_400_000, 1_000_000_000);
        let mut bytes = Vec::new();
        // A small generator: the same records at every run, in an order of no pattern.
        let mut state = 0x2545_f491_u64;
        let mut next = |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        for _ in 0..600 {
            let advert = AdvertId(next(240) as i64 - 20);
            // Starts from two windows ago to now: about half of them have expired.
            let start = secs(now) - next(2 * window as u64 / 1000) as u32;
            let count = if advert.0 == 7 {
                u16::MAX
            } else {
                1 + next(3) as u16
            };
            encode(&mut bytes, advert, start, count);
        }
        let read = History::from_records(&bytes, now, window);
        let mut added = History::default();
        for record in bytes.chunks_exact(RECORD) {
            let seen = decode(record);
            if History::live(&seen, now, window) {
                let (advert, count) = (AdvertId(seen.advert), u32::from(seen.count));
                added.add(advert, count, seen.start_secs, now, window);
            }
        }
        let listed = |h: &History| -> Vec<(i64, u32, u16)> {
            h.seen
                .iter()
                .filter(|s| History::live(s, now, window))
                .map(|s| (s.advert, s.start_secs, s.count))
                .collect()
        };
        assert!(
            listed(&added).len() > 150,
            "{} adverts",
            listed(&added).len()
        );
        assert_eq!(listed(&read), listed(&added));
        assert_eq!(
            read.seen.len(),
            listed(&added).len(),
            "no expired entry kept"
        );
        assert_eq!(read.seen.capacity(), added.seen.capacity());
        // A string of three records: a new user's room.
        let short = History::from_records(&bytes[..3 * RECORD], now, window);
        assert_eq!(short.seen.capacity(), FIRST_ROOM);
    }

    /// Read again after a failed read: Redis's records (another instance's and this one's
    /// pushed impressions) plus this instance's unpushed ones, never below this instance's own
    /// count (a push on its way), and no impression counted twice.
    #[test]
    fn a_history_read_again_takes_redis_and_what_was_not_pushed_yet() {
        let (window, now) = (3_600_000, 1_000_000);
        let start = secs(now);
        let mut local = History {
            unread: true,
            ..History::default()
        };
        // 1: shown once here and pushed; 2: twice, one pushed, one waiting; 3: once, its push
        // on its way (neither in Redis's answer nor waiting).
        for (advert, n) in [(1, 1), (2, 2), (3, 1)] {
            local.add(AdvertId(advert), n, start, now, window);
        }
        let mut remote = Vec::new();
        encode(&mut remote, AdvertId(1), start - 10, 2);
        encode(&mut remote, AdvertId(1), start, 1);
        encode(&mut remote, AdvertId(2), start, 1);
        encode(&mut remote, AdvertId(4), start - 5, 1);
        let waiting = |advert: AdvertId| u32::from(advert.0 == 2);
        let merged = local.read_again(Some(&remote), waiting, now, window);
        assert!(!merged.unread);
        let counts: Vec<u32> = (1..=4)
            .map(|a| merged.count(AdvertId(a), now, window))
            .collect();
        assert_eq!(counts, [3, 2, 1, 1]);
        // The window of advert 1 started with another instance's first impression.
        assert_eq!(merged.seen[0].start_secs, start - 10);
        // Nothing in Redis (it lost the key): this instance's own counts stay.
        let alone = local.read_again(None, waiting, now, window);
        let counts: Vec<u32> = (1..=3)
            .map(|a| alone.count(AdvertId(a), now, window))
            .collect();
        assert_eq!(counts, [1, 2, 1]);
    }

    /// An instance's own appends keep its history current; a length it did not expect means
    /// another instance appended, and the history is read again.
    #[test]
    fn an_append_answering_another_length_marks_the_history_to_be_read_again() {
        let mut h = History {
            known_len: 28,
            expires_secs: 900,
            ..History::default()
        };
        assert!(h.wrote(28, 42));
        assert!(!h.unread);
        assert_eq!(h.known_len, 42);
        assert_eq!(
            h.expires_secs, 900,
            "the string's expiry is as this instance set it"
        );
        assert!(!h.wrote(56, 70));
        assert!(h.unread, "another instance appended 14 bytes");
        assert_eq!(h.known_len, 70);
        assert_eq!(h.expires_secs, 0, "and may have set another expiry");
    }

    /// A push sets the string's expiry a window and a sixteenth ahead; the pushes after it set
    /// none while that expiry keeps the string a window past them.
    #[test]
    fn a_push_sets_the_expiry_only_once_the_last_one_ends_within_a_window() {
        let caps = FrequencyCaps::new(3, Duration::from_secs(1_600), 1 << 20, None);
        assert_eq!(caps.expiry_ms, 1_700_000);
        let set_at = 5_000;
        let expires = caps.expires_secs(set_at);
        assert_eq!(expires, 1_705);
        assert!(caps.renews(0, set_at), "no expiry known");
        assert!(!caps.renews(expires, set_at));
        assert!(
            !caps.renews(expires, set_at + 100_000),
            "1 705 s: a window past 105 s"
        );
        assert!(caps.renews(expires, set_at + 100_001));
        // Rounded down: set at 5.999 s, the string is known to live until 1 705 s, not 1 706.
        assert_eq!(caps.expires_secs(5_999), 1_705);
    }

    /// A push rewrites the user's string once at least 32 of its records, and half of them,
    /// have expired. Each record counts one impression or more, so the records past the
    /// history's live impressions are expired ones.
    #[test]
    fn a_string_mostly_of_expired_records_is_rewritten_at_the_next_push() {
        let (window, now) = (3_600_000, 10_000_000);
        let records = |n: u64| n * RECORD as u64;
        let mut h = History::default();
        h.add(AdvertId(1), 30, secs(now), now, window);
        h.add(AdvertId(2), 10, secs(now), now, window);
        h.known_len = records(79);
        assert!(!h.worth_compacting(now, window), "39 expired, 40 live");
        h.known_len = records(80);
        assert!(h.worth_compacting(now, window), "40 expired, 40 live");
        // Once the window of its own impressions ended, they are expired too.
        h.known_len = records(40);
        assert!(!h.worth_compacting(now, window));
        assert!(h.worth_compacting(now + window, window));
        // A short history: 32 expired records are worth a rewrite, 31 are not.
        let mut short = History::default();
        short.add(AdvertId(1), 1, secs(now), now, window);
        short.known_len = records(32);
        assert!(!short.worth_compacting(now, window));
        short.known_len = records(33);
        assert!(short.worth_compacting(now, window));
        // A history that does not account for the whole string cannot tell.
        short.unread = true;
        assert!(!short.worth_compacting(now, window));
    }

    #[test]
    fn the_window_resets_the_count() {
        let mut h = History::default();
        h.add(AdvertId(1), 1, secs(0), 0, 1000);
        h.add(AdvertId(1), 1, secs(500), 500, 1000);
        assert_eq!(h.count(AdvertId(1), 999, 1000), 2);
        assert_eq!(h.count(AdvertId(1), 1000, 1000), 0);
        h.add(AdvertId(1), 1, secs(1000), 1000, 1000);
        assert_eq!(h.count(AdvertId(1), 1000, 1000), 1);
        assert_eq!(h.count(AdvertId(2), 1000, 1000), 0);
    }
}
