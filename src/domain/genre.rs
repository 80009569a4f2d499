//! Advert genres: the closed set customers file adverts under, and the forgiving parser that
//! maps what people actually type (English or Russian, any case, synonyms) onto it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the fixed advert genres.
///
/// Serialises as its canonical snake_case name; deserialises through [`Genre::parse`] so
/// that JSON clients get the same synonyms and the same error message as form input.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case", try_from = "String")]
#[schema(
    example = "travel",
    description = "One of 15 fixed genres, always answered by its canonical name. Input is trimmed \
                   and case-insensitive and also accepts English synonyms and Russian names \
                   (\"cars\" and \"Автомобили\" are `automotive`)."
)]
pub enum Genre {
    Automotive,
    Beauty,
    Education,
    Electronics,
    Entertainment,
    Fashion,
    Finance,
    Food,
    Games,
    Health,
    Home,
    RealEstate,
    Sports,
    Travel,
    Other,
}

/// The input matched no genre name or synonym.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown genre {input:?}; accepted values: {accepted}")]
pub struct UnknownGenre {
    pub input: String,
    pub accepted: String,
}

impl Genre {
    pub const ALL: [Genre; 15] = [
        Genre::Automotive,
        Genre::Beauty,
        Genre::Education,
        Genre::Electronics,
        Genre::Entertainment,
        Genre::Fashion,
        Genre::Finance,
        Genre::Food,
        Genre::Games,
        Genre::Health,
        Genre::Home,
        Genre::RealEstate,
        Genre::Sports,
        Genre::Travel,
        Genre::Other,
    ];

    /// The canonical name: what is stored, serialised and shown in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Genre::Automotive => "automotive",
            Genre::Beauty => "beauty",
            Genre::Education => "education",
            Genre::Electronics => "electronics",
            Genre::Entertainment => "entertainment",
            Genre::Fashion => "fashion",
            Genre::Finance => "finance",
            Genre::Food => "food",
            Genre::Games => "games",
            Genre::Health => "health",
            Genre::Home => "home",
            Genre::RealEstate => "real_estate",
            Genre::Sports => "sports",
            Genre::Travel => "travel",
            Genre::Other => "other",
        }
    }

    pub fn label_en(self) -> &'static str {
        match self {
            Genre::Automotive => "Automotive",
            Genre::Beauty => "Beauty",
            Genre::Education => "Education",
            Genre::Electronics => "Electronics",
            Genre::Entertainment => "Entertainment",
            Genre::Fashion => "Fashion",
            Genre::Finance => "Finance",
            Genre::Food => "Food",
            Genre::Games => "Games",
            Genre::Health => "Health",
            Genre::Home => "Home and garden",
            Genre::RealEstate => "Real estate",
            Genre::Sports => "Sports",
            Genre::Travel => "Travel",
            Genre::Other => "Other",
        }
    }

    pub fn label_ru(self) -> &'static str {
        match self {
            Genre::Automotive => "Автомобили",
            Genre::Beauty => "Красота",
            Genre::Education => "Образование",
            Genre::Electronics => "Электроника",
            Genre::Entertainment => "Развлечения",
            Genre::Fashion => "Мода",
            Genre::Finance => "Финансы",
            Genre::Food => "Еда",
            Genre::Games => "Игры",
            Genre::Health => "Здоровье",
            Genre::Home => "Дом и сад",
            Genre::RealEstate => "Недвижимость",
            Genre::Sports => "Спорт",
            Genre::Travel => "Путешествия",
            Genre::Other => "Другое",
        }
    }

    /// Accepts canonical names, labels and synonyms in English and Russian, ignoring case,
    /// surrounding whitespace, `ё`/`е` and the choice between spaces, `-` and `_`.
    pub fn parse(input: &str) -> Result<Genre, UnknownGenre> {
        let find = |key: &str| {
            SYNONYMS
                .binary_search_by(|(name, _)| (*name).cmp(key))
                .ok()
                .map(|index| SYNONYMS[index].1)
        };
        // Every key is normalised already, so a key as it is (the usual request: a canonical
        // name) is found without normalising a copy of it.
        find(input)
            .or_else(|| find(&normalize(input)))
            .ok_or_else(|| UnknownGenre {
                input: input.to_owned(),
                accepted: Genre::accepted(),
            })
    }

    /// Canonical names joined by ", ", so an error can tell the customer what would work.
    pub fn accepted() -> String {
        Genre::ALL
            .iter()
            .map(|genre| genre.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Genre {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` rather than `write_str` so width and alignment flags work in tables and logs.
        f.pad(self.as_str())
    }
}

impl FromStr for Genre {
    type Err = UnknownGenre;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Genre::parse(s)
    }
}

impl TryFrom<String> for Genre {
    type Error = UnknownGenre;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Genre::parse(&value)
    }
}

/// Brings input to the form the table keys are written in, so the table needs one entry per
/// word rather than one per spelling.
fn normalize(input: &str) -> String {
    let mut key = String::with_capacity(input.len());
    let mut in_separator = false;
    for c in input.trim().chars() {
        if c.is_whitespace() || c == '-' || c == '_' {
            if !in_separator {
                key.push('_');
            }
            in_separator = true;
            continue;
        }
        in_separator = false;
        for lower in c.to_lowercase() {
            // Russian writers drop the diaeresis freely ("жилье" / "жильё"); both must match.
            key.push(if lower == 'ё' { 'е' } else { lower });
        }
    }
    key
}

/// Every accepted spelling, already normalised. Kept sorted by byte order for binary search;
/// the tests check the order, that keys are normalised and that every canonical name and label
/// is present.
static SYNONYMS: &[(&str, Genre)] = &[
    ("apartment", Genre::RealEstate),
    ("apartments", Genre::RealEstate),
    ("apparel", Genre::Fashion),
    ("auto", Genre::Automotive),
    ("automobile", Genre::Automotive),
    ("automobiles", Genre::Automotive),
    ("automotive", Genre::Automotive),
    ("autos", Genre::Automotive),
    ("bank", Genre::Finance),
    ("banking", Genre::Finance),
    ("banks", Genre::Finance),
    ("beauty", Genre::Beauty),
    ("car", Genre::Automotive),
    ("cars", Genre::Automotive),
    ("cinema", Genre::Entertainment),
    ("clothes", Genre::Fashion),
    ("clothing", Genre::Fashion),
    ("computer", Genre::Electronics),
    ("computers", Genre::Electronics),
    ("cooking", Genre::Food),
    ("cosmetic", Genre::Beauty),
    ("cosmetics", Genre::Beauty),
    ("course", Genre::Education),
    ("courses", Genre::Education),
    ("crypto", Genre::Finance),
    ("diy", Genre::Home),
    ("drink", Genre::Food),
    ("drinks", Genre::Food),
    ("education", Genre::Education),
    ("educational", Genre::Education),
    ("electronic", Genre::Electronics),
    ("electronics", Genre::Electronics),
    ("entertainment", Genre::Entertainment),
    ("event", Genre::Entertainment),
    ("events", Genre::Entertainment),
    ("fashion", Genre::Fashion),
    ("film", Genre::Entertainment),
    ("films", Genre::Entertainment),
    ("finance", Genre::Finance),
    ("finances", Genre::Finance),
    ("financial", Genre::Finance),
    ("fitness", Genre::Health),
    ("flat", Genre::RealEstate),
    ("flats", Genre::RealEstate),
    ("flight", Genre::Travel),
    ("flights", Genre::Travel),
    ("food", Genre::Food),
    ("foods", Genre::Food),
    ("football", Genre::Sports),
    ("furniture", Genre::Home),
    ("gadget", Genre::Electronics),
    ("gadgets", Genre::Electronics),
    ("game", Genre::Games),
    ("games", Genre::Games),
    ("gaming", Genre::Games),
    ("garden", Genre::Home),
    ("general", Genre::Other),
    ("groceries", Genre::Food),
    ("grocery", Genre::Food),
    ("health", Genre::Health),
    ("healthcare", Genre::Health),
    ("home", Genre::Home),
    ("home_&_garden", Genre::Home),
    ("home_and_garden", Genre::Home),
    ("homes", Genre::RealEstate),
    ("hotel", Genre::Travel),
    ("hotels", Genre::Travel),
    ("household", Genre::Home),
    ("housing", Genre::RealEstate),
    ("insurance", Genre::Finance),
    ("investing", Genre::Finance),
    ("investment", Genre::Finance),
    ("investments", Genre::Finance),
    ("learning", Genre::Education),
    ("loan", Genre::Finance),
    ("loans", Genre::Finance),
    ("make_up", Genre::Beauty),
    ("makeup", Genre::Beauty),
    ("medical", Genre::Health),
    ("medicine", Genre::Health),
    ("medicines", Genre::Health),
    ("misc", Genre::Other),
    ("miscellaneous", Genre::Other),
    ("money", Genre::Finance),
    ("motor", Genre::Automotive),
    ("motors", Genre::Automotive),
    ("movie", Genre::Entertainment),
    ("movies", Genre::Entertainment),
    ("music", Genre::Entertainment),
    ("other", Genre::Other),
    ("outdoor", Genre::Sports),
    ("outdoors", Genre::Sports),
    ("pharmacies", Genre::Health),
    ("pharmacy", Genre::Health),
    ("phone", Genre::Electronics),
    ("phones", Genre::Electronics),
    ("properties", Genre::RealEstate),
    ("property", Genre::RealEstate),
    ("real_estate", Genre::RealEstate),
    ("realty", Genre::RealEstate),
    ("recipe", Genre::Food),
    ("recipes", Genre::Food),
    ("restaurant", Genre::Food),
    ("restaurants", Genre::Food),
    ("school", Genre::Education),
    ("schools", Genre::Education),
    ("shoe", Genre::Fashion),
    ("shoes", Genre::Fashion),
    ("show", Genre::Entertainment),
    ("shows", Genre::Entertainment),
    ("skin_care", Genre::Beauty),
    ("skincare", Genre::Beauty),
    ("smartphone", Genre::Electronics),
    ("smartphones", Genre::Electronics),
    ("soccer", Genre::Sports),
    ("sport", Genre::Sports),
    ("sports", Genre::Sports),
    ("style", Genre::Fashion),
    ("tech", Genre::Electronics),
    ("technologies", Genre::Electronics),
    ("technology", Genre::Electronics),
    ("tourism", Genre::Travel),
    ("training", Genre::Education),
    ("trainings", Genre::Education),
    ("travel", Genre::Travel),
    ("traveling", Genre::Travel),
    ("travelling", Genre::Travel),
    ("travels", Genre::Travel),
    ("trip", Genre::Travel),
    ("trips", Genre::Travel),
    ("vacation", Genre::Travel),
    ("vacations", Genre::Travel),
    ("vehicle", Genre::Automotive),
    ("vehicles", Genre::Automotive),
    ("video_game", Genre::Games),
    ("video_games", Genre::Games),
    ("videogame", Genre::Games),
    ("videogames", Genre::Games),
    ("wellness", Genre::Health),
    ("авиабилет", Genre::Travel),
    ("авиабилеты", Genre::Travel),
    ("авто", Genre::Automotive),
    ("автомобили", Genre::Automotive),
    ("автомобиль", Genre::Automotive),
    ("автомобильная", Genre::Automotive),
    ("автомобильное", Genre::Automotive),
    ("автомобильные", Genre::Automotive),
    ("автомобильный", Genre::Automotive),
    ("автотовары", Genre::Automotive),
    ("аксессуары", Genre::Fashion),
    ("аптека", Genre::Health),
    ("аптеки", Genre::Health),
    ("банк", Genre::Finance),
    ("банки", Genre::Finance),
    ("банковская", Genre::Finance),
    ("банковские", Genre::Finance),
    ("банковский", Genre::Finance),
    ("банковское", Genre::Finance),
    ("видеоигра", Genre::Games),
    ("видеоигры", Genre::Games),
    ("гаджет", Genre::Electronics),
    ("гаджеты", Genre::Electronics),
    ("гостиница", Genre::Travel),
    ("гостиницы", Genre::Travel),
    ("дача", Genre::Home),
    ("деньги", Genre::Finance),
    ("дом", Genre::Home),
    ("дом_и_сад", Genre::Home),
    ("домашнее", Genre::Home),
    ("домашние", Genre::Home),
    ("домашний", Genre::Home),
    ("домашняя", Genre::Home),
    ("другое", Genre::Other),
    ("еда", Genre::Food),
    ("жилье", Genre::RealEstate),
    ("здоровье", Genre::Health),
    ("игра", Genre::Games),
    ("игровая", Genre::Games),
    ("игровое", Genre::Games),
    ("игровой", Genre::Games),
    ("игровые", Genre::Games),
    ("игры", Genre::Games),
    ("инвестиции", Genre::Finance),
    ("иное", Genre::Other),
    ("интерьер", Genre::Home),
    ("кафе", Genre::Food),
    ("квартира", Genre::RealEstate),
    ("квартиры", Genre::RealEstate),
    ("кино", Genre::Entertainment),
    ("компьютер", Genre::Electronics),
    ("компьютерные_игры", Genre::Games),
    ("компьютеры", Genre::Electronics),
    ("концерт", Genre::Entertainment),
    ("концерты", Genre::Entertainment),
    ("косметика", Genre::Beauty),
    ("косметическая", Genre::Beauty),
    ("косметические", Genre::Beauty),
    ("косметический", Genre::Beauty),
    ("косметическое", Genre::Beauty),
    ("красота", Genre::Beauty),
    ("кредит", Genre::Finance),
    ("кредиты", Genre::Finance),
    ("криптовалюта", Genre::Finance),
    ("криптовалюты", Genre::Finance),
    ("кулинария", Genre::Food),
    ("курс", Genre::Education),
    ("курсы", Genre::Education),
    ("лекарства", Genre::Health),
    ("макияж", Genre::Beauty),
    ("машина", Genre::Automotive),
    ("машины", Genre::Automotive),
    ("мебель", Genre::Home),
    ("медицина", Genre::Health),
    ("медицинская", Genre::Health),
    ("медицинские", Genre::Health),
    ("медицинский", Genre::Health),
    ("медицинское", Genre::Health),
    ("мероприятие", Genre::Entertainment),
    ("мероприятия", Genre::Entertainment),
    ("мода", Genre::Fashion),
    ("модная", Genre::Fashion),
    ("модное", Genre::Fashion),
    ("модные", Genre::Fashion),
    ("модный", Genre::Fashion),
    ("музыка", Genre::Entertainment),
    ("напитки", Genre::Food),
    ("напиток", Genre::Food),
    ("недвижимость", Genre::RealEstate),
    ("новостройки", Genre::RealEstate),
    ("образование", Genre::Education),
    ("образовательная", Genre::Education),
    ("образовательное", Genre::Education),
    ("образовательные", Genre::Education),
    ("образовательный", Genre::Education),
    ("обувь", Genre::Fashion),
    ("обучение", Genre::Education),
    ("одежда", Genre::Fashion),
    ("отдых", Genre::Travel),
    ("отели", Genre::Travel),
    ("отель", Genre::Travel),
    ("парфюмерия", Genre::Beauty),
    ("питание", Genre::Food),
    ("продукты", Genre::Food),
    ("прочее", Genre::Other),
    ("путешествие", Genre::Travel),
    ("путешествия", Genre::Travel),
    ("развлекательная", Genre::Entertainment),
    ("развлекательное", Genre::Entertainment),
    ("развлекательные", Genre::Entertainment),
    ("развлекательный", Genre::Entertainment),
    ("развлечение", Genre::Entertainment),
    ("развлечения", Genre::Entertainment),
    ("разное", Genre::Other),
    ("ремонт", Genre::Home),
    ("ресторан", Genre::Food),
    ("рестораны", Genre::Food),
    ("рецепт", Genre::Food),
    ("рецепты", Genre::Food),
    ("сад", Genre::Home),
    ("смартфон", Genre::Electronics),
    ("смартфоны", Genre::Electronics),
    ("спорт", Genre::Sports),
    ("спортивная", Genre::Sports),
    ("спортивное", Genre::Sports),
    ("спортивные", Genre::Sports),
    ("спортивный", Genre::Sports),
    ("стиль", Genre::Fashion),
    ("страхование", Genre::Finance),
    ("телефон", Genre::Electronics),
    ("телефоны", Genre::Electronics),
    ("техника", Genre::Electronics),
    ("товары_для_дома", Genre::Home),
    ("тренинг", Genre::Education),
    ("тренинги", Genre::Education),
    ("тур", Genre::Travel),
    ("туризм", Genre::Travel),
    ("туристическая", Genre::Travel),
    ("туристические", Genre::Travel),
    ("туристический", Genre::Travel),
    ("туристическое", Genre::Travel),
    ("туры", Genre::Travel),
    ("уход_за_кожей", Genre::Beauty),
    ("учеба", Genre::Education),
    ("фильм", Genre::Entertainment),
    ("фильмы", Genre::Entertainment),
    ("финансовая", Genre::Finance),
    ("финансовое", Genre::Finance),
    ("финансовые", Genre::Finance),
    ("финансовый", Genre::Finance),
    ("финансы", Genre::Finance),
    ("фитнес", Genre::Health),
    ("футбол", Genre::Sports),
    ("школа", Genre::Education),
    ("школы", Genre::Education),
    ("шоу", Genre::Entertainment),
    ("электроника", Genre::Electronics),
    ("электронная", Genre::Electronics),
    ("электронное", Genre::Electronics),
    ("электронные", Genre::Electronics),
    ("электронный", Genre::Electronics),
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error as ValueError, StrDeserializer};

    fn from_serde(input: &str) -> Result<Genre, ValueError> {
        let deserializer: StrDeserializer<'_, ValueError> = input.into_deserializer();
        Genre::deserialize(deserializer)
    }

    fn assert_parses(input: &str, expected: Genre) {
        assert_eq!(Genre::parse(input), Ok(expected), "input {input:?}");
    }

    #[test]
    fn table_is_sorted_unique_and_normalised() {
        for pair in SYNONYMS.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{:?} !< {:?}", pair[0].0, pair[1].0);
        }
        for (key, _) in SYNONYMS {
            assert_eq!(normalize(key), *key);
        }
    }

    #[test]
    fn all_lists_each_variant_once_in_declaration_order() {
        let mut sorted = Genre::ALL.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, Genre::ALL.to_vec());
    }

    #[test]
    fn canonical_names_round_trip() {
        for genre in Genre::ALL {
            let name = genre.as_str();
            assert_parses(name, genre);
            assert_eq!(genre.to_string(), name);
            assert_eq!(name.parse::<Genre>(), Ok(genre));
            assert_eq!(from_serde(name), Ok(genre));
            assert_eq!(
                serde_json::to_string(&genre).ok(),
                Some(format!("\"{name}\""))
            );
            assert_eq!(
                serde_json::from_str::<Genre>(&format!("\"{name}\"")).ok(),
                Some(genre)
            );
        }
    }

    #[test]
    fn labels_parse_back() {
        for genre in Genre::ALL {
            assert_parses(genre.label_en(), genre);
            assert_parses(genre.label_ru(), genre);
        }
    }

    #[test]
    fn display_honours_width() {
        assert_eq!(format!("[{:<6}]", Genre::Food), "[food  ]");
    }

    #[test]
    fn separators_and_case() {
        for input in [
            "Real Estate",
            "real-estate",
            "REAL_ESTATE",
            "real  -_ estate",
            "  real estate\t",
            "Real\u{a0}Estate",
        ] {
            assert_parses(input, Genre::RealEstate);
        }
        assert_parses("Video Games", Genre::Games);
        assert_parses("home & garden", Genre::Home);
        assert_parses("Home-And-Garden", Genre::Home);
    }

    #[test]
    fn english_synonyms() {
        let cases: &[(&[&str], Genre)] = &[
            (
                &["cars", "car", "auto", "autos", "vehicles", "motors"],
                Genre::Automotive,
            ),
            (
                &["courses", "learning", "schools", "training"],
                Genre::Education,
            ),
            (
                &[
                    "gadgets",
                    "tech",
                    "technology",
                    "computers",
                    "phones",
                    "smartphones",
                ],
                Genre::Electronics,
            ),
            (
                &["movies", "film", "cinema", "music", "shows", "events"],
                Genre::Entertainment,
            ),
            (
                &["clothes", "clothing", "apparel", "style", "shoes"],
                Genre::Fashion,
            ),
            (
                &[
                    "money",
                    "banking",
                    "bank",
                    "insurance",
                    "investing",
                    "loans",
                    "crypto",
                ],
                Genre::Finance,
            ),
            (
                &["restaurants", "cooking", "groceries", "recipes", "drinks"],
                Genre::Food,
            ),
            (
                &["gaming", "video_games", "videogames", "game"],
                Genre::Games,
            ),
            (
                &["fitness", "medicine", "wellness", "pharmacy", "medical"],
                Genre::Health,
            ),
            (
                &["property", "realty", "housing", "apartments", "homes"],
                Genre::RealEstate,
            ),
            (&["sport", "football", "soccer", "outdoor"], Genre::Sports),
            (
                &[
                    "tourism",
                    "trips",
                    "travelling",
                    "traveling",
                    "hotels",
                    "flights",
                    "vacation",
                ],
                Genre::Travel,
            ),
            (&["cosmetics", "makeup", "skincare"], Genre::Beauty),
            (
                &["home_and_garden", "garden", "furniture", "diy", "household"],
                Genre::Home,
            ),
            (&["misc", "miscellaneous", "general"], Genre::Other),
        ];
        for (inputs, genre) in cases {
            for input in *inputs {
                assert_parses(input, *genre);
            }
        }
    }

    #[test]
    fn russian_names() {
        let cases: &[(&[&str], Genre)] = &[
            (
                &["авто", "автомобили", "автомобиль", "машины", "Автомобили"],
                Genre::Automotive,
            ),
            (&["образование", "курсы", "обучение"], Genre::Education),
            (&["электроника", "техника", "гаджеты"], Genre::Electronics),
            (&["развлечения", "кино", "музыка"], Genre::Entertainment),
            (&["мода", "одежда", "обувь"], Genre::Fashion),
            (
                &["финансы", "банки", "кредиты", "страхование", "инвестиции"],
                Genre::Finance,
            ),
            (
                &["еда", "рестораны", "продукты", "кулинария", "напитки"],
                Genre::Food,
            ),
            (&["игры", "видеоигры"], Genre::Games),
            (&["здоровье", "медицина", "фитнес", "аптека"], Genre::Health),
            (&["недвижимость", "квартиры", "жильё"], Genre::RealEstate),
            (&["спорт"], Genre::Sports),
            (
                &["путешествия", "туризм", "отели", "авиабилеты", "отдых"],
                Genre::Travel,
            ),
            (&["красота", "косметика"], Genre::Beauty),
            (
                &["дом", "дом_и_сад", "сад", "мебель", "ремонт"],
                Genre::Home,
            ),
            (&["другое", "прочее", "разное"], Genre::Other),
        ];
        for (inputs, genre) in cases {
            for input in *inputs {
                assert_parses(input, *genre);
            }
        }
    }

    #[test]
    fn russian_case_whitespace_and_yo_variants() {
        assert_parses(" Путешествия ", Genre::Travel);
        assert_parses("ПУТЕШЕСТВИЯ", Genre::Travel);
        assert_parses("жилье", Genre::RealEstate);
        assert_parses("ЖИЛЬЁ", Genre::RealEstate);
        assert_parses("Дом и сад", Genre::Home);
        assert_parses("дом - и - сад", Genre::Home);
        assert_parses("Автомобильные", Genre::Automotive);
        assert_parses("финансовые", Genre::Finance);
    }

    #[test]
    fn synonyms_work_through_serde() {
        assert_eq!(from_serde("Real Estate"), Ok(Genre::RealEstate));
        assert_eq!(from_serde("путешествия"), Ok(Genre::Travel));
        assert_eq!(
            serde_json::from_str::<Genre>("\"Автомобили\"").ok(),
            Some(Genre::Automotive)
        );
        assert!(from_serde("nope").is_err());
    }

    #[test]
    fn unknown_inputs_list_every_canonical_name() {
        for input in ["", "  ", "cars!", "автомобилище", "_", "real estate agency"] {
            let error = match Genre::parse(input) {
                Ok(genre) => panic!("{input:?} parsed as {genre:?}"),
                Err(error) => error,
            };
            assert_eq!(error.input, input);
            assert_eq!(error.accepted, Genre::accepted());
            let message = error.to_string();
            assert!(message.contains(&format!("{input:?}")), "{message}");
            for genre in Genre::ALL {
                assert!(message.contains(genre.as_str()), "{message}");
            }
        }
    }

    #[test]
    fn serde_error_carries_the_same_message() {
        let message = match from_serde("cars!") {
            Ok(genre) => panic!("parsed as {genre:?}"),
            Err(error) => error.to_string(),
        };
        assert!(
            message.contains("accepted values: automotive, beauty"),
            "{message}"
        );
    }

    #[test]
    fn accepted_lists_canonical_names_in_order() {
        assert_eq!(
            Genre::accepted(),
            "automotive, beauty, education, electronics, entertainment, fashion, finance, \
             food, games, health, home, real_estate, sports, travel, other"
        );
    }
}
