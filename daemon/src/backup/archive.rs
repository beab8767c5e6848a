//! The point-in-time archive a node with `backup_dir` keeps: periodic
//! snapshots (backup files named `snapshot-<revision>.bkp`) and every
//! applied entry after them in segment files (`log-<first index>.seg`).
//! `replay` rebuilds the state at any revision between the oldest kept
//! snapshot and the newest archived entry.
//!
//! Apply hands each entry to a bounded queue ([`Feed`]) and never waits
//! for the disk; a writer task appends the entries and makes them durable
//! every [`SYNC_EVERY`]. At the queue's limit an entry is dropped and the
//! writer, seeing the gap, takes a fresh snapshot: the revisions in the gap
//! cannot be restored to (`replay` says so), later ones can.
//!
//! Segment record: `len: u32 LE | check: u64 LE | len bytes of JSON`,
//! where `check` is the first 8 bytes of the JSON's SHA-256. A record cut
//! off at the end of the newest segment is a torn write of a crash and is
//! cut away when the writer opens it; damage anywhere else is refused.

use crate::raft::state_machine::FleetView;
use crate::shutdown::Shutdown;
use crate::state::Command;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Entries the queue between apply and the writer holds; past it an entry
/// is dropped (and counted) and the writer snapshots over the gap.
pub const FEED_CAPACITY: usize = 65_536;
/// How often written entries are made durable: a host crash loses at most
/// this much of the archive (the cluster itself loses nothing).
pub const SYNC_EVERY: Duration = Duration::from_millis(100);
/// A segment is closed and a new one begun past this size.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Largest record accepted when reading (a command is bounded far below).
const MAX_RECORD_BYTES: u32 = 16 << 20;
/// Bytes before a record's JSON.
const RECORD_HEAD: usize = 12;

/// One applied entry as archived.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ArchivedEntry {
    /// Its revision (log index).
    pub index: u64,
    /// The proposer's clock for a command; this node's clock at apply for
    /// an entry without one.
    pub time_ms: u64,
    /// The command, or `None` for a leader blank or membership change.
    pub command: Option<Command>,
}

/// Apply's end of the archive queue. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    tx: mpsc::Sender<ArchivedEntry>,
    dropped: Arc<AtomicU64>,
}

impl Feed {
    /// A queue of [`FEED_CAPACITY`] entries and the writer's end of it.
    pub fn channel() -> (Self, mpsc::Receiver<ArchivedEntry>) {
        let (tx, rx) = mpsc::channel(FEED_CAPACITY);
        let feed = Self {
            tx,
            dropped: Arc::default(),
        };
        (feed, rx)
    }

    /// Hands on an applied command.
    pub fn command(&self, index: u64, command: Command) {
        self.push(ArchivedEntry {
            index,
            time_ms: command.time_ms,
            command: Some(command),
        });
    }

    /// Hands on an applied entry without a command.
    pub fn noop(&self, index: u64) {
        self.push(ArchivedEntry {
            index,
            time_ms: blixard_shared::time::now_ms(),
            command: None,
        });
    }

    fn push(&self, entry: ArchivedEntry) {
        if self.tx.try_send(entry).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Entries dropped at the queue's limit since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The archive's settings (`backup_dir`, `backup_snapshot_interval_s`,
/// `backup_retention_s`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The directory.
    pub dir: PathBuf,
    /// Time between snapshots.
    pub snapshot_interval: Duration,
    /// How long snapshots and entries are kept (the newest snapshot older
    /// than this is kept too, so every moment of the period stays reachable).
    pub retention: Duration,
}

/// The file name of the snapshot at `revision`.
pub fn snapshot_name(revision: u64) -> String {
    format!("snapshot-{revision:020}.bkp")
}

fn segment_name(first: u64) -> String {
    format!("log-{first:020}.seg")
}

/// Files of one kind in `dir`, by the number in their name, ascending.
pub fn list(dir: &Path, prefix: &str, suffix: &str) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((n, entry.path()));
    }
    found.sort();
    Ok(found)
}

/// Snapshots in `dir`, by revision.
pub fn snapshots(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    list(dir, "snapshot-", ".bkp")
}

/// Segments in `dir`, by first index.
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    list(dir, "log-", ".seg")
}

fn check_of(json: &[u8]) -> u64 {
    let digest = Sha256::digest(json);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// One record's bytes.
fn encode_record(entry: &ArchivedEntry) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(entry).map_err(io::Error::other)?;
    let len = u32::try_from(json.len()).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(RECORD_HEAD + json.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&check_of(&json).to_le_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// What reading a segment found after its last good record.
#[derive(Debug, PartialEq, Eq)]
pub enum Tail {
    /// Nothing: the file ends after a whole record.
    Clean,
    /// A record cut off by the end of the file (a crash mid-write).
    Torn,
    /// A whole record that fails its check, or an impossible length.
    Damaged,
}

/// Reads a segment's records; stops at the first bad one, telling at
/// which byte offset and why.
pub fn read_segment(path: &Path) -> io::Result<(Vec<ArchivedEntry>, u64, Tail)> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    let mut entries = Vec::new();
    let mut at = 0usize;
    let tail = loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            break Tail::Clean;
        }
        if rest.len() < RECORD_HEAD {
            break Tail::Torn;
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&rest[..4]);
        let len = u32::from_le_bytes(len);
        if len > MAX_RECORD_BYTES {
            break Tail::Damaged;
        }
        let mut check = [0u8; 8];
        check.copy_from_slice(&rest[4..12]);
        let end = RECORD_HEAD + len as usize;
        if rest.len() < end {
            break Tail::Torn;
        }
        let json = &rest[RECORD_HEAD..end];
        if check_of(json) != u64::from_le_bytes(check) {
            // The last record of the file, whole but wrong: a write the
            // crash cut short whose length had reached the disk.
            break if rest.len() == end {
                Tail::Torn
            } else {
                Tail::Damaged
            };
        }
        match serde_json::from_slice(json) {
            Ok(entry) => entries.push(entry),
            Err(_) => break Tail::Damaged,
        }
        at += end;
    };
    Ok((entries, at as u64, tail))
}

/// The writer: appends what apply hands on, snapshots every
/// `snapshot_interval` and over gaps, and applies retention.
pub struct Writer {
    settings: Settings,
    view: FleetView,
    node_id: u64,
    /// Newest revision the archive covers (entries or snapshot).
    last: u64,
    segment: Option<(io::BufWriter<std::fs::File>, u64)>,
    dirty: bool,
}

impl Writer {
    /// Opens the archive in `settings.dir` (creating it), cutting a torn
    /// tail off the newest segment, and snapshots at once if there is no
    /// snapshot yet.
    pub fn open(settings: Settings, view: FleetView, node_id: u64) -> io::Result<Self> {
        std::fs::create_dir_all(&settings.dir)?;
        let mut last = snapshots(&settings.dir)?.last().map_or(0, |(r, _)| *r);
        if let Some((_, path)) = segments(&settings.dir)?.last() {
            let (entries, good, tail) = read_segment(path)?;
            if tail != Tail::Clean {
                tracing::warn!(segment = %path.display(), kept_bytes = good, ?tail, "cutting a bad tail off the newest archive segment");
                let file = std::fs::OpenOptions::new().write(true).open(path)?;
                file.set_len(good)?;
                file.sync_all()?;
            }
            if let Some(e) = entries.last() {
                last = last.max(e.index);
            }
        }
        let mut writer = Self {
            settings,
            view,
            node_id,
            last,
            segment: None,
            dirty: false,
        };
        if last == 0 {
            writer.snapshot()?;
        }
        Ok(writer)
    }

    /// Archives one applied entry: skipped if already covered (a restart
    /// re-applies what its snapshot did not hold), a snapshot first if
    /// entries were dropped.
    pub fn append(&mut self, entry: &ArchivedEntry) -> io::Result<()> {
        if entry.index <= self.last {
            return Ok(());
        }
        if entry.index != self.last + 1 {
            tracing::warn!(
                expected = self.last + 1,
                got = entry.index,
                "archive gap (entries dropped, or a snapshot installed): snapshotting over it"
            );
            self.snapshot()?;
            if entry.index <= self.last {
                return Ok(());
            }
        }
        let record = encode_record(entry)?;
        let full = self
            .segment
            .as_ref()
            .is_some_and(|(_, bytes)| *bytes >= SEGMENT_BYTES);
        if full {
            self.close_segment()?;
        }
        let (file, bytes) = match &mut self.segment {
            Some(open) => open,
            None => {
                let path = self.settings.dir.join(segment_name(entry.index));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                let len = file.metadata()?.len();
                self.segment.insert((io::BufWriter::new(file), len))
            }
        };
        file.write_all(&record)?;
        *bytes += record.len() as u64;
        self.last = entry.index;
        self.dirty = true;
        Ok(())
    }

    /// Makes what was written durable.
    pub fn sync(&mut self) -> io::Result<()> {
        if let (true, Some((file, _))) = (self.dirty, &mut self.segment) {
            file.flush()?;
            file.get_ref().sync_data()?;
        }
        self.dirty = false;
        Ok(())
    }

    fn close_segment(&mut self) -> io::Result<()> {
        self.sync()?;
        self.segment = None;
        Ok(())
    }

    /// Writes a snapshot of the fleet as applied now, starts a new segment
    /// after it, and applies retention.
    pub fn snapshot(&mut self) -> io::Result<()> {
        self.close_segment()?;
        let fleet = self.view.read().clone();
        let revision = fleet.revision;
        let body = crate::raft::state_machine::encode_fleet(fleet)?;
        let header = blixard_shared::backup::Header {
            revision,
            term: 0,
            taken_at_ms: blixard_shared::time::now_ms(),
            taken_by: self.node_id,
            members: Default::default(),
            body_bytes: 0,
        };
        let file = blixard_shared::backup::encode(header, &body);
        let path = self.settings.dir.join(snapshot_name(revision));
        write_durably(&path, &file)?;
        self.last = self.last.max(revision);
        tracing::info!(revision, bytes = file.len(), dir = %self.settings.dir.display(), "archive snapshot written");
        self.retain()
    }

    /// Removes snapshots older than the retention period but the newest
    /// of them, and segments wholly before the oldest snapshot kept.
    fn retain(&self) -> io::Result<()> {
        let cutoff = std::time::SystemTime::now()
            .checked_sub(self.settings.retention)
            .unwrap_or(std::time::UNIX_EPOCH);
        let snaps = snapshots(&self.settings.dir)?;
        let old: Vec<usize> = snaps
            .iter()
            .enumerate()
            .filter(|(_, (_, p))| {
                std::fs::metadata(p)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < cutoff)
            })
            .map(|(i, _)| i)
            .collect();
        // Keep the newest old one: the period's start is restored from it.
        let Some((&keep, gone)) = old.split_last() else {
            return Ok(());
        };
        for &i in gone {
            std::fs::remove_file(&snaps[i].1)?;
        }
        let oldest_kept = snaps[keep].0;
        let segs = segments(&self.settings.dir)?;
        for pair in segs.windows(2) {
            // Every entry of pair[0] is below pair[1]'s first.
            if pair[1].0 <= oldest_kept + 1 {
                std::fs::remove_file(&pair[0].1)?;
            }
        }
        Ok(())
    }

    /// Runs until shutdown: entries as they come, a sync every
    /// [`SYNC_EVERY`], a snapshot every `snapshot_interval`.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<ArchivedEntry>,
        mut shutdown: Shutdown,
    ) -> Result<(), String> {
        let mut sync = tokio::time::interval(SYNC_EVERY);
        let mut snap = tokio::time::interval(self.settings.snapshot_interval);
        snap.tick().await;
        loop {
            let step = tokio::select! {
                entry = rx.recv() => match entry {
                    Some(e) => blocking(|| self.append(&e)),
                    None => return self.sync().map_err(|e| e.to_string()),
                },
                _ = sync.tick() => blocking(|| self.sync()),
                _ = snap.tick() => blocking(|| self.snapshot()),
                _ = shutdown.recv() => return self.sync().map_err(|e| e.to_string()),
            };
            // The cluster goes on without its archive; the operator is told.
            if let Err(e) = step {
                tracing::error!(dir = %self.settings.dir.display(), error = %e, "archive write failed; retrying with a snapshot");
                self.segment = None;
                let retry = Duration::from_secs(1);
                tokio::time::sleep(retry).await;
                if let Err(e) = blocking(|| self.snapshot()) {
                    tracing::error!(error = %e, "archive snapshot failed");
                }
            }
        }
    }
}

/// Runs file work on this task: `block_in_place` on a multi-threaded
/// runtime (the daemon's), so the other tasks move on; directly elsewhere.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, both
/// made durable.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> ArchivedEntry {
        ArchivedEntry {
            index,
            time_ms: index * 10,
            command: None,
        }
    }

    fn write(path: &Path, entries: &[ArchivedEntry]) -> Vec<u8> {
        let bytes: Vec<u8> = entries
            .iter()
            .flat_map(|e| encode_record(e).unwrap())
            .collect();
        std::fs::write(path, &bytes).unwrap();
        bytes
    }

    #[test]
    fn a_cut_tail_is_torn_and_a_flipped_middle_is_damaged() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("log.seg");
        let bytes = write(&path, &[entry(1), entry(2), entry(3)]);
        let (all, end, tail) = read_segment(&path).unwrap();
        assert_eq!((all.len(), end, tail), (3, bytes.len() as u64, Tail::Clean));

        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let (kept, _, tail) = read_segment(&path).unwrap();
        assert_eq!((kept.len(), tail), (2, Tail::Torn));

        let mut flipped = bytes.clone();
        flipped[RECORD_HEAD + 3] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let (kept, at, tail) = read_segment(&path).unwrap();
        assert_eq!((kept.len(), at, tail), (0, 0, Tail::Damaged));
    }
}
