//! The local journal: micro-batches of counter deltas appended to segment files, so that clicks
//! survive a crash of the process while the database has not taken them yet. Used whenever
//! there is no Redis (or Redis is down). A flush applies the closed segments and deletes them;
//! each segment's name is recorded with the applied deltas, so a segment replayed after a crash
//! is never counted twice.
//!
//! A segment is text, one line per (advert, hour, placement): `advert bucket clicks bot_clicks
//! duplicate_clicks impressions [placement]`. The placement field is left out for the generic
//! card, so a line written before placements were counted reads as the generic card's, and a
//! reader that ignores the last field still finds the right totals.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::domain::AdvertId;
use crate::platform::tokens::random_base62;

use super::counters::{Batch, CounterKey, Metric, PlacementName, is_placement_name};

const SEGMENT_PREFIX: &str = "seg-";
const SEGMENT_SUFFIX: &str = ".log";

/// A closed segment, ready to be applied.
#[derive(Debug)]
pub struct Segment {
    pub id: String,
    pub path: PathBuf,
}

struct Open {
    file: File,
    id: String,
    bytes: u64,
}

pub struct Journal {
    dir: PathBuf,
    /// Distinguishes this process's segments from those of earlier runs.
    run_id: String,
    seq: Mutex<(u64, Option<Open>)>,
}

impl Journal {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("tracking.journal_dir: cannot create {}: {e}", dir.display())
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            run_id: format!(
                "{}-{}",
                time::OffsetDateTime::now_utc().unix_timestamp(),
                random_base62(8)
            ),
            seq: Mutex::new((0, None)),
        })
    }

    /// Appends one micro-batch to the open segment (opening one if needed). The write reaches
    /// the OS before this returns, so a killed process loses nothing already appended.
    pub fn append(&self, batch: &Batch) -> std::io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut text = String::with_capacity(batch.deltas.len() * 32);
        for (key, counts) in &batch.deltas {
            use std::fmt::Write as _;
            let _ = write!(
                text,
                "{} {} {} {} {} {}",
                key.advert.0, key.bucket, counts[0], counts[1], counts[2], counts[3]
            );
            if let Some(placement) = &key.placement {
                let _ = write!(text, " {placement}");
            }
            text.push('\n');
        }
        let mut guard = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        let (seq, open) = &mut *guard;
        if open.is_none() {
            *seq += 1;
            let id = format!("{SEGMENT_PREFIX}{}-{:08}", self.run_id, *seq);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(format!("{id}{SEGMENT_SUFFIX}")))?;
            *open = Some(Open { file, id, bytes: 0 });
        }
        if let Some(segment) = open.as_mut() {
            segment.file.write_all(text.as_bytes())?;
            segment.bytes += text.len() as u64;
        }
        Ok(())
    }

    /// Closes the open segment, so that everything appended so far can be flushed while new
    /// appends go to a fresh one.
    pub fn rotate(&self) {
        let mut guard = self.seq.lock().unwrap_or_else(|p| p.into_inner());
        guard.1 = None;
    }

    /// Every closed segment on disk, oldest first, including those left by earlier runs.
    pub fn closed_segments(&self) -> std::io::Result<Vec<Segment>> {
        let open_id = {
            let guard = self.seq.lock().unwrap_or_else(|p| p.into_inner());
            guard.1.as_ref().map(|o| o.id.clone())
        };
        let mut segments: Vec<Segment> = fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let id = name.strip_suffix(SEGMENT_SUFFIX)?;
                (id.starts_with(SEGMENT_PREFIX) && Some(id) != open_id.as_deref()).then(|| {
                    Segment {
                        id: id.to_owned(),
                        path: entry.path(),
                    }
                })
            })
            .collect();
        segments.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(segments)
    }

    /// Bytes waiting on disk (for the size warning).
    pub fn size_on_disk(&self) -> u64 {
        fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// Reads a segment, a line at a time: a segment holds everything since the last flush (tens of
/// MB under load), and only its sum needs to be in memory. A torn last line (the process died
/// mid-write, so the line has no end) is skipped: its deltas were never acknowledged as durable.
pub fn read_segment(path: &Path) -> std::io::Result<Batch> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut batch = Batch::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        // Whatever follows the last newline is unfinished.
        let Some(complete) = line.strip_suffix(b"\n") else {
            break;
        };
        let Some((key, counts)) = std::str::from_utf8(complete).ok().and_then(parse_line) else {
            continue;
        };
        for (i, &n) in counts.iter().enumerate() {
            if let Some(metric) = Metric::from_index(i)
                && n > 0
            {
                batch.add(key.clone(), metric, n);
            }
        }
    }
    Ok(batch)
}

fn parse_line(line: &str) -> Option<(CounterKey, [u64; 4])> {
    let mut fields = line.split(' ');
    let advert: i64 = fields.next()?.parse().ok()?;
    let bucket: i64 = fields.next()?.parse().ok()?;
    let mut counts = [0u64; 4];
    for n in &mut counts {
        *n = fields.next()?.parse().ok()?;
    }
    let placement: Option<PlacementName> = match fields.next() {
        None => None,
        Some(name) if is_placement_name(name) => Some(name.into()),
        Some(_) => return None,
    };
    if fields.next().is_some() {
        return None;
    }
    Some((CounterKey::new(AdvertId(advert), bucket, placement), counts))
}

pub fn remove_segment(segment: &Segment) -> std::io::Result<()> {
    match fs::remove_file(&segment.path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn appended_batches_come_back_from_closed_segments() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
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
        journal.rotate();
        let segments = journal.closed_segments().unwrap();
        assert_eq!(segments.len(), 1);
        let read = read_segment(&segments[0].path).unwrap();
        assert_eq!(read.total(Metric::Click), 10);
        assert_eq!(read.total(Metric::BotClick), 2);
        assert_eq!(
            read.deltas[&CounterKey::new(AdvertId(7), 3600, Some(banner))],
            [0, 0, 0, 6]
        );
        remove_segment(&segments[0]).unwrap();
        assert!(journal.closed_segments().unwrap().is_empty());
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg-x-00000001.log");
        fs::write(&path, "1 0 3 0 0 0\n2 0 4 0").unwrap();
        let batch = read_segment(&path).unwrap();
        assert_eq!(batch.total(Metric::Click), 3);
        // A line torn inside its placement name never names a placement that does not exist.
        fs::write(&path, "1 0 3 0 0 0 leaderboard\n1 0 4 0 0 0 leader").unwrap();
        let batch = read_segment(&path).unwrap();
        assert_eq!(batch.total(Metric::Click), 3);
        assert_eq!(batch.deltas.len(), 1);
    }

    #[test]
    fn a_segment_written_before_placements_reads_as_the_generic_card() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg-1700000000-abcdefgh-00000001.log");
        // The format of earlier versions: six numbers a line, no placement.
        fs::write(&path, "7 3600 5 1 0 40\n8 7200 0 0 2 9\n").unwrap();
        let batch = read_segment(&path).unwrap();
        assert_eq!(batch.deltas.len(), 2);
        assert_eq!(
            batch.deltas[&CounterKey::generic(AdvertId(7), 3600)],
            [5, 1, 0, 40]
        );
        assert_eq!(
            batch.deltas[&CounterKey::generic(AdvertId(8), 7200)],
            [0, 0, 2, 9]
        );
        assert!(batch.named().next().is_none());
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg-x-00000002.log");
        fs::write(
            &path,
            "1 0 1 0 0 0 Bad-Name\n1 0 -1 0 0 0\n1 0 1 0 0 0 square extra\n1 0 2 0 0 0 square\n",
        )
        .unwrap();
        let batch = read_segment(&path).unwrap();
        assert_eq!(batch.total(Metric::Click), 2);
        assert_eq!(batch.deltas.len(), 1);
    }

    #[test]
    fn segments_of_an_earlier_run_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut batch = Batch::default();
        batch.add(CounterKey::generic(AdvertId(1), 0), Metric::Click, 1);
        let first = Journal::open(dir.path()).unwrap();
        first.append(&batch).unwrap();
        drop(first);
        let second = Journal::open(dir.path()).unwrap();
        assert_eq!(second.closed_segments().unwrap().len(), 1);
    }
}
