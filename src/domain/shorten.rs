//! Shortening a title or text to a placement's limit, counted in user-perceived characters
//! (grapheme clusters), cut at a word boundary with an ellipsis.

use unicode_segmentation::UnicodeSegmentation;

const ELLIPSIS: &str = "…";

/// Characters trimmed from the end of a cut before the ellipsis goes on.
fn is_trailing_junk(grapheme: &str) -> bool {
    grapheme.chars().all(|c| {
        c.is_whitespace() || matches!(c, ',' | ';' | ':' | '-' | '–' | '—' | '(' | '«' | '"')
    })
}

/// `text` itself when it fits in `max` graphemes; otherwise its longest prefix that ends at a word
/// boundary and leaves room for "…" (or a hard cut when the first word alone is too long).
pub fn shorten(text: &str, max: usize) -> String {
    let graphemes: Vec<&str> = text.graphemes(true).collect();
    if graphemes.len() <= max {
        return text.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let room = max - 1;
    // The last boundary (a space) within the room, not so early that most of the room is lost.
    let boundary = (1..=room)
        .rev()
        .find(|&i| {
            graphemes
                .get(i)
                .is_some_and(|g| g.chars().all(char::is_whitespace))
        })
        .filter(|&i| i * 2 >= room);
    let mut end = boundary.unwrap_or(room);
    while end > 0 && is_trailing_junk(graphemes[end - 1]) {
        end -= 1;
    }
    let mut out: String = graphemes[..end].concat();
    out.push_str(ELLIPSIS);
    out
}

/// The number of user-perceived characters.
pub fn grapheme_len(text: &str) -> usize {
    text.graphemes(true).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_fits_is_unchanged() {
        assert_eq!(shorten("Summer in Sochi", 15), "Summer in Sochi");
        assert_eq!(shorten("", 5), "");
    }

    #[test]
    fn english_is_cut_at_a_word_with_an_ellipsis() {
        let out = shorten("Seven nights by the sea, flights included", 25);
        assert_eq!(out, "Seven nights by the sea…");
        assert!(grapheme_len(&out) <= 25);
    }

    #[test]
    fn russian_is_counted_in_characters_not_bytes() {
        let out = shorten("Летний отдых в Сочи со скидкой тридцать процентов", 20);
        assert_eq!(out, "Летний отдых в Сочи…");
        assert_eq!(grapheme_len(&out), 20);
    }

    #[test]
    fn emoji_and_combining_marks_count_as_one_character_each() {
        // A family emoji is several code points joined; "é" here is e + a combining accent.
        let family = "👨\u{200d}👩\u{200d}👧";
        let text = format!("{family}{family} cafe\u{301} du monde ouvert");
        assert_eq!(grapheme_len(&text), 23);
        let out = shorten(&text, 10);
        assert_eq!(out, format!("{family}{family} cafe\u{301}…"));
        assert_eq!(grapheme_len(&out), 8);
        // A cut never splits a cluster.
        let hard = shorten(&family.repeat(6), 4);
        assert_eq!(hard, format!("{}…", family.repeat(3)));
    }

    #[test]
    fn a_single_long_word_is_cut_hard() {
        assert_eq!(shorten("Supercalifragilistic", 8), "Superca…");
    }

    #[test]
    fn trailing_punctuation_goes_before_the_ellipsis() {
        assert_eq!(
            shorten("Fresh, fast, cheap: pizza tonight", 13),
            "Fresh, fast…"
        );
    }

    #[test]
    fn a_limit_of_zero_leaves_nothing() {
        assert_eq!(shorten("anything", 0), "");
    }
}
