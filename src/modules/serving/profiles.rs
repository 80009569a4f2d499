//! Interest profiles: the genres of the adverts a user clicked, decaying with a half-life, so a
//! request that names no genres can prefer what the user responded to. Kept in process memory
//! (bounded in bytes: see [`users`](super::users)); with Redis, profiles changed here are pushed
//! in batches and a profile is read from Redis at most once a minute per user (reads of many
//! users at once share one pipeline), so a click on one instance steers the others.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::Genre;
use crate::platform::redis::{Redis, SharedReads};

use super::tokens::UserKey;
use super::users;

/// How long a profile read from Redis is trusted before it is read again.
const REMOTE_REFRESH_MS: i64 = 60_000;

#[derive(Debug, Clone)]
struct Profile {
    scores: [f64; Genre::ALL.len()],
    updated_ms: i64,
    /// When this copy was last read from Redis (0: never).
    fetched_ms: i64,
}

impl Profile {
    fn empty(now: i64) -> Self {
        Self {
            scores: [0.0; Genre::ALL.len()],
            updated_ms: now,
            fetched_ms: 0,
        }
    }

    fn decay_to(&mut self, now: i64, half_life_ms: f64) {
        let elapsed = (now - self.updated_ms).max(0) as f64;
        let factor = 0.5f64.powf(elapsed / half_life_ms);
        for s in &mut self.scores {
            *s *= factor;
        }
        self.updated_ms = now;
    }
}

pub struct Profiles {
    users: users::UserTable<Arc<Mutex<Profile>>>,
    half_life_ms: f64,
    /// Redis, when configured: profiles read in shared pipelines, pushed to the same Redis.
    reads: Option<SharedReads>,
    changed: Mutex<HashSet<UserKey>>,
    reads_done: users::Reads,
}

fn genre_index(genre: Genre) -> usize {
    Genre::ALL.iter().position(|g| *g == genre).unwrap_or(0)
}

impl Profiles {
    pub fn new(half_life: Duration, bytes: u64, reads: Option<SharedReads>) -> Self {
        Self {
            users: users::table(bytes, half_life * 8, |_| std::mem::size_of::<Profile>()),
            half_life_ms: half_life.as_millis().max(1) as f64,
            reads,
            changed: Mutex::new(HashSet::new()),
            reads_done: users::Reads::default(),
        }
    }

    fn key(redis: &Redis, user: UserKey) -> String {
        redis.key(&format!("pf:{:016x}", user.0))
    }

    fn profile(&self, user: UserKey, now: i64) -> Arc<Mutex<Profile>> {
        self.users
            .get_with(user, now, || Arc::new(Mutex::new(Profile::empty(now))))
    }

    pub fn clicked(&self, user: UserKey, genre: Genre, now: i64) {
        if let Ok(mut p) = self.profile(user, now).lock() {
            p.decay_to(now, self.half_life_ms);
            p.scores[genre_index(genre)] += 1.0;
        }
        if self.reads.is_some()
            && let Ok(mut changed) = self.changed.lock()
        {
            changed.insert(user);
        }
    }

    /// With Redis: reads the user's profile if the local copy is missing or older than a minute
    /// (a click on another instance then reaches this one).
    pub async fn refresh(&self, user: UserKey, now: i64) {
        let Some(reads) = &self.reads else {
            return;
        };
        let redis = reads.redis();
        let profile = self.profile(user, now);
        let stale = profile
            .lock()
            .map(|p| now - p.fetched_ms > REMOTE_REFRESH_MS)
            .unwrap_or(false);
        if !stale {
            return;
        }
        let fields = reads.hash(Self::key(redis, user)).await;
        self.reads_done
            .record(fields.as_ref().ok().map(|f| !f.is_empty()));
        let Ok(mut p) = profile.lock() else { return };
        p.fetched_ms = now;
        let Ok(fields) = fields else { return };
        let mut remote = Profile::empty(now);
        for (field, value) in fields {
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            match field.as_str() {
                "t" => remote.updated_ms = value as i64,
                name => {
                    if let Ok(genre) = Genre::parse(name) {
                        remote.scores[genre_index(genre)] = value;
                    }
                }
            }
        }
        remote.decay_to(now, self.half_life_ms);
        p.decay_to(now, self.half_life_ms);
        // Both copies describe the same clicks, one possibly missing the latest: keep the larger.
        for (mine, theirs) in p.scores.iter_mut().zip(remote.scores) {
            *mine = mine.max(theirs);
        }
    }

    /// Users held and the bytes they are weighed at.
    pub fn usage(&self) -> (u64, u64) {
        self.users.usage()
    }

    /// Profiles read from Redis, by result.
    pub fn reads(&self) -> [(&'static str, u64); 3] {
        self.reads_done.counts()
    }

    /// With Redis: writes the profiles changed since the last push, in one pipeline.
    pub async fn push(&self, now: i64) -> bool {
        let Some(redis) = self.reads.as_ref().map(SharedReads::redis) else {
            return true;
        };
        let users: Vec<UserKey> = match self.changed.lock() {
            Ok(mut changed) => changed.drain().collect(),
            Err(_) => return false,
        };
        if users.is_empty() {
            return true;
        }
        let ttl = (self.half_life_ms / 1000.0 * 8.0) as u64;
        let mut pipe = redis::pipe();
        for user in &users {
            let Some(profile) = self.users.get(user, now) else {
                continue;
            };
            let Ok(mut p) = profile.lock() else { continue };
            p.decay_to(now, self.half_life_ms);
            let key = Self::key(redis, *user);
            pipe.cmd("HSET").arg(&key).arg("t").arg(now);
            for genre in Genre::ALL {
                pipe.arg(genre.as_str()).arg(p.scores[genre_index(genre)]);
            }
            pipe.ignore();
            pipe.cmd("EXPIRE").arg(&key).arg(ttl.max(1)).ignore();
        }
        if let Err(e) = redis
            .with(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
            .await
        {
            tracing::debug!(error = %e, "profile push failed; retried with the next change");
            if let Ok(mut changed) = self.changed.lock() {
                changed.extend(users);
            }
            return false;
        }
        true
    }

    /// Genres the user responded to, strongest first: those within half of the strongest, and
    /// not faded below a tenth of a click.
    pub fn preferred(&self, user: UserKey, now: i64) -> Vec<Genre> {
        let Some(profile) = self.users.get(&user, now) else {
            return Vec::new();
        };
        let Ok(mut p) = profile.lock() else {
            return Vec::new();
        };
        p.decay_to(now, self.half_life_ms);
        let best = p.scores.iter().copied().fold(0.0, f64::max);
        if best < 0.1 {
            return Vec::new();
        }
        let mut genres: Vec<(f64, Genre)> = Genre::ALL
            .iter()
            .map(|g| (p.scores[genre_index(*g)], *g))
            .filter(|(s, _)| *s >= best / 2.0)
            .collect();
        genres.sort_by(|a, b| b.0.total_cmp(&a.0));
        genres.into_iter().map(|(_, g)| g).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clicks_make_genres_preferred_and_fade() {
        let day = 86_400_000;
        let profiles = Profiles::new(Duration::from_millis(day as u64), 1 << 20, None);
        let user = UserKey(1);
        assert!(profiles.preferred(user, 0).is_empty());
        profiles.clicked(user, Genre::Travel, 0);
        profiles.clicked(user, Genre::Travel, 0);
        profiles.clicked(user, Genre::Food, 0);
        assert_eq!(profiles.preferred(user, 0), [Genre::Travel, Genre::Food]);
        // Ten half-lives later a score of 2 is below 0.1.
        assert!(profiles.preferred(user, 10 * day).is_empty());
    }
}
