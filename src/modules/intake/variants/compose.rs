//! Composed creatives: one image of the placement's exact size with the picture (content-aware
//! crop to a frame of its own) beside (wide units) or above (tall and box units) a panel coloured
//! after the picture, carrying the title, the text where the placement has room, and a button
//! with the call to action.

use ab_glyph::FontRef;
use image::{Rgb, RgbImage};

use crate::domain::Placement;

use super::Words;
use super::colour::{contrast, palette, readable_pair};
use super::crop::{Plan, Rect, Saliency, cut_and_fit, plan_with};
use super::lettering::{Fitted, draw_line, fit, fonts, width};
use crate::domain::shorten::shorten;

/// The contrast words are drawn at: WCAG AA asks 4.5:1; the margin keeps small glyphs' soft edges
/// and lossy encoding above it.
pub const TARGET_CONTRAST: f64 = 7.0;
/// A button must stand out from the panel at least this much, or it takes the panel's ink.
const BUTTON_SEPARATION: f64 = 1.5;
/// Width over height from which a unit is a banner (picture always beside the panel).
const BANNER_RATIO: f64 = 3.0;
/// Width over height up to which a unit is tall (picture always above the panel).
const TALL_RATIO: f64 = 0.75;
/// Panels lower than this set their words in a row, taller ones in a column.
const ROW_PANEL_HEIGHT: u32 = 120;

/// A rendered composition and where its parts are, in the creative's pixels.
#[derive(Debug)]
pub struct Composition {
    pub image: RgbImage,
    /// The part of the source the picture shows, in source pixels.
    pub crop: Rect,
    pub picture: Rect,
    pub panel: Rect,
    /// Where the title's lines are.
    pub title: Option<Rect>,
    pub text: Option<Rect>,
    pub button: Option<Rect>,
}

/// The picture's frame and the panel, for a `w`×`h` unit and a source of `source_ratio`: banners
/// put the picture beside the panel, tall units above it, boxes whichever frame is nearer the
/// source's shape. The frame follows the source's shape within bounds, so it keeps much of the
/// picture and leaves the panel room.
pub fn frames(w: u32, h: u32, source_ratio: f64) -> (Rect, Rect, bool) {
    let ratio = f64::from(w) / f64::from(h);
    if ratio >= BANNER_RATIO {
        return beside(w, h, source_ratio, (1.0, 0.4));
    }
    if ratio <= TALL_RATIO {
        return above(w, h, source_ratio, (0.4, 0.6));
    }
    let a = beside(w, h, source_ratio, (0.5, 0.6));
    let b = above(w, h, source_ratio, (0.5, 0.62));
    let misfit = |frame: &Rect| {
        (f64::from(frame.width) / f64::from(frame.height.max(1)) / source_ratio)
            .ln()
            .abs()
    };
    if misfit(&a.0) < misfit(&b.0) { a } else { b }
}

/// The picture at the left: at least `min_share` of the height wide, at most `max_share` of the
/// width.
fn beside(
    w: u32,
    h: u32,
    source_ratio: f64,
    (min_share, max_share): (f64, f64),
) -> (Rect, Rect, bool) {
    let (wf, hf) = (f64::from(w), f64::from(h));
    {
        let max_w = (wf * max_share).floor();
        let min_w = (hf * min_share).min(max_w);
        let pic_w = (hf * source_ratio).clamp(min_w, max_w).round() as u32;
        (
            Rect {
                x: 0,
                y: 0,
                width: pic_w,
                height: h,
            },
            Rect {
                x: pic_w,
                y: 0,
                width: w - pic_w,
                height: h,
            },
            true,
        )
    }
}

/// The picture on top, between `lo` and `hi` of the height.
fn above(w: u32, h: u32, source_ratio: f64, (lo, hi): (f64, f64)) -> (Rect, Rect, bool) {
    let (wf, hf) = (f64::from(w), f64::from(h));
    {
        let pic_h = (wf / source_ratio).clamp(hf * lo, hf * hi).round() as u32;
        (
            Rect {
                x: 0,
                y: 0,
                width: w,
                height: pic_h,
            },
            Rect {
                x: 0,
                y: pic_h,
                width: w,
                height: h - pic_h,
            },
            false,
        )
    }
}

fn fill(img: &mut RgbImage, r: Rect, colour: Rgb<u8>) {
    for y in r.y..(r.y + r.height).min(img.height()) {
        for x in r.x..(r.x + r.width).min(img.width()) {
            img.put_pixel(x, y, colour);
        }
    }
}

fn shrink(r: Rect, pad: u32) -> Rect {
    Rect {
        x: r.x + pad,
        y: r.y + pad,
        width: r.width.saturating_sub(2 * pad),
        height: r.height.saturating_sub(2 * pad),
    }
}

fn px(v: f64) -> u32 {
    v.round().max(0.0) as u32
}

/// A button's label fitted so that the button is at most `max_w`×`max_h`; the button's size.
fn button(
    font: &FontRef<'static>,
    label: &str,
    max_w: u32,
    max_h: u32,
    (min_size, max_size): (u32, u32),
) -> Option<(Fitted, u32, u32)> {
    let padding = |size: f32| (px(f64::from(size) * 0.8), px(f64::from(size) * 0.35));
    for size in (min_size..=max_size.max(min_size)).rev() {
        let (hp, vp) = padding(size as f32);
        let Some(fitted) = fit(
            font,
            label,
            max_w.saturating_sub(2 * hp),
            max_h.saturating_sub(2 * vp),
            (size, size),
            1,
        ) else {
            continue;
        };
        // `fit` shortens at the smallest size only; larger sizes must hold the whole label.
        let whole = label.split_whitespace().collect::<Vec<_>>().join(" ");
        if fitted.lines.concat() == whole || size == min_size {
            let label_w = px(f64::from(width(font, fitted.size, &fitted.lines[0])));
            return Some((fitted.clone(), label_w + 2 * hp, fitted.height() + 2 * vp));
        }
    }
    None
}

/// Draws fitted lines from `top` in `area`, every line starting at `left`.
fn draw_lines(
    img: &mut RgbImage,
    font: &FontRef<'static>,
    fitted: &Fitted,
    (left, top): (u32, u32),
    ink: Rgb<u8>,
    area: Rect,
) -> Rect {
    let lh = fitted.line_height();
    for (i, line) in fitted.lines.iter().enumerate() {
        let y = top + lh * u32::try_from(i).unwrap_or(0);
        draw_line(
            img,
            font,
            fitted.size,
            line,
            (left as f32, y as f32),
            ink,
            area,
        );
    }
    Rect {
        x: left,
        y: top,
        width: area.width.saturating_sub(left - area.x),
        height: fitted.height().min(area.height),
    }
}

/// The part of the source a composed placement's picture shows, or why it cannot fill its frame.
pub fn source_region(
    saliency: &Saliency,
    source: (u32, u32),
    placement: &Placement,
) -> Result<(Rect, Rect, Rect, bool), String> {
    let ratio = f64::from(source.0) / f64::from(source.1.max(1));
    let (picture, panel, wide) = frames(placement.width, placement.height, ratio);
    match plan_with(saliency, picture.width, picture.height) {
        Plan::Crop(rect) => Ok((rect, picture, panel, wide)),
        Plan::Unsuitable(reason) => Err(reason),
    }
}

/// Renders `placement` as a composed creative, or says why the picture cannot fill its frame.
pub fn compose(
    source: &RgbImage,
    saliency: &Saliency,
    placement: &Placement,
    words: &Words<'_>,
) -> Result<Composition, String> {
    let fonts = fonts()?;
    let (w, h) = (placement.width, placement.height);
    let (crop, picture, panel, _) = source_region(saliency, source.dimensions(), placement)?;
    let pictured = cut_and_fit(source, crop, picture.width, picture.height);
    let mut img = RgbImage::new(w, h);
    image::imageops::replace(
        &mut img,
        &pictured,
        i64::from(picture.x),
        i64::from(picture.y),
    );

    let colours = palette(&pictured);
    let (panel_bg, ink) = readable_pair(colours.dominant, TARGET_CONTRAST);
    let (button_bg, button_ink) = match colours.accent.map(|a| readable_pair(a, TARGET_CONTRAST)) {
        Some((bg, fg)) if contrast(bg, panel_bg) >= BUTTON_SEPARATION => (bg, fg),
        _ => (ink, panel_bg),
    };
    fill(&mut img, panel, panel_bg);

    let title = shorten(words.title, placement.title_chars);
    let text = shorten(words.text, placement.text_chars);
    // A short panel sets its words in a row (title, then the button at the right); a taller one
    // in a column (title, text, then the button at the bottom).
    let (hf, wf) = (f64::from(panel.height), f64::from(panel.width));
    let mut out = Composition {
        image: RgbImage::new(0, 0),
        crop,
        picture,
        panel,
        title: None,
        text: None,
        button: None,
    };
    if panel.height < ROW_PANEL_HEIGHT {
        let inner = shrink(panel, (h / 10).max(4));
        let gap = (h / 10).max(4);
        let cta_size = (9, px((hf * 0.2).clamp(10.0, 18.0)));
        if let Some((label, bw, bh)) = button(
            &fonts.bold,
            words.cta,
            inner.width * 2 / 5,
            inner.height,
            cta_size,
        ) {
            let b = Rect {
                x: inner.x + inner.width - bw,
                y: inner.y + (inner.height - bh) / 2,
                width: bw,
                height: bh,
            };
            draw_button(&mut img, &fonts.bold, &label, b, button_bg, button_ink);
            out.button = Some(b);
        }
        let words_w = out
            .button
            .map_or(inner.width, |b| (b.x - inner.x).saturating_sub(gap));
        let with_text = !text.is_empty() && inner.height >= 56;
        let title_h = if with_text {
            inner.height * 11 / 20
        } else {
            inner.height
        };
        let title_sizes = (px((hf * 0.16).clamp(9.0, 12.0)), px((hf * 0.34).min(30.0)));
        if let Some(fitted) = fit(&fonts.bold, &title, words_w, title_h, title_sizes, 2) {
            let area = Rect {
                width: words_w,
                ..inner
            };
            let top = if with_text {
                inner.y
            } else {
                inner.y + (inner.height - fitted.height()) / 2
            };
            out.title = Some(draw_lines(
                &mut img,
                &fonts.bold,
                &fitted,
                (inner.x, top),
                ink,
                area,
            ));
        }
        if with_text {
            let top = out.title.map_or(inner.y, |t| t.y + t.height + 2);
            let area = Rect {
                x: inner.x,
                y: top,
                width: words_w,
                height: (inner.y + inner.height).saturating_sub(top),
            };
            let text_sizes = (11, px((hf * 0.16).clamp(11.0, 14.0)));
            out.text = draw_text(&mut img, &fonts.regular, &text, area, text_sizes, ink);
        }
    } else {
        let pad = (panel.width.min(panel.height) / 20).max(6);
        let inner = shrink(panel, pad);
        let cta_size = (10, px((wf * 0.055).clamp(11.0, 22.0)));
        let mut words_h = inner.height;
        if let Some((label, bw, bh)) = button(
            &fonts.bold,
            words.cta,
            inner.width,
            // At least room for the smallest label.
            (inner.height * 3 / 10).max(22),
            cta_size,
        ) {
            let b = Rect {
                x: inner.x,
                y: inner.y + inner.height - bh,
                width: bw,
                height: bh,
            };
            draw_button(&mut img, &fonts.bold, &label, b, button_bg, button_ink);
            out.button = Some(b);
            words_h = inner.height.saturating_sub(bh + pad / 2);
        }
        let with_text = !text.is_empty();
        let title_h = if with_text { words_h * 3 / 5 } else { words_h };
        let title_sizes = (12, px((wf * 0.09).clamp(14.0, 36.0)));
        let area = Rect {
            height: title_h,
            ..inner
        };
        if let Some(fitted) = fit(&fonts.bold, &title, inner.width, title_h, title_sizes, 3) {
            out.title = Some(draw_lines(
                &mut img,
                &fonts.bold,
                &fitted,
                (inner.x, inner.y),
                ink,
                area,
            ));
        }
        if with_text {
            let top = out.title.map_or(inner.y, |t| t.y + t.height + pad / 2);
            let area = Rect {
                x: inner.x,
                y: top,
                width: inner.width,
                height: (inner.y + words_h).saturating_sub(top),
            };
            let text_sizes = (11, px((wf * 0.05).clamp(11.0, 20.0)));
            out.text = draw_text(&mut img, &fonts.regular, &text, area, text_sizes, ink);
        }
    }
    out.image = img;
    Ok(out)
}

fn draw_text(
    img: &mut RgbImage,
    font: &FontRef<'static>,
    text: &str,
    area: Rect,
    sizes: (u32, u32),
    ink: Rgb<u8>,
) -> Option<Rect> {
    // A text with room for less than two lines would be a stub: the title carries the advert.
    let min_size = sizes.0 as f32;
    if area.height < 2 * (min_size * 1.2).ceil() as u32 {
        return None;
    }
    let fitted = fit(font, text, area.width, area.height, sizes, usize::MAX)?;
    Some(draw_lines(img, font, &fitted, (area.x, area.y), ink, area))
}

fn draw_button(
    img: &mut RgbImage,
    font: &FontRef<'static>,
    label: &Fitted,
    at: Rect,
    background: Rgb<u8>,
    ink: Rgb<u8>,
) {
    fill(img, at, background);
    let Some(line) = label.lines.first() else {
        return;
    };
    let label_w = width(font, label.size, line);
    let left = at.x as f32 + (at.width as f32 - label_w) / 2.0;
    let top = at.y as f32 + (at.height as f32 - label.line_height() as f32) / 2.0;
    draw_line(img, font, label.size, line, (left, top), ink, at);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(r: Rect) -> (u32, u32) {
        (r.width, r.height)
    }

    #[test]
    fn wide_units_put_the_picture_beside_the_panel_and_follow_the_source_shape() {
        // A 16:9 photo keeps its shape in a 728×90 leaderboard; a portrait gets a square.
        let (picture, panel, wide) = frames(728, 90, 16.0 / 9.0);
        assert!(wide);
        assert_eq!(size(picture), (160, 90));
        assert_eq!((panel.x, size(panel)), (160, (568, 90)));
        assert_eq!(size(frames(728, 90, 9.0 / 16.0).0), (90, 90));
        // Never more than 40% of the width, so the words keep their room.
        assert_eq!(size(frames(320, 50, 8.0).0), (128, 50));
    }

    #[test]
    fn tall_and_box_units_put_the_picture_above_the_panel() {
        let (picture, panel, wide) = frames(300, 600, 16.0 / 9.0);
        assert!(!wide);
        assert_eq!(size(picture), (300, 240));
        assert_eq!((panel.y, size(panel)), (240, (300, 360)));
        assert_eq!(size(frames(300, 600, 9.0 / 16.0).0), (300, 360));
        let (picture, panel, wide) = frames(300, 250, 16.0 / 9.0);
        assert!(!wide);
        assert_eq!(size(picture), (300, 155));
        assert_eq!(panel.height, 95);
        // A portrait keeps its shape better beside the panel of a box.
        let (picture, _, wide) = frames(300, 250, 9.0 / 16.0);
        assert!(wide);
        assert_eq!(size(picture), (141, 250));
    }
}
