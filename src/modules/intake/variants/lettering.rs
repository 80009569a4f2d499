//! Words on composed creatives: the bundled DejaVu Sans (Latin, Cyrillic, Greek and more, under
//! the Bitstream Vera licence), measured and rasterized with ab_glyph, wrapped at spaces and fitted
//! to a box by stepping the size down, then by shortening at a word.

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont, point};
use image::{Rgb, RgbImage};
use unicode_segmentation::UnicodeSegmentation;

use super::crop::Rect;
use crate::domain::shorten::shorten;

pub struct Fonts {
    pub regular: FontRef<'static>,
    pub bold: FontRef<'static>,
}

/// The bundled fonts, parsed once.
pub fn fonts() -> Result<&'static Fonts, String> {
    static FONTS: OnceLock<Option<Fonts>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            Some(Fonts {
                regular: FontRef::try_from_slice(dejavu::sans::regular()).ok()?,
                bold: FontRef::try_from_slice(dejavu::sans::bold()).ok()?,
            })
        })
        .as_ref()
        .ok_or_else(|| "the bundled font could not be read".to_owned())
}

/// Line height as a multiple of the size.
const LINE_SPACING: f32 = 1.2;

/// Text laid out for a box: its size in pixels and its lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    pub size: f32,
    pub lines: Vec<String>,
}

impl Fitted {
    pub fn line_height(&self) -> u32 {
        line_height(self.size)
    }

    pub fn height(&self) -> u32 {
        self.line_height() * u32::try_from(self.lines.len()).unwrap_or(u32::MAX)
    }
}

fn line_height(size: f32) -> u32 {
    (size * LINE_SPACING).ceil() as u32
}

/// Glyphs the font has, in order; characters it lacks (most emoji, joiners) are left out rather
/// than drawn as boxes, and line breaks are spaces.
fn glyphs(font: &FontRef<'static>, text: &str) -> Vec<GlyphId> {
    text.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .map(|c| font.glyph_id(c))
        .filter(|id| id.0 != 0)
        .collect()
}

/// Joiners, variation selectors and other zero-width format characters: they shape emoji the
/// font does not have, and alone draw nothing.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}' | '\u{2060}'..='\u{2064}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
    ) || ('\u{e0000}'..='\u{e01ef}').contains(&c)
}

/// `text` without the characters the font lacks, and with single spaces: a word made only of
/// emoji leaves no gap behind.
fn drawable(font: &FontRef<'static>, text: &str) -> String {
    text.split_whitespace()
        .map(|word| {
            word.chars()
                .filter(|&c| font.glyph_id(c).0 != 0 && !is_invisible_format(c))
                .collect::<String>()
        })
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Width in pixels of `text` on one line.
pub fn width(font: &FontRef<'static>, size: f32, text: &str) -> f32 {
    let scaled = font.as_scaled(PxScale::from(size));
    let mut x = 0.0;
    let mut previous: Option<GlyphId> = None;
    for id in glyphs(font, text) {
        if let Some(p) = previous {
            x += scaled.kern(p, id);
        }
        x += scaled.h_advance(id);
        previous = Some(id);
    }
    x
}

/// Greedy wrapping at spaces; a word wider than the line is broken between characters. Each word
/// is measured once: a line is its words plus the spaces between them.
fn wrap(font: &FontRef<'static>, size: f32, text: &str, max_width: f32) -> Vec<String> {
    let space = width(font, size, " ");
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut line_width = 0.0;
    for word in text.split_whitespace() {
        let word_width = width(font, size, word);
        if !line.is_empty() && line_width + space + word_width <= max_width {
            line.push(' ');
            line.push_str(word);
            line_width += space + word_width;
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        if word_width <= max_width {
            line = word.to_owned();
            line_width = word_width;
            continue;
        }
        line_width = 0.0;
        for grapheme in word.graphemes(true) {
            let grapheme_width = width(font, size, grapheme);
            if !line.is_empty() && line_width + grapheme_width > max_width {
                lines.push(std::mem::replace(&mut line, grapheme.to_owned()));
                line_width = grapheme_width;
            } else {
                line.push_str(grapheme);
                line_width += grapheme_width;
            }
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn fits(lines: &[String], size: f32, height: u32, max_lines: usize) -> bool {
    lines.len() <= max_lines
        && line_height(size) * u32::try_from(lines.len()).unwrap_or(u32::MAX) <= height
}

/// `text` in the largest size from `max_size` down to `min_size` at which it fits `width`×`height`
/// in at most `max_lines` lines; failing that, at `min_size`, shortened at a word (counted in
/// graphemes) until it fits. `None` when not even one character fits.
pub fn fit(
    font: &FontRef<'static>,
    text: &str,
    width: u32,
    height: u32,
    (min_size, max_size): (u32, u32),
    max_lines: usize,
) -> Option<Fitted> {
    let text = drawable(font, text);
    let text = text.as_str();
    if text.is_empty() || width == 0 || max_lines == 0 {
        return None;
    }
    let room = width as f32;
    for size in (min_size..=max_size.max(min_size)).rev() {
        let size = size as f32;
        let lines = wrap(font, size, text, room);
        if fits(&lines, size, height, max_lines) {
            return Some(Fitted { size, lines });
        }
    }
    let size = min_size as f32;
    let attempt = |keep: usize| {
        let lines = wrap(font, size, &shorten(text, keep), room);
        fits(&lines, size, height, max_lines).then_some(Fitted { size, lines })
    };
    // The longest cut that fits, by bisection: a shorter cut never needs more room.
    let (mut fitting, mut too_long) = (0, text.graphemes(true).count());
    let mut best = None;
    while too_long - fitting > 1 {
        let keep = fitting + (too_long - fitting) / 2;
        match attempt(keep) {
            Some(fitted) => {
                fitting = keep;
                best = Some(fitted);
            }
            None => too_long = keep,
        }
    }
    best
}

/// Draws one line with its left end at `x` and its top at `top`, blending `colour` over what is
/// there by each pixel's coverage; nothing is drawn outside `clip`.
pub fn draw_line(
    img: &mut RgbImage,
    font: &FontRef<'static>,
    size: f32,
    line: &str,
    (x, top): (f32, f32),
    colour: Rgb<u8>,
    clip: Rect,
) {
    let scale = PxScale::from(size);
    let scaled = font.as_scaled(scale);
    // Centre the glyphs' own height in the line's.
    let baseline = top + (line_height(size) as f32 - scaled.height()) / 2.0 + scaled.ascent();
    let mut pen = x;
    let mut previous: Option<GlyphId> = None;
    for id in glyphs(font, line) {
        if let Some(p) = previous {
            pen += scaled.kern(p, id);
        }
        let glyph = id.with_scale_and_position(scale, point(pen, baseline));
        pen += scaled.h_advance(id);
        previous = Some(id);
        let Some(outline) = font.outline_glyph(glyph) else {
            continue;
        };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            let px = bounds.min.x as i64 + i64::from(gx);
            let py = bounds.min.y as i64 + i64::from(gy);
            let inside = px >= i64::from(clip.x)
                && py >= i64::from(clip.y)
                && px < i64::from(clip.x + clip.width)
                && py < i64::from(clip.y + clip.height);
            let (Ok(px), Ok(py)) = (u32::try_from(px), u32::try_from(py)) else {
                return;
            };
            if !inside || px >= img.width() || py >= img.height() {
                return;
            }
            let c = f64::from(coverage.clamp(0.0, 1.0));
            let pixel = img.get_pixel_mut(px, py);
            *pixel = super::colour::mix(*pixel, colour, c);
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_font_covers_latin_and_cyrillic() {
        let fonts = fonts().unwrap();
        for c in ['A', 'z', 'é', 'Я', 'ж', 'Ё', '…'] {
            assert_ne!(fonts.bold.glyph_id(c).0, 0, "{c}");
            assert_ne!(fonts.regular.glyph_id(c).0, 0, "{c}");
        }
    }

    #[test]
    fn text_steps_down_in_size_before_it_is_shortened() {
        let font = &fonts().unwrap().bold;
        let roomy = fit(font, "Summer in Sochi", 400, 40, (10, 24), 1).unwrap();
        assert_eq!(roomy.size, 24.0);
        assert_eq!(roomy.lines, ["Summer in Sochi"]);
        let tight = fit(font, "Summer in Sochi", 120, 40, (10, 24), 1).unwrap();
        assert!(tight.size < 24.0 && tight.size >= 10.0, "{tight:?}");
        assert_eq!(tight.lines, ["Summer in Sochi"]);
        let cut = fit(
            font,
            "Seven nights by the sea with flights and breakfast included",
            120,
            14,
            (10, 24),
            1,
        )
        .unwrap();
        assert_eq!(cut.size, 10.0);
        assert!(cut.lines[0].ends_with('…'), "{cut:?}");
        assert!(width(font, 10.0, &cut.lines[0]) <= 120.0);
        assert!(cut.lines[0].starts_with("Seven nights"), "{cut:?}");
    }

    #[test]
    fn text_wraps_onto_lines_within_the_width() {
        let font = &fonts().unwrap().regular;
        let fitted = fit(
            font,
            "Летний отдых в Сочи со скидкой тридцать процентов",
            150,
            200,
            (12, 12),
            6,
        )
        .unwrap();
        assert!(fitted.lines.len() > 1, "{fitted:?}");
        for line in &fitted.lines {
            assert!(width(font, 12.0, line) <= 150.0, "{line}");
        }
    }

    #[test]
    fn emoji_and_combining_marks_measure_and_draw_without_panicking() {
        let fonts = fonts().unwrap();
        let family = "👨\u{200d}👩\u{200d}👧";
        let text = format!("{family} cafe\u{301} {family}{family} ok");
        let fitted = fit(&fonts.bold, &text, 60, 20, (10, 14), 1).unwrap();
        let mut img = RgbImage::from_pixel(80, 30, Rgb([0, 0, 0]));
        let clip = Rect {
            x: 0,
            y: 0,
            width: 80,
            height: 30,
        };
        for line in &fitted.lines {
            draw_line(
                &mut img,
                &fonts.bold,
                fitted.size,
                line,
                (2.0, 2.0),
                Rgb([255, 255, 255]),
                clip,
            );
        }
        assert!(img.pixels().any(|p| p.0[0] > 200), "nothing was drawn");
        // Only emoji: nothing the font has, nothing to fit; a word of emoji leaves no gap.
        assert_eq!(
            fit(&fonts.bold, &family.repeat(3), 60, 20, (10, 14), 1),
            None
        );
        let gapless = fit(
            &fonts.bold,
            &format!("Sochi {family} sea"),
            400,
            20,
            (10, 10),
            1,
        );
        assert_eq!(gapless.map(|f| f.lines), Some(vec!["Sochi sea".to_owned()]));
    }
}
