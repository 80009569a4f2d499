//! The domain's enums as text columns. Each enum spells its stored values once (`as_str` and
//! `from_stored`, in `domain`); queries bind the enum (`adverts::status.eq(AdvertStatus::Active)`)
//! and rows read it, on either backend, so no module compares a status with a literal.

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;

use super::MultiBackend;
use crate::domain::advert::OffloadStatus;
use crate::domain::creative::CreativeStatus;
use crate::domain::{AdvertStatus, VariantStatus};

macro_rules! stored_as_text {
    ($($name:ty),+ $(,)?) => {$(
        impl ToSql<Text, MultiBackend> for $name {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, MultiBackend>) -> serialize::Result {
                <str as ToSql<Text, MultiBackend>>::to_sql(self.as_str(), out)
            }
        }

        impl FromSql<Text, MultiBackend> for $name {
            fn from_sql(bytes: <MultiBackend as Backend>::RawValue<'_>) -> deserialize::Result<Self> {
                let raw = <String as FromSql<Text, MultiBackend>>::from_sql(bytes)?;
                <$name>::from_stored(&raw).ok_or_else(|| {
                    format!("{raw:?} is not a stored {}", stringify!($name)).into()
                })
            }
        }
    )+};
}

stored_as_text!(AdvertStatus, OffloadStatus, VariantStatus, CreativeStatus);
