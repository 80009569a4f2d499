//! Placement variants ("AutoGen creatives"): from one advert, the image and words each standard
//! placement needs: cropped around the most interesting region to the placement's aspect ratio,
//! resized to its exact size, encoded under its byte budget, with the title and text shortened to
//! its limits. A placement no good variant can be made for is marked unsuitable, with the reason.
//! A composed placement's image is a finished creative: picture, words and call to action.

mod colour;
pub mod compose;
mod crop;
mod encode;
pub mod http;
mod job;
mod lettering;
pub mod store;

use image::RgbImage;
use sha2::{Digest, Sha256};

use crate::domain::Placement;
use crate::domain::creative::CreativeId;
use crate::domain::placement::Layout;

pub use crop::{Plan, Rect, Saliency};
pub use job::{VariantsJob, VariantsSetup};

use super::outbox::{OffloadPayload, VARIANTS_JOB};
use crate::domain::shorten::shorten;

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
    /// The advert's image it was made from (0: the first).
    pub image: u32,
    /// The creative whose words are drawn in (composed placements); 0 where none are.
    pub creative: CreativeId,
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
            let payload = OffloadPayload { advert_id: *id };
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

/// The words a variant is made with: the advert's title and text, and its call to action (the
/// advert's own, or the default for its language).
#[derive(Debug, Clone, Copy)]
pub struct Words<'a> {
    pub title: &'a str,
    pub text: &'a str,
    pub cta: &'a str,
}

/// Renders every placement of the catalogue with one set of words (drawn into composed
/// placements as creative 1). CPU-heavy: callers run it on a blocking thread.
pub fn render_all(source: &RgbImage, words: &Words<'_>, catalogue: &[Placement]) -> Vec<Rendered> {
    render_advert(source, 0, words, &[(CreativeId(1), *words)], catalogue)
}

/// Renders every placement of the catalogue from one of the advert's images (`image`): a
/// cropped placement once (its row keeps `first`, the advert's first words, shortened; cards
/// carry each creative's own), a composed placement once per creative in `composed`, with that
/// creative's words drawn in. CPU-heavy: callers run it on a blocking thread.
pub fn render_advert(
    source: &RgbImage,
    image: u32,
    first: &Words<'_>,
    composed: &[(CreativeId, Words<'_>)],
    catalogue: &[Placement],
) -> Vec<Rendered> {
    // Where the detail is, measured once for every placement's crop.
    let saliency = Saliency::of(source);
    let mut rendered = Vec::with_capacity(catalogue.len() + composed.len() * 2);
    for placement in catalogue {
        let made = |creative: CreativeId, words: &Words<'_>| Rendered {
            placement: placement.name.clone(),
            fingerprint: placement.fingerprint(),
            image,
            creative,
            outcome: render(source, &saliency, words, placement),
        };
        match placement.layout {
            Layout::Crop => rendered.push(made(CreativeId(0), first)),
            Layout::Composed => {
                rendered.extend(composed.iter().map(|(id, words)| made(*id, words)));
            }
        }
    }
    rendered
}

/// The part of the source a placement shows, or why it has none (without drawing anything).
pub fn source_region(
    source: (u32, u32),
    saliency: &Saliency,
    placement: &Placement,
) -> Result<Rect, String> {
    match placement.layout {
        Layout::Composed => {
            compose::source_region(saliency, source, placement).map(|(crop, ..)| crop)
        }
        Layout::Crop => match crop::plan_with(saliency, placement.width, placement.height) {
            Plan::Crop(rect) => Ok(rect),
            Plan::Unsuitable(reason) => Err(reason),
        },
    }
}

/// The part of the source a placement shows and its image before encoding, or why it has none.
pub fn picture(
    source: &RgbImage,
    saliency: &Saliency,
    words: &Words<'_>,
    placement: &Placement,
) -> Result<(RgbImage, Rect), String> {
    if placement.layout == Layout::Composed {
        return compose::compose(source, saliency, placement, words).map(|c| (c.image, c.crop));
    }
    let rect = source_region(source.dimensions(), saliency, placement)?;
    Ok((
        crop::cut_and_fit(source, rect, placement.width, placement.height),
        rect,
    ))
}

/// One placement's variant, encoded under its budget.
pub fn render(
    source: &RgbImage,
    saliency: &Saliency,
    words: &Words<'_>,
    placement: &Placement,
) -> Outcome {
    let (sized, rect) = match picture(source, saliency, words, placement) {
        Ok(done) => done,
        Err(reason) => return Outcome::Unsuitable(reason),
    };
    let (title, text) = (words.title, words.text);
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
    use super::colour::contrast;
    use super::*;
    use crate::domain::shorten::grapheme_len;

    fn photo(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([
                (x * 255 / width) as u8,
                (y * 255 / height) as u8,
                ((x ^ y) % 256) as u8,
            ])
        })
    }

    const WORDS: Words<'static> = Words {
        title: "Summer in Sochi",
        text: "Seven nights by the sea, flights included.",
        cta: "Book now",
    };

    /// The standard catalogue with every placement a crop, as before composed layouts.
    fn crops_only() -> Vec<Placement> {
        let mut catalogue = Placement::standard_catalogue();
        for p in &mut catalogue {
            p.layout = Layout::Crop;
        }
        catalogue
    }

    /// Something like a photograph: a sky, a horizon, a bright subject, a little sensor noise.
    fn photo_like(width: u32, height: u32) -> RgbImage {
        let mut seed = 7u32;
        let (cx, cy, r) = (width * 2 / 3, height / 2, width.min(height) / 6);
        RgbImage::from_fn(width, height, |x, y| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let noise = (seed >> 24) as u8 % 12;
            let (dx, dy) = (x.abs_diff(cx), y.abs_diff(cy));
            let base = if dx * dx + dy * dy < r * r {
                [240, 170, 40]
            } else if y < height * 3 / 5 {
                [90, 140 + (y * 60 / height) as u8, 220]
            } else {
                [60, 110, 50]
            };
            image::Rgb(base.map(|c| c.saturating_add(noise)))
        })
    }

    /// Checks every ready variant (exact size, real format, within budget, text within the
    /// placement's limits); returns the unsuitable ones with their reasons.
    fn assert_ready_and_exact(
        rendered: &[Rendered],
        catalogue: &[Placement],
    ) -> Vec<(String, String)> {
        let mut unsuitable = Vec::new();
        for (variant, placement) in rendered.iter().zip(catalogue) {
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
                        (placement.width, placement.height),
                        "{}",
                        placement.name
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
                    unsuitable.push((placement.name.clone(), reason.clone()))
                }
            }
        }
        unsuitable
    }

    #[test]
    fn a_typical_photo_fills_every_placement_of_the_standard_catalogue() {
        let catalogue = Placement::standard_catalogue();
        // 4000×2250 and 2250×4000 as the job reduces them (to twice the largest placement side).
        for (w, h) in [(2400, 1350), (1350, 2400)] {
            let rendered = render_all(&photo_like(w, h), &WORDS, &catalogue);
            let unsuitable = assert_ready_and_exact(&rendered, &catalogue);
            assert!(unsuitable.is_empty(), "{w}×{h}: {unsuitable:?}");
        }
    }

    #[test]
    fn every_ready_variant_has_the_exact_size_a_real_format_and_fits_its_budget() {
        let catalogue = crops_only();
        let source = photo(1600, 1000);
        let rendered = render_all(&source, &WORDS, &catalogue);
        assert_eq!(rendered.len(), catalogue.len());
        let unsuitable = assert_ready_and_exact(&rendered, &catalogue);
        for (name, reason) in &unsuitable {
            assert!(reason.contains("keep only"), "{name}: {reason}");
        }
        let unsuitable: Vec<&str> = unsuitable.iter().map(|(name, _)| name.as_str()).collect();
        // A 16:10 photo squeezed into the 8:1 and 6.4:1 banners would lose most of the picture.
        assert_eq!(unsuitable, ["leaderboard", "mobile_banner"]);
    }

    #[test]
    fn a_leaderboard_carries_no_text() {
        let wide = photo(2000, 260);
        let catalogue = Placement::standard_catalogue();
        let words = Words {
            title: "A title",
            text: "Some text",
            cta: "Go",
        };
        let rendered = render_all(&wide, &words, &catalogue);
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
        let words = Words {
            title: "t",
            text: "x",
            cta: "Go",
        };
        let rendered = render_all(&photo(200, 150), &words, &Placement::standard_catalogue());
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

    #[test]
    fn every_variant_shows_the_detailed_square_wherever_it_is() {
        let side = 160;
        let mut catalogues = Placement::standard_catalogue();
        catalogues.extend(crops_only().into_iter().map(|mut p| {
            p.name.push_str("_crop");
            p
        }));
        for (w, h) in [(1600, 600), (900, 900), (720, 1280)] {
            for fx in [0.03, 0.5, 0.97] {
                for fy in [0.05, 0.5, 0.95] {
                    let square = Rect {
                        x: ((w - side) as f64 * fx) as u32,
                        y: ((h - side) as f64 * fy) as u32,
                        width: side,
                        height: side,
                    };
                    let source = super::crop::tests::scene(w, h, square);
                    let saliency = Saliency::of(&source);
                    for placement in &catalogues {
                        let crop = match source_region((w, h), &saliency, placement) {
                            Ok(crop) => crop,
                            // A crop-only unit may be unsuitable for this shape; the standard
                            // catalogue never is.
                            Err(_) if placement.name.ends_with("_crop") => continue,
                            Err(e) => panic!("{w}×{h}: {}: {e}", placement.name),
                        };
                        let kept = crop.overlap(&square) as f64 / f64::from(side * side);
                        assert!(
                            kept >= 0.8,
                            "{w}×{h}, square at {square:?}: {} shows {crop:?}, {:.0}% of it",
                            placement.name,
                            kept * 100.0
                        );
                    }
                }
            }
        }
    }

    /// Pixels of `area` at least 4.5:1 against the panel's colour, and the best ratio among them.
    fn readable_pixels(img: &RgbImage, area: Rect, panel: image::Rgb<u8>) -> (usize, f64) {
        let mut best = 1.0_f64;
        let mut count = 0;
        for y in area.y..area.y + area.height {
            for x in area.x..area.x + area.width {
                let c = contrast(*img.get_pixel(x, y), panel);
                best = best.max(c);
                if c >= 4.5 {
                    count += 1;
                }
            }
        }
        (count, best)
    }

    #[test]
    fn composed_text_measured_on_the_rendered_pixels_contrasts_at_least_4_5_to_1() {
        let solid = |c: [u8; 3]| RgbImage::from_pixel(1200, 800, image::Rgb(c));
        let pictures = [
            photo_like(1200, 800),
            photo_like(800, 1200),
            solid([128, 128, 128]),
            solid([250, 250, 250]),
            solid([5, 5, 5]),
            solid([200, 30, 40]),
            solid([118, 118, 118]),
            photo(1200, 800),
        ];
        let composed: Vec<Placement> = Placement::standard_catalogue()
            .into_iter()
            .map(|mut p| {
                p.layout = Layout::Composed;
                p
            })
            .collect();
        for (i, source) in pictures.iter().enumerate() {
            let saliency = Saliency::of(source);
            for placement in &composed {
                let c = compose::compose(source, &saliency, placement, &WORDS).unwrap();
                let name = &placement.name;
                assert_eq!(
                    c.image.dimensions(),
                    (placement.width, placement.height),
                    "{name}"
                );
                // The panel's own colour, in its padding.
                let panel = *c.image.get_pixel(c.panel.x + 1, c.panel.y + 1);
                let title = c.title.unwrap_or_else(|| panic!("{i} {name}: no title"));
                let (count, best) = readable_pixels(&c.image, title, panel);
                assert!(
                    count >= 20 && best >= 4.5,
                    "{i} {name}: {count} px, {best:.2}"
                );
                if let Some(text) = c.text {
                    let (count, best) = readable_pixels(&c.image, text, panel);
                    assert!(
                        count >= 20 && best >= 4.5,
                        "{i} {name} text: {count}, {best:.2}"
                    );
                }
                // The button's label against the button.
                let button = c.button.unwrap_or_else(|| panic!("{i} {name}: no button"));
                let button_bg = *c.image.get_pixel(button.x + 1, button.y + 1);
                let (count, best) = readable_pixels(&c.image, button, button_bg);
                assert!(
                    count >= 10 && best >= 4.5,
                    "{i} {name} button: {count}, {best:.2}"
                );
                // And after lossy encoding, as served.
                let encoded = encode::under_budget(&c.image, placement.max_bytes).unwrap();
                let decoded = image::load_from_memory(&encoded.bytes).unwrap().to_rgb8();
                let panel = *decoded.get_pixel(c.panel.x + 1, c.panel.y + 1);
                let (count, best) = readable_pixels(&decoded, title, panel);
                assert!(
                    count >= 20 && best >= 4.5,
                    "{i} {name} encoded: {count}, {best:.2}"
                );
            }
        }
    }

    #[test]
    fn cyrillic_english_emoji_and_combining_marks_render() {
        let source = photo_like(1200, 800);
        let saliency = Saliency::of(&source);
        let family = "👨\u{200d}👩\u{200d}👧";
        let titles = [
            "Летний отдых в Сочи со скидкой".to_owned(),
            "Summer in Sochi".to_owned(),
            format!("Cafe\u{301} {family} crème brûlée"),
            format!("{family}{family}{family}"),
            "Ёлки и ежи: Ж Щ Ы Ю Я".to_owned(),
        ];
        let catalogue = Placement::standard_catalogue();
        for title in &titles {
            let words = Words {
                title,
                text: "Семь ночей у моря, перелёт включён. Seven nights by the sea.",
                cta: "Забронировать",
            };
            for placement in catalogue.iter().filter(|p| p.layout == Layout::Composed) {
                let c = compose::compose(&source, &saliency, placement, &words).unwrap();
                assert_eq!(c.image.dimensions(), (placement.width, placement.height));
                if !title.starts_with(family) {
                    let area = c.title.unwrap();
                    let panel = *c.image.get_pixel(c.panel.x + 1, c.panel.y + 1);
                    let (count, _) = readable_pixels(&c.image, area, panel);
                    assert!(count >= 20, "{title} in {}: {count}", placement.name);
                }
            }
        }
    }
}
