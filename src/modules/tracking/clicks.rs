//! Click ids: what the redirect appends as `rk_click` (and fills into `{click_id}`) so that an
//! advertiser can report a conversion back. An id is the click's facts (advert, placement,
//! creative, device, country, time, a random part making it unique) and an HMAC-SHA256 tag, in
//! URL-safe base64 without padding: nothing is stored per click, and an id that was not issued
//! here cannot be made to verify.
//!
//! The key is generated once and kept in the database (`signing_keys`), so every instance issues
//! and accepts the same ids, and they stay valid across restarts for the whole attribution
//! window.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use diesel::prelude::*;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::AdvertId;
use crate::domain::creative::CreativeId;
use crate::domain::targeting::{Country, Device, Viewer};
use crate::platform::db::schema::signing_keys;
use crate::platform::db::{Db, DbError, is_unique_violation, now_ms};

use super::counters::is_placement_name;

type HmacSha256 = Hmac<Sha256>;

/// The layout's first byte; another layout would take another number.
const VERSION: u8 = 1;
/// Bytes before the placement's name: version, advert, time, creative, device, country, nonce,
/// the name's length.
const FIXED: usize = 1 + 8 + 5 + 4 + 1 + 2 + 6 + 1;
/// The tag's length: HMAC-SHA256 cut to 96 bits.
const TAG: usize = 12;
/// The longest placement name a catalogue allows.
const MAX_PLACEMENT: usize = 40;
/// The longest id that can be genuine, in characters.
pub const MAX_ID_LEN: usize = (FIXED + MAX_PLACEMENT + TAG).div_ceil(3) * 4;
/// The key's name in `signing_keys`.
const KEY_NAME: &str = "click_id";

/// What a click id says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    pub advert: AdvertId,
    /// Unix seconds.
    pub clicked_at: i64,
    /// The placement's name; `None` for the generic card or a link followed without a token.
    pub placement: Option<String>,
    pub creative: Option<CreativeId>,
    pub viewer: Viewer,
}

/// Why a click id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadClickId {
    #[error("is not a click id reklama issued")]
    Malformed,
    #[error("its signature does not match: it was altered or not issued here")]
    Forged,
}

/// Issues and verifies click ids.
#[derive(Clone)]
pub struct ClickIds {
    keyed: HmacSha256,
}

impl ClickIds {
    pub fn new(key: &[u8]) -> anyhow::Result<Self> {
        Ok(Self {
            keyed: HmacSha256::new_from_slice(key)
                .map_err(|e| anyhow::anyhow!("click id key: {e}"))?,
        })
    }

    /// The shared key from the database, made by whichever instance asks first.
    pub async fn load(db: &Db) -> anyhow::Result<Self> {
        let fresh: [u8; 32] = rand::random();
        let key = db
            .run(move |conn| {
                // The first instance's key stays: a later one's insert finds it there.
                let inserted = diesel::insert_into(signing_keys::table)
                    .values((
                        signing_keys::name.eq(KEY_NAME),
                        signing_keys::secret.eq(fresh.as_slice()),
                        signing_keys::created_at.eq(now_ms()),
                    ))
                    .execute(conn);
                if let Err(e) = inserted
                    && !is_unique_violation(&e)
                {
                    return Err(DbError::from(e));
                }
                signing_keys::table
                    .find(KEY_NAME)
                    .select(signing_keys::secret)
                    .first::<Vec<u8>>(conn)
                    .map_err(DbError::from)
            })
            .await?;
        Self::new(&key)
    }

    /// A new id for a click with these facts.
    pub fn issue(&self, click: &Click) -> String {
        let placement = click
            .placement
            .as_deref()
            .filter(|p| p.len() <= MAX_PLACEMENT)
            .unwrap_or_default();
        let mut bytes = Vec::with_capacity(FIXED + placement.len() + TAG);
        bytes.push(VERSION);
        bytes.extend_from_slice(&click.advert.0.to_be_bytes());
        bytes.extend_from_slice(&click.clicked_at.clamp(0, (1 << 40) - 1).to_be_bytes()[3..]);
        bytes.extend_from_slice(
            &click
                .creative
                .map_or(0, |c| c.0.saturating_add(1))
                .to_be_bytes(),
        );
        bytes.push(match click.viewer.device {
            None => 0,
            Some(Device::Desktop) => 1,
            Some(Device::Mobile) => 2,
            Some(Device::Tablet) => 3,
        });
        bytes.extend_from_slice(
            click
                .viewer
                .country
                .as_ref()
                .map_or(b"\0\0".as_slice(), |c| c.as_str().as_bytes()),
        );
        bytes.extend_from_slice(&rand::random::<[u8; 6]>());
        // At most 40: fits.
        bytes.push(placement.len() as u8);
        bytes.extend_from_slice(placement.as_bytes());
        let tag = self.tag(&bytes);
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// What a genuine id says.
    pub fn verify(&self, id: &str) -> Result<Click, BadClickId> {
        if id.len() > MAX_ID_LEN {
            return Err(BadClickId::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(id)
            .map_err(|_| BadClickId::Malformed)?;
        if bytes.len() < FIXED + TAG || bytes[0] != VERSION {
            return Err(BadClickId::Malformed);
        }
        let (signed, tag) = bytes.split_at(bytes.len() - TAG);
        let mut mac = self.keyed.clone();
        mac.update(signed);
        mac.verify_truncated_left(tag)
            .map_err(|_| BadClickId::Forged)?;
        let placement_len = usize::from(signed[FIXED - 1]);
        if signed.len() != FIXED + placement_len {
            return Err(BadClickId::Malformed);
        }
        let mut advert = [0u8; 8];
        advert.copy_from_slice(&signed[1..9]);
        let mut clicked_at = [0u8; 8];
        clicked_at[3..].copy_from_slice(&signed[9..14]);
        let mut creative = [0u8; 4];
        creative.copy_from_slice(&signed[14..18]);
        let device = match signed[18] {
            0 => None,
            1 => Some(Device::Desktop),
            2 => Some(Device::Mobile),
            3 => Some(Device::Tablet),
            _ => return Err(BadClickId::Malformed),
        };
        let country = match &signed[19..21] {
            b"\0\0" => None,
            code => Some(
                std::str::from_utf8(code)
                    .ok()
                    .and_then(Country::known)
                    .ok_or(BadClickId::Malformed)?,
            ),
        };
        let placement = match placement_len {
            0 => None,
            _ => Some(
                std::str::from_utf8(&signed[FIXED..])
                    .ok()
                    .filter(|p| is_placement_name(p))
                    .ok_or(BadClickId::Malformed)?
                    .to_owned(),
            ),
        };
        Ok(Click {
            advert: AdvertId(i64::from_be_bytes(advert)),
            clicked_at: i64::from_be_bytes(clicked_at),
            placement,
            creative: u32::from_be_bytes(creative).checked_sub(1).map(CreativeId),
            viewer: Viewer { device, country },
        })
    }

    fn tag(&self, bytes: &[u8]) -> [u8; TAG] {
        let mut mac = self.keyed.clone();
        mac.update(bytes);
        let digest = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG];
        tag.copy_from_slice(&digest[..TAG]);
        tag
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn click() -> Click {
        Click {
            advert: AdvertId(1_234_567),
            clicked_at: 1_796_000_000,
            placement: Some("medium_rectangle".into()),
            creative: Some(CreativeId(3)),
            viewer: Viewer {
                device: Some(Device::Tablet),
                country: Country::known("DE"),
            },
        }
    }

    #[test]
    fn an_issued_id_says_what_was_put_in_and_each_is_unique() {
        let ids = ClickIds::new(&[7; 32]).unwrap();
        let id = ids.issue(&click());
        assert!(id.len() <= MAX_ID_LEN, "{}", id.len());
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(ids.verify(&id).unwrap(), click());
        assert_ne!(ids.issue(&click()), id, "two clicks never share an id");
        let bare = Click {
            placement: None,
            creative: None,
            viewer: Viewer::default(),
            ..click()
        };
        assert_eq!(ids.verify(&ids.issue(&bare)).unwrap(), bare);
        let longest = Click {
            placement: Some("p".repeat(40)),
            ..click()
        };
        let id = ids.issue(&longest);
        assert!(id.len() <= MAX_ID_LEN);
        assert_eq!(ids.verify(&id).unwrap(), longest);
    }

    #[test]
    fn altered_foreign_and_garbled_ids_are_refused() {
        let ids = ClickIds::new(&[7; 32]).unwrap();
        let id = ids.issue(&click());
        let other = ClickIds::new(&[8; 32]).unwrap();
        assert_eq!(other.verify(&id), Err(BadClickId::Forged));
        // Every single-character change is caught.
        for at in 0..id.len() {
            let mut altered = id.clone().into_bytes();
            altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(altered).unwrap();
            assert!(ids.verify(&altered).is_err(), "{at}");
        }
        for garbled in [
            "",
            "abc",
            "!!!!",
            &"A".repeat(MAX_ID_LEN + 1),
            &id[..id.len() - 4],
        ] {
            assert!(ids.verify(garbled).is_err(), "{garbled}");
        }
    }
}
