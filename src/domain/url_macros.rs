//! Macros in a target URL: `{advert_id}`, `{placement}`, `{creative_id}` and `{click_id}`, which
//! the redirect fills in for each click, URL-encoded. They may stand in the path, the query or the
//! fragment, never in the site name. Any other brace is refused at intake (a literal brace is
//! written `%7B` or `%7D`), so a typo such as `{clickid}` cannot reach a landing page unfilled.

use super::invalid::Invalid;

/// What the redirect can fill into a target URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Macro {
    /// The advert's id.
    AdvertId,
    /// The placement the card was built for; empty for the generic card or a link followed
    /// without an impression token.
    Placement,
    /// The creative the card showed; empty when not known.
    CreativeId,
    /// The click's signed id, as `rk_click` carries it.
    ClickId,
}

impl Macro {
    pub const ALL: [Self; 4] = [
        Self::AdvertId,
        Self::Placement,
        Self::CreativeId,
        Self::ClickId,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::AdvertId => "advert_id",
            Self::Placement => "placement",
            Self::CreativeId => "creative_id",
            Self::ClickId => "click_id",
        }
    }

    fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The macros as written in a URL, for `allowed`.
    pub fn written() -> Vec<String> {
        Self::ALL
            .iter()
            .map(|m| format!("{{{}}}", m.name()))
            .collect()
    }
}

/// A piece of a target URL: text sent as it is, or a macro filled in per click.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Macro(Macro),
}

/// The URL cut at its macros; one `Text` piece when it has none. `raw` is a valid target URL
/// (absolute, `scheme://authority…`).
pub fn pieces(raw: &str) -> Result<Vec<Piece>, Invalid> {
    let host_ends = raw
        .find("://")
        .map(|at| at + 3)
        .map(|start| {
            start
                + raw[start..]
                    .find(['/', '?', '#'])
                    .unwrap_or(raw.len() - start)
        })
        .unwrap_or(0);
    let mut pieces = Vec::new();
    let mut rest = raw;
    let mut at = 0;
    while let Some(open) = rest.find(['{', '}']) {
        let position = at + open;
        let tail = &rest[open..];
        let name = tail
            .strip_prefix('{')
            .and_then(|t| t.split_once('}'))
            .map(|(name, _)| name)
            .filter(|name| !name.contains('{'));
        let Some(found) = name.and_then(Macro::named) else {
            let shown: String = tail.chars().take(name.map_or(1, |n| n.len() + 2)).collect();
            return Err(Invalid::new(
                "unknown_macro",
                format!(
                    "the link contains {shown:?} at character {}, which is not a macro; the link \
                     may hold {{advert_id}}, {{placement}}, {{creative_id}} and {{click_id}}, and a \
                     literal brace is written %7B or %7D",
                    position + 1
                ),
            )
            .allowing(Macro::written()));
        };
        if position < host_ends {
            return Err(Invalid::new(
                "macro_in_host",
                format!(
                    "the macro {{{}}} stands in the site name; macros may only stand in the \
                     path, the query or the fragment",
                    found.name()
                ),
            ));
        }
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_owned()));
        }
        pieces.push(Piece::Macro(found));
        let used = open + found.name().len() + 2;
        rest = &rest[used..];
        at += used;
    }
    if !rest.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    Ok(pieces)
}

/// Whether the URL holds any macro.
pub fn has_macros(pieces: &[Piece]) -> bool {
    pieces.iter().any(|p| matches!(p, Piece::Macro(_)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_braces_is_one_piece() {
        let url = "https://example.com/a?b=c#d";
        assert_eq!(pieces(url).unwrap(), vec![Piece::Text(url.into())]);
        assert!(!has_macros(&pieces(url).unwrap()));
    }

    #[test]
    fn macros_are_cut_out_of_the_path_query_and_fragment() {
        let got =
            pieces("https://example.com/{placement}/x?a={advert_id}&c={click_id}#{creative_id}")
                .unwrap();
        assert_eq!(
            got,
            vec![
                Piece::Text("https://example.com/".into()),
                Piece::Macro(Macro::Placement),
                Piece::Text("/x?a=".into()),
                Piece::Macro(Macro::AdvertId),
                Piece::Text("&c=".into()),
                Piece::Macro(Macro::ClickId),
                Piece::Text("#".into()),
                Piece::Macro(Macro::CreativeId),
            ]
        );
        assert!(has_macros(&got));
        assert_eq!(
            pieces("https://example.com/?id={advert_id}{advert_id}")
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn unknown_or_broken_braces_are_refused_with_the_macros_allowed() {
        for (url, at) in [
            ("https://example.com/?c={clickid}", 24),
            ("https://example.com/?c={click_id", 24),
            ("https://example.com/?c=click_id}", 32),
            ("https://example.com/?c={}", 24),
            ("https://example.com/?c={{click_id}}", 24),
        ] {
            let e = pieces(url).unwrap_err();
            assert_eq!(e.code, "unknown_macro", "{url}");
            assert!(
                e.message.contains(&format!("character {at}")),
                "{url}: {}",
                e.message
            );
            assert_eq!(e.allowed.as_ref().unwrap().len(), 4);
            assert!(e.allowed.unwrap().contains(&"{click_id}".to_owned()));
        }
    }

    #[test]
    fn a_macro_in_the_site_name_is_refused() {
        let e = pieces("https://{placement}.example.com/").unwrap_err();
        assert_eq!(e.code, "macro_in_host");
        assert!(pieces("https://example.com?x={placement}").is_ok());
    }
}
