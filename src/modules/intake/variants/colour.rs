//! Colours for composed creatives: the picture's dominant and accent colours, and WCAG contrast,
//! so that words on a panel coloured after the picture stay readable.

use image::{Rgb, RgbImage};

/// sRGB channel to linear light (WCAG 2 relative luminance).
fn linear(channel: u8) -> f64 {
    let c = f64::from(channel) / 255.0;
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

/// WCAG relative luminance, 0 (black) to 1 (white).
pub fn luminance(c: Rgb<u8>) -> f64 {
    0.2126 * linear(c.0[0]) + 0.7152 * linear(c.0[1]) + 0.0722 * linear(c.0[2])
}

/// WCAG contrast ratio, 1 to 21.
pub fn contrast(a: Rgb<u8>, b: Rgb<u8>) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

/// `from` moved `share` (0–1) of the way to `to`.
pub fn mix(from: Rgb<u8>, to: Rgb<u8>, share: f64) -> Rgb<u8> {
    let channel = |a: u8, b: u8| {
        (f64::from(a) + (f64::from(b) - f64::from(a)) * share)
            .round()
            .clamp(0.0, 255.0) as u8
    };
    Rgb([
        channel(from.0[0], to.0[0]),
        channel(from.0[1], to.0[1]),
        channel(from.0[2], to.0[2]),
    ])
}

pub const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
/// Near-black reads softer than pure black and still contrasts 18:1 with white.
pub const INK: Rgb<u8> = Rgb([20, 20, 24]);

/// The picture's most common colour and, when it has one, its most vivid frequent colour.
pub struct Palette {
    pub dominant: Rgb<u8>,
    pub accent: Option<Rgb<u8>>,
}

fn saturation(c: Rgb<u8>) -> f64 {
    let [r, g, b] = c.0;
    f64::from(r.max(g).max(b) - r.min(g).min(b)) / 255.0
}

/// Colours counted on a copy at most 48 pixels a side, in buckets of 32 levels per channel.
pub fn palette(picture: &RgbImage) -> Palette {
    let small = super::crop::thumbnail(picture, 48, 48);
    let mut buckets = vec![(0u32, [0u64; 3]); 512];
    for p in small.pixels() {
        let [r, g, b] = p.0;
        let i = (usize::from(r >> 5) << 6) | (usize::from(g >> 5) << 3) | usize::from(b >> 5);
        let (count, sums) = &mut buckets[i];
        *count += 1;
        for (sum, v) in sums.iter_mut().zip(p.0) {
            *sum += u64::from(v);
        }
    }
    let total: u32 = buckets.iter().map(|(n, _)| n).sum();
    let mean = |(count, sums): &(u32, [u64; 3])| {
        let n = u64::from((*count).max(1));
        Rgb(sums.map(|s| u8::try_from(s / n).unwrap_or(u8::MAX)))
    };
    let dominant = buckets
        .iter()
        .max_by_key(|(n, _)| *n)
        .map_or(Rgb([128, 128, 128]), mean);
    // Vivid, and common enough to belong to the picture rather than a stray pixel.
    let accent = buckets
        .iter()
        .filter(|(n, _)| u64::from(*n) * 50 >= u64::from(total) && *n > 0)
        .map(|b| {
            let colour = mean(b);
            (saturation(colour).powi(2) * f64::from(b.0).sqrt(), colour)
        })
        .filter(|(_, colour)| saturation(*colour) >= 0.25)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, colour)| colour);
    Palette { dominant, accent }
}

/// A background near `colour` and the ink (white or near-black) to write on it, with the
/// background moved away from the ink until their contrast is at least `target`.
pub fn readable_pair(colour: Rgb<u8>, target: f64) -> (Rgb<u8>, Rgb<u8>) {
    let ink = if contrast(colour, WHITE) >= contrast(colour, INK) {
        WHITE
    } else {
        INK
    };
    let away = if ink == WHITE { Rgb([0, 0, 0]) } else { WHITE };
    let mut background = colour;
    let mut step = 0.0;
    while contrast(background, ink) < target && step < 1.0 {
        step += 0.05;
        background = mix(colour, away, step);
    }
    (background, ink)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contrast_follows_wcag() {
        assert!((contrast(WHITE, Rgb([0, 0, 0])) - 21.0).abs() < 1e-9);
        assert!((contrast(WHITE, WHITE) - 1.0).abs() < 1e-9);
        // #777777 on white is the classic just-failing grey (4.48:1).
        let grey = contrast(Rgb([0x77, 0x77, 0x77]), WHITE);
        assert!((grey - 4.48).abs() < 0.01, "{grey}");
    }

    #[test]
    fn every_background_gets_readable_ink() {
        for v in (0..=255).step_by(15) {
            for colour in [
                Rgb([v, v, v]),
                Rgb([v, 255 - v, 40]),
                Rgb([200, v, 255 - v]),
            ] {
                let (background, ink) = readable_pair(colour, 7.0);
                assert!(contrast(background, ink) >= 7.0, "{colour:?}");
            }
        }
    }

    #[test]
    fn the_palette_finds_the_common_and_the_vivid_colour() {
        let img = RgbImage::from_fn(100, 100, |x, _| {
            if x < 80 {
                Rgb([40, 60, 90])
            } else {
                Rgb([230, 120, 20])
            }
        });
        let p = palette(&img);
        assert!(contrast(p.dominant, Rgb([40, 60, 90])) < 1.1);
        let accent = p.accent.map(|a| contrast(a, Rgb([230, 120, 20])));
        assert!(accent.is_some_and(|c| c < 1.2), "{accent:?}");
        let grey = palette(&RgbImage::from_pixel(10, 10, Rgb([128, 128, 128])));
        assert!(grey.accent.is_none());
    }
}
