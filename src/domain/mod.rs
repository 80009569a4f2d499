//! The shared vocabulary: adverts, genres, customers and the validated values they are made of.
//! Nothing here does I/O.

pub mod advert;
pub mod genre;
pub mod ids;
pub mod target_url;

pub use advert::{Advert, AdvertStatus, NewAdvert};
pub use genre::Genre;
pub use ids::{AdvertId, CustomerId};
pub use target_url::TargetUrl;
