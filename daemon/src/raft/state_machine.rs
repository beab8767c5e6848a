//! The Raft state machine: applies committed commands to the in-memory
//! [`Fleet`], builds and installs snapshots, and keeps the newest snapshot in
//! the node's redb file.
//!
//! The fleet itself lives in memory; what is durable is the log (see
//! `log_store`) and the newest snapshot. On restart the snapshot is loaded
//! and openraft re-applies the committed entries after it, so a restart
//! replays at most `snapshot_threshold` entries.
//!
//! A snapshot is stored in chunks, each written through the log writer's
//! queue in a transaction shared with log appends, and then made current by
//! one small write. Stored in one transaction of its own, a snapshot of
//! 80,000 VMs (43 MB) held up every log append on the node for ~370 ms
//! (redb has one writer at a time); a chunk holds them up for a few ms.

use super::log_store::WriteQueue;
use super::{io_err, ApplyResponse, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::state::Fleet;
use futures_util::TryStreamExt;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use tokio::sync::watch;

/// The newest snapshot's record ([`StoredSnapshot`] under [`KEY_CURRENT`]).
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
/// Snapshot bytes by (snapshot id, chunk number).
const SNAPSHOT_CHUNKS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("snapshot_chunks");
const KEY_CURRENT: &str = "current";
/// The format before chunks: metadata and bytes under two keys. Still
/// read; the next snapshot stored replaces it.
const KEY_META: &str = "meta";
const KEY_DATA: &str = "data";
/// Bytes per stored chunk: ~4 ms of writing here (43 MB took 367 ms in one
/// transaction), the longest a snapshot holds up the log appends it shares
/// a transaction with. A snapshot of 100,000 VMs takes ~100 chunks.
const STORED_CHUNK_BYTES: usize = 512 << 10;

/// Most bytes reserved up front when a snapshot's chunks are joined; a
/// bigger one grows the buffer as it goes.
const RESERVE_MAX_BYTES: u64 = 256 << 20;

/// Superseded chunks removed per queued write (8 MiB).
const CHUNKS_PER_REMOVAL: u32 = 16;

/// Where the newest snapshot is: its metadata, the id its chunks are
/// stored under, how many there are and their total size.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    id: u64,
    chunks: u32,
    bytes: u64,
}

/// What stores snapshots: the database (for reads), the log writer's queue
/// (for writes) and the next free snapshot id. Cheap to clone.
#[derive(Clone)]
struct SnapshotStore {
    db: Arc<Database>,
    queue: WriteQueue,
    next_id: Arc<AtomicU64>,
}

/// Read access to the applied fleet, shared with the API. Cheap to clone.
#[derive(Clone)]
pub struct FleetView {
    fleet: Arc<RwLock<Fleet>>,
    applied: watch::Receiver<u64>,
}

impl FleetView {
    /// Locks the fleet for reading. Keep the guard short: apply waits on it.
    pub fn read(&self) -> RwLockReadGuard<'_, Fleet> {
        // A poisoned lock means an apply panicked mid-way; the data is still
        // the last consistent state because apply mutates only after checks.
        self.fleet.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver that changes whenever a new revision is applied.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Highest applied log index.
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }
}

/// The state machine openraft drives.
pub struct StateMachine {
    store: SnapshotStore,
    fleet: Arc<RwLock<Fleet>>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    applied_tx: watch::Sender<u64>,
    view: FleetView,
    snapshot_bytes: Arc<AtomicU64>,
    /// Where applied entries go for point-in-time restore (`backup_dir`).
    archive: Option<crate::backup::archive::Feed>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotBody {
    fleet: Fleet,
}

/// The bytes of a snapshot (and of a backup's body) for `fleet`.
pub fn encode_fleet(fleet: Fleet) -> io::Result<Vec<u8>> {
    serde_json::to_vec(&SnapshotBody { fleet }).map_err(io_err)
}

/// The fleet a snapshot's (or a backup's) bytes hold, with its derived
/// indexes rebuilt.
pub fn decode_fleet(data: &[u8]) -> io::Result<Fleet> {
    let body: SnapshotBody = serde_json::from_slice(data).map_err(io_err)?;
    let mut fleet = body.fleet;
    // Derived, and absent from snapshots made before it existed.
    fleet.rebuild_derived();
    Ok(fleet)
}

impl StateMachine {
    /// Opens the state machine, restoring the newest snapshot if there is
    /// one. Snapshot writes go through `queue` (the log writer's).
    pub fn open(db: Arc<Database>, queue: WriteQueue) -> io::Result<Self> {
        let next_id = open_snapshot_tables(&db)?;
        let (applied_tx, applied_rx) = watch::channel(0);
        let fleet = Arc::new(RwLock::new(Fleet::default()));
        let mut sm = Self {
            store: SnapshotStore {
                db,
                queue,
                next_id: Arc::new(AtomicU64::new(next_id)),
            },
            fleet: fleet.clone(),
            last_applied: None,
            last_membership: StoredMembership::default(),
            applied_tx,
            view: FleetView {
                fleet,
                applied: applied_rx,
            },
            snapshot_bytes: Arc::default(),
            archive: None,
        };
        if let Some(snap) = sm.store.load()? {
            tracing::info!(last_log = ?snap.meta.last_log_id, bytes = snap.snapshot.len(), "restoring state from snapshot");
            sm.restore(&snap.meta, &snap.snapshot)?;
        }
        Ok(sm)
    }

    /// Shared read access to the fleet.
    pub fn view(&self) -> FleetView {
        self.view.clone()
    }

    /// Hands every applied entry to `feed` from now on (point-in-time
    /// restore's archive, see `backup::archive`).
    pub fn set_archive(&mut self, feed: crate::backup::archive::Feed) {
        self.archive = Some(feed);
    }

    /// Size of the newest snapshot, updated as snapshots are made.
    pub fn snapshot_bytes(&self) -> Arc<AtomicU64> {
        self.snapshot_bytes.clone()
    }

    fn restore(&mut self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let restored = decode_fleet(data)?;
        let revision = meta.last_log_id.map_or(0, |l| l.index);
        {
            let mut fleet = self.fleet.write().unwrap_or_else(|p| p.into_inner());
            *fleet = restored;
            fleet.revision = fleet.revision.max(revision);
        }
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        self.snapshot_bytes
            .store(data.len() as u64, Ordering::Relaxed);
        self.applied_tx.send_replace(revision);
        Ok(())
    }
}

/// Creates the snapshot tables if needed and removes chunks no record
/// names (a save or a removal that a crash or an error cut short). Returns
/// the next free snapshot id.
fn open_snapshot_tables(db: &Database) -> io::Result<u64> {
    let tx = db.begin_write().map_err(io_err)?;
    let current = {
        let table = tx.open_table(SNAPSHOT).map_err(io_err)?;
        read_record(&table)?.and_then(|r| r.chunks)
    };
    let next_id = {
        let mut chunks = tx.open_table(SNAPSHOT_CHUNKS).map_err(io_err)?;
        let keep = current.map(|(id, _)| id);
        // Only the ranges around the current id are touched (its own chunks
        // are large and many): orphans are rare and few.
        let (below_end, above_start) = match keep {
            Some(id) => (id, id.checked_add(1)),
            None => (u64::MAX, Some(u64::MAX)),
        };
        let mut removed = 0usize;
        chunks
            .retain_in((0, 0)..(below_end, 0), |_, _| {
                removed += 1;
                false
            })
            .map_err(io_err)?;
        if let Some(from) = above_start {
            chunks
                .retain_in((from, 0)..=(u64::MAX, u32::MAX), |_, _| {
                    removed += 1;
                    false
                })
                .map_err(io_err)?;
        }
        if removed > 0 {
            tracing::info!(
                chunks = removed,
                "removed snapshot chunks no record names (a save or a removal cut short)"
            );
        }
        keep.map_or(1, |id| id.saturating_add(1))
    };
    tx.commit().map_err(io_err)?;
    Ok(next_id)
}

/// The stored snapshot's metadata and, in the chunked format, its chunks'
/// (id, count, total bytes); `None` in the format before chunks.
struct Record {
    meta: SnapshotMeta,
    chunks: Option<(u64, u32)>,
    bytes: u64,
}

fn read_record(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> io::Result<Option<Record>> {
    if let Some(v) = table.get(KEY_CURRENT).map_err(io_err)? {
        let r: StoredSnapshot = serde_json::from_slice(v.value()).map_err(io_err)?;
        return Ok(Some(Record {
            meta: r.meta,
            chunks: Some((r.id, r.chunks)),
            bytes: r.bytes,
        }));
    }
    match table.get(KEY_META).map_err(io_err)? {
        Some(v) => Ok(Some(Record {
            meta: serde_json::from_slice(v.value()).map_err(io_err)?,
            chunks: None,
            bytes: 0,
        })),
        None => Ok(None),
    }
}

impl SnapshotStore {
    /// The stored snapshot, its chunks joined.
    fn load(&self) -> io::Result<Option<Snapshot>> {
        let tx = self.db.begin_read().map_err(io_err)?;
        let table = tx.open_table(SNAPSHOT).map_err(io_err)?;
        let Some(record) = read_record(&table)? else {
            return Ok(None);
        };
        let Some((id, count)) = record.chunks else {
            let data = table
                .get(KEY_DATA)
                .map_err(io_err)?
                .ok_or_else(|| io_err("stored snapshot has metadata but no data"))?;
            return Ok(Some(Snapshot {
                meta: record.meta,
                snapshot: data.value().to_vec(),
            }));
        };
        let chunks = tx.open_table(SNAPSHOT_CHUNKS).map_err(io_err)?;
        // The recorded size is a hint here (checked below), bounded so a
        // damaged record cannot ask for an absurd allocation.
        let hint = record.bytes.min(RESERVE_MAX_BYTES) as usize;
        let mut data = Vec::with_capacity(hint);
        let mut seen = 0u32;
        for item in chunks.range((id, 0)..(id, count)).map_err(io_err)? {
            let (key, value) = item.map_err(io_err)?;
            if key.value().1 != seen {
                break;
            }
            data.extend_from_slice(value.value());
            seen += 1;
        }
        if seen != count || data.len() as u64 != record.bytes {
            return Err(io_err(format!(
                "stored snapshot {id} is incomplete: {seen} of {count} chunks, {} of {} bytes",
                data.len(),
                record.bytes
            )));
        }
        Ok(Some(Snapshot {
            meta: record.meta,
            snapshot: data,
        }))
    }

    /// Stores a snapshot unless a newer one is already stored: a snapshot
    /// build runs concurrently with snapshot installs, and must not
    /// overwrite a newer installed snapshot whose log prefix is already
    /// purged. Chunks first, one queued write each; then the record, in one
    /// write that also checks for a newer snapshot; then the superseded
    /// chunks are removed, a few per write.
    async fn save(&self, meta: &SnapshotMeta, data: Arc<Vec<u8>>) -> io::Result<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let count = u32::try_from(data.len().div_ceil(STORED_CHUNK_BYTES))
            .map_err(|_| io_err("snapshot too large to store"))?;
        for n in 0..count {
            let data = data.clone();
            self.queue
                .write(Box::new(move |tx| {
                    let start = n as usize * STORED_CHUNK_BYTES;
                    let end = (start + STORED_CHUNK_BYTES).min(data.len());
                    let mut t = tx.open_table(SNAPSHOT_CHUNKS).map_err(io_err)?;
                    t.insert((id, n), &data[start..end]).map_err(io_err)?;
                    Ok(())
                }))
                .await?;
        }
        let record = serde_json::to_vec(&StoredSnapshot {
            meta: meta.clone(),
            id,
            chunks: count,
            bytes: data.len() as u64,
        })
        .map_err(io_err)?;
        let new_last = meta.last_log_id;
        // The chunks the record no longer names, set by the write below and
        // acted on only once it is durable.
        let superseded: Arc<Mutex<Option<(u64, u32)>>> = Arc::default();
        let outcome = superseded.clone();
        self.queue
            .write(Box::new(move |tx| {
                let mut t = tx.open_table(SNAPSHOT).map_err(io_err)?;
                let stored = read_record(&t)?;
                let mut gone = outcome.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(stored) = &stored {
                    if stored.meta.last_log_id >= new_last {
                        tracing::debug!(stored = ?stored.meta.last_log_id, new = ?new_last, "keeping the newer stored snapshot");
                        *gone = Some((id, count));
                        return Ok(());
                    }
                }
                t.insert(KEY_CURRENT, record.as_slice()).map_err(io_err)?;
                t.remove(KEY_META).map_err(io_err)?;
                t.remove(KEY_DATA).map_err(io_err)?;
                *gone = stored.and_then(|s| s.chunks);
                Ok(())
            }))
            .await?;
        let gone = *superseded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((old, count)) = gone {
            // The new record is durable: a failure here only leaves chunks
            // behind (removed at the next start), so it is logged, not
            // returned (openraft would take it for a lost snapshot).
            if let Err(e) = self.remove_chunks(old, count).await {
                tracing::warn!(snapshot = old, error = %e, "could not remove a superseded snapshot's chunks");
            }
        }
        Ok(())
    }

    /// Removes chunks `0..count` of snapshot `id`, [`CHUNKS_PER_REMOVAL`]
    /// per queued write: a removal reads each chunk's page, so one write for
    /// all would hold up the log like a big save, and one per chunk would
    /// cost an fsync each.
    async fn remove_chunks(&self, id: u64, count: u32) -> io::Result<()> {
        let mut from = 0;
        while from < count {
            let to = from.saturating_add(CHUNKS_PER_REMOVAL).min(count);
            self.queue
                .write(Box::new(move |tx| {
                    let mut t = tx.open_table(SNAPSHOT_CHUNKS).map_err(io_err)?;
                    t.retain_in((id, from)..(id, to), |_, _| false)
                        .map_err(io_err)?;
                    Ok(())
                }))
                .await?;
            from = to;
        }
        Ok(())
    }
}

/// Builds a snapshot from a copy of the fleet taken at one applied index.
pub struct SnapshotBuilder {
    store: SnapshotStore,
    fleet: Fleet,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    snapshot_bytes: Arc<AtomicU64>,
    /// How long copying the fleet took (apply waited for it).
    copy_time: std::time::Duration,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let fleet = std::mem::take(&mut self.fleet);
        let started = std::time::Instant::now();
        let data = crate::sim::blocking::run(move || encode_fleet(fleet)).await??;
        let encoded = started.elapsed();
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
        };
        let data = Arc::new(data);
        self.store.save(&meta, data.clone()).await?;
        self.snapshot_bytes
            .store(data.len() as u64, Ordering::Relaxed);
        tracing::info!(
            last_log = ?meta.last_log_id,
            bytes = data.len(),
            copy_ms = self.copy_time.as_millis() as u64,
            encode_ms = encoded.as_millis() as u64,
            store_ms = (started.elapsed() - encoded).as_millis() as u64,
            "snapshot built"
        );
        Ok(Snapshot {
            meta,
            snapshot: Arc::unwrap_or_clone(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: futures_util::Stream<Item = io::Result<EntryResponder<TypeConfig>>>
            + Unpin
            + OptionalSend,
    {
        let mut last_index = None;
        while let Some((entry, responder)) = entries.try_next().await? {
            let index = entry.log_id.index;
            let response = {
                let mut fleet = self.fleet.write().unwrap_or_else(|p| p.into_inner());
                match entry.payload {
                    EntryPayload::Blank => {
                        fleet.apply_noop(index);
                        ApplyResponse(None)
                    }
                    EntryPayload::Normal(cmd) => {
                        // A traced command's apply joins its trace (on
                        // every node that applies it).
                        let span = match &cmd.trace {
                            Some(trace) => {
                                let span = tracing::info_span!("raft.apply", revision = index);
                                blixard_shared::telemetry::continue_from(&span, trace);
                                span
                            }
                            None => tracing::Span::none(),
                        };
                        let result = span.in_scope(|| fleet.apply(index, &cmd));
                        if let Some(feed) = &self.archive {
                            feed.command(index, cmd);
                        }
                        ApplyResponse(Some(result))
                    }
                    EntryPayload::Membership(m) => {
                        fleet.apply_noop(index);
                        self.last_membership = StoredMembership::new(Some(entry.log_id), m);
                        ApplyResponse(None)
                    }
                }
            };
            if let (Some(feed), None) = (&self.archive, &response.0) {
                feed.noop(index);
            }
            self.last_applied = Some(entry.log_id);
            last_index = Some(index);
            if let Some(r) = responder {
                r.send(response);
            }
        }
        if let Some(index) = last_index {
            self.applied_tx.send_replace(index);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let started = std::time::Instant::now();
        let fleet = self.fleet.read().unwrap_or_else(|p| p.into_inner()).clone();
        SnapshotBuilder {
            copy_time: started.elapsed(),
            store: self.store.clone(),
            fleet,
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_bytes: self.snapshot_bytes.clone(),
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Vec<u8>) -> io::Result<()> {
        tracing::info!(last_log = ?meta.last_log_id, bytes = snapshot.len(), "installing snapshot");
        self.restore(meta, &snapshot)?;
        self.store.save(meta, Arc::new(snapshot)).await
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        self.store.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::log_store::LogStore;

    fn open() -> (tempfile::TempDir, Arc<Database>, SnapshotStore) {
        let tmp = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(tmp.path().join("db.redb")).unwrap());
        let queue = LogStore::open(db.clone()).unwrap().write_queue();
        let sm = StateMachine::open(db.clone(), queue).unwrap();
        (tmp, db, sm.store)
    }

    fn meta_at(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(openraft::testing::log_id::<TypeConfig>(1, 1, index)),
            last_membership: StoredMembership::default(),
        }
    }

    /// Bytes that differ from chunk to chunk, so a mixed-up order shows.
    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i / 1000) as u8 ^ seed).collect()
    }

    /// (id, chunk number) of every stored chunk.
    fn chunk_keys(db: &Database) -> Vec<(u64, u32)> {
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(SNAPSHOT_CHUNKS).unwrap();
        t.iter()
            .unwrap()
            .map(|item| item.unwrap().0.value())
            .collect()
    }

    fn loaded(store: &SnapshotStore) -> (u64, Vec<u8>) {
        let snap = store.load().unwrap().expect("a stored snapshot");
        (snap.meta.last_log_id.unwrap().index, snap.snapshot)
    }

    #[tokio::test]
    async fn a_snapshot_is_stored_in_chunks_and_replaces_the_previous_one() {
        let (_tmp, db, store) = open();
        assert!(store.load().unwrap().is_none());
        // More chunks than one removal write takes, so removal loops.
        let chunks = CHUNKS_PER_REMOVAL as usize + 2;
        let first = bytes(STORED_CHUNK_BYTES * (chunks - 1) + 1234, 1);
        store
            .save(&meta_at(10), Arc::new(first.clone()))
            .await
            .unwrap();
        assert_eq!(loaded(&store), (10, first));
        assert_eq!(chunk_keys(&db).len(), chunks);

        let second = bytes(STORED_CHUNK_BYTES / 2, 2);
        store
            .save(&meta_at(20), Arc::new(second.clone()))
            .await
            .unwrap();
        assert_eq!(loaded(&store), (20, second));
        let keys = chunk_keys(&db);
        assert_eq!(
            keys.len(),
            1,
            "the first snapshot's chunks are gone: {keys:?}"
        );
    }

    /// A build finishing after an install of a newer snapshot must not
    /// overwrite it (the log before the newer one may be purged already).
    #[tokio::test]
    async fn an_older_snapshot_never_replaces_a_newer_one() {
        let (_tmp, db, store) = open();
        let newer = bytes(1000, 3);
        store
            .save(&meta_at(20), Arc::new(newer.clone()))
            .await
            .unwrap();
        store
            .save(&meta_at(10), Arc::new(bytes(STORED_CHUNK_BYTES + 1, 4)))
            .await
            .unwrap();
        assert_eq!(loaded(&store), (20, newer));
        assert_eq!(chunk_keys(&db).len(), 1, "the older one's chunks are gone");
    }

    #[tokio::test]
    async fn a_snapshot_in_the_format_before_chunks_is_read_and_then_replaced() {
        let (_tmp, db, store) = open();
        let old = bytes(5000, 5);
        {
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(SNAPSHOT).unwrap();
                let meta = serde_json::to_vec(&meta_at(7)).unwrap();
                t.insert(KEY_META, meta.as_slice()).unwrap();
                t.insert(KEY_DATA, old.as_slice()).unwrap();
            }
            tx.commit().unwrap();
        }
        assert_eq!(loaded(&store), (7, old));
        let new = bytes(3000, 6);
        store
            .save(&meta_at(9), Arc::new(new.clone()))
            .await
            .unwrap();
        assert_eq!(loaded(&store), (9, new));
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(SNAPSHOT).unwrap();
        assert!(t.get(KEY_META).unwrap().is_none());
        assert!(t.get(KEY_DATA).unwrap().is_none());
    }

    /// A crash between writing chunks and the record leaves chunks no
    /// record names: the next start removes them and keeps the current one.
    #[tokio::test]
    async fn chunks_of_an_unfinished_save_are_removed_at_the_next_start() {
        let (_tmp, db, store) = open();
        let current = bytes(STORED_CHUNK_BYTES + 10, 7);
        store
            .save(&meta_at(10), Arc::new(current.clone()))
            .await
            .unwrap();
        let kept = chunk_keys(&db);
        let id = kept[0].0;
        {
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(SNAPSHOT_CHUNKS).unwrap();
                t.insert((id + 3, 0), [1u8; 10].as_slice()).unwrap();
                t.insert((id - 1, 4), [2u8; 10].as_slice()).unwrap();
            }
            tx.commit().unwrap();
        }
        assert_eq!(open_snapshot_tables(&db).unwrap(), id + 1);
        assert_eq!(chunk_keys(&db), kept);
        assert_eq!(loaded(&store), (10, current));
    }
}
