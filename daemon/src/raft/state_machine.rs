//! The Raft state machine: applies committed commands to the in-memory
//! [`Fleet`], builds and installs snapshots, and keeps the newest snapshot in
//! the node's redb file.
//!
//! The fleet itself lives in memory; what is durable is the log (see
//! `log_store`) and the newest snapshot. On restart the snapshot is loaded
//! and openraft re-applies the committed entries after it, so a restart
//! replays at most `snapshot_threshold` entries.

use super::{io_err, ApplyResponse, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::state::Fleet;
use futures_util::TryStreamExt;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::io;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use tokio::sync::watch;

/// The newest snapshot: its metadata and its bytes.
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
const KEY_META: &str = "meta";
const KEY_DATA: &str = "data";

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
    db: Arc<Database>,
    fleet: Arc<RwLock<Fleet>>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    applied_tx: watch::Sender<u64>,
    view: FleetView,
    snapshot_bytes: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotBody {
    fleet: Fleet,
}

impl StateMachine {
    /// Opens the state machine, restoring the newest snapshot if there is one.
    pub fn open(db: Arc<Database>) -> io::Result<Self> {
        {
            let tx = db.begin_write().map_err(io_err)?;
            tx.open_table(SNAPSHOT).map_err(io_err)?;
            tx.commit().map_err(io_err)?;
        }
        let (applied_tx, applied_rx) = watch::channel(0);
        let fleet = Arc::new(RwLock::new(Fleet::default()));
        let mut sm = Self {
            db,
            fleet: fleet.clone(),
            last_applied: None,
            last_membership: StoredMembership::default(),
            applied_tx,
            view: FleetView {
                fleet,
                applied: applied_rx,
            },
            snapshot_bytes: Arc::default(),
        };
        if let Some(snap) = sm.load_snapshot()? {
            tracing::info!(last_log = ?snap.meta.last_log_id, bytes = snap.snapshot.len(), "restoring state from snapshot");
            sm.restore(&snap.meta, &snap.snapshot)?;
        }
        Ok(sm)
    }

    /// Shared read access to the fleet.
    pub fn view(&self) -> FleetView {
        self.view.clone()
    }

    /// Size of the newest snapshot, updated as snapshots are made.
    pub fn snapshot_bytes(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.snapshot_bytes.clone()
    }

    fn load_snapshot(&self) -> io::Result<Option<Snapshot>> {
        let tx = self.db.begin_read().map_err(io_err)?;
        let table = tx.open_table(SNAPSHOT).map_err(io_err)?;
        let (Some(meta), Some(data)) = (
            table.get(KEY_META).map_err(io_err)?,
            table.get(KEY_DATA).map_err(io_err)?,
        ) else {
            return Ok(None);
        };
        let meta: SnapshotMeta = serde_json::from_slice(meta.value()).map_err(io_err)?;
        Ok(Some(Snapshot {
            meta,
            snapshot: data.value().to_vec(),
        }))
    }

    fn restore(&mut self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let body: SnapshotBody = serde_json::from_slice(data).map_err(io_err)?;
        let revision = meta.last_log_id.map_or(0, |l| l.index);
        {
            let mut fleet = self.fleet.write().unwrap_or_else(|p| p.into_inner());
            *fleet = body.fleet;
            fleet.revision = fleet.revision.max(revision);
        }
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        self.snapshot_bytes
            .store(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.applied_tx.send_replace(revision);
        Ok(())
    }
}

/// Stores a snapshot unless a newer one is already stored: a snapshot build
/// runs concurrently with snapshot installs, and must not overwrite a newer
/// installed snapshot whose log prefix is already purged.
async fn save_snapshot(db: Arc<Database>, meta: &SnapshotMeta, data: Vec<u8>) -> io::Result<()> {
    let new_last = meta.last_log_id;
    let meta = serde_json::to_vec(meta).map_err(io_err)?;
    tokio::task::spawn_blocking(move || {
        let tx = db.begin_write().map_err(io_err)?;
        {
            let mut t = tx.open_table(SNAPSHOT).map_err(io_err)?;
            let stored = match t.get(KEY_META).map_err(io_err)? {
                Some(v) => Some(serde_json::from_slice::<SnapshotMeta>(v.value()).map_err(io_err)?),
                None => None,
            };
            if let Some(stored) = stored {
                if stored.last_log_id >= new_last {
                    tracing::debug!(stored = ?stored.last_log_id, new = ?new_last, "keeping the newer stored snapshot");
                    return Ok(());
                }
            }
            t.insert(KEY_META, meta.as_slice()).map_err(io_err)?;
            t.insert(KEY_DATA, data.as_slice()).map_err(io_err)?;
        }
        tx.commit().map_err(io_err)
    })
    .await
    .map_err(io_err)?
}

/// Builds a snapshot from a copy of the fleet taken at one applied index.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    fleet: Fleet,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    snapshot_bytes: Arc<std::sync::atomic::AtomicU64>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let fleet = std::mem::take(&mut self.fleet);
        let data = tokio::task::spawn_blocking(move || serde_json::to_vec(&SnapshotBody { fleet }))
            .await
            .map_err(io_err)?
            .map_err(io_err)?;
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
        };
        save_snapshot(self.db.clone(), &meta, data.clone()).await?;
        self.snapshot_bytes
            .store(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(last_log = ?meta.last_log_id, bytes = data.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: data,
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
                    EntryPayload::Normal(cmd) => ApplyResponse(Some(fleet.apply(index, &cmd))),
                    EntryPayload::Membership(m) => {
                        fleet.apply_noop(index);
                        self.last_membership = StoredMembership::new(Some(entry.log_id), m);
                        ApplyResponse(None)
                    }
                }
            };
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
        SnapshotBuilder {
            db: self.db.clone(),
            fleet: self.fleet.read().unwrap_or_else(|p| p.into_inner()).clone(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_bytes: self.snapshot_bytes.clone(),
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Vec<u8>) -> io::Result<()> {
        tracing::info!(last_log = ?meta.last_log_id, bytes = snapshot.len(), "installing snapshot");
        self.restore(meta, &snapshot)?;
        save_snapshot(self.db.clone(), meta, snapshot).await
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        self.load_snapshot()
    }
}
