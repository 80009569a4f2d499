//! Placement variants ("AutoGen creatives"): from one advert, the image and words each standard
//! placement needs: cropped around the most interesting region to the placement's aspect ratio,
//! resized to its exact size, encoded under its byte budget, with the title and text shortened to
//! its limits. A placement no good variant can be made for is marked unsuitable, with the reason.

mod crop;
mod encode;
pub mod http;
mod job;
pub mod store;
mod text;

use image::RgbImage;
use image::imageops::FilterType;
use sha2::{Digest, Sha256};

use crate::domain::Placement;

pub use crop::{Plan, Rect};
pub use job::{VARIANTS_JOB, VariantsJob};
pub use text::shorten;

/// A variant ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub bytes: Vec<u8>,
    pub mime: &'static str,
    pub extension: &'static str,
    pub width: u32,
    pub height: u32,
    /// First 16 hex characters of the SHA-256 of `bytes`: part of the image URL.
    pub hash: String,
    pub title: String,
    pub text: String,
    /// The part of the source it shows.
    pub crop: Rect,
    pub quality: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ready(Ready),
    Unsuitable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub placement: String,
    /// What the variant was made for (see `Placement::fingerprint`).
    pub fingerprint: String,
    pub outcome: Outcome,
}

/// Queues a re-rendering of every live advert's variants (after the catalogue changed). Workers
/// of any running instance take the jobs; otherwise the next start does.
pub async fn queue_rebuild(
    db: &crate::platform::db::Db,
    max_attempts: u32,
) -> Result<usize, crate::platform::db::DbError> {
    db.run(move |conn| {
        let ids = store::live_adverts(conn)?;
        for id in &ids {
            let payload = super::offload::OffloadPayload { advert_id: *id };
            crate::platform::jobs::enqueue(conn, VARIANTS_JOB, &payload.to_json(), max_attempts)?;
        }
        Ok(ids.len())
    })
    .await
}

/// The longest side the decoded source is reduced to before cropping: twice the largest side of
/// any placement keeps every crop sharp without working on a 40-megapixel photo.
pub fn working_side(catalogue: &[Placement]) -> u32 {
    catalogue
        .iter()
        .map(|p| p.width.max(p.height))
        .max()
        .unwrap_or(600)
        .saturating_mul(2)
}

/// Renders every placement of the catalogue. CPU-heavy: callers run it on a blocking thread.
pub fn render_all(
    source: &RgbImage,
    title: &str,
    text: &str,
    catalogue: &[Placement],
) -> Vec<Rendered> {
    catalogue
        .iter()
        .map(|placement| Rendered {
            placement: placement.name.clone(),
            fingerprint: placement.fingerprint(),
            outcome: render(source, title, text, placement),
        })
        .collect()
}

fn render(source: &RgbImage, title: &str, text: &str, placement: &Placement) -> Outcome {
    let rect = match crop::plan(source, placement.width, placement.height) {
        Plan::Crop(rect) => rect,
        Plan::Unsuitable(reason) => return Outcome::Unsuitable(reason),
    };
    let cropped =
        image::imageops::crop_imm(source, rect.x, rect.y, rect.width, rect.height).to_image();
    let sized = if cropped.dimensions() == (placement.width, placement.height) {
        cropped
    } else {
        image::imageops::resize(
            &cropped,
            placement.width,
            placement.height,
            FilterType::Lanczos3,
        )
    };
    match encode::under_budget(&sized, placement.max_bytes) {
        Ok(encoded) => Outcome::Ready(Ready {
            hash: hex::encode(&Sha256::digest(&encoded.bytes)[..8]),
            bytes: encoded.bytes,
            mime: encoded.mime,
            extension: encoded.extension,
            width: placement.width,
            height: placement.height,
            title: shorten(title, placement.title_chars),
            text: shorten(text, placement.text_chars),
            crop: rect,
            quality: encoded.quality,
        }),
        Err(reason) => Outcome::Unsuitable(reason),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::text::grapheme_len;
    use super::*;

    fn photo(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([
                (x * 255 / width) as u8,
                (y * 255 / height) as u8,
                ((x ^ y) % 256) as u8,
            ])
        })
    }

    #[test]
    fn every_ready_variant_has_the_exact_size_a_real_format_and_fits_its_budget() {
        let catalogue = Placement::standard_catalogue();
        let source = photo(1600, 1000);
        let rendered = render_all(
            &source,
            "Summer in Sochi",
            "Seven nights by the sea, flights included.",
            &catalogue,
        );
        assert_eq!(rendered.len(), catalogue.len());
        let mut unsuitable = Vec::new();
        for (variant, placement) in rendered.iter().zip(&catalogue) {
            assert_eq!(variant.placement, placement.name);
            match &variant.outcome {
                Outcome::Ready(ready) => {
                    assert!(
                        ready.bytes.len() <= placement.max_bytes,
                        "{}",
                        placement.name
                    );
                    let decoded = image::load_from_memory(&ready.bytes).unwrap();
                    assert_eq!(
                        (decoded.width(), decoded.height()),
                        (placement.width, placement.height)
                    );
                    let format = image::guess_format(&ready.bytes).unwrap();
                    let expected = if ready.mime == "image/webp" {
                        image::ImageFormat::WebP
                    } else {
                        image::ImageFormat::Jpeg
                    };
                    assert_eq!(format, expected, "{}", placement.name);
                    assert!(grapheme_len(&ready.title) <= placement.title_chars);
                    assert!(grapheme_len(&ready.text) <= placement.text_chars);
                }
                Outcome::Unsuitable(reason) => {
                    assert!(reason.contains("keep only"), "{}: {reason}", placement.name);
                    unsuitable.push(placement.name.as_str());
                }
            }
        }
        // A 16:10 photo squeezed into the 8:1 and 6.4:1 banners would lose most of the picture.
        assert_eq!(unsuitable, ["leaderboard", "mobile_banner"]);
    }

    #[test]
    fn a_leaderboard_carries_no_text() {
        let wide = photo(2000, 260);
        let catalogue = Placement::standard_catalogue();
        let rendered = render_all(&wide, "A title", "Some text", &catalogue);
        let Some(Outcome::Ready(ready)) = rendered
            .iter()
            .find(|v| v.placement == "leaderboard")
            .map(|v| &v.outcome)
        else {
            panic!("leaderboard not ready: {rendered:?}")
        };
        assert_eq!(ready.text, "");
        assert_eq!(ready.title, "A title");
    }

    #[test]
    fn a_tiny_source_is_unsuitable_for_large_placements() {
        let rendered = render_all(&photo(200, 150), "t", "x", &Placement::standard_catalogue());
        let social = rendered
            .iter()
            .find(|v| v.placement == "social_card")
            .unwrap();
        assert!(
            matches!(&social.outcome, Outcome::Unsuitable(r) if r.contains("too small")),
            "{social:?}"
        );
        let square = rendered.iter().find(|v| v.placement == "square").unwrap();
        assert!(matches!(square.outcome, Outcome::Ready(_)));
    }
}
