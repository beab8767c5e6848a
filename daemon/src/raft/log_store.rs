//! The Raft log, vote and commit index in the node's redb file.
//!
//! One writer thread owns every write. `append` puts the entries in an
//! in-memory pending map (readable at once, as openraft requires) and queues
//! them; the writer takes everything queued, writes it in one redb
//! transaction committed with `Durability::Immediate` (fsync), and only then
//! tells openraft the entries are durable. So the leader replicates while
//! its own fsync runs, and many proposals share one fsync (group commit).
//! Votes, truncation and purges go through the same queue, in order, and
//! their callers wait for the fsync; so do the state machine's snapshot
//! writes ([`WriteQueue`]), chunk by chunk, so that they never hold the
//! file's one writer for long.
//!
//! Durable entries stay in memory too, the newest up to a bound: apply and
//! replication read entries soon after they are written, and reading them
//! back from redb meant a read transaction and a JSON decode per entry per
//! reader (three per entry on the leader: apply and two followers).

use super::{io_err, Entry, LogId, TypeConfig, Vote};
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot};

/// Log entries by index, JSON-encoded.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Small Raft metadata: vote, committed, last purged log id.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";

/// Most entries one replication read returns; openraft asks again for the rest.
const MAX_ENTRIES_PER_READ: u64 = 4096;
/// Writes queued for the writer thread; past it `append` waits for room
/// (back-pressure on the Raft core, never unbounded memory).
const WRITE_QUEUE: usize = 1024;
/// The committed hint is written when it is this many entries ahead of the
/// one on disk (a restart re-applies up to the hint at once and learns the
/// rest from the leader).
const COMMITTED_HINT_EVERY: u64 = 1024;
/// Most queued writes one transaction takes.
const MAX_WRITES_PER_TXN: usize = 256;
/// Most durable entries kept in memory; past it the oldest are dropped from
/// memory (they stay in redb, and reads of them go there).
const RECENT_MAX_ENTRIES: usize = 8192;
/// Most encoded bytes of durable entries kept in memory, with the same
/// effect at the limit.
const RECENT_MAX_BYTES: usize = 16 << 20;

/// A change the writer applies inside its transaction.
pub(crate) type Change = Box<dyn FnOnce(&redb::WriteTransaction) -> io::Result<()> + Send>;

/// One queued write and how to report its completion.
enum Write {
    Append {
        /// (index, sequence number in the pending map, encoded entry).
        entries: Vec<(u64, u64, Vec<u8>)>,
        callback: IOFlushed<TypeConfig>,
    },
    Other {
        change: Change,
        done: oneshot::Sender<io::Result<()>>,
    },
}

/// The log's newest entries in memory, readable by replication and apply:
/// those appended but not yet durable, and the newest durable ones. Together
/// they are a contiguous tail of the log (appends are contiguous, the
/// durable part is trimmed only at its front, truncation cuts a suffix and
/// a purge a prefix), so a read starting at or after the lowest index held
/// here needs nothing from redb.
#[derive(Default)]
struct Pending {
    /// Not yet durable: index -> (sequence number of the append, entry).
    entries: BTreeMap<u64, (u64, Entry)>,
    /// Durable, newest only: index -> (encoded size, entry). Every index
    /// here is below every index in `entries`.
    recent: BTreeMap<u64, (usize, Entry)>,
    /// Sum of the encoded sizes in `recent`.
    recent_bytes: usize,
    next_seq: u64,
    /// The newest committed id not yet written: it rides along with the
    /// next transaction instead of costing one of its own.
    committed: Option<Option<LogId>>,
    /// Index of the committed hint last written.
    committed_written: u64,
}

/// Handle on the log tables of a node's redb file. Cheap to clone; clones
/// share the database, the pending entries and the writer.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    pending: Arc<Mutex<Pending>>,
    writer: WriteQueue,
}

/// The way into the writer thread for other writers of the same redb file
/// (the state machine's snapshots). redb has one writer at a time: a write
/// of its own would hold up log appends for as long as it lasts, where a
/// change queued here rides along with them, in order.
#[derive(Clone)]
pub struct WriteQueue {
    writer: mpsc::Sender<Write>,
}

impl WriteQueue {
    /// Queues `change` and waits until it is durable (committed with
    /// fsync). It shares its transaction with whatever else is queued:
    /// keep each change small, and split a big one into several.
    pub async fn write(&self, change: Change) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.writer
            .send(Write::Other { change, done })
            .await
            .map_err(|_| io_err("the log writer has stopped"))?;
        wait.await
            .map_err(|_| io_err("the log writer has stopped"))?
    }
}

fn lock(p: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pending {
    /// The lowest index held in memory: reads at or above it need no redb.
    fn lowest(&self) -> Option<u64> {
        let recent = self.recent.keys().next().copied();
        let pending = self.entries.keys().next().copied();
        recent.or(pending)
    }

    /// Moves an entry that became durable from `entries` to `recent`,
    /// unless a later append (after a truncation) replaced it.
    fn made_durable(&mut self, index: u64, seq: u64, size: usize) {
        if self.entries.get(&index).map(|(s, _)| *s) != Some(seq) {
            return;
        }
        if let Some((_, entry)) = self.entries.remove(&index) {
            self.recent_bytes += size;
            if let Some((old, _)) = self.recent.insert(index, (size, entry)) {
                self.recent_bytes -= old;
            }
        }
    }

    /// Drops the oldest durable entries from memory past the bounds.
    fn trim_recent(&mut self) {
        while self.recent.len() > RECENT_MAX_ENTRIES || self.recent_bytes > RECENT_MAX_BYTES {
            match self.recent.pop_first() {
                Some((_, (size, _))) => self.recent_bytes -= size,
                None => break,
            }
        }
    }

    /// Keeps only the entries whose index passes `keep`, durable or not.
    fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        self.entries.retain(|i, _| keep(*i));
        let mut dropped = 0;
        self.recent.retain(|i, (size, _)| {
            let kept = keep(*i);
            if !kept {
                dropped += *size;
            }
            kept
        });
        self.recent_bytes -= dropped;
    }

    /// Copies of the entries held in memory within `start..end`, in order.
    fn copy_range(&self, start: u64, end: u64) -> Vec<Entry> {
        self.recent
            .range(start..end)
            .map(|(_, (_, e))| e.clone())
            .chain(self.entries.range(start..end).map(|(_, (_, e))| e.clone()))
            .collect()
    }
}

impl LogStore {
    /// Opens the log tables in `db`, creating them if needed, and starts
    /// the writer thread (it ends when the last handle is dropped).
    pub fn open(db: Arc<Database>) -> io::Result<Self> {
        Self::open_with_stats(db, crate::metrics::LogWriterStats::default())
    }

    /// [`LogStore::open`], recording the writer's batch sizes and commit
    /// times into `stats` (the node's metrics).
    pub fn open_with_stats(
        db: Arc<Database>,
        stats: crate::metrics::LogWriterStats,
    ) -> io::Result<Self> {
        Self::open_with(db, stats, WriterMode::Thread)
    }

    /// [`LogStore::open_with_stats`] with the writer run as `mode` says.
    pub fn open_with(
        db: Arc<Database>,
        stats: crate::metrics::LogWriterStats,
        mode: WriterMode,
    ) -> io::Result<Self> {
        let tx = db.begin_write().map_err(io_err)?;
        {
            tx.open_table(LOG).map_err(io_err)?;
            tx.open_table(META).map_err(io_err)?;
        }
        tx.commit().map_err(io_err)?;
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (writer, queue) = mpsc::channel(WRITE_QUEUE);
        let (wdb, wpending) = (db.clone(), pending.clone());
        match mode {
            WriterMode::Thread => {
                std::thread::Builder::new()
                    .name("raft-log-writer".into())
                    .spawn(move || write_loop(wdb, wpending, queue, stats))?;
            }
            WriterMode::Task => {
                tokio::spawn(write_task(wdb, wpending, queue, stats));
            }
        }
        Ok(Self {
            db,
            pending,
            writer: WriteQueue { writer },
        })
    }

    /// A handle on the writer thread's queue for other writes to the file.
    pub fn write_queue(&self) -> WriteQueue {
        self.writer.clone()
    }

    /// At startup, turns a committed vote for this node (it was the
    /// leader when it stopped) into an uncommitted one for the same term,
    /// so the node must win a new election, in a higher term, before it
    /// leads again. openraft would otherwise resume leading the old term,
    /// and since the leader replicates entries before its own fsync ends,
    /// a crash can lose entries its followers already hold: resuming the
    /// term, it would write different entries under the same log ids, and
    /// the followers, seeing matching ids, would keep the old ones
    /// (diverged logs; found by the fault test, seed 177425095). Returns
    /// whether the vote was changed.
    pub async fn give_up_leadership_of_restored_term(&mut self, me: u64) -> io::Result<bool> {
        let Some(vote) = self.read_meta::<Vote>(KEY_VOTE)? else {
            return Ok(false);
        };
        if !(vote.committed && vote.leader_id.node_id == me) {
            return Ok(false);
        }
        let demoted = Vote {
            leader_id: vote.leader_id,
            committed: false,
        };
        self.write_meta(KEY_VOTE, &demoted).await?;
        tracing::info!(
            term = demoted.leader_id.term,
            "restarted as the leader of its old term: standing for election again instead"
        );
        Ok(true)
    }

    /// The vote's term and the last log index, as stored (see
    /// `Core::startup_log`).
    pub async fn startup_position(&mut self) -> io::Result<(u64, u64)> {
        let vote = self.read_vote().await?;
        let state = self.get_log_state().await?;
        Ok((
            vote.map_or(0, |v| v.leader_id.term),
            state.last_log_id.map_or(0, |l| l.index),
        ))
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let tx = self.db.begin_read().map_err(io_err)?;
        let table = tx.open_table(META).map_err(io_err)?;
        match table.get(key).map_err(io_err)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(io_err)?)),
            None => Ok(None),
        }
    }

    /// Queues `change` and waits until it is durable.
    async fn write(&self, change: Change) -> io::Result<()> {
        self.writer.write(change).await
    }

    async fn write_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        value: &T,
    ) -> io::Result<()> {
        let bytes = serde_json::to_vec(value).map_err(io_err)?;
        self.write(Box::new(move |tx| {
            let mut t = tx.open_table(META).map_err(io_err)?;
            t.insert(key, bytes.as_slice()).map_err(io_err)?;
            Ok(())
        }))
        .await
    }
}

/// The writer thread: takes everything queued (up to a bound), applies it in
/// one transaction, commits with fsync, then reports each write in order.
/// Where the log writer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterMode {
    /// A thread of its own (production): an fsync never holds up a Tokio
    /// worker, and the Raft core moves on while it runs.
    Thread,
    /// A task on the caller's runtime, each batch written inline: for the
    /// simulator, where every step must run on the one simulated clock
    /// and scheduler (the disk is memory, so a batch takes no real time).
    Task,
}

fn write_loop(
    db: Arc<Database>,
    pending: Arc<Mutex<Pending>>,
    mut queue: mpsc::Receiver<Write>,
    stats: crate::metrics::LogWriterStats,
) {
    while let Some(first) = queue.blocking_recv() {
        write_batch(&db, &pending, first, &mut queue, &stats);
    }
}

async fn write_task(
    db: Arc<Database>,
    pending: Arc<Mutex<Pending>>,
    mut queue: mpsc::Receiver<Write>,
    stats: crate::metrics::LogWriterStats,
) {
    while let Some(first) = queue.recv().await {
        write_batch(&db, &pending, first, &mut queue, &stats);
    }
}

/// Writes `first` and whatever else is queued in one transaction, then
/// answers each write.
fn write_batch(
    db: &Database,
    pending: &Mutex<Pending>,
    first: Write,
    queue: &mut mpsc::Receiver<Write>,
    stats: &crate::metrics::LogWriterStats,
) {
    let batch = take_batch(first, queue);
    stats.batch_writes.observe(batch.len() as f64);
    let committed = committed_hint_due(pending);
    let Prepared {
        changes,
        reports,
        appended,
    } = prepare(batch);
    let started = std::time::Instant::now();
    let result = commit(db, changes, committed);
    stats
        .commit_seconds
        .observe(started.elapsed().as_secs_f64());
    match &result {
        Ok(()) => {
            let mut p = lock(pending);
            for (index, seq, size) in appended {
                p.made_durable(index, seq, size);
            }
            p.trim_recent();
            if p.committed == committed {
                p.committed = None;
            }
        }
        Err(e) => tracing::error!(error = %e, "raft log write failed"),
    }
    for r in reports {
        r.send(&result);
    }
}

/// `first` and whatever else is queued now, at most [`MAX_WRITES_PER_TXN`].
fn take_batch(first: Write, queue: &mut mpsc::Receiver<Write>) -> Vec<Write> {
    let mut batch = vec![first];
    while batch.len() < MAX_WRITES_PER_TXN {
        match queue.try_recv() {
            Ok(w) => batch.push(w),
            Err(_) => break,
        }
    }
    batch
}

/// The committed hint to write with this batch, if one is due. It is
/// written only every so many entries (and with anything else that touches
/// META): each write of it adds pages to the commit.
fn committed_hint_due(pending: &Mutex<Pending>) -> Option<Option<LogId>> {
    let mut p = lock(pending);
    let due = match (p.committed, p.committed_written) {
        (Some(Some(c)), w) => c.index >= w.saturating_add(COMMITTED_HINT_EVERY),
        _ => false,
    };
    if !due {
        return None;
    }
    if let Some(Some(c)) = p.committed {
        p.committed_written = c.index;
    }
    p.committed
}

/// A batch turned into redb changes, the answers owed once it commits, and
/// the appended entries (index, sequence, size) that become durable then.
struct Prepared {
    changes: Vec<Change>,
    reports: Vec<Report>,
    appended: Vec<(u64, u64, usize)>,
}

fn prepare(batch: Vec<Write>) -> Prepared {
    let mut prepared = Prepared {
        changes: Vec::with_capacity(batch.len()),
        reports: Vec::with_capacity(batch.len()),
        appended: Vec::new(),
    };
    for w in batch {
        match w {
            Write::Append { entries, callback } => {
                prepared
                    .appended
                    .extend(entries.iter().map(|(i, seq, b)| (*i, *seq, b.len())));
                prepared.changes.push(Change::from(Box::new(
                    move |tx: &redb::WriteTransaction| {
                        let mut t = tx.open_table(LOG).map_err(io_err)?;
                        for (index, _, bytes) in &entries {
                            t.insert(*index, bytes.as_slice()).map_err(io_err)?;
                        }
                        Ok(())
                    },
                )));
                prepared.reports.push(Report::Flushed(callback));
            }
            Write::Other { change, done } => {
                prepared.changes.push(change);
                prepared.reports.push(Report::Done(done));
            }
        }
    }
    prepared
}

/// Applies `changes` (and the committed hint, if due) in one transaction
/// committed with fsync. The hint written is at most the last entry this
/// transaction leaves durable: openraft may know entries committed that are
/// still queued behind this batch, and a stored hint past the durable log
/// would keep the node from restarting.
fn commit(db: &Database, changes: Vec<Change>, committed: Option<Option<LogId>>) -> io::Result<()> {
    let tx = db.begin_write().map_err(io_err)?;
    for change in changes {
        change(&tx)?;
    }
    if let Some(Some(id)) = committed {
        let last = last_entry_id(&tx.open_table(LOG).map_err(io_err)?)?;
        if let Some(hint) = clamp_to(Some(id), last) {
            let bytes = serde_json::to_vec(&Some(hint)).map_err(io_err)?;
            let mut t = tx.open_table(META).map_err(io_err)?;
            t.insert(KEY_COMMITTED, bytes.as_slice()).map_err(io_err)?;
        }
    }
    tx.commit().map_err(io_err)
}

/// The log id of the last entry `table` holds.
fn last_entry_id(table: &impl ReadableTable<u64, &'static [u8]>) -> io::Result<Option<LogId>> {
    match table.last().map_err(io_err)? {
        Some((_, v)) => {
            let e: Entry = serde_json::from_slice(v.value()).map_err(io_err)?;
            Ok(Some(e.log_id))
        }
        None => Ok(None),
    }
}

/// `committed`, or `last` where `committed` lies beyond it: what a node
/// holds up to a committed index is committed, and nothing past what it
/// holds can be re-applied.
fn clamp_to(committed: Option<LogId>, last: Option<LogId>) -> Option<LogId> {
    match (committed, last) {
        (Some(c), Some(l)) if c.index > l.index => Some(l),
        (Some(_), None) => None,
        (c, _) => c,
    }
}

impl Report {
    /// Tells the writer's caller how its write ended.
    fn send(self, result: &io::Result<()>) {
        let outcome = match result {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        match self {
            Report::Flushed(cb) => cb.io_completed(outcome),
            Report::Done(tx) => {
                let _ = tx.send(outcome);
            }
        }
    }
}

enum Report {
    Flushed(IOFlushed<TypeConfig>),
    Done(oneshot::Sender<io::Result<()>>),
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end_excl = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        if start >= end_excl {
            return Ok(Vec::new());
        }
        // The tail held in memory, then from redb only what lies below it
        // (redb may still hold entries a truncation is removing: never
        // read above the memory's lowest index).
        let (in_memory, lowest) = {
            let p = lock(&self.pending);
            (p.copy_range(start, end_excl), p.lowest())
        };
        let durable_end = lowest.map_or(end_excl, |l| l.min(end_excl));
        if start >= durable_end {
            return Ok(in_memory);
        }
        let tx = self.db.begin_read().map_err(io_err)?;
        let table = tx.open_table(LOG).map_err(io_err)?;
        let mut out = Vec::with_capacity(in_memory.len());
        for item in table.range(start..durable_end).map_err(io_err)? {
            let (_, v) = item.map_err(io_err)?;
            out.push(serde_json::from_slice(v.value()).map_err(io_err)?);
        }
        out.extend(in_memory);
        Ok(out)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.read_meta(KEY_VOTE)
    }

    /// Replication reads through here and may get a prefix of the range;
    /// apply reads through `try_get_log_entries`, which must return it all.
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        let end = end.min(start.saturating_add(MAX_ENTRIES_PER_READ));
        self.try_get_log_entries(start..end).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged: Option<LogId> = self.read_meta(KEY_PURGED)?;
        let pending_last = lock(&self.pending)
            .entries
            .values()
            .next_back()
            .map(|(_, e)| e.log_id);
        let tx = self.db.begin_read().map_err(io_err)?;
        let durable_last = last_entry_id(&tx.open_table(LOG).map_err(io_err)?)?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: pending_last.max(durable_last).or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        self.write_meta(KEY_VOTE, vote).await
    }

    /// The committed id is a hint that lets a restart re-apply up to it; it
    /// is recovered from the cluster if lost. So it costs no transaction of
    /// its own: it is written with a later log write, every
    /// [`COMMITTED_HINT_EVERY`] entries (a restart may then re-apply a
    /// little less and learn the rest from the leader).
    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        lock(&self.pending).committed = Some(committed);
        Ok(())
    }

    /// The hint, clamped to the log as stored (a hint written by a build
    /// before the clamp, or damaged, must not stop the node's restart).
    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        let pending = lock(&self.pending).committed;
        if let Some(id) = pending {
            return Ok(id);
        }
        let stored = self.read_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten();
        let last = self.get_log_state().await?.last_log_id;
        let clamped = clamp_to(stored, last);
        if clamped != stored {
            tracing::warn!(
                ?stored,
                ?last,
                "committed hint past the stored log: clamped"
            );
        }
        Ok(clamped)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        {
            let mut p = lock(&self.pending);
            let seq = p.next_seq;
            p.next_seq += 1;
            for e in entries {
                let bytes = serde_json::to_vec(&e).map_err(io_err)?;
                encoded.push((e.log_id.index, seq, bytes));
                p.entries.insert(e.log_id.index, (seq, e));
            }
        }
        self.writer
            .writer
            .send(Write::Append {
                entries: encoded,
                callback,
            })
            .await
            .map_err(|_| io_err("the log writer has stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = last_log_id.map_or(0, |l| l.index + 1);
        tracing::debug!(from, "truncating log");
        lock(&self.pending).retain(|i| i < from);
        self.write(Box::new(move |tx| {
            let mut t = tx.open_table(LOG).map_err(io_err)?;
            t.retain_in(from.., |_, _| false).map_err(io_err)?;
            Ok(())
        }))
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let upto = log_id.index;
        let bytes = serde_json::to_vec(&log_id).map_err(io_err)?;
        tracing::debug!(upto, "purging log");
        lock(&self.pending).retain(|i| i > upto);
        self.write(Box::new(move |tx| {
            let mut meta = tx.open_table(META).map_err(io_err)?;
            meta.insert(KEY_PURGED, bytes.as_slice()).map_err(io_err)?;
            let mut t = tx.open_table(LOG).map_err(io_err)?;
            t.retain_in(..=upto, |_, _| false).map_err(io_err)?;
            Ok(())
        }))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::storage::RaftLogStorage;

    #[tokio::test]
    async fn a_restarted_leader_gives_up_its_old_term() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(tmp.path().join("db.redb")).unwrap());
        let mut store = LogStore::open(db).unwrap();
        let mut led = Vote::new(7, 1);
        led.committed = true;
        store.save_vote(&led).await.unwrap();
        assert!(
            !store.give_up_leadership_of_restored_term(2).await.unwrap(),
            "another node's vote is kept"
        );
        assert!(store.give_up_leadership_of_restored_term(1).await.unwrap());
        let vote = store.read_vote().await.unwrap().unwrap();
        assert_eq!((vote.leader_id.term, vote.leader_id.node_id), (7, 1));
        assert!(!vote.committed, "no longer the leader of term 7");
        assert!(!store.give_up_leadership_of_restored_term(1).await.unwrap());
    }

    fn open_store() -> (tempfile::TempDir, LogStore) {
        let tmp = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(tmp.path().join("db.redb")).unwrap());
        (tmp, LogStore::open(db).unwrap())
    }

    fn blanks(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        indexes
            .map(|i| openraft::testing::blank_ent::<TypeConfig>(term, 1, i))
            .collect()
    }

    /// Appends and waits until the entries are durable.
    async fn append_durably(store: &mut LogStore, entries: Vec<Entry>) {
        use openraft::type_config::TypeConfigExt;
        let (tx, rx) = TypeConfig::oneshot();
        store.append(entries, IOFlushed::signal(tx)).await.unwrap();
        rx.await.unwrap().unwrap();
    }

    /// (term, index) of every entry read from `range`.
    async fn read_ids(
        store: &mut LogStore,
        range: std::ops::RangeInclusive<u64>,
    ) -> Vec<(u64, u64)> {
        store
            .try_get_log_entries(range)
            .await
            .unwrap()
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    #[tokio::test]
    async fn reads_join_redb_and_the_entries_kept_in_memory() {
        let (_tmp, mut store) = open_store();
        let last = RECENT_MAX_ENTRIES as u64 + 100;
        append_durably(&mut store, blanks(1, 1..=last)).await;
        let lowest = lock(&store.pending).lowest().unwrap();
        assert!(lowest > 1, "the oldest entries left memory");
        assert!(lock(&store.pending).recent.len() <= RECENT_MAX_ENTRIES);
        let ids = read_ids(&mut store, 1..=last + 10).await;
        let want: Vec<(u64, u64)> = (1..=last).map(|i| (1, i)).collect();
        assert_eq!(ids, want, "every entry once, in order, across the boundary");
        let around = read_ids(&mut store, lowest - 2..=lowest + 2).await;
        assert_eq!(around.len(), 5);
    }

    #[tokio::test]
    async fn a_truncation_removes_durable_entries_from_memory() {
        let (_tmp, mut store) = open_store();
        append_durably(&mut store, blanks(1, 1..=10)).await;
        store
            .truncate_after(Some(openraft::testing::log_id::<TypeConfig>(1, 1, 5)))
            .await
            .unwrap();
        assert_eq!(read_ids(&mut store, 1..=20).await.len(), 5);
        append_durably(&mut store, blanks(2, 6..=7)).await;
        let ids = read_ids(&mut store, 4..=20).await;
        assert_eq!(ids, vec![(1, 4), (1, 5), (2, 6), (2, 7)]);
    }

    #[tokio::test]
    async fn a_purge_removes_durable_entries_from_memory() {
        let (_tmp, mut store) = open_store();
        append_durably(&mut store, blanks(1, 1..=10)).await;
        store
            .purge(openraft::testing::log_id::<TypeConfig>(1, 1, 5))
            .await
            .unwrap();
        assert_eq!(lock(&store.pending).lowest(), Some(6));
        let ids = read_ids(&mut store, 1..=10).await;
        assert_eq!(ids, (6..=10).map(|i| (1, i)).collect::<Vec<_>>());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(5));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(10));
    }
}

#[cfg(test)]
mod committed_hint_tests {
    //! The committed hint must never run ahead of the durable log: a node
    //! whose stored hint names entries it does not hold cannot restart
    //! ("Failed to get log entries"). openraft may save a committed id for
    //! entries still queued behind the batch that writes the hint.

    use super::*;
    use openraft::storage::RaftLogStorage;

    fn log_id(term: u64, index: u64) -> LogId {
        openraft::testing::log_id::<TypeConfig>(term, 1, index)
    }

    /// Opens the file again once the dropped store's writer thread has let
    /// go of it (it ends on its own when its queue closes).
    async fn reopen(path: &std::path::Path) -> LogStore {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Database::open(path) {
                Ok(db) => return LogStore::open(Arc::new(db)).expect("store"),
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn a_hint_beyond_the_durable_log_is_saved_at_most_as_far_as_the_log() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("db.redb");
        {
            let db = Arc::new(Database::create(&path).expect("db"));
            let mut store = LogStore::open(db).expect("store");
            // openraft knows index 5000 is committed (a quorum holds it)
            // while this node has made only 1..=10 durable so far.
            store
                .save_committed(Some(log_id(1, 5000)))
                .await
                .expect("save");
            use openraft::type_config::TypeConfigExt;
            let (tx, rx) = TypeConfig::oneshot();
            let entries: Vec<Entry> = (1..=10)
                .map(|i| openraft::testing::blank_ent::<TypeConfig>(1, 1, i))
                .collect();
            store
                .append(entries, IOFlushed::signal(tx))
                .await
                .expect("append");
            rx.await.expect("flushed").expect("durable");
        }
        // A crash here: the process is gone, the redb file is what is left.
        let mut store = reopen(&path).await;
        let committed = store.read_committed().await.expect("read");
        let last = store.get_log_state().await.expect("state").last_log_id;
        assert!(
            committed.map(|c| c.index) <= last.map(|l| l.index),
            "committed hint {committed:?} ahead of the durable log {last:?}"
        );
    }

    #[tokio::test]
    async fn a_damaged_hint_on_disk_is_clamped_when_read() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("db.redb");
        {
            let db = Arc::new(Database::create(&path).expect("db"));
            let store = LogStore::open(db).expect("store");
            store
                .write_meta(KEY_COMMITTED, &Some(log_id(3, 77)))
                .await
                .expect("write a hint past the log");
        }
        let mut store = reopen(&path).await;
        assert_eq!(store.read_committed().await.expect("read"), None);
    }
}
