//! What is counted of an advert, and the one set of counts every part of reklama uses: the
//! counter pipeline, the reports, the dashboard.

use std::ops::{AddAssign, Index, IndexMut};

use serde::Serialize;

/// What is counted. The numbers are part of stored formats (the counter journal, Redis fields):
/// never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// A billable click.
    Click = 0,
    /// A click by a known bot or crawler: redirected, never billed.
    BotClick = 1,
    /// A repeat click by the same visitor within the duplicate window: redirected, not billed.
    DuplicateClick = 2,
    /// An advert shown by serving.
    Impression = 3,
    /// A click past an invalid-traffic threshold (too many billable clicks on the advert from
    /// one address or one user within the hour) or with an expired impression token:
    /// redirected, never billed, never counted against caps.
    SuspiciousClick = 4,
    /// An advert shown to an address past `serving.max_serves_per_address_per_minute`: served,
    /// never billed, never counted against caps.
    SuspiciousImpression = 5,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::Click,
        Metric::BotClick,
        Metric::DuplicateClick,
        Metric::Impression,
        Metric::SuspiciousClick,
        Metric::SuspiciousImpression,
    ];

    /// Whether this is a click of some kind (what the flush threshold counts).
    pub fn is_click(self) -> bool {
        !matches!(self, Self::Impression | Self::SuspiciousImpression)
    }

    /// The metric with this stored number.
    pub fn from_index(i: usize) -> Option<Self> {
        Self::ALL.get(i).copied()
    }

    /// The metric's name as a column, a JSON field and a CSV header.
    pub const fn column(self) -> &'static str {
        match self {
            Self::Click => "clicks",
            Self::BotClick => "bot_clicks",
            Self::DuplicateClick => "duplicate_clicks",
            Self::Impression => "impressions",
            Self::SuspiciousClick => "suspicious_clicks",
            Self::SuspiciousImpression => "suspicious_impressions",
        }
    }
}

/// Counts of one advert over some span (an hour, a day, a placement's share, all time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
pub struct Counts {
    /// Billable clicks (neither bots nor repeats).
    pub clicks: u64,
    /// Clicks by recognised bots and link-preview fetchers.
    pub bot_clicks: u64,
    /// Repeat clicks by the same visitor within `tracking.duplicate_window_secs`.
    pub duplicate_clicks: u64,
    /// Times the advert was served by `/api/v1/serve` (billable).
    pub impressions: u64,
    /// Clicks set apart as invalid traffic: past the per-address or per-user threshold of
    /// billable clicks per hour, or with an expired impression token. Never billed.
    pub suspicious_clicks: u64,
    /// Impressions served to an address past the serve-rate threshold. Never billed.
    pub suspicious_impressions: u64,
}

impl Counts {
    /// The CSV header of the counts, in [`Metric::ALL`] order.
    pub const CSV_HEADER: &'static str =
        "clicks,bot_clicks,duplicate_clicks,impressions,suspicious_clicks,suspicious_impressions";

    /// Counts from values in [`Metric::ALL`] order.
    pub fn from_values(values: [u64; 6]) -> Self {
        let [
            clicks,
            bot_clicks,
            duplicate_clicks,
            impressions,
            suspicious_clicks,
            suspicious_impressions,
        ] = values;
        Self {
            clicks,
            bot_clicks,
            duplicate_clicks,
            impressions,
            suspicious_clicks,
            suspicious_impressions,
        }
    }

    /// The values in [`Metric::ALL`] order.
    pub fn values(&self) -> [u64; 6] {
        [
            self.clicks,
            self.bot_clicks,
            self.duplicate_clicks,
            self.impressions,
            self.suspicious_clicks,
            self.suspicious_impressions,
        ]
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// What is left of `self` after `other`, never below zero.
    pub fn saturating_sub(&self, other: &Self) -> Self {
        let (a, b) = (self.values(), other.values());
        Self::from_values(std::array::from_fn(|i| a[i].saturating_sub(b[i])))
    }

    /// Billable clicks per billable impression (suspicious ones are in neither); `None` when
    /// nothing billable was shown.
    pub fn ctr(&self) -> Option<f64> {
        (self.impressions > 0).then(|| self.clicks as f64 / self.impressions as f64)
    }

    /// The CTR as reports print it: rounded to four decimals, 0 when nothing was shown.
    pub fn ctr_rounded(&self) -> f64 {
        self.ctr()
            .map_or(0.0, |ratio| (ratio * 10_000.0).round() / 10_000.0)
    }

    /// The counts as a CSV fragment, in [`Counts::CSV_HEADER`] order.
    pub fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{}",
            self.clicks,
            self.bot_clicks,
            self.duplicate_clicks,
            self.impressions,
            self.suspicious_clicks,
            self.suspicious_impressions
        )
    }
}

impl Index<Metric> for Counts {
    type Output = u64;

    fn index(&self, metric: Metric) -> &u64 {
        match metric {
            Metric::Click => &self.clicks,
            Metric::BotClick => &self.bot_clicks,
            Metric::DuplicateClick => &self.duplicate_clicks,
            Metric::Impression => &self.impressions,
            Metric::SuspiciousClick => &self.suspicious_clicks,
            Metric::SuspiciousImpression => &self.suspicious_impressions,
        }
    }
}

impl IndexMut<Metric> for Counts {
    fn index_mut(&mut self, metric: Metric) -> &mut u64 {
        match metric {
            Metric::Click => &mut self.clicks,
            Metric::BotClick => &mut self.bot_clicks,
            Metric::DuplicateClick => &mut self.duplicate_clicks,
            Metric::Impression => &mut self.impressions,
            Metric::SuspiciousClick => &mut self.suspicious_clicks,
            Metric::SuspiciousImpression => &mut self.suspicious_impressions,
        }
    }
}

impl AddAssign<&Counts> for Counts {
    fn add_assign(&mut self, other: &Counts) {
        for metric in Metric::ALL {
            self[metric] += other[metric];
        }
    }
}

impl AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        *self += &other;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_metric_indexes_its_own_field() {
        let mut counts = Counts::default();
        for (n, metric) in (1..).zip(Metric::ALL) {
            counts[metric] += n;
        }
        assert_eq!(counts, Counts::from_values([1, 2, 3, 4, 5, 6]));
        assert_eq!(counts.values(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(counts.csv(), "1,2,3,4,5,6");
        assert_eq!(Metric::from_index(4), Some(Metric::SuspiciousClick));
        assert_eq!(Metric::from_index(5), Some(Metric::SuspiciousImpression));
        assert_eq!(Metric::from_index(6), None);
        let header: Vec<&str> = Metric::ALL.iter().map(|m| m.column()).collect();
        assert_eq!(header.join(","), Counts::CSV_HEADER);
    }

    #[test]
    fn ctr_is_clicks_per_impression_and_absent_without_impressions() {
        assert_eq!(Counts::default().ctr(), None);
        assert_eq!(Counts::default().ctr_rounded(), 0.0);
        let counts = Counts::from_values([1, 5, 5, 3, 7, 9]);
        assert_eq!(
            counts.ctr(),
            Some(1.0 / 3.0),
            "suspicious counts are in neither"
        );
        assert_eq!(Counts::from_values([0, 0, 0, 0, 4, 8]).ctr(), None);
        assert_eq!(counts.ctr_rounded(), 0.3333);
    }

    #[test]
    fn sums_and_differences_go_field_by_field() {
        let mut sum = Counts::from_values([1, 2, 3, 4, 0, 0]);
        sum += Counts::from_values([10, 20, 30, 40, 0, 0]);
        assert_eq!(sum, Counts::from_values([11, 22, 33, 44, 0, 0]));
        assert_eq!(
            Counts::from_values([1, 2, 3, 4, 0, 0])
                .saturating_sub(&Counts::from_values([2, 1, 3, 0, 0, 0])),
            Counts::from_values([0, 1, 0, 4, 0, 0])
        );
        assert!(Counts::default().is_zero());
        assert!(!sum.is_zero());
    }
}
