//! Impression tokens: the `t` parameter of a served card's click URL. It names the user (as a
//! keyed hash, never the id itself) and the advert, signed with HMAC-SHA256, so that a click can
//! be attributed to the user who saw the advert and cannot be forged for another user or advert.
//!
//! Four layouts, told apart by their length (base64url of):
//! - with the creative (this version issues only these; 47 characters): user key (8 bytes, LE)
//!   | advert id (8, LE) | placement position in the catalogue (1; 255 for the generic card) |
//!   issue time (4, LE, Unix seconds) | the creative's number (4, LE; its top bit set when the
//!   learner chose it among several) | MAC (10), the MAC over
//!   the first 25 bytes followed, for a placement card, by the placement's name. A token older
//!   than `serving.token_ttl_secs` (or issued more than five minutes in the future by this
//!   instance's clock) still attributes its click, but the click is not billable.
//! - timed (42 characters): the same without the creative (the MAC over the first 21 bytes).
//! - generic card, before issue times (35 characters): user key | advert id | MAC over both.
//! - placement card, before issue times (36 characters): user key | advert id | position |
//!   MAC over those and the placement's name.
//!
//! The two earlier layouts carry no time: they are honoured as fresh for `token_ttl_secs` after
//! this process started (a click on a card an earlier version served during a rolling deploy
//! is billed), and as expired after that. A changed position fails the MAC, and so does a token
//! whose catalogue entry at that position was renamed or reordered since: it is then treated
//! like no token, never credited to another placement.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::AdvertId;
use crate::domain::creative::{CreativeId, Shown};
use crate::platform::window_counts::unix_now;

type HmacSha256 = Hmac<Sha256>;

const MAC_LEN: usize = 10;
const TOKEN_LEN: usize = 8 + 8 + MAC_LEN;
const PLACED_TOKEN_LEN: usize = 8 + 8 + 1 + MAC_LEN;
/// The signed part of a timed token: user, advert, position, issue time.
const TIMED_SIGNED: usize = 8 + 8 + 1 + 4;
const TIMED_TOKEN_LEN: usize = TIMED_SIGNED + MAC_LEN;
/// The signed part of a token naming its creative: a timed token's and the creative's number.
const CREATIVE_SIGNED: usize = TIMED_SIGNED + 4;
const CREATIVE_TOKEN_LEN: usize = CREATIVE_SIGNED + MAC_LEN;
/// The creative field's top bit: the learner chose the creative among several.
const AMONG_SEVERAL: u32 = 1 << 31;
/// The position byte of a timed generic card's token.
const GENERIC: u8 = u8::MAX;
/// How far in the future an issue time may be (another instance's clock running ahead).
const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// What a genuine token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenClaims {
    pub user: UserKey,
    /// The placement's position in the catalogue; `None` for the generic card.
    pub placement: Option<usize>,
    /// Older than `serving.token_ttl_secs`: the click it carries is not billable.
    pub expired: bool,
    /// The creative the card showed (`None` in tokens from before creatives).
    pub creative: Option<Shown>,
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
    /// `serving.token_ttl_secs`; 0: tokens never expire.
    ttl_secs: u64,
    /// Until when (Unix seconds) tokens of the layouts without a time count as fresh.
    timeless_fresh_until: u64,
}

impl TokenCodec {
    /// `ttl_secs` 0: no token expires.
    pub fn new(secret: &[u8], placements: Vec<String>, ttl_secs: u64) -> anyhow::Result<Self> {
        let keyed = HmacSha256::new_from_slice(secret)
            .map_err(|e| anyhow::anyhow!("serving.token_secret: {e}"))?;
        Ok(Self {
            keyed,
            placements,
            ttl_secs,
            timeless_fresh_until: unix_now().saturating_add(ttl_secs),
        })
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

    /// A token for a card of `advert` served to `user` now, built for the placement at this
    /// position of the catalogue (`None`, or a position the catalogue does not have: the
    /// generic card).
    pub fn issue(
        &self,
        user: UserKey,
        advert: AdvertId,
        placement: Option<usize>,
        shown: Shown,
    ) -> String {
        self.issue_at(user, advert, placement, shown, unix_now())
    }

    /// [`TokenCodec::issue`] at `now` (Unix seconds).
    pub fn issue_at(
        &self,
        user: UserKey,
        advert: AdvertId,
        placement: Option<usize>,
        shown: Shown,
        now: u64,
    ) -> String {
        let placed = placement.and_then(|i| {
            let name = self.placements.get(i)?;
            Some((u8::try_from(i).ok().filter(|&p| p != GENERIC)?, name))
        });
        let mut bytes = [0u8; CREATIVE_TOKEN_LEN];
        bytes[..8].copy_from_slice(&user.0.to_le_bytes());
        bytes[8..16].copy_from_slice(&advert.0.to_le_bytes());
        bytes[16] = placed.map_or(GENERIC, |(position, _)| position);
        // Unix seconds fit in 32 bits until 2106.
        bytes[17..21].copy_from_slice(&u32::try_from(now).unwrap_or(u32::MAX).to_le_bytes());
        // Creative numbers are stored as 32-bit signed integers: the top bit is free.
        let several = if shown.among_several {
            AMONG_SEVERAL
        } else {
            0
        };
        bytes[21..25]
            .copy_from_slice(&((shown.creative.0 & !AMONG_SEVERAL) | several).to_le_bytes());
        let mut mac = self.mac();
        mac.update(&bytes[..CREATIVE_SIGNED]);
        if let Some((_, name)) = placed {
            mac.update(name.as_bytes());
        }
        bytes[CREATIVE_SIGNED..].copy_from_slice(&mac.finalize().into_bytes()[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// What a genuine token for `advert` says; `None` for anything else.
    pub fn verify(&self, token: &str, advert: AdvertId) -> Option<TokenClaims> {
        self.verify_at(token, advert, unix_now())
    }

    /// [`TokenCodec::verify`] at `now` (Unix seconds).
    pub fn verify_at(&self, token: &str, advert: AdvertId, now: u64) -> Option<TokenClaims> {
        if token.len() > 64 {
            return None;
        }
        let mut bytes = [0u8; 48];
        let len = URL_SAFE_NO_PAD.decode_slice(token, &mut bytes).ok()?;
        let bytes = &bytes[..len];
        if !matches!(
            len,
            TOKEN_LEN | PLACED_TOKEN_LEN | TIMED_TOKEN_LEN | CREATIVE_TOKEN_LEN
        ) || bytes[8..16] != advert.0.to_le_bytes()
        {
            return None;
        }
        let mut mac = self.mac();
        let (placement, signed, issued) = match len {
            TIMED_TOKEN_LEN | CREATIVE_TOKEN_LEN => {
                let signed = if len == TIMED_TOKEN_LEN {
                    TIMED_SIGNED
                } else {
                    CREATIVE_SIGNED
                };
                mac.update(&bytes[..signed]);
                let placement = match bytes[16] {
                    GENERIC => None,
                    position => {
                        let position = usize::from(position);
                        mac.update(self.placements.get(position)?.as_bytes());
                        Some(position)
                    }
                };
                let mut issued = [0u8; 4];
                issued.copy_from_slice(&bytes[17..21]);
                (
                    placement,
                    signed,
                    Some(u64::from(u32::from_le_bytes(issued))),
                )
            }
            PLACED_TOKEN_LEN => {
                let position = usize::from(bytes[16]);
                let name = self.placements.get(position)?;
                mac.update(&bytes[..17]);
                mac.update(name.as_bytes());
                (Some(position), 17, None)
            }
            _ => {
                mac.update(&bytes[..16]);
                (None, 16, None)
            }
        };
        mac.verify_truncated_left(&bytes[signed..]).ok()?;
        let mut user = [0u8; 8];
        user.copy_from_slice(&bytes[..8]);
        let expired = self.ttl_secs > 0
            && match issued {
                Some(issued) => {
                    now.saturating_sub(issued) > self.ttl_secs
                        || issued > now.saturating_add(MAX_CLOCK_SKEW_SECS)
                }
                None => now >= self.timeless_fresh_until,
            };
        let creative = (signed == CREATIVE_SIGNED).then(|| {
            let mut number = [0u8; 4];
            number.copy_from_slice(&bytes[21..25]);
            let number = u32::from_le_bytes(number);
            Shown {
                creative: CreativeId(number & !AMONG_SEVERAL),
                among_several: number & AMONG_SEVERAL != 0,
            }
        });
        Some(TokenClaims {
            user: UserKey(u64::from_le_bytes(user)),
            placement,
            expired,
            creative,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TTL: u64 = 3600;

    fn catalogue() -> Vec<String> {
        vec!["medium_rectangle".into(), "leaderboard".into()]
    }

    fn codec(secret: &[u8]) -> TokenCodec {
        TokenCodec::new(secret, catalogue(), TTL).unwrap()
    }

    const CREATIVE: Shown = Shown {
        creative: CreativeId(3),
        among_several: true,
    };

    /// What a token this version issues says.
    fn claims(user: UserKey, placement: Option<usize>, expired: bool) -> Option<TokenClaims> {
        Some(TokenClaims {
            user,
            placement,
            expired,
            creative: Some(CREATIVE),
        })
    }

    /// What a token of an earlier layout says: no creative.
    fn earlier(user: UserKey, placement: Option<usize>, expired: bool) -> Option<TokenClaims> {
        claims(user, placement, expired).map(|c| TokenClaims {
            creative: None,
            ..c
        })
    }

    /// A token as earlier versions built them: user | advert | [position] | MAC.
    fn timeless(secret: &[u8], user: UserKey, advert: i64, placed: Option<(u8, &str)>) -> String {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&user.0.to_le_bytes());
        bytes.extend_from_slice(&advert.to_le_bytes());
        let mut mac = HmacSha256::new_from_slice(secret).unwrap();
        if let Some((position, _)) = placed {
            bytes.push(position);
        }
        mac.update(&bytes);
        if let Some((_, name)) = placed {
            mac.update(name.as_bytes());
        }
        bytes.extend_from_slice(&mac.finalize().into_bytes()[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(&bytes)
    }

    #[test]
    fn a_token_verifies_for_its_advert_only() {
        let codec = codec(b"secret");
        let user = codec.user_key("user-42");
        let token = codec.issue(user, AdvertId(7), None, CREATIVE);
        assert_eq!(token.len(), 47);
        assert_eq!(codec.verify(&token, AdvertId(7)), claims(user, None, false));
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
    fn a_token_expires_after_the_ttl_and_its_time_cannot_be_changed() {
        let codec = codec(b"secret");
        let user = codec.user_key("user-42");
        let issued = 1_800_000_000;
        for placement in [None, Some(1)] {
            let token = codec.issue_at(user, AdvertId(7), placement, CREATIVE, issued);
            let at = |now| codec.verify_at(&token, AdvertId(7), now);
            assert_eq!(at(issued), claims(user, placement, false));
            assert_eq!(at(issued + TTL), claims(user, placement, false));
            assert_eq!(at(issued + TTL + 1), claims(user, placement, true));
            // Issued by a clock a little ahead: fresh; far ahead: not trusted.
            assert_eq!(at(issued - 60), claims(user, placement, false));
            assert_eq!(at(issued - 3600), claims(user, placement, true));
            // A later time written in, with the MAC left as it was.
            let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
            bytes[17..21].copy_from_slice(&u32::try_from(issued + TTL).unwrap().to_le_bytes());
            assert_eq!(
                codec.verify_at(
                    &URL_SAFE_NO_PAD.encode(&bytes),
                    AdvertId(7),
                    issued + TTL + 1
                ),
                None
            );
        }
        // 0: tokens never expire.
        let forever = TokenCodec::new(b"secret", catalogue(), 0).unwrap();
        let token = forever.issue_at(user, AdvertId(7), None, CREATIVE, issued);
        assert_eq!(
            forever.verify_at(&token, AdvertId(7), issued + 10 * 365 * 86_400),
            claims(user, None, false)
        );
    }

    #[test]
    fn tokens_without_a_time_are_fresh_for_one_ttl_after_start_then_expired() {
        let codec = codec(b"secret");
        let user = codec.user_key("user-42");
        let started = unix_now();
        let generic = timeless(b"secret", user, 7, None);
        assert_eq!(generic.len(), 35);
        let placed = timeless(b"secret", user, 7, Some((1, "leaderboard")));
        assert_eq!(placed.len(), 36);
        for (token, placement) in [(&generic, None), (&placed, Some(1))] {
            assert_eq!(
                codec.verify_at(token, AdvertId(7), started),
                earlier(user, placement, false)
            );
            assert_eq!(
                codec.verify_at(token, AdvertId(7), started + TTL + 5),
                earlier(user, placement, true)
            );
            assert_eq!(codec.verify_at(token, AdvertId(8), started), None);
        }
    }

    #[test]
    fn a_placement_token_names_its_placement_and_resists_tampering() {
        let codec = codec(b"secret");
        let user = codec.user_key("user-42");
        let token = codec.issue(user, AdvertId(7), Some(1), CREATIVE);
        assert_eq!(token.len(), 47);
        assert_eq!(
            codec.verify(&token, AdvertId(7)),
            claims(user, Some(1), false)
        );
        assert_eq!(codec.verify(&token, AdvertId(8)), None);
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        // Another placement, or the generic card, with the MAC left as it was.
        for position in [0, 9, GENERIC] {
            bytes[16] = position;
            assert_eq!(
                codec.verify(&URL_SAFE_NO_PAD.encode(&bytes), AdvertId(7)),
                None,
                "{position}"
            );
        }
        // A catalogue reordered since the card was served: not credited to another placement.
        let reordered = TokenCodec::new(
            b"secret",
            vec!["leaderboard".into(), "medium_rectangle".into()],
            TTL,
        )
        .unwrap();
        assert_eq!(reordered.verify(&token, AdvertId(7)), None);
        // Outside the catalogue: the generic card's token.
        assert_eq!(
            codec.verify(
                &codec.issue(user, AdvertId(7), Some(5), CREATIVE),
                AdvertId(7)
            ),
            claims(user, None, false)
        );
    }

    #[test]
    fn a_token_names_its_creative_which_cannot_be_changed_and_earlier_timed_tokens_still_verify() {
        let codec = codec(b"secret");
        let user = codec.user_key("user-42");
        let alone = Shown {
            creative: CreativeId(70_000),
            among_several: false,
        };
        let token = codec.issue(user, AdvertId(7), Some(1), alone);
        let verified = codec.verify(&token, AdvertId(7)).unwrap();
        assert_eq!(verified.creative, Some(alone));
        let chosen = Shown {
            among_several: true,
            ..alone
        };
        let token = codec.issue(user, AdvertId(7), Some(1), chosen);
        assert_eq!(
            codec.verify(&token, AdvertId(7)).unwrap().creative,
            Some(chosen)
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[21] ^= 1;
        assert_eq!(
            codec.verify(&URL_SAFE_NO_PAD.encode(&bytes), AdvertId(7)),
            None
        );
        // A timed token without a creative, as the previous version issued them.
        let issued = unix_now();
        let mut timed = Vec::new();
        timed.extend_from_slice(&user.0.to_le_bytes());
        timed.extend_from_slice(&7i64.to_le_bytes());
        timed.push(GENERIC);
        timed.extend_from_slice(&u32::try_from(issued).unwrap().to_le_bytes());
        let mut mac = HmacSha256::new_from_slice(b"secret").unwrap();
        mac.update(&timed);
        timed.extend_from_slice(&mac.finalize().into_bytes()[..MAC_LEN]);
        let timed = URL_SAFE_NO_PAD.encode(&timed);
        assert_eq!(timed.len(), 42);
        assert_eq!(
            codec.verify(&timed, AdvertId(7)),
            earlier(user, None, false)
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
