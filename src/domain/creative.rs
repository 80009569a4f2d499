//! Creatives: the combinations of an advert's images, titles and texts. A responsive advert has
//! up to 5 titles and 5 texts (and its images); each combination is one creative, numbered within
//! the advert. Serving chooses among the servable ones for every card, and learns which wins.

use serde::{Deserialize, Serialize};

use super::advert::{AdvertText, Invalid, Title};

/// Titles, texts: how many one advert may have.
pub const MAX_ALTERNATIVES: usize = 5;

/// Images: how many one advert may have.
pub const MAX_IMAGES: usize = 3;

/// Creatives a composed placement is rendered for, per advert, at most: drawing every
/// combination (up to 75) for every placement would cost seconds of CPU per advert for images
/// most of which would never win.
pub const MAX_COMPOSED: usize = 3;

/// A creative's number within its advert (1, 2, …): `creative_id` in cards and reports.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct CreativeId(pub u32);

impl std::fmt::Display for CreativeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The creative a card showed, as its impression token names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shown {
    pub creative: CreativeId,
    /// Chosen by the learner among several (its click then teaches the learner).
    pub among_several: bool,
}

/// Whether serving may choose a creative.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    diesel::expression::AsExpression,
    diesel::deserialize::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
#[serde(rename_all = "snake_case")]
pub enum CreativeStatus {
    /// Served as the learner decides.
    Active,
    /// Never served.
    Paused,
    /// Always served: with pinned creatives, the learner chooses among them only.
    Pinned,
    /// Its title or text is no longer on the advert; kept so its counts keep their meaning.
    Retired,
}

impl CreativeStatus {
    /// What a customer may set.
    pub const SETTABLE: [Self; 3] = [Self::Active, Self::Paused, Self::Pinned];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Pinned => "pinned",
            Self::Retired => "retired",
        }
    }

    pub fn from_stored(raw: &str) -> Option<Self> {
        match raw {
            "active" => Some(Self::Active),
            "paused" => Some(Self::Paused),
            "pinned" => Some(Self::Pinned),
            "retired" => Some(Self::Retired),
            _ => None,
        }
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let wanted = raw.trim().to_ascii_lowercase();
        Self::SETTABLE
            .into_iter()
            .find(|s| s.as_str() == wanted)
            .ok_or_else(|| Invalid::new("invalid", "must be one of: active, paused, pinned"))
    }

    pub fn settable_schema() -> utoipa::openapi::Object {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(Self::SETTABLE.map(Self::as_str)))
            .description(Some(
                "`active` (the learner decides), `paused` (never served) or `pinned` (served; \
                 with pinned creatives only they are)",
            ))
            .build()
    }
}

/// One combination of an advert's image, title and text, as the customer wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combination {
    /// The image's position on the advert (0: the first).
    pub image: usize,
    pub title: String,
    pub text: String,
}

/// Every combination of `images` images with the titles and texts, image first, then title,
/// then text, so the first is the advert's first image, title and text.
pub fn combinations(images: usize, titles: &[Title], texts: &[AdvertText]) -> Vec<Combination> {
    let mut all = Vec::with_capacity(images * titles.len() * texts.len());
    for image in 0..images.max(1) {
        for title in titles {
            for text in texts {
                all.push(Combination {
                    image,
                    title: title.as_str().to_owned(),
                    text: text.as_str().to_owned(),
                });
            }
        }
    }
    all
}

/// The servable creatives among `creatives` (number, status): the pinned ones if any, else the
/// active ones.
pub fn servable(creatives: &[(CreativeId, CreativeStatus)]) -> Vec<CreativeId> {
    let pinned: Vec<CreativeId> = creatives
        .iter()
        .filter(|(_, s)| *s == CreativeStatus::Pinned)
        .map(|(id, _)| *id)
        .collect();
    if !pinned.is_empty() {
        return pinned;
    }
    creatives
        .iter()
        .filter(|(_, s)| *s == CreativeStatus::Active)
        .map(|(id, _)| *id)
        .collect()
}

/// A creative's counts so far: billable impressions and clicks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    pub impressions: u64,
    pub clicks: u64,
}

impl Tally {
    /// The mean of the learner's belief about the click rate, Beta(clicks + 1, impressions −
    /// clicks + 1): ½ for a creative never shown, so a new one is tried before the known ones.
    pub fn expected_rate(self) -> f64 {
        let clicks = self.clicks.min(self.impressions) as f64;
        (clicks + 1.0) / (self.impressions as f64 + 2.0)
    }
}

/// The creatives a composed placement is rendered for: up to [`MAX_COMPOSED`] of the servable
/// ones (`servable` in number order), the likeliest winners by their counts so far first, so that
/// new creatives get their trial and, as counts accumulate, the ones that lose make room for
/// others. Returned in number order.
pub fn composed_choice(
    servable: &[CreativeId],
    tally: impl Fn(CreativeId) -> Tally,
) -> Vec<CreativeId> {
    let mut ranked: Vec<(f64, CreativeId)> = servable
        .iter()
        .map(|id| (tally(*id).expected_rate(), *id))
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut chosen: Vec<CreativeId> = ranked
        .into_iter()
        .take(MAX_COMPOSED)
        .map(|(_, id)| id)
        .collect();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn combinations_start_with_the_first_of_each_and_cover_all() {
        let titles = [Title::parse("A").unwrap(), Title::parse("B").unwrap()];
        let texts = [
            AdvertText::parse("x").unwrap(),
            AdvertText::parse("y").unwrap(),
            AdvertText::parse("z").unwrap(),
        ];
        let all = combinations(1, &titles, &texts);
        assert_eq!(all.len(), 6);
        assert_eq!((all[0].title.as_str(), all[0].text.as_str()), ("A", "x"));
        assert_eq!((all[5].title.as_str(), all[5].text.as_str()), ("B", "z"));
        assert_eq!(combinations(3, &titles, &texts).len(), 18);
    }

    #[test]
    fn composed_placements_are_rendered_for_new_creatives_then_for_the_winners() {
        let ids: Vec<CreativeId> = (1..=6).map(CreativeId).collect();
        // Nothing counted yet: the first three by number.
        assert_eq!(
            composed_choice(&ids, |_| Tally::default()),
            [CreativeId(1), CreativeId(2), CreativeId(3)]
        );
        // 1–3 shown 1000 times each, 2 clicked most; 4–6 never shown: the new ones get their
        // trial before the known ones.
        let shown = |id: CreativeId| match id.0 {
            1 => Tally {
                impressions: 1000,
                clicks: 10,
            },
            2 => Tally {
                impressions: 1000,
                clicks: 80,
            },
            3 => Tally {
                impressions: 1000,
                clicks: 20,
            },
            _ => Tally::default(),
        };
        assert_eq!(
            composed_choice(&ids, shown),
            [CreativeId(4), CreativeId(5), CreativeId(6)]
        );
        // Once every one has been shown, the best three.
        let all_shown = |id: CreativeId| match id.0 {
            2 => Tally {
                impressions: 1000,
                clicks: 80,
            },
            5 => Tally {
                impressions: 1000,
                clicks: 50,
            },
            6 => Tally {
                impressions: 1000,
                clicks: 30,
            },
            _ => Tally {
                impressions: 1000,
                clicks: 5,
            },
        };
        assert_eq!(
            composed_choice(&ids, all_shown),
            [CreativeId(2), CreativeId(5), CreativeId(6)]
        );
        // Fewer servable than the bound: all of them.
        assert_eq!(composed_choice(&ids[..2], all_shown), &ids[..2]);
        // A clicks figure above the impressions (counts from different flushes) stays a rate.
        let odd = Tally {
            impressions: 1,
            clicks: 5,
        };
        assert!(odd.expected_rate() <= 1.0);
    }

    #[test]
    fn pinned_creatives_take_precedence_and_paused_ones_are_never_servable() {
        use CreativeStatus::*;
        let c = |n, s| (CreativeId(n), s);
        assert_eq!(
            servable(&[c(1, Active), c(2, Paused), c(3, Retired), c(4, Active)]),
            [CreativeId(1), CreativeId(4)]
        );
        assert_eq!(
            servable(&[c(1, Active), c(2, Pinned), c(3, Pinned)]),
            [CreativeId(2), CreativeId(3)]
        );
        assert!(servable(&[c(1, Paused), c(2, Retired)]).is_empty());
        assert_eq!(
            CreativeStatus::parse(" Pinned ").unwrap(),
            CreativeStatus::Pinned
        );
        assert_eq!(
            CreativeStatus::parse("retired").unwrap_err().code,
            "invalid"
        );
    }
}
