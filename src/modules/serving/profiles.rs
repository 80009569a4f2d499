//! Interest profiles: the genres of the adverts a user clicked, decaying with a half-life, so a
//! request that names no genres can prefer what the user responded to. Kept in the in-process
//! cache tier for as long as the user stays active.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::Genre;

use super::tokens::UserKey;

#[derive(Debug, Clone)]
struct Profile {
    scores: [f64; Genre::ALL.len()],
    updated_ms: i64,
}

pub struct Profiles {
    users: moka::sync::Cache<UserKey, Arc<Mutex<Profile>>>,
    half_life_ms: f64,
}

fn genre_index(genre: Genre) -> usize {
    Genre::ALL.iter().position(|g| *g == genre).unwrap_or(0)
}

impl Profile {
    fn decay_to(&mut self, now: i64, half_life_ms: f64) {
        let elapsed = (now - self.updated_ms).max(0) as f64;
        let factor = 0.5f64.powf(elapsed / half_life_ms);
        for s in &mut self.scores {
            *s *= factor;
        }
        self.updated_ms = now;
    }
}

impl Profiles {
    pub fn new(half_life: Duration, capacity: u64) -> Self {
        Self {
            users: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(half_life * 8)
                .build(),
            half_life_ms: half_life.as_millis().max(1) as f64,
        }
    }

    pub fn clicked(&self, user: UserKey, genre: Genre, now: i64) {
        let profile = self.users.get_with(user, || {
            Arc::new(Mutex::new(Profile {
                scores: [0.0; Genre::ALL.len()],
                updated_ms: now,
            }))
        });
        if let Ok(mut p) = profile.lock() {
            p.decay_to(now, self.half_life_ms);
            p.scores[genre_index(genre)] += 1.0;
        }
    }

    /// Genres the user responded to, strongest first: those within half of the strongest, and
    /// not faded below a tenth of a click.
    pub fn preferred(&self, user: UserKey, now: i64) -> Vec<Genre> {
        let Some(profile) = self.users.get(&user) else {
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
        let profiles = Profiles::new(Duration::from_millis(day as u64), 100);
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
