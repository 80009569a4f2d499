//! `HyperLogLog` sketches: an advert's unique reach (distinct users served) in a few kilobytes at
//! most, mergeable across instances and storable in a database row.
//!
//! Precision is [`PRECISION`] = 14: 16 384 registers, a standard error of `1.04 / sqrt(m)`, about
//! 0.81 %. Each register holds the highest rank (1 + leading zeros of the hash bits below the
//! register index) seen for its index, at most `64 - PRECISION + 1` = 51.
//!
//! A sketch has two representations. A small one is *sparse*: a sorted list of `index << 6 | rank`
//! entries, one per non-zero register, with a small unsorted buffer in front of it so an insert
//! stays cheap (the buffer is folded into the list when it fills, and before anything reads the
//! sketch). Once the list would take more memory than the registers themselves (more than 4 096
//! entries of 4 bytes against 16 384 one-byte registers), the sketch turns *dense*: one byte per
//! register. Which representation a sketch has follows from its registers alone, so equal
//! sketches encode to equal bytes.
//!
//! Encoding ([`Sketch::to_bytes`]): a version byte (1), a kind byte (0 sparse, 1 dense), then
//! - sparse: the entry count as unsigned LEB128, then each entry as the LEB128 difference from
//!   the one before (the first from 0), ascending: about two bytes per user while small;
//! - dense: the 16 384 registers packed 6 bits each, four registers to three bytes little-endian
//!   (12 288 bytes).
//!
//! Decoding ([`Sketch::from_bytes`]) is strict and never panics: an unknown version or kind,
//! truncated input, trailing bytes, a non-canonical varint, unsorted or repeated register indexes
//! and ranks out of range are errors.
//!
//! The count is Otmar Ertl's improved raw estimator ("New cardinality estimation algorithms for
//! `HyperLogLog` sketches", 2017, algorithm 6) over the histogram of register values: accurate from
//! a handful of users to billions, with neither bias-correction tables nor a switch to linear
//! counting.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

/// Bits of the hash that pick the register: 2^14 = 16 384 registers, standard error
/// `1.04 / sqrt(16 384)` ≈ 0.81 %.
pub const PRECISION: u32 = 14;

/// Number of registers.
const REGISTERS: usize = 1 << PRECISION;
/// Hash bits left for the rank once the register index is taken.
const RANK_WIDTH: u32 = 64 - PRECISION;
/// Highest rank: every rank bit zero.
const MAX_RANK: u32 = RANK_WIDTH + 1;
/// Bits of a sparse entry holding the rank (below the register index).
const RANK_BITS: u32 = 6;
const RANK_MASK: u32 = (1 << RANK_BITS) - 1;
/// Most entries a sparse sketch keeps: beyond this, 4-byte entries take more memory than the
/// one-byte dense registers.
const SPARSE_LIMIT: usize = REGISTERS / size_of::<u32>();
/// Inserts buffered (unsorted) before they are folded into the sorted sparse list.
const BUFFER_LIMIT: usize = 128;

const VERSION: u8 = 1;
const KIND_SPARSE: u8 = 0;
const KIND_DENSE: u8 = 1;
/// Bytes of the packed dense registers: 6 bits each.
const DENSE_PACKED_BYTES: usize = REGISTERS * 6 / 8;

/// `α∞ = 1 / (2 ln 2)`, the limit of the `HyperLogLog` bias constant as `m` grows.
const ALPHA_INF: f64 = 1.0 / (2.0 * std::f64::consts::LN_2);

/// A `HyperLogLog` sketch of a set of users: insert hashes, merge sketches, count distinct users.
///
/// Equality compares the registers, whatever is still buffered: two sketches of the same users
/// are equal however and in whatever order they were built.
#[derive(Debug, Clone, Default)]
pub struct Sketch {
    repr: Repr,
}

#[derive(Debug, Clone)]
enum Repr {
    /// Non-zero registers as `index << 6 | rank`: `entries` sorted with one entry per index,
    /// `buffer` recent inserts in arrival order, possibly repeating indexes.
    Sparse { entries: Vec<u32>, buffer: Vec<u32> },
    /// One byte per register, `REGISTERS` long.
    Dense(Vec<u8>),
}

impl Default for Repr {
    fn default() -> Self {
        Self::Sparse {
            entries: Vec::new(),
            buffer: Vec::new(),
        }
    }
}

/// Bytes that are not a sketch [`Sketch::to_bytes`] could have written; says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedSketch(pub &'static str);

impl fmt::Display for MalformedSketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed reach sketch: {}", self.0)
    }
}

impl std::error::Error for MalformedSketch {}

impl Sketch {
    /// An empty sketch (count 0); holds no memory until the first insert.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one user. `hash` is already uniform (a keyed hash of the user): the top
    /// [`PRECISION`] bits pick the register, the rank is 1 + the leading zeros of the rest
    /// (bounded by `64 - PRECISION + 1`). Inserting the same hash again changes nothing.
    pub fn insert(&mut self, hash: u64) {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "shifting a u64 right by 64 - PRECISION leaves PRECISION (14) bits"
        )]
        let index = (hash >> RANK_WIDTH) as u32;
        let rank = (hash << PRECISION).leading_zeros().min(RANK_WIDTH) + 1;
        match &mut self.repr {
            Repr::Sparse { buffer, .. } => {
                buffer.push(index << RANK_BITS | rank);
                if buffer.len() >= BUFFER_LIMIT {
                    self.normalise();
                }
            }
            Repr::Dense(registers) => raise(registers, index, rank),
        }
    }

    /// Adds every user of `other` to this sketch (register-wise maximum): commutative,
    /// associative and idempotent, so sketches from any number of instances can be merged in any
    /// order, any number of times.
    pub fn merge(&mut self, other: &Sketch) {
        self.normalise();
        match (&mut self.repr, &other.repr) {
            (
                Repr::Sparse { entries, .. },
                Repr::Sparse {
                    entries: theirs,
                    buffer: their_buffer,
                },
            ) => {
                let merged = if their_buffer.is_empty() {
                    union_sorted(entries, theirs)
                } else {
                    let mut pending = their_buffer.clone();
                    sort_dedup(&mut pending);
                    union_sorted(&union_sorted(entries, theirs), &pending)
                };
                *entries = merged;
                self.densify_if_large();
            }
            (
                Repr::Dense(registers),
                Repr::Sparse {
                    entries: theirs,
                    buffer: their_buffer,
                },
            ) => {
                for &entry in theirs.iter().chain(their_buffer) {
                    raise(registers, entry >> RANK_BITS, entry & RANK_MASK);
                }
            }
            (Repr::Sparse { entries, .. }, Repr::Dense(theirs)) => {
                let mut registers = theirs.clone();
                for &entry in entries.iter() {
                    raise(&mut registers, entry >> RANK_BITS, entry & RANK_MASK);
                }
                self.repr = Repr::Dense(registers);
            }
            (Repr::Dense(registers), Repr::Dense(theirs)) => {
                for (mine, &their) in registers.iter_mut().zip(theirs) {
                    *mine = (*mine).max(their);
                }
            }
        }
    }

    /// Estimated number of distinct users inserted (0 for an empty sketch); standard error about
    /// 0.81 %, and exact or nearly so for small sets.
    #[must_use]
    pub fn count(&self) -> u64 {
        let mut histogram = [0_u32; 64];
        match &self.repr {
            Repr::Sparse { .. } => {
                let entries = self.sparse_entries();
                histogram[0] = REGISTERS_U32;
                for &entry in entries.iter() {
                    histogram[0] = histogram[0].saturating_sub(1);
                    histogram[rank_slot(entry & RANK_MASK)] += 1;
                }
            }
            Repr::Dense(registers) => {
                for &register in registers {
                    histogram[rank_slot(u32::from(register))] += 1;
                }
            }
        }
        round_to_u64(estimate(&histogram))
    }

    /// Whether no user was inserted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        match &self.repr {
            Repr::Sparse { entries, buffer } => entries.is_empty() && buffer.is_empty(),
            Repr::Dense(registers) => registers.iter().all(|&r| r == 0),
        }
    }

    /// The encoding described in the module documentation: a few bytes for an empty sketch,
    /// about two bytes per user while sparse, 12 290 bytes once dense. Equal sketches give
    /// equal bytes.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let entries = match &self.repr {
            Repr::Sparse { .. } => self.sparse_entries(),
            Repr::Dense(registers) => return encode_dense(registers),
        };
        if entries.len() > SPARSE_LIMIT {
            // Buffered inserts not yet folded in took it past the threshold: encode it as it
            // will be once they are.
            return encode_dense(&to_registers(&entries));
        }
        let mut out = Vec::with_capacity(2 + 5 + 3 * entries.len());
        out.push(VERSION);
        out.push(KIND_SPARSE);
        write_varint(&mut out, usize_to_u32(entries.len()));
        let mut previous = 0;
        for &entry in entries.iter() {
            write_varint(&mut out, entry - previous);
            previous = entry;
        }
        out
    }

    /// Reads bytes written by [`Sketch::to_bytes`].
    ///
    /// # Errors
    ///
    /// [`MalformedSketch`] for empty input, an unknown version or kind, truncated input, bytes
    /// after the sketch, a non-canonical or overflowing varint, sparse entries that are not in
    /// ascending register order or repeat a register, and ranks of 0 (sparse) or above
    /// `64 - PRECISION + 1`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MalformedSketch> {
        let (&version, rest) = bytes.split_first().ok_or(MalformedSketch("empty input"))?;
        if version != VERSION {
            return Err(MalformedSketch("unsupported version"));
        }
        let (&kind, rest) = rest
            .split_first()
            .ok_or(MalformedSketch("missing kind byte"))?;
        let mut sketch = match kind {
            KIND_SPARSE => decode_sparse(rest)?,
            KIND_DENSE => decode_dense(rest)?,
            _ => return Err(MalformedSketch("unknown kind")),
        };
        // The representation follows from the registers, as it does for a sketch built by
        // inserting, so that equal sketches encode alike.
        match &sketch.repr {
            Repr::Sparse { entries, .. } if entries.len() > SPARSE_LIMIT => {
                sketch.repr = Repr::Dense(to_registers(entries));
            }
            Repr::Dense(registers)
                if registers.iter().filter(|&&r| r != 0).count() <= SPARSE_LIMIT =>
            {
                sketch.repr = Repr::Sparse {
                    entries: to_entries(registers),
                    buffer: Vec::new(),
                };
            }
            _ => {}
        }
        Ok(sketch)
    }

    /// Heap memory the sketch holds, in bytes: 0 when new, up to about 17 KB while sparse,
    /// 16 384 once dense. For bounding caches of sketches.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        match &self.repr {
            Repr::Sparse { entries, buffer } => {
                (entries.capacity() + buffer.capacity()) * size_of::<u32>()
            }
            Repr::Dense(registers) => registers.capacity(),
        }
    }

    /// Folds the buffer into the sorted list, turning dense if the list grew past the limit.
    fn normalise(&mut self) {
        if let Repr::Sparse { entries, buffer } = &mut self.repr
            && !buffer.is_empty()
        {
            sort_dedup(buffer);
            *entries = union_sorted(entries, buffer);
            buffer.clear();
            self.densify_if_large();
        }
    }

    fn densify_if_large(&mut self) {
        if let Repr::Sparse { entries, .. } = &self.repr
            && entries.len() > SPARSE_LIMIT
        {
            self.repr = Repr::Dense(to_registers(entries));
        }
    }

    /// The sparse entries with the buffer folded in (borrowed when nothing is buffered); empty
    /// for a dense sketch.
    fn sparse_entries(&self) -> Cow<'_, [u32]> {
        match &self.repr {
            Repr::Sparse { entries, buffer } if buffer.is_empty() => Cow::Borrowed(entries),
            Repr::Sparse { entries, buffer } => {
                let mut pending = buffer.clone();
                sort_dedup(&mut pending);
                Cow::Owned(union_sorted(entries, &pending))
            }
            Repr::Dense(_) => Cow::Borrowed(&[]),
        }
    }

    /// The registers, one byte each, whatever the representation.
    fn registers(&self) -> Cow<'_, [u8]> {
        match &self.repr {
            Repr::Sparse { .. } => Cow::Owned(to_registers(&self.sparse_entries())),
            Repr::Dense(registers) => Cow::Borrowed(registers),
        }
    }
}

impl PartialEq for Sketch {
    fn eq(&self, other: &Self) -> bool {
        match (&self.repr, &other.repr) {
            (Repr::Dense(mine), Repr::Dense(theirs)) => mine == theirs,
            (Repr::Sparse { .. }, Repr::Sparse { .. }) => {
                self.sparse_entries() == other.sparse_entries()
            }
            _ => self.registers() == other.registers(),
        }
    }
}

impl Eq for Sketch {}

const REGISTERS_U32: u32 = 1 << PRECISION;

/// Rounds a non-negative estimate to the nearest integer.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the estimate is non-negative and rounded; `as` saturates at u64::MAX (NaN gives 0)"
)]
fn round_to_u64(estimate: f64) -> u64 {
    estimate.round() as u64
}

/// Converts a length bounded by the register count; saturates rather than panics.
fn usize_to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Histogram slot for a rank: ranks are at most 51 (checked on decode, bounded on insert), and
/// the histogram has 64 slots, so any 6-bit value fits.
fn rank_slot(rank: u32) -> usize {
    usize::try_from(rank & RANK_MASK).unwrap_or(0)
}

/// Raises register `index` to `rank` if lower. Out-of-range indexes (impossible by
/// construction) are ignored rather than panicking.
fn raise(registers: &mut [u8], index: u32, rank: u32) {
    let rank = u8::try_from(rank).unwrap_or(u8::MAX);
    if let Ok(index) = usize::try_from(index)
        && let Some(register) = registers.get_mut(index)
    {
        *register = (*register).max(rank);
    }
}

/// Sorts entries and keeps one per register index, the highest rank.
fn sort_dedup(entries: &mut Vec<u32>) {
    entries.sort_unstable();
    // Sorted ascending, an index's highest rank comes last: keep that one in the first slot.
    entries.dedup_by(|later, earlier| {
        if *later >> RANK_BITS == *earlier >> RANK_BITS {
            *earlier = (*earlier).max(*later);
            true
        } else {
            false
        }
    });
}

/// Union of two sorted lists with one entry per index, keeping the higher rank for an index in
/// both.
fn union_sorted(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while let (Some(&x), Some(&y)) = (a.get(i), b.get(j)) {
        match (x >> RANK_BITS).cmp(&(y >> RANK_BITS)) {
            Ordering::Less => {
                out.push(x);
                i += 1;
            }
            Ordering::Greater => {
                out.push(y);
                j += 1;
            }
            Ordering::Equal => {
                out.push(x.max(y));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(a.get(i..).unwrap_or_default());
    out.extend_from_slice(b.get(j..).unwrap_or_default());
    out
}

fn to_registers(entries: &[u32]) -> Vec<u8> {
    let mut registers = vec![0_u8; REGISTERS];
    for &entry in entries {
        raise(&mut registers, entry >> RANK_BITS, entry & RANK_MASK);
    }
    registers
}

fn to_entries(registers: &[u8]) -> Vec<u32> {
    (0_u32..)
        .zip(registers)
        .filter(|&(_, &rank)| rank != 0)
        .map(|(index, &rank)| index << RANK_BITS | u32::from(rank))
        .collect()
}

fn encode_dense(registers: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + DENSE_PACKED_BYTES);
    out.push(VERSION);
    out.push(KIND_DENSE);
    for group in registers.chunks(4) {
        let packed = group
            .iter()
            .rev()
            .fold(0_u32, |acc, &r| (acc << 6) | (u32::from(r) & RANK_MASK));
        out.extend_from_slice(packed.to_le_bytes().get(..3).unwrap_or_default());
    }
    out
}

fn decode_dense(bytes: &[u8]) -> Result<Sketch, MalformedSketch> {
    match bytes.len().cmp(&DENSE_PACKED_BYTES) {
        Ordering::Less => return Err(MalformedSketch("truncated dense registers")),
        Ordering::Greater => return Err(MalformedSketch("trailing bytes after dense registers")),
        Ordering::Equal => {}
    }
    let mut registers = Vec::with_capacity(REGISTERS);
    for group in bytes.chunks_exact(3) {
        let mut packed = group
            .iter()
            .rev()
            .fold(0_u32, |acc, &b| (acc << 8) | u32::from(b));
        for _ in 0..4 {
            let rank = packed & RANK_MASK;
            if rank > MAX_RANK {
                return Err(MalformedSketch("register rank out of range"));
            }
            registers.push(u8::try_from(rank).map_err(|_| MalformedSketch("register rank"))?);
            packed >>= 6;
        }
    }
    Ok(Sketch {
        repr: Repr::Dense(registers),
    })
}

fn decode_sparse(bytes: &[u8]) -> Result<Sketch, MalformedSketch> {
    let mut rest = bytes;
    let count = read_varint(&mut rest)?;
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    if count > REGISTERS {
        return Err(MalformedSketch("more sparse entries than registers"));
    }
    let mut entries: Vec<u32> = Vec::with_capacity(count);
    for _ in 0..count {
        let delta = read_varint(&mut rest)?;
        let entry = match entries.last() {
            None => delta,
            Some(&previous) => {
                let entry = previous
                    .checked_add(delta)
                    .ok_or(MalformedSketch("sparse entry overflows"))?;
                if entry >> RANK_BITS <= previous >> RANK_BITS {
                    return Err(MalformedSketch(
                        "sparse entries unsorted or repeat a register",
                    ));
                }
                entry
            }
        };
        if entry >> RANK_BITS >= REGISTERS_U32 {
            return Err(MalformedSketch("register index out of range"));
        }
        let rank = entry & RANK_MASK;
        if rank == 0 || rank > MAX_RANK {
            return Err(MalformedSketch("register rank out of range"));
        }
        entries.push(entry);
    }
    if !rest.is_empty() {
        return Err(MalformedSketch("trailing bytes after sparse entries"));
    }
    Ok(Sketch {
        repr: Repr::Sparse {
            entries,
            buffer: Vec::new(),
        },
    })
}

/// Unsigned LEB128: 7 bits a byte, low bits first, high bit set on all bytes but the last.
fn write_varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push(u8::try_from(value & 0x7f | 0x80).unwrap_or(u8::MAX));
        value >>= 7;
    }
    out.push(u8::try_from(value).unwrap_or(u8::MAX));
}

/// Reads one unsigned LEB128 `u32` from the front of `bytes`, advancing it. Rejects truncation,
/// values over `u32::MAX` and non-minimal encodings (a final zero byte after the first).
fn read_varint(bytes: &mut &[u8]) -> Result<u32, MalformedSketch> {
    let mut value: u32 = 0;
    for (position, shift) in (0_u32..5).zip((0_u32..).step_by(7)) {
        let (&byte, rest) = bytes
            .split_first()
            .ok_or(MalformedSketch("truncated varint"))?;
        *bytes = rest;
        let bits = u32::from(byte & 0x7f);
        if position == 4 && bits > 0x0f {
            return Err(MalformedSketch("varint overflows 32 bits"));
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            if byte == 0 && position > 0 {
                return Err(MalformedSketch("non-canonical varint"));
            }
            return Ok(value);
        }
    }
    Err(MalformedSketch("varint longer than 5 bytes"))
}

/// Ertl's improved raw estimator over the histogram of register values (`histogram[k]` =
/// registers holding `k`, for `k` in `0..=64 - PRECISION + 1`).
fn estimate(histogram: &[u32; 64]) -> f64 {
    let m = f64::from(REGISTERS_U32);
    let empty = histogram[0];
    if empty == REGISTERS_U32 {
        return 0.0;
    }
    let max_rank = rank_slot(MAX_RANK);
    let mut z = m * tau(1.0 - f64::from(histogram[max_rank]) / m);
    for &c in histogram[1..max_rank].iter().rev() {
        z = 0.5 * (z + f64::from(c));
    }
    z += m * sigma(f64::from(empty) / m);
    ALPHA_INF * m * m / z
}

/// `σ(x) = x + Σ_{k≥1} x^(2^k) 2^(k-1)`, summed until it stops changing.
#[allow(
    clippy::float_cmp,
    reason = "iterate to the floating-point fixed point"
)]
fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let previous = z;
        z += x * y;
        y += y;
        if z == previous {
            return z;
        }
    }
}

/// `τ(x) = (1 - x - Σ_{k≥1} (1 - x^(2^-k))² 2^-k) / 3`, summed until it stops changing.
#[allow(
    clippy::float_cmp,
    reason = "iterate to the floating-point fixed point"
)]
fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let previous = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
        if z == previous {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// splitmix64: a seeded stream of uniform 64-bit hashes standing in for hashed users.
    fn hashes(seed: u64, n: usize) -> Vec<u64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            })
            .collect()
    }

    fn sketch_of(hashes: &[u64]) -> Sketch {
        let mut sketch = Sketch::new();
        for &h in hashes {
            sketch.insert(h);
        }
        sketch
    }

    fn is_dense(sketch: &Sketch) -> bool {
        matches!(sketch.repr, Repr::Dense(_))
    }

    #[allow(clippy::cast_precision_loss)]
    fn relative_error(estimate: u64, truth: usize) -> f64 {
        (estimate as f64 - truth as f64).abs() / truth as f64
    }

    #[test]
    fn empty_sketch() {
        let sketch = Sketch::new();
        assert!(sketch.is_empty());
        assert_eq!(sketch.count(), 0);
        assert_eq!(sketch.heap_bytes(), 0);
        assert_eq!(sketch, Sketch::default());
    }

    #[test]
    fn relative_error_within_two_percent() {
        for (seed, n) in [
            (1, 1_000),
            (2, 10_000),
            (3, 40_000),
            (4, 100_000),
            (5, 250_000),
        ] {
            let count = sketch_of(&hashes(seed, n)).count();
            let error = relative_error(count, n);
            println!(
                "n = {n}: count = {count}, relative error = {:.3} %",
                error * 100.0
            );
            assert!(error <= 0.02, "n = {n}: count {count}, error {error}");
        }
    }

    #[test]
    fn small_sets_exact_or_off_by_one() {
        for n in 1..=100 {
            let count = sketch_of(&hashes(1_000 + n as u64, n)).count();
            assert!(count.abs_diff(n as u64) <= 1, "n = {n}: count {count}");
        }
    }

    #[test]
    fn duplicates_do_not_count() {
        for n in [50, 3_000, 20_000] {
            let users = hashes(7, n);
            let once = sketch_of(&users);
            let mut thrice = Sketch::new();
            for _ in 0..3 {
                for &h in &users {
                    thrice.insert(h);
                }
            }
            assert_eq!(once.count(), thrice.count());
            assert_eq!(once, thrice);
            assert_eq!(once.to_bytes(), thrice.to_bytes());
        }
    }

    #[test]
    fn merge_equals_sketch_of_union() {
        // Overlapping sets of each size, so sparse + sparse (staying sparse and turning dense),
        // sparse + dense, dense + sparse and dense + dense all occur.
        for (n_a, n_b, overlap) in [
            (100, 150, 40),
            (3_000, 3_000, 1_000),
            (200, 30_000, 150),
            (30_000, 200, 150),
            (30_000, 50_000, 10_000),
        ] {
            let all = hashes(11, n_a + n_b - overlap);
            let a_users = &all[..n_a];
            let b_users = &all[n_a - overlap..];
            let a = sketch_of(a_users);
            let b = sketch_of(b_users);
            let union = sketch_of(&all);

            let mut ab = a.clone();
            ab.merge(&b);
            let mut ba = b.clone();
            ba.merge(&a);
            assert_eq!(ab, union, "{n_a} + {n_b}");
            assert_eq!(ba, union, "{n_b} + {n_a}");
            assert_eq!(ab.count(), union.count());
            assert_eq!(ab.to_bytes(), union.to_bytes());
            assert_eq!(ba.to_bytes(), union.to_bytes());
            assert_eq!(is_dense(&ab), is_dense(&union));

            let mut twice = ab.clone();
            twice.merge(&b);
            twice.merge(&a);
            assert_eq!(twice, ab);
            twice.merge(&twice.clone());
            assert_eq!(twice, ab);
            assert_eq!(twice.to_bytes(), ab.to_bytes());
        }
    }

    #[test]
    fn merge_with_buffered_inserts() {
        // Fewer than a buffer's worth, so both sides still hold unsorted inserts.
        let users = hashes(12, 100);
        let a = sketch_of(&users[..60]);
        let b = sketch_of(&users[30..]);
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged, sketch_of(&users));
        let mut empty = Sketch::new();
        empty.merge(&a);
        assert_eq!(empty, a);
        let mut same = a.clone();
        same.merge(&Sketch::new());
        assert_eq!(same, a);
    }

    #[test]
    fn sparse_and_dense_merges() {
        let sparse = sketch_of(&hashes(13, 500));
        let dense = sketch_of(&hashes(14, 20_000));
        assert!(!is_dense(&sparse));
        assert!(is_dense(&dense));
        let union = sketch_of(&[hashes(13, 500), hashes(14, 20_000)].concat());

        let mut sparse_dense = sparse.clone();
        sparse_dense.merge(&dense);
        let mut dense_sparse = dense.clone();
        dense_sparse.merge(&sparse);
        assert!(is_dense(&sparse_dense));
        assert!(is_dense(&dense_sparse));
        assert_eq!(sparse_dense, union);
        assert_eq!(dense_sparse, union);
    }

    #[test]
    fn round_trips() {
        for n in [0, 1, 100, 127, 128, 129, 4_000, 50_000] {
            let sketch = sketch_of(&hashes(21, n));
            let bytes = sketch.to_bytes();
            let back = Sketch::from_bytes(&bytes).unwrap();
            assert_eq!(back, sketch, "n = {n}");
            assert_eq!(back.count(), sketch.count());
            assert_eq!(back.to_bytes(), bytes);
            assert_eq!(is_dense(&back), is_dense(&sketch));
        }
        assert_eq!(Sketch::new().to_bytes(), [VERSION, KIND_SPARSE, 0]);
    }

    #[test]
    fn encoding_sizes() {
        let small = sketch_of(&hashes(22, 100)).to_bytes();
        println!("sparse, 100 users: {} bytes", small.len());
        assert!(small.len() < 400, "{} bytes", small.len());
        let mid = sketch_of(&hashes(22, 4_000));
        println!(
            "sparse, 4 000 users: {} bytes encoded, {} bytes held",
            mid.to_bytes().len(),
            mid.heap_bytes()
        );
        let large = sketch_of(&hashes(22, 100_000));
        let bytes = large.to_bytes();
        println!(
            "dense: {} bytes encoded, {} bytes held",
            bytes.len(),
            large.heap_bytes()
        );
        assert_eq!(bytes.len(), 2 + 12_288);
        assert_eq!(large.heap_bytes(), REGISTERS);
    }

    #[test]
    fn dense_round_trip_keeps_every_register_value() {
        let registers: Vec<u8> = (0..REGISTERS)
            .map(|i| u8::try_from(i % 52).unwrap())
            .collect();
        let sketch = Sketch {
            repr: Repr::Dense(registers.clone()),
        };
        let back = Sketch::from_bytes(&sketch.to_bytes()).unwrap();
        assert_eq!(back.registers().as_ref(), registers.as_slice());
    }

    #[test]
    fn turns_dense_past_threshold_and_counts_the_same() {
        let users = hashes(31, 10_000);
        let mut sketch = Sketch::new();
        let mut last_sparse = None;
        for (i, &h) in users.iter().enumerate() {
            sketch.insert(h);
            if !is_dense(&sketch) {
                last_sparse = Some(i);
            }
        }
        assert!(is_dense(&sketch));
        let last_sparse = last_sparse.unwrap();
        let before = sketch_of(&users[..=last_sparse]);
        assert!(!is_dense(&before));
        let entries = before.sparse_entries().len();
        assert!(entries <= SPARSE_LIMIT + BUFFER_LIMIT, "{entries}");
        let mut after = before.clone();
        after.merge(&Sketch::new());
        // Folding the buffer in crosses the threshold or not; either way the count stands.
        let forced = Sketch {
            repr: Repr::Dense(before.registers().into_owned()),
        };
        assert_eq!(forced.count(), before.count());
        assert_eq!(after.count(), before.count());
        assert_eq!(forced, before);
        // The sparse list never outgrows the dense registers once folded.
        let mut s = Sketch::new();
        for &h in &users {
            s.insert(h);
            s.normalise();
            if let Repr::Sparse { entries, .. } = &s.repr {
                assert!(entries.len() <= SPARSE_LIMIT);
            }
        }
        assert_eq!(s, sketch);
        assert_eq!(s.count(), sketch.count());
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let bad = |bytes: &[u8]| Sketch::from_bytes(bytes).unwrap_err();
        bad(&[]);
        bad(&[VERSION]);
        bad(&[2, KIND_SPARSE, 0]);
        bad(&[0, KIND_SPARSE, 0]);
        bad(&[VERSION, 7, 0]);

        let sparse = sketch_of(&hashes(41, 100)).to_bytes();
        for len in 2..sparse.len() {
            bad(&sparse[..len]);
        }
        bad(&[sparse.as_slice(), &[0]].concat());

        let dense = sketch_of(&hashes(42, 50_000)).to_bytes();
        bad(&dense[..dense.len() - 1]);
        bad(&dense[..2]);
        bad(&[dense.as_slice(), &[0]].concat());

        // Entry = index << 6 | rank, delta-encoded.
        let entry = |index: u32, rank: u32| index << 6 | rank;
        let encode = |entries: &[u32]| {
            let mut out = vec![VERSION, KIND_SPARSE];
            write_varint(&mut out, u32::try_from(entries.len()).unwrap());
            let mut previous = 0_u32;
            for &e in entries {
                write_varint(&mut out, e.wrapping_sub(previous));
                previous = e;
            }
            out
        };
        assert!(Sketch::from_bytes(&encode(&[entry(3, 1), entry(9, 51)])).is_ok());
        bad(&encode(&[entry(3, 0)])); // rank 0
        bad(&encode(&[entry(3, 52)])); // rank too big
        bad(&encode(&[entry(3, 63)]));
        bad(&encode(&[entry(3, 1), entry(3, 1)])); // duplicate (zero delta)
        bad(&encode(&[entry(3, 1), entry(3, 2)])); // same register twice
        bad(&encode(&[entry(9, 1), entry(3, 1)])); // unsorted: delta wraps past u32
        bad(&encode(&[entry(16_384, 1)])); // index out of range
        bad(&[VERSION, KIND_SPARSE, 1, 0x81, 0x00]); // non-canonical varint
        bad(&[VERSION, KIND_SPARSE, 1, 0xff, 0xff, 0xff, 0xff, 0x7f]); // over 32 bits
        bad(&[VERSION, KIND_SPARSE, 0x81, 0x80, 0x80, 0x80, 0x80, 0x01]); // too long
        bad(&[VERSION, KIND_SPARSE, 0xff, 0xff, 0x03]); // more entries than registers

        // A dense register above the highest rank.
        let mut too_high = dense.clone();
        too_high[2] |= 0x3f;
        bad(&too_high);

        // Every truncation and every single-byte change of real encodings: errors or sketches,
        // never a panic.
        for bytes in [&sparse, &dense] {
            for len in 0..bytes.len().min(600) {
                let _ = Sketch::from_bytes(&bytes[..len]);
            }
            for i in 0..bytes.len().min(600) {
                for value in [0, 1, 0x3f, 0x7f, 0x80, 0xff] {
                    let mut changed = bytes.clone();
                    changed[i] = value;
                    let _ = Sketch::from_bytes(&changed);
                }
            }
        }
    }

    #[test]
    fn errors_display() {
        let error = Sketch::from_bytes(&[]).unwrap_err();
        assert_eq!(error, MalformedSketch("empty input"));
        assert_eq!(error.to_string(), "malformed reach sketch: empty input");
    }
}
