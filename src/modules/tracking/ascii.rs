//! Counts read back from the text they are stored as (journal lines, the fields of Redis's
//! counter hashes): numbers straight from their ASCII digits, and placement names shared by
//! every field that names them, so that reading hundreds of thousands of fields neither copies
//! nor allocates per field.

use super::counters::{PlacementName, is_placement_name};

/// A count: ASCII digits, at least one, within `u64`, written as Rust writes numbers (no sign,
/// no leading zero but in `0` itself), so that a number has one spelling only.
pub fn unsigned(digits: &[u8]) -> Option<u64> {
    match digits {
        [] => None,
        [b'0', _, ..] => None,
        _ => digits.iter().try_fold(0u64, |n, &b| {
            let digit = b.wrapping_sub(b'0');
            (digit < 10).then_some(())?;
            n.checked_mul(10)?.checked_add(u64::from(digit))
        }),
    }
}

/// An advert's id, an hour or a signed count: digits, `-` before them if negative (never `-0`).
pub fn signed(field: &[u8]) -> Option<i64> {
    match field.split_first() {
        Some((b'-', digits)) => match unsigned(digits)? {
            0 => None,
            n => 0i64.checked_sub_unsigned(n),
        },
        _ => i64::try_from(unsigned(field)?).ok(),
    }
}

/// `bytes` apart at the first `at`.
pub fn split_once(bytes: &[u8], at: u8) -> Option<(&[u8], &[u8])> {
    let i = bytes.iter().position(|&b| b == at)?;
    Some((&bytes[..i], &bytes[i + 1..]))
}

/// Placement names a reader keeps, so that the fields of one placement share one name (a
/// segment or a drain names the catalogue's few placements over and over).
const KNOWN_PLACEMENTS: usize = 64;

/// The placement names a reader has met.
#[derive(Debug, Default)]
pub struct Placements(Vec<PlacementName>);

impl Placements {
    /// The placement `name` names, shared with the earlier fields that named it; `None` if it
    /// is not a placement's name.
    pub fn name(&mut self, name: &[u8]) -> Option<PlacementName> {
        if let Some(seen) = self.0.iter().find(|p| p.as_bytes() == name) {
            return Some(seen.clone());
        }
        let name = std::str::from_utf8(name)
            .ok()
            .filter(|n| is_placement_name(n))?;
        let placement = PlacementName::from(name);
        if self.0.len() < KNOWN_PLACEMENTS {
            self.0.push(placement.clone());
        }
        Some(placement)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_number_has_one_spelling() {
        for (text, read) in [
            ("0", Some(0)),
            ("7", Some(7)),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("07", None),
            ("00", None),
            ("+7", None),
            ("-7", None),
            (" 7", None),
            ("7x", None),
            ("", None),
        ] {
            assert_eq!(unsigned(text.as_bytes()), read, "{text:?}");
        }
        for (text, read) in [
            ("0", Some(0)),
            ("-7", Some(-7)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("-0", None),
            ("-07", None),
            ("--7", None),
            ("-", None),
        ] {
            assert_eq!(signed(text.as_bytes()), read, "{text:?}");
        }
    }

    #[test]
    fn the_fields_of_one_placement_share_its_name() {
        let mut placements = Placements::default();
        let first = placements.name(b"leaderboard").unwrap();
        let again = placements.name(b"leaderboard").unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(&*first, "leaderboard");
        assert!(placements.name(b"Bad-Name").is_none());
        assert!(placements.name(b"").is_none());
        // Past the names it keeps, a name still reads, unshared.
        for i in 0..KNOWN_PLACEMENTS {
            placements.name(format!("unit_{i}").as_bytes()).unwrap();
        }
        let late = placements.name(b"late_unit").unwrap();
        assert!(!Arc::ptr_eq(&late, &placements.name(b"late_unit").unwrap()));
        assert!(Arc::ptr_eq(
            &first,
            &placements.name(b"leaderboard").unwrap()
        ));
    }
}
