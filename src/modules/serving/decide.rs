//! Choosing adverts: weighted random among the eligible ones, without replacement. Sampling draws
//! a point in the pools' cumulative weights and rejects what is ineligible or already chosen, so a
//! decision costs O(log n) per draw however large the catalogue; when rejections pile up (most
//! adverts capped for this user) it falls back to one weighted pass over the eligible ones.

use std::sync::Arc;

use rand::Rng;

use super::index::{Entry, Pool};

/// Draws before falling back to a full pass.
fn max_draws(count: usize) -> usize {
    32 + 16 * count
}

/// Up to `count` distinct entries from `pools` (disjoint), each draw proportional to weight among
/// those `eligible` accepts.
pub fn pick<R: Rng>(
    pools: &[&Pool],
    count: usize,
    rng: &mut R,
    mut eligible: impl FnMut(&Entry) -> bool,
) -> Vec<Arc<Entry>> {
    let total: u64 = pools.iter().map(|p| p.total()).sum();
    let mut chosen: Vec<Arc<Entry>> = Vec::with_capacity(count);
    if total == 0 || count == 0 {
        return chosen;
    }
    let mut rejected: Vec<crate::domain::AdvertId> = Vec::new();
    let mut draws = 0;
    while chosen.len() < count && draws < max_draws(count) {
        draws += 1;
        let mut point = rng.random_range(0..total);
        let Some(entry) = pools.iter().find_map(|pool| {
            if point < pool.total() {
                pool.at(point)
            } else {
                point -= pool.total();
                None
            }
        }) else {
            continue;
        };
        if chosen.iter().any(|c| c.id == entry.id) || rejected.contains(&entry.id) {
            continue;
        }
        if eligible(entry) {
            chosen.push(entry.clone());
        } else {
            rejected.push(entry.id);
        }
    }
    if chosen.len() < count {
        fill_by_scan(pools, count, rng, &mut chosen, &rejected, &mut eligible);
    }
    chosen
}

/// Weighted sampling without replacement over every remaining eligible entry (each gets the key
/// u^(1/weight); the largest keys win).
fn fill_by_scan<R: Rng>(
    pools: &[&Pool],
    count: usize,
    rng: &mut R,
    chosen: &mut Vec<Arc<Entry>>,
    rejected: &[crate::domain::AdvertId],
    eligible: &mut impl FnMut(&Entry) -> bool,
) {
    let mut keyed: Vec<(f64, &Arc<Entry>)> = pools
        .iter()
        .flat_map(|p| p.entries.iter())
        .filter(|e| !rejected.contains(&e.id) && !chosen.iter().any(|c| c.id == e.id))
        .filter(|e| eligible(e))
        .map(|e| {
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            (u.powf(1.0 / f64::from(e.weight)), e)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    let missing = count - chosen.len();
    chosen.extend(keyed.into_iter().take(missing).map(|(_, e)| e.clone()));
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::domain::advert::DeliveryCaps;
    use crate::domain::{AdvertId, Genre};

    fn pool(weights: &[u32]) -> Pool {
        let mut by_id = HashMap::new();
        for (i, w) in weights.iter().enumerate() {
            let id = AdvertId(i as i64 + 1);
            by_id.insert(
                id,
                Arc::new(Entry {
                    id,
                    genre: Genre::Travel,
                    lang: None,
                    weight: *w,
                    starts_at: None,
                    ends_at: None,
                    caps: DeliveryCaps::default(),
                    schedule: crate::modules::serving::pacing::Schedule::default(),
                    audience: None,
                    zone: crate::domain::targeting::Zone::utc(),
                    updated_at: 0,
                    placements: 0,
                }),
            );
        }
        Pool::from_entries(by_id.into_values().collect())
    }

    /// Chi-square goodness of fit of single draws against the weights, with a fixed seed.
    #[test]
    fn single_draws_follow_the_weights() {
        let pool = pool(&[1, 2, 3, 4]);
        let mut rng = StdRng::seed_from_u64(42);
        let draws = 100_000;
        let mut counts = [0u32; 4];
        for _ in 0..draws {
            let picked = pick(&[&pool], 1, &mut rng, |_| true);
            counts[(picked[0].id.0 - 1) as usize] += 1;
        }
        let chi2: f64 = counts
            .iter()
            .enumerate()
            .map(|(i, &observed)| {
                let expected = draws as f64 * (i as f64 + 1.0) / 10.0;
                (f64::from(observed) - expected).powi(2) / expected
            })
            .sum();
        // 3 degrees of freedom: 11.34 is the 99th percentile.
        assert!(chi2 < 11.34, "chi2 = {chi2}, counts = {counts:?}");
    }

    #[test]
    fn equal_weights_spread_evenly() {
        let pool = pool(&[1; 5]);
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = [0u32; 5];
        for _ in 0..50_000 {
            counts[(pick(&[&pool], 1, &mut rng, |_| true)[0].id.0 - 1) as usize] += 1;
        }
        for c in counts {
            assert!((9_500..=10_500).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn picks_are_distinct_and_only_eligible() {
        let pool = pool(&[5, 1, 1, 1, 1, 1]);
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..1000 {
            let picked = pick(&[&pool], 3, &mut rng, |e| e.id != AdvertId(1));
            let mut ids: Vec<i64> = picked.iter().map(|e| e.id.0).collect();
            assert_eq!(ids.len(), 3);
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), 3);
            assert!(!ids.contains(&1));
        }
    }

    #[test]
    fn a_mostly_ineligible_pool_still_yields_the_eligible_few() {
        let pool = pool(&[1; 500]);
        let mut rng = StdRng::seed_from_u64(3);
        let picked = pick(&[&pool], 2, &mut rng, |e| e.id.0 % 250 == 0);
        let mut ids: Vec<i64> = picked.iter().map(|e| e.id.0).collect();
        ids.sort_unstable();
        assert_eq!(ids, [250, 500]);
        assert!(pick(&[&pool], 2, &mut rng, |_| false).is_empty());
    }
}
