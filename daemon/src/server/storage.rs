//! The first phase of a node's start: claim the data dir and open the redb
//! file with its log store and state machine.

use super::StartError;
use crate::config::Config;
use crate::raft::log_store::{LogStore, WriterMode};
use crate::raft::state_machine::FleetView;
use crate::raft::state_machine::StateMachine;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Name of the node's one redb file in its data dir.
pub(crate) const DB_FILE: &str = "blixard.redb";

/// What the storage phase hands to Raft and the node core.
pub(super) struct Storage {
    /// The Raft log (and vote) store.
    pub log_store: LogStore,
    /// The state machine over the fleet.
    pub state_machine: StateMachine,
    /// Read access to the applied fleet.
    pub view: FleetView,
    /// Size of the newest snapshot, for metrics.
    pub snapshot_bytes: Arc<AtomicU64>,
    /// Term and last log index at start (see `Core::startup_log`).
    pub startup_log: (u64, u64),
    /// The archive writer and the entries the state machine feeds it,
    /// when `backup_dir` is set.
    pub archive: Option<(
        crate::backup::archive::Writer,
        tokio::sync::mpsc::Receiver<crate::backup::archive::ArchivedEntry>,
    )>,
}

/// A storage error naming the path it happened at.
pub(super) fn storage_err(path: &Path, e: impl std::fmt::Display) -> StartError {
    StartError::Storage {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Creates the data dir if needed and gives the node one spelling of it:
/// VM processes carry paths under it and the fence watchdog matches them
/// exactly.
pub(super) fn claim_data_dir(dir: &Path) -> Result<PathBuf, StartError> {
    std::fs::create_dir_all(dir).map_err(|e| storage_err(dir, e))?;
    std::fs::canonicalize(dir).map_err(|e| storage_err(dir, e))
}

/// Opens (or creates) the redb file and the stores over it. A node that
/// led when it stopped gives up that term's leadership here (see
/// `LogStore::give_up_leadership_of_restored_term`).
pub(super) async fn open(
    config: &Config,
    metrics: &crate::metrics::Metrics,
) -> Result<Storage, StartError> {
    let db_path = config.data_dir.join(DB_FILE);
    let (db, mode) = match config.sim.as_ref().map(|h| &h.disk) {
        Some(disk) => (
            disk.open().await.map_err(|e| storage_err(&db_path, e))?,
            WriterMode::Task,
        ),
        None => {
            let path = db_path.clone();
            let db = tokio::task::spawn_blocking(move || redb::Database::create(&path))
                .await
                .map_err(|e| storage_err(&db_path, e))?
                .map_err(|e| storage_err(&db_path, e))?;
            (db, WriterMode::Thread)
        }
    };
    let db = Arc::new(db);
    let mut log_store = LogStore::open_with(db.clone(), metrics.log_writer.clone(), mode)
        .map_err(|e| storage_err(&db_path, e))?;
    log_store
        .give_up_leadership_of_restored_term(config.node_id)
        .await
        .map_err(|e| storage_err(&db_path, e))?;
    let startup_log = log_store
        .startup_position()
        .await
        .map_err(|e| storage_err(&db_path, e))?;
    let mut state_machine =
        StateMachine::open(db, log_store.write_queue()).map_err(|e| storage_err(&db_path, e))?;
    // The archive opens before Raft applies anything, so it sees every
    // entry from the state machine's snapshot on.
    let archive = match &config.backup {
        None => None,
        Some(settings) => {
            let writer = crate::backup::archive::Writer::open(
                settings.clone(),
                state_machine.view(),
                config.node_id,
            )
            .map_err(|e| storage_err(&settings.dir, e))?;
            let (feed, rx) = crate::backup::archive::Feed::channel();
            state_machine.set_archive(feed);
            Some((writer, rx))
        }
    };
    Ok(Storage {
        archive,
        view: state_machine.view(),
        snapshot_bytes: state_machine.snapshot_bytes(),
        log_store,
        state_machine,
        startup_log,
    })
}
