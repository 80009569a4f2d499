//! Random tokens and digests: API keys, link codes, hashes used in URLs.

use rand::Rng;
use sha2::{Digest, Sha256};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` characters from [0-9A-Za-z], drawn from the OS-seeded CSPRNG (about 5.95 bits each).
pub fn random_base62(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())]))
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The shortest signing secret accepted, in bytes: an HMAC-SHA256 key of 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;

/// Words only placeholders are made of: a secret containing one was copied from an example.
const PLACEHOLDER_WORDS: &[&str] = &[
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "replaceme",
    "placeholder",
    "your-secret",
    "example",
];

/// What is wrong with a configured signing secret, if anything, starting with its setting's
/// name. Empty is allowed: the process then signs with a random key of its own.
pub fn secret_problem(setting: &str, value: &str) -> Option<String> {
    secret_problem_where_empty_means(setting, value, "a random key per process")
}

/// [`secret_problem`] for a secret whose absence means something else than a random key
/// (`empty_means`, for the message).
pub fn secret_problem_where_empty_means(
    setting: &str,
    value: &str,
    empty_means: &str,
) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    let hint = format!(
        "generate one with `reklama secret` (or `openssl rand -base64 32`), or leave it empty \
         for {empty_means}"
    );
    if value.len() < MIN_SECRET_BYTES {
        return Some(format!(
            "{setting}: must be at least {MIN_SECRET_BYTES} bytes (got {}); {hint}",
            value.len()
        ));
    }
    let lower = value.to_ascii_lowercase();
    let distinct = {
        let mut seen = [false; 256];
        value.bytes().for_each(|b| seen[usize::from(b)] = true);
        seen.iter().filter(|&&s| s).count()
    };
    if PLACEHOLDER_WORDS.iter().any(|w| lower.contains(w)) || distinct < 8 {
        return Some(format!(
            "{setting}: is a placeholder, not a secret (anyone who read the example knows it); {hint}"
        ));
    }
    None
}

/// A fresh signing secret: 32 bytes from the OS-seeded CSPRNG, base64 (44 characters).
pub fn fresh_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn is_base62(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base62_tokens_have_the_length_and_alphabet_asked_for() {
        let a = random_base62(32);
        assert_eq!(a.len(), 32);
        assert!(is_base62(&a));
        assert_ne!(a, random_base62(32));
    }

    #[test]
    fn secrets_are_long_and_not_placeholders() {
        assert_eq!(secret_problem("s.k", ""), None);
        assert_eq!(secret_problem("s.k", &fresh_secret()), None);
        assert_eq!(fresh_secret().len(), 44);
        assert_ne!(fresh_secret(), fresh_secret());
        for bad in [
            "short",
            "CHANGE-ME",
            "local-compose-token-secret-change-me",
            "CHANGE-ME-CHANGE-ME-CHANGE-ME-CHANGE-ME",
            &"s".repeat(40),
            "abababababababababababababababababab",
        ] {
            let problem = secret_problem("serving.token_secret", bad).unwrap_or_default();
            assert!(
                problem.starts_with("serving.token_secret: "),
                "{bad}: {problem}"
            );
            assert!(problem.ends_with("a random key per process"), "{problem}");
            let problem = secret_problem_where_empty_means("admin.token", bad, "an open /metrics")
                .unwrap_or_default();
            assert!(problem.starts_with("admin.token: "), "{bad}: {problem}");
            assert!(problem.ends_with("for an open /metrics"), "{problem}");
        }
    }

    #[test]
    fn sha256_matches_a_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
