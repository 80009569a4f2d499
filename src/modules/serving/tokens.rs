//! Impression tokens: the `t` parameter of a served card's click URL. It names the user (as a
//! keyed hash, never the id itself) and the advert, signed with HMAC-SHA256, so that a click can
//! be attributed to the user who saw the advert and cannot be forged for another user or advert.
//!
//! Two layouts, told apart by their length (base64url of):
//! - generic card: user key (8 bytes, LE) | advert id (8, LE) | MAC (10), the MAC over the first
//!   16 bytes. Tokens issued before placements were counted have this layout and still verify.
//! - placement card: user key (8) | advert id (8) | placement position in the catalogue (1) |
//!   MAC (10), the MAC over the first 17 bytes followed by the placement's name. A changed
//!   position fails the MAC, and so does a token whose catalogue entry at that position was
//!   renamed or reordered since: it is then treated like no token, never credited to another
//!   placement.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::AdvertId;

type HmacSha256 = Hmac<Sha256>;

const MAC_LEN: usize = 10;
const TOKEN_LEN: usize = 8 + 8 + MAC_LEN;
const PLACED_TOKEN_LEN: usize = 8 + 8 + 1 + MAC_LEN;

/// What a genuine token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenClaims {
    pub user: UserKey,
    /// The placement's position in the catalogue; `None` for the generic card.
    pub placement: Option<usize>,
}

/// A user as serving knows them: a keyed hash of the frontend's user id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserKey(pub u64);

#[derive(Clone)]
pub struct TokenCodec {
    /// Keyed once; each use clones the prepared state.
    keyed: HmacSha256,
    /// The catalogue's placement names, by position.
    placements: Vec<String>,
}

impl TokenCodec {
    pub fn new(secret: &[u8], placements: Vec<String>) -> anyhow::Result<Self> {
        let keyed = HmacSha256::new_from_slice(secret)
            .map_err(|e| anyhow::anyhow!("serving.token_secret: {e}"))?;
        Ok(Self { keyed, placements })
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

    /// A token for a card of `advert` served to `user`, built for the placement at this position
    /// of the catalogue (`None`, or a position the catalogue does not have: the generic card).
    pub fn issue(&self, user: UserKey, advert: AdvertId, placement: Option<usize>) -> String {
        let placed = placement.and_then(|i| {
            let name = self.placements.get(i)?;
            Some((u8::try_from(i).ok()?, name))
        });
        let mut bytes = [0u8; PLACED_TOKEN_LEN];
        bytes[..8].copy_from_slice(&user.0.to_le_bytes());
        bytes[8..16].copy_from_slice(&advert.0.to_le_bytes());
        let mut mac = self.mac();
        let signed = match placed {
            None => {
                mac.update(&bytes[..16]);
                16
            }
            Some((position, name)) => {
                bytes[16] = position;
                mac.update(&bytes[..17]);
                mac.update(name.as_bytes());
                17
            }
        };
        bytes[signed..signed + MAC_LEN].copy_from_slice(&mac.finalize().into_bytes()[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(&bytes[..signed + MAC_LEN])
    }

    /// What a genuine token for `advert` says; `None` for anything else.
    pub fn verify(&self, token: &str, advert: AdvertId) -> Option<TokenClaims> {
        if token.len() > 64 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if !matches!(bytes.len(), TOKEN_LEN | PLACED_TOKEN_LEN)
            || bytes[8..16] != advert.0.to_le_bytes()
        {
            return None;
        }
        let mut mac = self.mac();
        let (placement, signed) = if bytes.len() == PLACED_TOKEN_LEN {
            let position = usize::from(bytes[16]);
            let name = self.placements.get(position)?;
            mac.update(&bytes[..17]);
            mac.update(name.as_bytes());
            (Some(position), 17)
        } else {
            mac.update(&bytes[..16]);
            (None, 16)
        };
        mac.verify_truncated_left(&bytes[signed..]).ok()?;
        let mut user = [0u8; 8];
        user.copy_from_slice(&bytes[..8]);
        Some(TokenClaims {
            user: UserKey(u64::from_le_bytes(user)),
            placement,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn catalogue() -> Vec<String> {
        vec!["medium_rectangle".into(), "leaderboard".into()]
    }

    fn codec(secret: &[u8]) -> TokenCodec {
        TokenCodec::new(secret, catalogue()).unwrap()
    }

    fn generic(user: UserKey) -> Option<TokenClaims> {
        Some(TokenClaims {
            user,
            placement: None,
        })
    }

    #[test]
    fn a_token_verifies_for_its_advert_only() {
        let codec = codec(b"secret");
        let user = codec.user_key("user-42");
        let token = codec.issue(user, AdvertId(7), None);
        assert_eq!(codec.verify(&token, AdvertId(7)), generic(user));
        assert_eq!(codec.verify(&token, AdvertId(8)), None);
        assert_eq!(self::codec(b"other").verify(&token, AdvertId(7)), None);
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
    fn a_token_issued_before_placements_still_verifies() {
        // Built as earlier versions built every token: user | advert | MAC over both.
        let codec = codec(b"secret");
        let user = codec.user_key("user-42");
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&user.0.to_le_bytes());
        bytes.extend_from_slice(&7i64.to_le_bytes());
        let mut mac = HmacSha256::new_from_slice(b"secret").unwrap();
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes()[..MAC_LEN]);
        let old = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(old.len(), 35);
        assert_eq!(codec.verify(&old, AdvertId(7)), generic(user));
        // The generic card's tokens keep that layout.
        assert_eq!(codec.issue(user, AdvertId(7), None), old);
    }

    #[test]
    fn a_placement_token_names_its_placement_and_resists_tampering() {
        let codec = codec(b"secret");
        let user = codec.user_key("user-42");
        let token = codec.issue(user, AdvertId(7), Some(1));
        assert_eq!(token.len(), 36);
        assert_eq!(
            codec.verify(&token, AdvertId(7)),
            Some(TokenClaims {
                user,
                placement: Some(1)
            })
        );
        assert_eq!(codec.verify(&token, AdvertId(8)), None);
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        // Another placement, with the MAC left as it was.
        bytes[16] = 0;
        assert_eq!(
            codec.verify(&URL_SAFE_NO_PAD.encode(&bytes), AdvertId(7)),
            None
        );
        // A position the catalogue does not have.
        bytes[16] = 9;
        assert_eq!(
            codec.verify(&URL_SAFE_NO_PAD.encode(&bytes), AdvertId(7)),
            None
        );
        // The placement byte dropped, to pass as a generic token.
        let mut stripped = bytes[..16].to_vec();
        stripped.extend_from_slice(&bytes[17..]);
        assert_eq!(
            codec.verify(&URL_SAFE_NO_PAD.encode(&stripped), AdvertId(7)),
            None
        );
        // A catalogue reordered since the card was served: not credited to another placement.
        let reordered = TokenCodec::new(
            b"secret",
            vec!["leaderboard".into(), "medium_rectangle".into()],
        )
        .unwrap();
        assert_eq!(reordered.verify(&token, AdvertId(7)), None);
        // Outside the catalogue: the generic card's token.
        assert_eq!(
            codec.verify(&codec.issue(user, AdvertId(7), Some(5)), AdvertId(7)),
            generic(user)
        );
    }

    #[test]
    fn user_keys_are_stable_and_distinct() {
        let codec = codec(b"secret");
        assert_eq!(codec.user_key("a"), codec.user_key("a"));
        assert_ne!(codec.user_key("a"), codec.user_key("b"));
        assert_ne!(codec.user_key("a"), self::codec(b"x").user_key("a"));
    }
}
