//! The public URL scheme: where tracked links and creatives live. Every link the service hands
//! out is built here from `server.public_url`, so that the modules agree on it.

use crate::domain::AdvertId;

#[derive(Debug, Clone)]
pub struct PublicUrls {
    base: String,
}

impl PublicUrls {
    pub fn new(public_url: &str) -> Self {
        Self {
            base: public_url.trim_end_matches('/').to_owned(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The tracked link of an advert: `{public_url}/r/{code}`.
    pub fn tracked_link(&self, code: &str) -> String {
        format!("{}/r/{code}", self.base)
    }

    /// The compressed creative: `{public_url}/media/{advert_id}/{hash}.jpg`. The hash changes
    /// whenever the image does, so the URL can be cached forever.
    pub fn creative(&self, advert: AdvertId, hash: &str) -> String {
        format!("{}{}", self.base, Self::creative_path(advert, hash))
    }

    /// A placement variant's image: `{public_url}/media/{advert_id}/{placement}/{hash}.{ext}`.
    pub fn variant(&self, advert: AdvertId, placement: &str, hash: &str, mime: &str) -> String {
        format!(
            "{}{}",
            self.base,
            Self::variant_path(advert, placement, hash, mime)
        )
    }

    /// The file extension follows the image's type: `webp` for WebP, `jpg` otherwise.
    pub fn variant_path(advert: AdvertId, placement: &str, hash: &str, mime: &str) -> String {
        let extension = if mime == "image/webp" { "webp" } else { "jpg" };
        format!("/media/{advert}/{placement}/{hash}.{extension}")
    }

    /// The creative's path alone, for pages served by this service (same origin).
    pub fn creative_path(advert: AdvertId, hash: &str) -> String {
        format!("/media/{advert}/{hash}.jpg")
    }
}
