//! Encoding a variant under its byte budget: lossy WebP at falling quality, then JPEG.

use image::RgbImage;

use super::super::creative::encode_jpeg;

/// Qualities tried, best first.
const QUALITIES: [u8; 9] = [85, 80, 75, 70, 62, 55, 45, 35, 25];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub mime: &'static str,
    pub extension: &'static str,
    pub quality: u8,
}

/// The best-looking encoding that fits `budget` bytes, or why none does.
pub fn under_budget(img: &RgbImage, budget: usize) -> Result<Encoded, String> {
    let (w, h) = img.dimensions();
    let webp = webp::Encoder::from_rgb(img.as_raw(), w, h);
    for quality in QUALITIES {
        let bytes = webp.encode(f32::from(quality));
        if bytes.len() <= budget {
            return Ok(Encoded {
                bytes: bytes.to_vec(),
                mime: "image/webp",
                extension: "webp",
                quality,
            });
        }
    }
    for quality in QUALITIES {
        let out = encode_jpeg(img.as_raw(), w, h, false, quality)
            .map_err(|e| format!("JPEG encoding failed: {e}"))?;
        if out.len() <= budget {
            return Ok(Encoded {
                bytes: out,
                mime: "image/jpeg",
                extension: "jpg",
                quality,
            });
        }
    }
    Err(format!(
        "even at quality {} the {w}×{h} image does not fit in {budget} bytes",
        QUALITIES[QUALITIES.len() - 1]
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn noise(w: u32, h: u32) -> RgbImage {
        let mut seed = 12345u32;
        RgbImage::from_fn(w, h, |_, _| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let v = seed.to_le_bytes();
            image::Rgb([v[1], v[2], v[3]])
        })
    }

    #[test]
    fn a_generous_budget_gets_high_quality_webp() {
        let img = RgbImage::from_fn(300, 250, |x, y| image::Rgb([x as u8, y as u8, 100]));
        let out = under_budget(&img, 150_000).unwrap();
        assert_eq!((out.mime, out.quality), ("image/webp", 85));
        assert!(out.bytes.starts_with(b"RIFF") && &out.bytes[8..12] == b"WEBP");
        let decoded = image::load_from_memory(&out.bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (300, 250));
    }

    #[test]
    fn a_tight_budget_lowers_the_quality_until_it_fits() {
        let img = RgbImage::from_fn(300, 250, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 13 % 256) as u8,
                ((x * y) % 256) as u8,
            ])
        });
        let generous = under_budget(&img, 1_000_000).unwrap();
        assert_eq!(generous.quality, 85);
        let tight = under_budget(&img, generous.bytes.len() - 1).unwrap();
        assert!(tight.bytes.len() < generous.bytes.len());
        assert!(tight.quality < 85, "{}", tight.quality);
    }

    #[test]
    fn an_impossible_budget_is_an_error() {
        let err = under_budget(&noise(300, 250), 200).unwrap_err();
        assert!(err.contains("does not fit in 200 bytes"), "{err}");
    }
}
