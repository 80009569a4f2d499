//! Impression tokens: the `t` parameter of a served card's click URL. It names the user (as a
//! keyed hash, never the id itself) and the advert, signed with HMAC-SHA256, so that a click can
//! be attributed to the user who saw the advert and cannot be forged for another user or advert.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::AdvertId;

type HmacSha256 = Hmac<Sha256>;

const MAC_LEN: usize = 10;
const TOKEN_LEN: usize = 8 + 8 + MAC_LEN;

/// A user as serving knows them: a keyed hash of the frontend's user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserKey(pub u64);

#[derive(Clone)]
pub struct TokenCodec {
    /// Keyed once; each use clones the prepared state.
    keyed: HmacSha256,
}

impl TokenCodec {
    pub fn new(secret: &[u8]) -> anyhow::Result<Self> {
        let keyed = HmacSha256::new_from_slice(secret)
            .map_err(|e| anyhow::anyhow!("serving.token_secret: {e}"))?;
        Ok(Self { keyed })
    }

    fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }

    /// The same user id gives the same key on every instance sharing the secret.
    pub fn user_key(&self, user_id: &str) -> UserKey {
        let mut mac = self.mac();
        mac.update(b"user\0");
        mac.update(user_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        UserKey(u64::from_le_bytes(first))
    }

    pub fn issue(&self, user: UserKey, advert: AdvertId) -> String {
        let mut bytes = [0u8; TOKEN_LEN];
        bytes[..8].copy_from_slice(&user.0.to_le_bytes());
        bytes[8..16].copy_from_slice(&advert.0.to_le_bytes());
        let mut mac = self.mac();
        mac.update(&bytes[..16]);
        bytes[16..].copy_from_slice(&mac.finalize().into_bytes()[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The user of a genuine token for `advert`; `None` for anything else.
    pub fn verify(&self, token: &str, advert: AdvertId) -> Option<UserKey> {
        if token.len() > 64 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if bytes.len() != TOKEN_LEN || bytes[8..16] != advert.0.to_le_bytes() {
            return None;
        }
        let mut mac = self.mac();
        mac.update(&bytes[..16]);
        mac.verify_truncated_left(&bytes[16..]).ok()?;
        let mut user = [0u8; 8];
        user.copy_from_slice(&bytes[..8]);
        Some(UserKey(u64::from_le_bytes(user)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_for_its_advert_only() {
        let codec = TokenCodec::new(b"secret").unwrap();
        let user = codec.user_key("user-42");
        let token = codec.issue(user, AdvertId(7));
        assert_eq!(codec.verify(&token, AdvertId(7)), Some(user));
        assert_eq!(codec.verify(&token, AdvertId(8)), None);
        assert_eq!(
            TokenCodec::new(b"other")
                .unwrap()
                .verify(&token, AdvertId(7)),
            None
        );
        let mut forged = token.clone().into_bytes();
        forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            codec.verify(&String::from_utf8(forged).unwrap_or_default(), AdvertId(7)),
            None
        );
        assert_eq!(codec.verify("", AdvertId(7)), None);
        assert_eq!(codec.verify("!!!", AdvertId(7)), None);
    }

    #[test]
    fn user_keys_are_stable_and_distinct() {
        let codec = TokenCodec::new(b"secret").unwrap();
        assert_eq!(codec.user_key("a"), codec.user_key("a"));
        assert_ne!(codec.user_key("a"), codec.user_key("b"));
        assert_ne!(
            codec.user_key("a"),
            TokenCodec::new(b"x").unwrap().user_key("a")
        );
    }
}
