//! Placements: the standard places on a page an advert is shown in, each with its pixel size,
//! byte budget for the image and text limits (the IAB units plus a social/feed card).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// A stable snake_case name, e.g. `medium_rectangle`.
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Largest image, in bytes.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Longest title, in user-perceived characters.
    pub title_chars: usize,
    /// Longest text; 0 shows no text (e.g. a leaderboard carries its title only).
    pub text_chars: usize,
    /// What the variant's image is: the picture alone, or a finished creative with the words.
    #[serde(default)]
    pub layout: Layout,
}

/// How a placement's image is made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// The picture alone, cropped to the placement's ratio, for frontends that set their own text.
    #[default]
    Crop,
    /// One finished image: the picture beside or above a panel with the title, the text where the
    /// placement has room for it, and the call to action.
    Composed,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crop => "crop",
            Self::Composed => "composed",
        }
    }
}

/// Where an advert's variant for a placement stands. Stored as its `as_str` text; queries bind
/// and read the enum itself (`platform::db::stored`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    diesel::expression::AsExpression,
    diesel::deserialize::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
#[serde(rename_all = "snake_case")]
pub enum VariantStatus {
    /// Not rendered yet, or the catalogue entry or the advert's title, text or image changed
    /// since it was.
    Pending,
    /// Rendered: an image of the placement's exact size within its byte budget.
    Ready,
    /// The source cannot fill the placement (too small for it); `reason` says why.
    Unsuitable,
}

impl VariantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Unsuitable => "unsuitable",
        }
    }

    /// A status as stored, exactly as `as_str` wrote it.
    pub fn from_stored(raw: &str) -> Option<Self> {
        match raw {
            "pending" => Some(Self::Pending),
            "ready" => Some(Self::Ready),
            "unsuitable" => Some(Self::Unsuitable),
            _ => None,
        }
    }
}

/// 150 KB, the common guideline for a display ad's initial load.
pub fn default_max_bytes() -> usize {
    150 * 1000
}

impl Placement {
    fn new(name: &str, width: u32, height: u32, title_chars: usize, text_chars: usize) -> Self {
        Self {
            name: name.to_owned(),
            width,
            height,
            max_bytes: default_max_bytes(),
            title_chars,
            text_chars,
            layout: Layout::Crop,
        }
    }

    fn composed(mut self) -> Self {
        self.layout = Layout::Composed;
        self
    }

    /// The catalogue shipped by default: the banners and the half page are composed (a photo
    /// cropped to 8:1 would be a sliver of it), the boxes and the social card are crops.
    pub fn standard_catalogue() -> Vec<Placement> {
        vec![
            Self::new("medium_rectangle", 300, 250, 30, 90),
            Self::new("large_rectangle", 336, 280, 30, 100),
            Self::new("leaderboard", 728, 90, 40, 0).composed(),
            Self::new("half_page", 300, 600, 40, 150).composed(),
            Self::new("mobile_banner", 320, 50, 25, 0).composed(),
            Self::new("square", 250, 250, 25, 60),
            Self::new("social_card", 1200, 628, 60, 125),
        ]
    }

    /// Problems with a catalogue, each naming the placement.
    pub fn problems(catalogue: &[Placement]) -> Vec<String> {
        let mut problems = Vec::new();
        if catalogue.len() > MAX_PLACEMENTS {
            problems.push(format!(
                "serving.placements: at most {MAX_PLACEMENTS} placements"
            ));
        }
        for (i, p) in catalogue.iter().enumerate() {
            let valid_name = !p.name.is_empty()
                && p.name.len() <= 40
                && p.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid_name {
                problems.push(format!(
                    "serving.placements[{i}].name: {:?} must be snake_case",
                    p.name
                ));
            }
            if catalogue[..i].iter().any(|q| q.name == p.name) {
                problems.push(format!(
                    "serving.placements[{i}].name: {:?} appears twice",
                    p.name
                ));
            }
            if !(1..=4000).contains(&p.width) || !(1..=4000).contains(&p.height) {
                problems.push(format!(
                    "serving.placements[{i}] ({}): width and height must be 1 to 4000",
                    p.name
                ));
            }
            if p.max_bytes < 1000 {
                problems.push(format!(
                    "serving.placements[{i}] ({}): max_bytes must be at least 1000",
                    p.name
                ));
            }
            if p.title_chars == 0 {
                problems.push(format!(
                    "serving.placements[{i}] ({}): title_chars must be at least 1",
                    p.name
                ));
            }
        }
        problems
    }

    /// A stable fingerprint of what a variant depends on, so a changed catalogue entry can be
    /// told from an unchanged one.
    pub fn fingerprint(&self) -> String {
        let base = format!(
            "{}x{}:{}:{}:{}",
            self.width, self.height, self.max_bytes, self.title_chars, self.text_chars
        );
        // Crop variants keep the fingerprint they had before layouts existed.
        match self.layout {
            Layout::Crop => base,
            Layout::Composed => format!("{base}:composed"),
        }
    }
}

/// The configured catalogue, shared by the modules that generate and serve variants.
#[derive(Debug, Clone)]
pub struct PlacementCatalogue(pub std::sync::Arc<Vec<Placement>>);

impl PlacementCatalogue {
    pub fn placements(&self) -> &[Placement] {
        &self.0
    }

    /// The position of a placement (by name or `WxH` size) in the catalogue.
    pub fn index_of(&self, name_or_size: &str) -> Option<usize> {
        let found = find(&self.0, name_or_size)?;
        self.0.iter().position(|p| p.name == found.name)
    }
}

/// Most placements a catalogue may hold (serving keeps them in a 64-bit mask per advert).
pub const MAX_PLACEMENTS: usize = 64;

/// Finds a placement by name, or by size written `300x250`.
pub fn find<'a>(catalogue: &'a [Placement], name_or_size: &str) -> Option<&'a Placement> {
    let wanted = name_or_size.trim().to_ascii_lowercase();
    if let Some(p) = catalogue.iter().find(|p| p.name == wanted) {
        return Some(p);
    }
    let (w, h) = wanted.split_once(['x', '×'])?;
    let (w, h) = (w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?);
    catalogue.iter().find(|p| p.width == w && p.height == h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_catalogue_is_valid_and_has_the_iab_units() {
        let catalogue = Placement::standard_catalogue();
        assert!(Placement::problems(&catalogue).is_empty());
        for (name, w, h) in [
            ("medium_rectangle", 300, 250),
            ("large_rectangle", 336, 280),
            ("leaderboard", 728, 90),
            ("half_page", 300, 600),
            ("mobile_banner", 320, 50),
            ("square", 250, 250),
            ("social_card", 1200, 628),
        ] {
            let p = find(&catalogue, name).map(|p| (p.width, p.height));
            assert_eq!(p, Some((w, h)), "{name}");
            assert_eq!(
                find(&catalogue, &format!("{w}x{h}")).map(|p| p.name.as_str()),
                Some(name)
            );
        }
        assert_eq!(
            find(&catalogue, "leaderboard").map(|p| p.text_chars),
            Some(0)
        );
        assert!(find(&catalogue, "999x999").is_none());
        assert!(find(&catalogue, "skyscraper").is_none());
    }

    #[test]
    fn catalogue_problems_name_the_placement() {
        let mut catalogue = Placement::standard_catalogue();
        catalogue.push(Placement::new("Bad Name", 0, 10, 0, 0));
        catalogue.push(Placement::new("square", 10, 10, 5, 5));
        let problems = Placement::problems(&catalogue).join("\n");
        assert!(
            problems.contains("serving.placements[7].name"),
            "{problems}"
        );
        assert!(problems.contains("width and height"), "{problems}");
        assert!(problems.contains("\"square\" appears twice"), "{problems}");
    }
}
