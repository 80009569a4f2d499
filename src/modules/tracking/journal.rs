//! The local journal: micro-batches of counter deltas appended to segment files, so that clicks
//! survive a crash of the process while neither Redis nor the database has taken them. A flush
//! applies the closed segments and deletes them; each segment's name is recorded with the applied
//! deltas, so a segment replayed after a crash is never counted twice.
//!
//! Stored formats, both read by this version:
//! - `seg-{run}-{seq}.rec` (this version): one record per appended batch, a header line
//!   `#{length} {crc32 as 8 hex digits}` and then `length` bytes of lines whose CRC-32 is the
//!   header's. A record that is torn (a crash or a full disk mid-write), or whose bytes changed,
//!   is skipped whole, counted in `reklama_counter_journal_records_skipped_total` and logged;
//!   the records after it still read, since every record starts at a header line and no counter
//!   line contains `#`.
//! - `seg-{run}-{seq}.log` (earlier versions): the same lines without headers; a torn last line
//!   (no newline) is skipped.
//!
//! A line is `advert bucket clicks bot_clicks duplicate_clicks impressions [suspicious_clicks
//! suspicious_impressions] [placement] [+creative]` (the suspicious pair only when either is
//! non-zero); the placement is left out for the generic card, so a line written before
//! placements were counted reads as the generic card's, and the creative (its number after a
//! `+`, which no placement name holds) when it is not known.
//!
//! One lock owns the open segment and the list of closed ones: `rotate` moves the open segment
//! to the closed list under the lock `append` takes, so a flush never reads a segment still being
//! appended to. This run's segments are known from that list only; the directory is listed for
//! segments of earlier runs (any other run id), so each instance needs a directory of its own.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::domain::AdvertId;
use crate::domain::creative::CreativeId;
use crate::platform::tokens::random_base62;

use super::ascii::{Placements, signed, split_once, unsigned};
use super::counters::{Batch, CounterKey, Counts, Metric, ViewerGroup};

const SEGMENT_PREFIX: &str = "seg-";
/// Segments of records (this version).
const RECORDS_SUFFIX: &str = ".rec";
/// Segments of plain lines (earlier versions).
const LINES_SUFFIX: &str = ".log";

/// What a segment file is written to. A trait so that tests can make a write fail halfway, as a
/// full disk does.
pub trait SegmentFile: Send {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Cuts the file back to `len` bytes (after a failed write).
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
    fn sync_data(&mut self) -> std::io::Result<()>;
}

impl SegmentFile for File {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        Write::write_all(self, bytes)
    }

    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        // The file is opened for appending: the next write goes to the new end.
        self.set_len(len)
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        File::sync_data(self)
    }
}

type Opener = Box<dyn Fn(&Path) -> std::io::Result<Box<dyn SegmentFile>> + Send + Sync>;

fn open_file(path: &Path) -> std::io::Result<Box<dyn SegmentFile>> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(Box::new(file))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Records,
    Lines,
}

/// A closed segment, ready to be applied.
#[derive(Debug, Clone)]
pub struct Segment {
    pub id: String,
    pub path: PathBuf,
    format: Format,
    /// The bytes this process wrote and saw succeed; `None` for an earlier run's segment, read
    /// to its end. Bytes past it (a write that failed and could not be cut back) are never read.
    len: Option<u64>,
}

struct Open {
    file: Box<dyn SegmentFile>,
    id: String,
    path: PathBuf,
    len: u64,
}

struct State {
    seq: u64,
    open: Option<Open>,
    /// Closed segments not yet removed, oldest first.
    closed: Vec<Segment>,
    /// Bytes of the open and closed segments this process knows of.
    bytes: u64,
}

pub struct Journal {
    dir: PathBuf,
    /// Distinguishes this process's segments from those of earlier runs.
    run_id: String,
    /// Each append reaches the disk (fdatasync) before it returns.
    fsync: bool,
    opener: Opener,
    state: Mutex<State>,
}

impl Journal {
    pub fn open(dir: &Path, fsync: bool) -> anyhow::Result<Self> {
        Self::open_with(dir, fsync, Box::new(open_file))
    }

    /// Like `open`, writing segments through `opener`.
    fn open_with(dir: &Path, fsync: bool, opener: Opener) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("tracking.journal_dir: cannot create {}: {e}", dir.display())
        })?;
        let earlier = earlier_segments(dir).map_err(|e| {
            anyhow::anyhow!("tracking.journal_dir: cannot read {}: {e}", dir.display())
        })?;
        let bytes = earlier
            .iter()
            .filter_map(|s| fs::metadata(&s.path).ok())
            .map(|m| m.len())
            .sum();
        Ok(Self {
            dir: dir.to_owned(),
            run_id: format!(
                "{}-{}",
                time::OffsetDateTime::now_utc().unix_timestamp(),
                random_base62(8)
            ),
            fsync,
            opener,
            state: Mutex::new(State {
                seq: 0,
                open: None,
                closed: earlier,
                bytes,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one micro-batch as one record of the open segment (opening one if needed). The
    /// write reaches the OS before this returns (and the disk, with `fsync`), so a killed process
    /// loses nothing already appended. On an error nothing of the batch stays readable: the
    /// segment is cut back to its length before the write, or, if even that fails, closed at that
    /// length, so the caller can keep the batch and append it again without counting it twice.
    pub fn append(&self, batch: &Batch) -> std::io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let record = encode_record(batch);
        let mut state = self.state();
        let state = &mut *state;
        if state.open.is_none() {
            state.seq += 1;
            let id = format!("{SEGMENT_PREFIX}{}-{:08}", self.run_id, state.seq);
            let path = self.dir.join(format!("{id}{RECORDS_SUFFIX}"));
            let file = (self.opener)(&path)?;
            if self.fsync {
                // The new name must survive a power cut too.
                File::open(&self.dir)?.sync_all()?;
            }
            state.open = Some(Open {
                file,
                id,
                path,
                len: 0,
            });
        }
        let Some(open) = state.open.as_mut() else {
            return Ok(());
        };
        let written = open.file.write_all(&record).and_then(|()| {
            if self.fsync {
                open.file.sync_data()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                open.len += record.len() as u64;
                state.bytes += record.len() as u64;
                Ok(())
            }
            Err(e) => {
                if let Err(cut) = open.file.truncate(open.len) {
                    tracing::error!(
                        error = %cut,
                        segment = %open.id,
                        "cannot cut a failed append back; closing the segment at its last good record"
                    );
                    if let Some(open) = state.open.take() {
                        state.closed.push(Segment {
                            id: open.id,
                            path: open.path,
                            format: Format::Records,
                            len: Some(open.len),
                        });
                    }
                }
                Err(e)
            }
        }
    }

    /// Closes the open segment, so that everything appended so far can be flushed while new
    /// appends go to a fresh one. Returns the segment it closed, if any.
    pub fn rotate(&self) -> Option<Segment> {
        let mut state = self.state();
        let open = state.open.take()?;
        drop(open.file);
        if open.len == 0 {
            // Nothing was ever appended (a first write failed): nothing to apply.
            let _ = fs::remove_file(&open.path);
            return None;
        }
        let segment = Segment {
            id: open.id,
            path: open.path,
            format: Format::Records,
            len: Some(open.len),
        };
        state.closed.push(segment.clone());
        Some(segment)
    }

    /// Every closed segment not yet removed, oldest first, including those left by earlier runs
    /// (found at start, or put in the directory since). This run's segments come from the list
    /// `rotate` keeps, never from the directory, where the open one also is.
    pub fn closed_segments(&self) -> std::io::Result<Vec<Segment>> {
        let ours = format!("{SEGMENT_PREFIX}{}-", self.run_id);
        let found = earlier_segments(&self.dir)?;
        let mut state = self.state();
        for segment in found {
            if !segment.id.starts_with(&ours) && !state.closed.iter().any(|s| s.id == segment.id) {
                state.bytes += fs::metadata(&segment.path).map(|m| m.len()).unwrap_or(0);
                state.closed.push(segment);
            }
        }
        let mut closed = state.closed.clone();
        closed.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(closed)
    }

    /// Deletes a segment the database holds.
    pub fn remove(&self, segment: &Segment) -> std::io::Result<()> {
        let size = segment
            .len
            .unwrap_or_else(|| fs::metadata(&segment.path).map(|m| m.len()).unwrap_or(0));
        match fs::remove_file(&segment.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut state = self.state();
        state.bytes = state.bytes.saturating_sub(size);
        state.closed.retain(|s| s.id != segment.id);
        Ok(())
    }

    /// Bytes waiting on disk (for the size warning).
    pub fn size_on_disk(&self) -> u64 {
        self.state().bytes
    }
}

/// Segments left in `dir` by earlier runs, oldest first.
fn earlier_segments(dir: &Path) -> std::io::Result<Vec<Segment>> {
    let mut segments: Vec<Segment> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let (id, format) = match name.strip_suffix(RECORDS_SUFFIX) {
                Some(id) => (id, Format::Records),
                None => (name.strip_suffix(LINES_SUFFIX)?, Format::Lines),
            };
            id.starts_with(SEGMENT_PREFIX).then(|| Segment {
                id: id.to_owned(),
                path: entry.path(),
                format,
                len: None,
            })
        })
        .collect();
    segments.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(segments)
}

/// One record: the header line, then the batch's lines.
fn encode_record(batch: &Batch) -> Vec<u8> {
    let mut lines = String::with_capacity((batch.deltas.len() + batch.groups.len()) * 32);
    for (key, counts) in &batch.deltas {
        if counts.is_zero() {
            continue;
        }
        write_counts_line(&mut lines, key.advert, key.bucket, counts);
        if let Some(placement) = &key.placement {
            lines.push(' ');
            lines.push_str(placement);
        }
        if let Some(creative) = key.creative {
            lines.push_str(" +");
            lines.push_str(itoa::Buffer::new().format(creative.0));
        }
        lines.push('\n');
    }
    // A device's or country's share: its token last (`@mobile`, `~DE`).
    for ((advert, bucket, group), counts) in &batch.groups {
        if !counts.is_zero() {
            write_counts_line(&mut lines, *advert, *bucket, counts);
            lines.push(' ');
            group.write_token(&mut lines);
            lines.push('\n');
        }
    }
    let header = format!(
        "#{} {:08x}\n",
        lines.len(),
        crc32fast::hash(lines.as_bytes())
    );
    let mut record = Vec::with_capacity(header.len() + lines.len());
    record.extend_from_slice(header.as_bytes());
    record.extend_from_slice(lines.as_bytes());
    record
}

/// A line's advert, hour and counts (what every line starts with), without its end.
fn write_counts_line(lines: &mut String, advert: AdvertId, bucket: i64, counts: &Counts) {
    let [
        clicks,
        bots,
        duplicates,
        impressions,
        suspicious,
        suspicious_shown,
    ] = counts.values();
    let mut number = itoa::Buffer::new();
    lines.push_str(number.format(advert.0));
    lines.push(' ');
    lines.push_str(number.format(bucket));
    for field in [clicks, bots, duplicates, impressions] {
        lines.push(' ');
        lines.push_str(number.format(field));
    }
    // Lines without suspicious counts keep the earlier layout, which earlier versions read.
    if suspicious > 0 || suspicious_shown > 0 {
        for field in [suspicious, suspicious_shown] {
            lines.push(' ');
            lines.push_str(number.format(field));
        }
    }
}

/// What reading a segment found.
#[derive(Debug, Default)]
pub struct SegmentContents {
    pub batch: Batch,
    /// Records (or runs of lines outside any record) left out because they were torn or changed.
    pub skipped: u64,
}

/// Reads a closed segment alone (see [`read_segment_into`]).
#[cfg(test)]
pub fn read_segment(segment: &Segment) -> std::io::Result<SegmentContents> {
    let mut contents = SegmentContents::default();
    read_segment_into(segment, &mut contents)?;
    Ok(contents)
}

/// Reads a closed segment, a line at a time, adding its counts to those `into` holds: a segment
/// holds everything since the last flush (tens of MB under load), and only its sum needs to be
/// in memory. A flush reads each of its segments into one batch, with room made beforehand.
pub fn read_segment_into(segment: &Segment, into: &mut SegmentContents) -> std::io::Result<()> {
    let file = File::open(&segment.path)?;
    let limit = segment.len.unwrap_or(u64::MAX);
    let reader = BufReader::with_capacity(READ_BUFFER_BYTES, file.take(limit));
    let skipped_before = into.skipped;
    let mut lines = LineReader::default();
    match segment.format {
        Format::Records => lines.read_records(reader, into)?,
        Format::Lines => lines.read_lines(reader, into)?,
    }
    let skipped = into.skipped - skipped_before;
    if skipped > 0 {
        metrics::counter!("reklama_counter_journal_records_skipped_total").increment(skipped);
        tracing::warn!(
            segment = %segment.id,
            skipped,
            "journal records torn or damaged were left out"
        );
    }
    Ok(())
}

/// How much of a segment is read from the file at a time.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// What reading one segment keeps from line to line: the bytes of the record being read, its
/// parsed lines, and the placement names seen.
#[derive(Default)]
struct LineReader {
    /// The open record's bytes so far (after its header), read straight into it.
    bytes: Vec<u8>,
    /// The record's parsed lines, added to the batch only once all of it is known good.
    parsed: Vec<(Entry, Counts)>,
    placements: Placements,
}

/// A record's header: how many bytes of lines follow, and their CRC-32.
struct Header {
    len: usize,
    crc: u32,
}

impl Header {
    /// `#{length} {crc32 as 8 hex digits}`, without its newline.
    fn parse(line: &[u8]) -> Option<Self> {
        let (len, crc) = split_once(line.strip_prefix(b"#")?, b' ')?;
        if crc.len() != 8 {
            return None;
        }
        let crc = std::str::from_utf8(crc).ok()?;
        Some(Self {
            len: usize::try_from(unsigned(len)?).ok()?,
            crc: u32::from_str_radix(crc, 16).ok()?,
        })
    }
}

impl LineReader {
    fn read_records(
        &mut self,
        mut reader: impl BufRead,
        contents: &mut SegmentContents,
    ) -> std::io::Result<()> {
        let mut record: Option<Header> = None;
        // Lines outside any record (after a damaged header) are skipped, counted once per run.
        let mut stray = false;
        loop {
            let start = self.bytes.len();
            if reader.read_until(b'\n', &mut self.bytes)? == 0 {
                break;
            }
            let line = &self.bytes[start..];
            if line.first() == Some(&b'#') {
                let header = Header::parse(line.strip_suffix(b"\n").unwrap_or(line));
                self.bytes.truncate(start);
                self.close(&mut record, contents);
                stray = header.is_none();
                if stray {
                    contents.skipped += 1;
                }
                record = header;
                continue;
            }
            // A record ends where its header says: lines after it, before the next header,
            // belong to no record (a damaged header), and cannot spoil this one.
            match record.as_ref().map(|open| self.bytes.len() >= open.len) {
                Some(true) => {
                    self.close(&mut record, contents);
                    stray = false;
                }
                Some(false) => {}
                None => {
                    self.bytes.clear();
                    if !stray {
                        contents.skipped += 1;
                        stray = true;
                    }
                }
            }
        }
        self.close(&mut record, contents);
        Ok(())
    }

    /// Ends the open record, if any: adds its lines (`self.bytes`) to `into` if it is whole and
    /// unchanged (its length and CRC-32 the header's, every line well formed), otherwise none
    /// of them; then empties the buffer for the next record.
    fn close(&mut self, record: &mut Option<Header>, into: &mut SegmentContents) {
        if let Some(header) = record.take() {
            let whole =
                self.bytes.len() == header.len && crc32fast::hash(&self.bytes) == header.crc;
            if whole && self.parse_record() {
                for (entry, counts) in self.parsed.drain(..) {
                    add_counts(&mut into.batch, entry, counts);
                }
            } else {
                into.skipped += 1;
            }
        }
        self.bytes.clear();
    }

    /// Parses every line of the record into `self.parsed`; false if one is not a counter line.
    fn parse_record(&mut self) -> bool {
        self.parsed.clear();
        if self.bytes.is_empty() {
            // A record of no lines.
            return true;
        }
        let Some(lines) = self.bytes.strip_suffix(b"\n") else {
            return false;
        };
        for line in lines.split(|&b| b == b'\n') {
            match parse_line(line, &mut self.placements) {
                Some(parsed) => self.parsed.push(parsed),
                None => return false,
            }
        }
        true
    }

    /// Earlier versions' segments: plain lines, a torn last line (no newline: the process died
    /// mid-write, so its deltas were never acknowledged as durable) skipped.
    fn read_lines(
        &mut self,
        mut reader: impl BufRead,
        contents: &mut SegmentContents,
    ) -> std::io::Result<()> {
        loop {
            self.bytes.clear();
            if reader.read_until(b'\n', &mut self.bytes)? == 0 {
                break;
            }
            // Whatever follows the last newline is unfinished.
            let Some(complete) = self.bytes.strip_suffix(b"\n") else {
                contents.skipped += 1;
                break;
            };
            if let Some((entry, counts)) = parse_line(complete, &mut self.placements) {
                add_counts(&mut contents.batch, entry, counts);
            }
        }
        Ok(())
    }
}

/// What a journal line counts: a key's deltas, or a device's or country's share of them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Key(CounterKey),
    Group(AdvertId, i64, ViewerGroup),
}

fn add_counts(batch: &mut Batch, entry: Entry, counts: Counts) {
    match entry {
        Entry::Key(key) => {
            if !counts.is_zero() {
                batch.add_counts(key, &counts);
            }
        }
        Entry::Group(advert, bucket, group) => {
            batch.add_group(advert, bucket, group, &counts);
        }
    }
}

/// A line, from its bytes: fields apart at single spaces, numbers in ASCII digits. `placements`
/// are the names met so far, shared by the lines that name them.
fn parse_line(line: &[u8], placements: &mut Placements) -> Option<(Entry, Counts)> {
    let mut fields = line.split(|&b| b == b' ');
    let advert = signed(fields.next()?)?;
    let bucket = signed(fields.next()?)?;
    let mut counts = Counts::default();
    for metric in &Metric::ALL[..4] {
        counts[*metric] = unsigned(fields.next()?)?;
    }
    // What follows the four counts every version writes: nothing, a placement, the two
    // suspicious counts, or both; the number of fields tells them apart. The creative, last,
    // is told by its `+`; a device's or country's share by its `@` or `~`.
    // At most four fields follow: two suspicious counts, a placement and a creative.
    let mut tail: [&[u8]; 4] = [&[]; 4];
    let mut n = 0;
    for field in fields {
        *tail.get_mut(n)? = field;
        n += 1;
    }
    let mut rest = &tail[..n];
    if let Some((token, before)) = rest
        .split_last()
        .filter(|(f, _)| matches!(f.first(), Some(b'@' | b'~')))
    {
        let group = ViewerGroup::from_token(std::str::from_utf8(token).ok()?)?;
        rest = before;
        if let [clicks, impressions] = rest {
            counts[Metric::SuspiciousClick] = unsigned(clicks)?;
            counts[Metric::SuspiciousImpression] = unsigned(impressions)?;
        } else if !rest.is_empty() {
            return None;
        }
        return Some((Entry::Group(AdvertId(advert), bucket, group), counts));
    }
    let creative = match rest.split_last() {
        Some((last, before)) if last.first() == Some(&b'+') => {
            rest = before;
            Some(CreativeId(u32::try_from(unsigned(&last[1..])?).ok()?))
        }
        _ => None,
    };
    let (suspicious, placement) = match rest {
        [] => (None, None),
        [name] => (None, Some(*name)),
        [clicks, impressions] => (Some((*clicks, *impressions)), None),
        [clicks, impressions, name] => (Some((*clicks, *impressions)), Some(*name)),
        _ => return None,
    };
    if let Some((clicks, impressions)) = suspicious {
        counts[Metric::SuspiciousClick] = unsigned(clicks)?;
        counts[Metric::SuspiciousImpression] = unsigned(impressions)?;
    }
    let placement = match placement {
        None => None,
        Some(name) => Some(placements.name(name)?),
    };
    Some((
        Entry::Key(CounterKey::new(AdvertId(advert), bucket, placement).with_creative(creative)),
        counts,
    ))
}

/// A journal on a disk that fills up on demand, for tests here and in the pipeline.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) mod full_disk {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;

    /// A segment file that fails after `budget` more bytes, writing the bytes that fit first,
    /// as a full disk does.
    struct FullDisk {
        file: File,
        budget: Arc<AtomicU64>,
        cut_fails: Arc<AtomicBool>,
    }

    impl SegmentFile for FullDisk {
        fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            let budget = self.budget.load(Ordering::SeqCst);
            let fits = bytes.len().min(budget as usize);
            Write::write_all(&mut self.file, &bytes[..fits])?;
            self.budget.fetch_sub(fits as u64, Ordering::SeqCst);
            if fits < bytes.len() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left on device",
                ));
            }
            Ok(())
        }

        fn truncate(&mut self, len: u64) -> std::io::Result<()> {
            if self.cut_fails.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("cannot truncate"));
            }
            self.file.set_len(len)
        }

        fn sync_data(&mut self) -> std::io::Result<()> {
            self.file.sync_data()
        }
    }

    pub(crate) fn full_disk_journal(dir: &Path) -> (Journal, Arc<AtomicU64>, Arc<AtomicBool>) {
        let budget = Arc::new(AtomicU64::new(u64::MAX));
        let cut_fails = Arc::new(AtomicBool::new(false));
        let (b, c) = (budget.clone(), cut_fails.clone());
        let opener: Opener = Box::new(move |path| {
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            Ok(Box::new(FullDisk {
                file,
                budget: b.clone(),
                cut_fails: c.clone(),
            }))
        });
        (
            Journal::open_with(dir, true, opener).unwrap(),
            budget,
            cut_fails,
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use super::*;
    use crate::modules::tracking::counters::PlacementName;

    fn clicks(advert: i64, n: u64) -> Batch {
        let mut batch = Batch::default();
        batch.add(
            CounterKey::generic(AdvertId(advert), 3600),
            Metric::Click,
            n,
        );
        batch
    }

    fn read_all(journal: &Journal) -> Batch {
        let mut batch = Batch::default();
        for segment in journal.closed_segments().unwrap() {
            batch.merge(read_segment(&segment).unwrap().batch);
        }
        batch
    }

    fn parse(line: &str) -> Option<(Entry, Counts)> {
        parse_line(line.as_bytes(), &mut Placements::default())
    }

    fn legacy(dir: &Path, name: &str, text: &str) -> Segment {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        Segment {
            id: name.trim_end_matches(LINES_SUFFIX).to_owned(),
            path,
            format: Format::Lines,
            len: None,
        }
    }

    #[test]
    fn appended_batches_come_back_from_closed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), false).unwrap();
        let mut batch = Batch::default();
        batch.add(CounterKey::generic(AdvertId(7), 3600), Metric::Click, 5);
        batch.add(CounterKey::generic(AdvertId(7), 3600), Metric::BotClick, 1);
        let banner: PlacementName = "mobile_banner".into();
        batch.add(
            CounterKey::new(AdvertId(7), 3600, Some(banner.clone())),
            Metric::Impression,
            3,
        );
        journal.append(&batch).unwrap();
        journal.append(&batch).unwrap();
        assert!(
            journal.closed_segments().unwrap().is_empty(),
            "the open segment is not closed"
        );
        let closed = journal.rotate().unwrap();
        let segments = journal.closed_segments().unwrap();
        assert_eq!(segments.len(), 1);
        assert_eq!(segments[0].id, closed.id);
        let read = read_segment(&segments[0]).unwrap();
        assert_eq!(read.skipped, 0);
        assert_eq!(read.batch.total(Metric::Click), 10);
        assert_eq!(read.batch.total(Metric::BotClick), 2);
        assert_eq!(
            read.batch.deltas[&CounterKey::new(AdvertId(7), 3600, Some(banner))],
            Counts::from_values([0, 0, 0, 6, 0, 0])
        );
        assert_eq!(
            journal.size_on_disk(),
            fs::metadata(&closed.path).unwrap().len()
        );
        journal.remove(&segments[0]).unwrap();
        assert!(journal.closed_segments().unwrap().is_empty());
        assert!(!closed.path.exists());
        assert_eq!(journal.size_on_disk(), 0);
    }

    #[test]
    fn a_torn_last_line_of_an_earlier_versions_segment_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let segment = legacy(dir.path(), "seg-x-00000001.log", "1 0 3 0 0 0\n2 0 4 0");
        let read = read_segment(&segment).unwrap();
        assert_eq!(read.batch.total(Metric::Click), 3);
        // A line torn inside its placement name never names a placement that does not exist.
        let segment = legacy(
            dir.path(),
            "seg-x-00000001.log",
            "1 0 3 0 0 0 leaderboard\n1 0 4 0 0 0 leader",
        );
        let read = read_segment(&segment).unwrap();
        assert_eq!(read.batch.total(Metric::Click), 3);
        assert_eq!(read.batch.deltas.len(), 1);
    }

    #[test]
    fn suspicious_counts_round_trip_and_lines_without_them_keep_the_earlier_layout() {
        let placed = CounterKey::new(AdvertId(7), 3600, Some("leaderboard".into()));
        let generic = CounterKey::generic(AdvertId(8), 3600);
        let mut batch = Batch::default();
        batch.add(placed.clone(), Metric::SuspiciousClick, 3);
        batch.add(placed.clone(), Metric::Click, 1);
        batch.add(generic.clone(), Metric::SuspiciousImpression, 5);
        let plain = CounterKey::generic(AdvertId(9), 3600);
        batch.add(plain.clone(), Metric::Impression, 2);
        let record = String::from_utf8(encode_record(&batch)).unwrap();
        assert!(
            record.contains("7 3600 1 0 0 0 3 0 leaderboard\n"),
            "{record}"
        );
        assert!(record.contains("8 3600 0 0 0 0 0 5\n"), "{record}");
        assert!(record.contains("9 3600 0 0 0 2\n"), "{record}");
        let dir = tempfile::tempdir().unwrap();
        let segment = legacy(dir.path(), "seg-x-00000001.rec", &record);
        assert_eq!(read_segment(&segment).unwrap().batch, batch);
        for (line, counts) in [
            ("1 0 3 0 0 4", Some([3, 0, 0, 4, 0, 0])),
            ("1 0 3 0 0 4 leaderboard", Some([3, 0, 0, 4, 0, 0])),
            ("1 0 3 0 0 4 5 6", Some([3, 0, 0, 4, 5, 6])),
            ("1 0 3 0 0 4 5 6 leaderboard", Some([3, 0, 0, 4, 5, 6])),
            ("1 0 3 0 0 4 5 leaderboard", None),
            ("1 0 3 0 0 4 5 6 7 leaderboard", None),
        ] {
            assert_eq!(
                parse(line).map(|(_, c)| c),
                counts.map(Counts::from_values),
                "{line}"
            );
        }
    }

    #[test]
    fn creatives_round_trip_after_the_placement_and_lines_without_one_read_as_before() {
        let shown = CounterKey::new(AdvertId(7), 3600, Some("leaderboard".into()))
            .with_creative(Some(CreativeId(12)));
        let generic = CounterKey::generic(AdvertId(7), 3600).with_creative(Some(CreativeId(3)));
        let mut batch = Batch::default();
        batch.add(shown.clone(), Metric::Impression, 4);
        batch.add(shown, Metric::SuspiciousClick, 1);
        batch.add(generic, Metric::Click, 2);
        let record = String::from_utf8(encode_record(&batch)).unwrap();
        assert!(
            record.contains("7 3600 0 0 0 4 1 0 leaderboard +12\n"),
            "{record}"
        );
        assert!(record.contains("7 3600 2 0 0 0 +3\n"), "{record}");
        let dir = tempfile::tempdir().unwrap();
        let segment = legacy(dir.path(), "seg-x-00000001.rec", &record);
        assert_eq!(read_segment(&segment).unwrap().batch, batch);
        for (line, creative) in [
            ("1 0 3 0 0 4 +5", Some(Some(CreativeId(5)))),
            ("1 0 3 0 0 4 5 6 leaderboard +5", Some(Some(CreativeId(5)))),
            ("1 0 3 0 0 4 leaderboard", Some(None)),
            ("1 0 3 0 0 4 +", None),
            ("1 0 3 0 0 4 +x", None),
            ("1 0 3 0 0 4 +5 leaderboard", None),
        ] {
            assert_eq!(
                parse(line).and_then(|(entry, _)| match entry {
                    Entry::Key(key) => Some(key.creative),
                    Entry::Group(..) => None,
                }),
                creative,
                "{line}"
            );
        }
    }

    #[test]
    fn device_and_country_shares_round_trip_as_lines_of_their_own() {
        use crate::domain::targeting::{Country, Device};
        let key = CounterKey::generic(AdvertId(7), 3600);
        let mut batch = Batch::default();
        batch.add(key, Metric::Impression, 5);
        let mobile = ViewerGroup::Device(Device::Mobile);
        let germany = ViewerGroup::Country(Country::known("DE").unwrap());
        batch.add_group(
            AdvertId(7),
            3600,
            mobile,
            &Counts::from_values([0, 0, 0, 3, 0, 0]),
        );
        batch.add_group(
            AdvertId(7),
            3600,
            germany,
            &Counts::from_values([0, 0, 0, 2, 1, 0]),
        );
        let record = String::from_utf8(encode_record(&batch)).unwrap();
        assert!(record.contains("7 3600 0 0 0 3 @mobile\n"), "{record}");
        assert!(record.contains("7 3600 0 0 0 2 1 0 ~DE\n"), "{record}");
        let dir = tempfile::tempdir().unwrap();
        let segment = legacy(dir.path(), "seg-x-00000001.rec", &record);
        assert_eq!(read_segment(&segment).unwrap().batch, batch);
        for (line, read) in [
            ("1 0 3 0 0 4 @tablet", true),
            ("1 0 3 0 0 4 5 6 ~US", true),
            ("1 0 3 0 0 4 @phone", false),
            ("1 0 3 0 0 4 ~XX", false),
            ("1 0 3 0 0 4 leaderboard @mobile", false),
            ("1 0 3 0 0 4 5 @mobile", false),
        ] {
            assert_eq!(
                matches!(parse(line), Some((Entry::Group(..), _))),
                read,
                "{line}"
            );
        }
    }

    #[test]
    fn a_segment_written_before_placements_reads_as_the_generic_card() {
        let dir = tempfile::tempdir().unwrap();
        // The format of earlier versions: six numbers a line, no placement, no record headers.
        let segment = legacy(
            dir.path(),
            "seg-1700000000-abcdefgh-00000001.log",
            "7 3600 5 1 0 40\n8 7200 0 0 2 9\n",
        );
        let batch = read_segment(&segment).unwrap().batch;
        assert_eq!(batch.deltas.len(), 2);
        assert_eq!(
            batch.deltas[&CounterKey::generic(AdvertId(7), 3600)],
            Counts::from_values([5, 1, 0, 40, 0, 0])
        );
        assert_eq!(
            batch.deltas[&CounterKey::generic(AdvertId(8), 7200)],
            Counts::from_values([0, 0, 2, 9, 0, 0])
        );
        assert!(batch.named().is_empty());
    }

    #[test]
    fn malformed_lines_of_an_earlier_versions_segment_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let segment = legacy(
            dir.path(),
            "seg-x-00000002.log",
            "1 0 1 0 0 0 Bad-Name\n1 0 -1 0 0 0\n1 0 1 0 0 0 square extra\n1 0 2 0 0 0 square\n",
        );
        let batch = read_segment(&segment).unwrap().batch;
        assert_eq!(batch.total(Metric::Click), 2);
        assert_eq!(batch.deltas.len(), 1);
    }

    #[test]
    fn numbers_are_ascii_digits_within_their_type() {
        for (line, read) in [
            ("7 3600 18446744073709551615 0 0 4", true),
            ("-7 -3600 1 0 0 4", true),
            ("7 3600 1 0 0 4 5 6 leaderboard +4294967295", true),
            ("7 3600 18446744073709551616 0 0 4", false),
            ("9223372036854775808 3600 1 0 0 4", false),
            ("7 3600 1 0 0 4 +4294967296", false),
            ("7 3600 1 0 0 4x", false),
            ("7 3600 1 -0 0 4", false),
            ("07 3600 1 0 0 4", false),
            ("7 3600 1 00 0 4", false),
            ("7  3600 1 0 0 4", false),
            ("7 3600 1 0 0 4 ", false),
            ("7 3600 1 0 0", false),
            ("", false),
        ] {
            assert_eq!(parse(line).is_some(), read, "{line}");
        }
        let (entry, counts) = parse("-7 -3600 1 0 0 4").unwrap();
        assert_eq!(entry, Entry::Key(CounterKey::generic(AdvertId(-7), -3600)));
        assert_eq!(counts, Counts::from_values([1, 0, 0, 4, 0, 0]));
    }

    #[test]
    fn the_lines_of_one_placement_share_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), false).unwrap();
        for round in 0..3 {
            let mut batch = Batch::default();
            for advert in 0..100 {
                for name in ["leaderboard", "mobile_banner"] {
                    let key = CounterKey::new(AdvertId(advert), 3600, Some(name.into()));
                    batch.add(key, Metric::Impression, round + 1);
                }
            }
            journal.append(&batch).unwrap();
        }
        journal.rotate().unwrap();
        let batch = read_all(&journal);
        assert_eq!(batch.deltas.len(), 200);
        assert_eq!(batch.total(Metric::Impression), 1_200);
        let names: Vec<&PlacementName> = batch
            .deltas
            .keys()
            .filter_map(|key| key.placement.as_ref())
            .collect();
        assert_eq!(names.len(), 200);
        for name in &names {
            let first = names.iter().find(|n| n[..] == name[..]).unwrap();
            assert!(Arc::ptr_eq(name, first), "{name} is held twice");
        }
    }

    #[test]
    fn a_record_of_no_lines_reads_as_nothing_and_is_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut zero = Batch::default();
        zero.add(CounterKey::generic(AdvertId(1), 3600), Metric::Click, 0);
        let mut text = encode_record(&zero);
        assert_eq!(text, b"#0 00000000\n");
        text.extend(encode_record(&clicks(2, 3)));
        let segment = legacy(
            dir.path(),
            "seg-x-00000001.rec",
            std::str::from_utf8(&text).unwrap(),
        );
        let segment = Segment {
            format: Format::Records,
            ..segment
        };
        let read = read_segment(&segment).unwrap();
        assert_eq!(read.skipped, 0);
        assert_eq!(read.batch.total(Metric::Click), 3);
    }

    #[test]
    fn segments_of_an_earlier_run_are_found_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        legacy(dir.path(), "seg-1-old-00000001.log", "1 0 4 0 0 0\n");
        let first = Journal::open(dir.path(), false).unwrap();
        first.append(&clicks(1, 1)).unwrap();
        drop(first);
        // Not segments: left alone.
        fs::write(dir.path().join("notes.txt"), "1 0 9 0 0 0\n").unwrap();
        let second = Journal::open(dir.path(), false).unwrap();
        let segments = second.closed_segments().unwrap();
        assert_eq!(segments.len(), 2);
        assert_eq!(read_all(&second).total(Metric::Click), 5);
        assert!(second.size_on_disk() > 0);
    }

    /// Three records of 1, 10 and 100 clicks in one segment; returns its path and each record's
    /// start offset.
    fn three_records(dir: &Path) -> (Segment, Vec<usize>) {
        let journal = Journal::open(dir, false).unwrap();
        let mut starts = Vec::new();
        for n in [1, 10, 100] {
            starts.push(journal.size_on_disk() as usize);
            journal.append(&clicks(1, n)).unwrap();
        }
        let mut segment = journal.rotate().unwrap();
        // Read as an earlier run's segment would be: to the end of the file.
        segment.len = None;
        (segment, starts)
    }

    #[test]
    fn a_torn_record_is_skipped_and_the_complete_ones_before_it_read() {
        let dir = tempfile::tempdir().unwrap();
        let (segment, starts) = three_records(dir.path());
        let bytes = fs::read(&segment.path).unwrap();
        // Torn anywhere inside the last record: header, line, or before its last newline.
        for cut in starts[2] + 1..bytes.len() {
            fs::write(&segment.path, &bytes[..cut]).unwrap();
            let read = read_segment(&segment).unwrap();
            assert_eq!(read.batch.total(Metric::Click), 11, "cut at {cut}");
            assert_eq!(read.skipped, 1, "cut at {cut}");
        }
    }

    #[test]
    fn a_changed_byte_in_a_record_skips_that_record_only() {
        let dir = tempfile::tempdir().unwrap();
        let (segment, starts) = three_records(dir.path());
        let bytes = fs::read(&segment.path).unwrap();
        // Every byte of the middle record, each replaced by several others.
        for at in starts[1]..starts[2] {
            for replacement in [b'0', b'7', b'9', b' ', b'\n', b'#', b'x'] {
                if bytes[at] == replacement {
                    continue;
                }
                let mut changed = bytes.clone();
                changed[at] = replacement;
                fs::write(&segment.path, &changed).unwrap();
                let read = read_segment(&segment).unwrap();
                let total = read.batch.total(Metric::Click);
                // Never misread: the first record is always whole; the middle one never counts;
                // the last one counts unless the change broke the header that ends the middle.
                assert!(
                    total == 101 || total == 1,
                    "byte {at} as {:?}: {total} clicks",
                    replacement as char
                );
                assert!(read.skipped >= 1);
            }
        }
    }

    use super::full_disk::full_disk_journal;

    #[test]
    fn a_write_that_fills_the_disk_leaves_nothing_behind_and_its_retry_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, budget, _) = full_disk_journal(dir.path());
        journal.append(&clicks(1, 5)).unwrap();
        let good = journal.size_on_disk();
        let mut big = clicks(1, 1000);
        for advert in 2..40 {
            big.merge(clicks(advert, 1000));
        }
        // Room for part of the batch only: the write fails halfway.
        budget.store(100, Ordering::SeqCst);
        assert!(journal.append(&big).is_err());
        assert_eq!(journal.size_on_disk(), good);
        // Space again: the caller appends the same batch (its counts stayed in memory).
        budget.store(u64::MAX, Ordering::SeqCst);
        journal.append(&big).unwrap();
        let segment = journal.rotate().unwrap();
        assert_eq!(
            fs::metadata(&segment.path).unwrap().len(),
            journal.size_on_disk()
        );
        let read = read_segment(&segment).unwrap();
        assert_eq!(read.skipped, 0);
        assert_eq!(read.batch.total(Metric::Click), 5 + 39 * 1000);
    }

    #[test]
    fn a_failed_write_that_cannot_be_cut_back_is_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, budget, cut_fails) = full_disk_journal(dir.path());
        journal.append(&clicks(1, 5)).unwrap();
        budget.store(4, Ordering::SeqCst);
        cut_fails.store(true, Ordering::SeqCst);
        assert!(journal.append(&clicks(1, 70)).is_err());
        // The segment was closed at its last good record; the retry opens a new one.
        assert_eq!(journal.closed_segments().unwrap().len(), 1);
        budget.store(u64::MAX, Ordering::SeqCst);
        journal.append(&clicks(1, 70)).unwrap();
        journal.rotate().unwrap();
        let segments = journal.closed_segments().unwrap();
        assert_eq!(segments.len(), 2);
        assert_eq!(read_all(&journal).total(Metric::Click), 75);
        // After a crash the partial bytes are read too, and skipped as a torn record.
        let mut after_crash = segments[0].clone();
        after_crash.len = None;
        let read = read_segment(&after_crash).unwrap();
        assert_eq!(read.batch.total(Metric::Click), 5);
        assert_eq!(read.skipped, 1);
    }

    #[test]
    fn concurrent_appends_rotations_and_flushes_apply_every_count_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(dir.path(), false).unwrap());
        let appended = Arc::new(AtomicU64::new(0));
        let writers_done = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (journal, appended, done) =
                    (journal.clone(), appended.clone(), writers_done.clone());
                std::thread::spawn(move || {
                    for i in 0..2000u64 {
                        let n = 1 + (i + w) % 3;
                        journal.append(&clicks(1 + w as i64, n)).unwrap();
                        appended.fetch_add(n, Ordering::SeqCst);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        // The flush: rotate, read every closed segment, "apply" it, delete it.
        let mut applied = 0u64;
        let mut seen = std::collections::HashSet::new();
        let mut flush = |journal: &Journal| {
            journal.rotate();
            for segment in journal.closed_segments().unwrap() {
                assert!(
                    seen.insert(segment.id.clone()),
                    "{} applied twice",
                    segment.id
                );
                applied += read_segment(&segment).unwrap().batch.total(Metric::Click);
                journal.remove(&segment).unwrap();
            }
        };
        while writers_done.load(Ordering::SeqCst) < 4 {
            flush(&journal);
            std::thread::yield_now();
        }
        for writer in writers {
            writer.join().unwrap();
        }
        flush(&journal);
        assert_eq!(applied, appended.load(Ordering::SeqCst));
        assert!(seen.len() > 1, "the flushes ran while appends did");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(journal.size_on_disk(), 0);
    }
}
