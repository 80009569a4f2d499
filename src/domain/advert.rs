//! The advert: what a customer submits and what every module talks about, plus the validated
//! values it is built from. An `Advert` round-trips through serde without loss; that JSON is
//! also the clone kept in the cloud store.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ids::{AdvertId, CustomerId};
pub use super::invalid::Invalid;
use super::targeting::Targeting;
use super::{Genre, TargetUrl};

/// Characters that change how text around them reads or hide in it: bidi embeddings,
/// overrides, isolates and marks (text that displays differently from what it says), and
/// zero-width characters (text that looks empty, or words that look equal and are not). The
/// zero-width joiner is allowed between two emoji, where it builds one picture (👨‍👩‍👧).
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
    )
}

/// Pictographs that join into emoji sequences, and the presentation selector and skin tones
/// that may end one of their parts.
fn emoji_part(c: char) -> bool {
    matches!(
        c,
        '\u{00A9}'
            | '\u{00AE}'
            | '\u{203C}'
            | '\u{2049}'
            | '\u{2122}'
            | '\u{2139}'
            | '\u{2194}'..='\u{21AA}'
            | '\u{2300}'..='\u{23FF}'
            | '\u{24C2}'
            | '\u{25AA}'..='\u{25FE}'
            | '\u{2600}'..='\u{27BF}'
            | '\u{2934}'..='\u{2935}'
            | '\u{2B00}'..='\u{2BFF}'
            | '\u{3030}'
            | '\u{303D}'
            | '\u{3297}'
            | '\u{3299}'
            | '\u{FE0F}'
            | '\u{1F000}'..='\u{1FAFF}'
    )
}

/// The first invisible character of `text`, if any (a ZWJ inside an emoji sequence is not).
fn first_invisible(text: &str) -> Option<char> {
    let mut previous = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if invisible(c) {
            let joins_emoji = c == '\u{200D}'
                && previous.is_some_and(emoji_part)
                && chars.peek().copied().is_some_and(emoji_part);
            if !joins_emoji {
                return Some(c);
            }
        }
        previous = Some(c);
    }
    None
}

/// Blank-looking characters that Unicode does not call white space (the Braille blank, the
/// Hangul fillers): a text of only these and spaces looks empty.
fn blank(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{2800}' | '\u{3164}' | '\u{115F}' | '\u{1160}' | '\u{FFA0}'
        )
}

fn bounded_text(raw: &str, max: usize, allow_newlines: bool) -> Result<String, Invalid> {
    // NFC, so that the same words are the same characters whichever way they were typed (and
    // lengths are counted on what is stored).
    let composed = icu_normalizer::ComposingNormalizerBorrowed::new_nfc().normalize(raw);
    let normalised = composed.replace("\r\n", "\n");
    let text = normalised.trim();
    if text.chars().all(blank) {
        return Err(Invalid::new("required", "must not be empty"));
    }
    let len = text.chars().count();
    if len > max {
        return Err(Invalid::new(
            "too_long",
            format!("must be at most {max} characters (got {len})"),
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|&c| c.is_control() && !(allow_newlines && (c == '\n' || c == '\t')))
    {
        return Err(Invalid::new(
            "control_character",
            format!(
                "must not contain control characters (found U+{:04X})",
                u32::from(c)
            ),
        ));
    }
    if let Some(c) = first_invisible(text) {
        return Err(Invalid::new(
            "invisible_character",
            format!(
                "must not contain invisible or direction-changing characters (found U+{:04X})",
                u32::from(c)
            ),
        ));
    }
    Ok(text.to_owned())
}

/// An advert's headline: 1–90 characters on one line, trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Title(String);

impl AsRef<str> for Title {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Title {
    pub const MAX_CHARS: usize = 90;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        bounded_text(raw, Self::MAX_CHARS, false).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An advert's body text: 1–500 characters, trimmed, line breaks kept (CRLF becomes LF).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AdvertText(String);

impl AsRef<str> for AdvertText {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AdvertText {
    pub const MAX_CHARS: usize = 500;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        bounded_text(raw, Self::MAX_CHARS, true).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A call to action, the button of composed creatives ("Book now"): 1–24 characters on one
/// line, trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallToAction(String);

impl CallToAction {
    pub const MAX_CHARS: usize = 24;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        bounded_text(raw, Self::MAX_CHARS, false).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The call to action of an advert that has none of its own: the usual words in its
    /// language; without a language, Russian for a title in Cyrillic, else English.
    pub fn default_for(lang: Option<&Lang>, title: &str) -> &'static str {
        let code = match lang {
            Some(lang) => lang.as_str(),
            None if title.chars().any(|c| ('\u{400}'..='\u{4ff}').contains(&c)) => "ru",
            None => "en",
        };
        match code {
            "ru" => "Подробнее",
            "uk" => "Детальніше",
            "be" => "Падрабязней",
            "kk" => "Толығырақ",
            "de" => "Mehr erfahren",
            "fr" => "En savoir plus",
            "es" => "Más información",
            "it" => "Scopri di più",
            "pt" => "Saiba mais",
            "pl" => "Dowiedz się więcej",
            "tr" => "Daha fazla bilgi",
            _ => "Learn more",
        }
    }
}

/// The language an advert is written in: an ISO 639-1 code such as `ru` or `en`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Lang(String);

impl Lang {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let code = raw.trim().to_ascii_lowercase();
        if code.len() == 2 && code.bytes().all(|b| b.is_ascii_lowercase()) {
            Ok(Self(code))
        } else {
            Err(Invalid::new(
                "invalid",
                "must be a two-letter ISO 639-1 language code, such as ru or en",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Serving status: `active` is served, `paused` is not (its link answers 410); `deleted` is
/// what a delete leaves behind (the row stays for its link and its report history), never shown
/// by the API, only in the cloud copy. Stored as its `as_str` text; queries bind and read the
/// enum itself (`platform::db::stored`).
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
pub enum AdvertStatus {
    Active,
    Paused,
    Deleted,
}

impl AdvertStatus {
    /// The statuses a customer may set.
    pub const SETTABLE: [Self; 2] = [Self::Active, Self::Paused];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Deleted => "deleted",
        }
    }

    /// The OpenAPI schema of a status a customer may set (request bodies and forms).
    pub fn settable_schema() -> utoipa::openapi::Object {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(Self::SETTABLE.map(Self::as_str)))
            .description(Some("`active` or `paused`; anything else is refused."))
            .build()
    }

    /// A status as a customer asks for it: only `active` or `paused`.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let wanted = raw.trim().to_ascii_lowercase();
        Self::SETTABLE
            .into_iter()
            .find(|s| s.as_str() == wanted)
            .ok_or_else(|| Invalid::new("invalid", "must be one of: active, paused"))
    }

    /// A status as stored, exactly as `as_str` wrote it.
    pub fn from_stored(raw: &str) -> Option<Self> {
        match raw {
            "active" => Some(Self::Active),
            "paused" => Some(Self::Paused),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// Where the advert's full clone is in its journey to the cloud store. Stored like
/// [`AdvertStatus`].
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
pub enum OffloadStatus {
    /// Waiting in the job queue (or being retried).
    Pending,
    /// The clone and the original image are in the cloud store.
    Done,
    /// Every attempt failed; the job is dead-lettered and the original is still in the database.
    Failed,
}

impl OffloadStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    /// A status as stored, exactly as `as_str` wrote it.
    pub fn from_stored(raw: &str) -> Option<Self> {
        match raw {
            "pending" => Some(Self::Pending),
            "done" => Some(Self::Done),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// Facts about the compressed creative (the bytes live in the creatives table and media caches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreativeInfo {
    /// Changes whenever the image does; part of the image URL.
    pub hash: String,
    pub width: u32,
    pub height: u32,
    /// The uploaded original's type, e.g. `image/png`.
    pub source_mime: String,
    /// The original's size, after its EXIF orientation.
    pub source_width: u32,
    pub source_height: u32,
}

/// How an advert's impression caps are spent over time: `asap` serves while it is under them;
/// `even` spreads `daily_max_impressions` over each day's active time, and `max_impressions`
/// over the whole flight when it has both a start and an end, serving only what is due (see
/// docs/ARCHITECTURE.md, "Pacing"). Stored as its `as_str` text.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Pacing {
    #[default]
    Asap,
    Even,
}

impl Pacing {
    pub const ALL: [Self; 2] = [Self::Asap, Self::Even];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asap => "asap",
            Self::Even => "even",
        }
    }

    /// For people.
    pub fn label(self) -> &'static str {
        match self {
            Self::Asap => "As soon as possible",
            Self::Even => "Evenly over the active time",
        }
    }

    /// A pacing as a customer names it: `asap` or `even`, in any case.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let wanted = raw.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == wanted)
            .ok_or_else(|| {
                Invalid::new("invalid", "must be one of: asap, even")
                    .allowing(Self::ALL.map(|p| p.as_str().to_owned()).to_vec())
            })
    }

    /// A pacing as stored, exactly as `as_str` wrote it.
    pub fn from_stored(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == raw)
    }
}

/// Optional delivery limits (`None` means unlimited), and how the impression limits are spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryCaps {
    pub max_impressions: Option<u64>,
    pub max_clicks: Option<u64>,
    pub daily_max_impressions: Option<u64>,
    /// Records written before pacing existed read as `asap`.
    #[serde(default)]
    pub pacing: Pacing,
}

impl DeliveryCaps {
    /// No limit at all (pacing alone limits nothing).
    pub fn is_unlimited(&self) -> bool {
        self.max_impressions.is_none()
            && self.max_clicks.is_none()
            && self.daily_max_impressions.is_none()
    }
}

/// A stored advert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advert {
    pub id: AdvertId,
    pub customer_id: CustomerId,
    /// The first title; a responsive advert's others follow in `more_titles`.
    pub title: Title,
    pub text: AdvertText,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_titles: Vec<Title>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_texts: Vec<AdvertText>,
    pub genre: Genre,
    pub lang: Option<Lang>,
    /// The button of composed creatives; `None`: the default for the advert's language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cta: Option<CallToAction>,
    pub target_url: TargetUrl,
    /// The short code of the tracked link `{public_url}/r/{link_code}`.
    pub link_code: String,
    pub status: AdvertStatus,
    pub weight: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub starts_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ends_at: Option<OffsetDateTime>,
    #[serde(flatten)]
    pub caps: DeliveryCaps,
    /// Who and when it is shown to; its time zone is also the day of `daily_max_impressions`.
    #[serde(default)]
    pub targeting: Targeting,
    /// The redirect carries a signed click id (`rk_click`) for the advertiser to report
    /// conversions with.
    #[serde(default)]
    pub conversion_tracking: bool,
    /// The first image; a responsive advert's others follow in `more_images`.
    pub creative: CreativeInfo,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_images: Vec<CreativeInfo>,
    pub offload_status: OffloadStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub offloaded_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A validated advert, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAdvert {
    pub title: Title,
    pub text: AdvertText,
    pub more_titles: Vec<Title>,
    pub more_texts: Vec<AdvertText>,
    pub genre: Genre,
    pub lang: Option<Lang>,
    pub cta: Option<CallToAction>,
    pub target_url: TargetUrl,
    pub weight: u32,
    pub starts_at: Option<OffsetDateTime>,
    pub ends_at: Option<OffsetDateTime>,
    pub caps: DeliveryCaps,
    pub targeting: Targeting,
    pub conversion_tracking: bool,
}

/// A validated change to an advert. `None` leaves a field as it is; for the fields that can be
/// cleared, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdvertPatch {
    /// The new titles (at least one): `title` alone replaces them all with one.
    pub titles: Option<Vec<Title>>,
    pub texts: Option<Vec<AdvertText>>,
    /// `Some(None)` goes back to the default for the advert's language.
    pub cta: Option<Option<CallToAction>>,
    pub status: Option<AdvertStatus>,
    pub weight: Option<u32>,
    pub starts_at: Option<Option<OffsetDateTime>>,
    pub ends_at: Option<Option<OffsetDateTime>>,
    pub max_impressions: Option<Option<u64>>,
    pub max_clicks: Option<Option<u64>>,
    pub daily_max_impressions: Option<Option<u64>>,
    pub pacing: Option<Pacing>,
    /// Replaces the whole targeting; `Some(Targeting::default())` clears it.
    pub targeting: Option<Targeting>,
    pub conversion_tracking: Option<bool>,
}

impl AdvertPatch {
    /// Changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Changes what users see of the advert (its words), so its placement variants must be
    /// rendered again.
    pub fn changes_content(&self) -> bool {
        self.titles.is_some() || self.texts.is_some() || self.cta.is_some()
    }

    /// The names of the fields this patch sets, as the API names them.
    pub fn fields(&self) -> Vec<&'static str> {
        [
            ("titles", self.titles.is_some()),
            ("texts", self.texts.is_some()),
            ("cta", self.cta.is_some()),
            ("status", self.status.is_some()),
            ("weight", self.weight.is_some()),
            ("starts_at", self.starts_at.is_some()),
            ("ends_at", self.ends_at.is_some()),
            ("max_impressions", self.max_impressions.is_some()),
            ("max_clicks", self.max_clicks.is_some()),
            (
                "daily_max_impressions",
                self.daily_max_impressions.is_some(),
            ),
            ("pacing", self.pacing.is_some()),
            ("targeting", self.targeting.is_some()),
            ("conversion_tracking", self.conversion_tracking.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// The bounds of `weight`, the advert's share in rotation.
impl Advert {
    /// Every title, the first first.
    pub fn titles(&self) -> Vec<Title> {
        std::iter::once(self.title.clone())
            .chain(self.more_titles.iter().cloned())
            .collect()
    }

    /// Every text, the first first.
    pub fn texts(&self) -> Vec<AdvertText> {
        std::iter::once(self.text.clone())
            .chain(self.more_texts.iter().cloned())
            .collect()
    }

    /// Every image, the first first.
    pub fn images(&self) -> impl Iterator<Item = &CreativeInfo> {
        std::iter::once(&self.creative).chain(&self.more_images)
    }
}

pub const WEIGHT_RANGE: std::ops::RangeInclusive<u32> = 1..=1000;

/// Milliseconds since the epoch to a UTC time (the database stores times this way).
pub fn time_from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub fn time_to_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn title_is_trimmed_and_bounded_in_characters_not_bytes() {
        assert_eq!(
            Title::parse("  Летний тур  ").unwrap().as_str(),
            "Летний тур"
        );
        assert!(Title::parse(&"я".repeat(90)).is_ok());
        assert_eq!(Title::parse(&"я".repeat(91)).unwrap_err().code, "too_long");
        assert_eq!(Title::parse("   ").unwrap_err().code, "required");
        assert_eq!(
            Title::parse("two\nlines").unwrap_err().code,
            "control_character"
        );
    }

    #[test]
    fn invisible_and_bidi_characters_are_refused_but_emoji_sequences_pass() {
        for bad in [
            "\u{202E}evil title",
            "\u{200B}",
            "ok\u{200B}title",
            "a\u{2066}b\u{2069}",
            "a\u{200E}b",
            "a\u{061C}b",
            "a\u{FEFF}b",
            "a\u{2060}b",
            "a\u{200C}b",
            "a\u{200D}b",
            "\u{1F468}\u{200D}",
        ] {
            let err = Title::parse(bad).unwrap_err();
            assert_eq!(err.code, "invisible_character", "{bad:?}");
            assert_eq!(
                AdvertText::parse(bad).unwrap_err().code,
                "invisible_character"
            );
        }
        let family = "Family trip \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";
        assert_eq!(Title::parse(family).unwrap().as_str(), family);
        let rainbow = "\u{1F3F3}\u{FE0F}\u{200D}\u{1F308} pride";
        assert!(Title::parse(rainbow).is_ok());
        assert_eq!(
            Title::parse("\u{3000}\u{00A0} ").unwrap_err().code,
            "required"
        );
        assert_eq!(
            Title::parse("\u{2800}\u{3164}").unwrap_err().code,
            "required"
        );
        // Composed: "é" typed as e + combining acute is stored as one character.
        assert_eq!(Title::parse("Cafe\u{301}").unwrap().as_str(), "Caf\u{E9}");
    }

    #[test]
    fn text_keeps_line_breaks_and_normalises_crlf() {
        assert_eq!(AdvertText::parse("a\r\nb").unwrap().as_str(), "a\nb");
        assert!(AdvertText::parse(&"x".repeat(500)).is_ok());
        assert_eq!(
            AdvertText::parse(&"x".repeat(501)).unwrap_err().code,
            "too_long"
        );
        assert_eq!(
            AdvertText::parse("bell\u{7}").unwrap_err().code,
            "control_character"
        );
    }

    #[test]
    fn a_call_to_action_is_checked_like_a_title_and_defaults_by_language() {
        assert_eq!(
            CallToAction::parse("  Book now ").unwrap().as_str(),
            "Book now"
        );
        assert!(CallToAction::parse(&"ж".repeat(24)).is_ok());
        assert_eq!(
            CallToAction::parse(&"ж".repeat(25)).unwrap_err().code,
            "too_long"
        );
        assert_eq!(CallToAction::parse(" ").unwrap_err().code, "required");
        assert_eq!(
            CallToAction::parse("a\nb").unwrap_err().code,
            "control_character"
        );
        let ru = Lang::parse("ru").unwrap();
        let en = Lang::parse("en").unwrap();
        assert_eq!(CallToAction::default_for(Some(&ru), "Sale"), "Подробнее");
        assert_eq!(CallToAction::default_for(Some(&en), "Скидки"), "Learn more");
        assert_eq!(CallToAction::default_for(None, "Летний тур"), "Подробнее");
        assert_eq!(CallToAction::default_for(None, "Summer"), "Learn more");
        let xx = Lang::parse("xx").unwrap();
        assert_eq!(CallToAction::default_for(Some(&xx), "Summer"), "Learn more");
    }

    #[test]
    fn lang_accepts_two_letter_codes_only() {
        assert_eq!(Lang::parse(" RU ").unwrap().as_str(), "ru");
        assert!(Lang::parse("rus").is_err());
        assert!(Lang::parse("r1").is_err());
        assert!(Lang::parse("").is_err());
    }

    #[test]
    fn customers_may_set_active_or_paused_but_deleted_is_only_read_back() {
        assert_eq!(
            AdvertStatus::parse(" Paused ").unwrap(),
            AdvertStatus::Paused
        );
        assert_eq!(AdvertStatus::parse("active").unwrap(), AdvertStatus::Active);
        assert_eq!(AdvertStatus::parse("deleted").unwrap_err().code, "invalid");
        assert!(AdvertStatus::parse("archived").is_err());
        for status in [
            AdvertStatus::Active,
            AdvertStatus::Paused,
            AdvertStatus::Deleted,
        ] {
            assert_eq!(AdvertStatus::from_stored(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
        assert_eq!(AdvertStatus::from_stored("Active"), None);
    }

    #[test]
    fn pacing_is_asap_or_even_and_records_without_it_read_as_asap() {
        assert_eq!(Pacing::parse(" Even ").unwrap(), Pacing::Even);
        assert_eq!(Pacing::parse("asap").unwrap(), Pacing::Asap);
        let err = Pacing::parse("fast").unwrap_err();
        assert_eq!(err.code, "invalid");
        assert_eq!(err.allowed.unwrap(), ["asap", "even"]);
        for pacing in Pacing::ALL {
            assert_eq!(Pacing::from_stored(pacing.as_str()), Some(pacing));
            assert_eq!(
                serde_json::to_value(pacing).unwrap(),
                serde_json::json!(pacing.as_str())
            );
        }
        assert_eq!(Pacing::from_stored("Even"), None);
        assert_eq!(Pacing::default(), Pacing::Asap);
        let old: DeliveryCaps =
            serde_json::from_value(serde_json::json!({ "max_impressions": 5 })).unwrap();
        assert_eq!(old.pacing, Pacing::Asap);
        let paced = DeliveryCaps {
            pacing: Pacing::Even,
            ..DeliveryCaps::default()
        };
        assert!(paced.is_unlimited(), "pacing alone limits nothing");
    }

    #[test]
    fn milliseconds_round_trip() {
        let ms = 1_795_000_000_123;
        assert_eq!(time_to_ms(time_from_ms(ms)), ms);
    }
}
