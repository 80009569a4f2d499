//! An advert as the API shows it: what `GET /api/v1/adverts/{id}` answers, the dashboard draws
//! and the advert events carry.

use serde::Serialize;
use time::OffsetDateTime;

use crate::domain::advert::{OffloadStatus, Pacing};
use crate::domain::{Advert, AdvertId, AdvertStatus, Genre};
use crate::platform::urls::PublicUrls;

/// An advert as the API shows it: the stored advert plus the links built from it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = advert_example)]
pub struct AdvertView {
    #[schema(value_type = i64, example = 1)]
    pub id: AdvertId,
    /// The first title (`titles[0]`).
    pub title: String,
    /// The first text (`texts[0]`).
    pub text: String,
    /// Every title, 1 to 5; each combination of title and text is a creative.
    pub titles: Vec<String>,
    /// Every text, 1 to 5.
    pub texts: Vec<String>,
    pub genre: Genre,
    /// ISO 639-1 code, or `null` for every language.
    pub lang: Option<String>,
    /// The call to action the advert set, or `null` for the default of its language.
    #[schema(example = "Book now")]
    pub cta: Option<String>,
    /// The target exactly as submitted.
    pub target_url: String,
    /// The link to hand out: `{public_url}/r/{code}` redirects to `target_url` and counts.
    pub tracked_url: String,
    /// The compressed creative (JPEG, at most 600×600), immutable: the first image's.
    pub image_url: String,
    /// `image_url` without the origin, for this service's own pages (their CSP allows `'self'`).
    #[serde(skip)]
    pub image_path: String,
    pub image_width: u32,
    pub image_height: u32,
    /// Every image, 1 to 3, the first first; each combines with every title and text into
    /// creatives (`image_index` in the creatives' list is the position here).
    pub images: Vec<ImageView>,
    pub status: AdvertStatus,
    pub weight: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub starts_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub ends_at: Option<OffsetDateTime>,
    pub max_impressions: Option<u64>,
    pub max_clicks: Option<u64>,
    /// Per day of `targeting.timezone`.
    pub daily_max_impressions: Option<u64>,
    /// How the impression caps are spent: `asap` or `even` (spread over the active hours).
    pub pacing: Pacing,
    /// Who and when it is shown to: the keys that are set, and always `timezone`.
    #[schema(value_type = super::input::TargetingInput)]
    pub targeting: crate::domain::targeting::Targeting,
    /// Whether the redirect appends a signed `rk_click` id to the target, for reporting
    /// conversions with `POST /api/v1/conversions`.
    pub conversion_tracking: bool,
    pub offload_status: OffloadStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub offloaded_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// One of an advert's images.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ImageView {
    /// The compressed image (JPEG, at most 600×600), immutable.
    pub image_url: String,
    #[serde(skip)]
    pub image_path: String,
    pub width: u32,
    pub height: u32,
}

/// The example advert of the OpenAPI document, built from the real type so it cannot drift.
fn advert_example() -> serde_json::Value {
    let at = time::macros::datetime!(2026-11-26 10:00:00 UTC);
    let view = AdvertView {
        id: AdvertId(1),
        title: "Summer in Sochi".into(),
        text: "Seven nights by the sea".into(),
        titles: vec!["Summer in Sochi".into(), "Sochi from 99 EUR".into()],
        texts: vec!["Seven nights by the sea".into()],
        genre: Genre::Travel,
        lang: Some("ru".into()),
        cta: Some("Book now".into()),
        target_url: "https://example.com/sochi".into(),
        tracked_url: "https://ads.example.com/r/Ab3dE5gH7jK9".into(),
        image_url: "https://ads.example.com/media/1/3f9c2a1b7d4e8f60.jpg".into(),
        image_path: String::new(),
        image_width: 600,
        image_height: 450,
        images: vec![ImageView {
            image_url: "https://ads.example.com/media/1/3f9c2a1b7d4e8f60.jpg".into(),
            image_path: String::new(),
            width: 600,
            height: 450,
        }],
        status: AdvertStatus::Active,
        weight: 10,
        starts_at: Some(time::macros::datetime!(2026-12-01 00:00:00 UTC)),
        ends_at: None,
        max_impressions: Some(100_000),
        max_clicks: None,
        daily_max_impressions: None,
        pacing: Pacing::Even,
        targeting: crate::domain::targeting::Targeting::default(),
        conversion_tracking: true,
        offload_status: OffloadStatus::Pending,
        offloaded_at: None,
        created_at: at,
        updated_at: at,
    };
    serde_json::to_value(view).unwrap_or_default()
}

impl AdvertView {
    pub fn new(advert: Advert, urls: &PublicUrls) -> Self {
        let images = advert
            .images()
            .map(|image| ImageView {
                image_url: urls.creative(advert.id, &image.hash),
                image_path: PublicUrls::creative_path(advert.id, &image.hash),
                width: image.width,
                height: image.height,
            })
            .collect();
        Self {
            tracked_url: urls.tracked_link(&advert.link_code),
            image_url: urls.creative(advert.id, &advert.creative.hash),
            image_path: PublicUrls::creative_path(advert.id, &advert.creative.hash),
            id: advert.id,
            titles: advert
                .titles()
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            texts: advert
                .texts()
                .iter()
                .map(|t| t.as_str().to_owned())
                .collect(),
            title: advert.title.as_str().to_owned(),
            text: advert.text.as_str().to_owned(),
            genre: advert.genre,
            lang: advert.lang.map(|l| l.as_str().to_owned()),
            cta: advert.cta.map(|c| c.as_str().to_owned()),
            target_url: advert.target_url.into_inner(),
            image_width: advert.creative.width,
            image_height: advert.creative.height,
            images,
            status: advert.status,
            weight: advert.weight,
            starts_at: advert.starts_at,
            ends_at: advert.ends_at,
            max_impressions: advert.caps.max_impressions,
            max_clicks: advert.caps.max_clicks,
            daily_max_impressions: advert.caps.daily_max_impressions,
            pacing: advert.caps.pacing,
            targeting: advert.targeting.clone(),
            conversion_tracking: advert.conversion_tracking,
            offload_status: advert.offload_status,
            offloaded_at: advert.offloaded_at,
            created_at: advert.created_at,
            updated_at: advert.updated_at,
        }
    }
}
