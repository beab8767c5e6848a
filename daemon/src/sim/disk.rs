//! A simulated disk for redb: the bytes live in memory, and everything
//! written since the last `sync_data` is kept apart, so a simulated crash
//! can lose it the way a power cut loses the page cache: all of it, or
//! (more adversarial) an arbitrary subset of the unsynced writes, chosen by
//! the simulation's seed. What was synced always survives. A node's
//! "machine" holds the [`SimDisk`]; each start of the node opens redb on a
//! new handle to the same disk.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

/// One unsynced write or length change, in the order it was made.
#[derive(Debug, Clone)]
enum Unsynced {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct State {
    /// What the process sees: durable plus every unsynced change.
    current: Vec<u8>,
    /// What survives any crash: the bytes as of the last sync.
    durable: Vec<u8>,
    /// Changes since the last sync, oldest first.
    unsynced: Vec<Unsynced>,
    /// Syncs so far (the simulator counts fsyncs per write).
    syncs: u64,
    /// A redb database is open on the disk (from [`SimDisk::open`] until
    /// redb closes the backend).
    open: bool,
    /// The machine lost power: every write and sync fails until the disk
    /// is opened again (by the node's next start).
    dead: bool,
}

/// A disk shared by every handle cloned from it (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
    /// Woken when redb closes the disk (see [`SimDisk::open`]).
    closed: Arc<tokio::sync::Notify>,
}

/// Largest disk the simulator allows (a runaway writer fails loudly).
const MAX_DISK_BYTES: u64 = 1 << 30;

fn out_of_range(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("sim disk: {what} out of range"),
    )
}

fn power_lost() -> io::Error {
    io::Error::other("sim disk: the machine lost power")
}

fn apply(bytes: &mut Vec<u8>, change: &Unsynced) {
    match change {
        Unsynced::Write { offset, data } => {
            let start = *offset as usize;
            let end = start + data.len();
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[start..end].copy_from_slice(data);
        }
        Unsynced::SetLen(len) => bytes.resize(*len as usize, 0),
    }
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half
        // changed (every change is one assignment), so a poisoned lock is
        // read through.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens redb on this disk once the previous database on it (a node
    /// that stopped, whose log writer may still be letting go) has closed:
    /// two at once would corrupt it. Waits up to ten seconds.
    pub async fn open(&self) -> Result<redb::Database, redb::DatabaseError> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            // Registered before the check, so a close in between wakes it.
            let closed = self.closed.notified();
            if !self.state().open {
                break;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                break;
            }
        }
        if self.state().open {
            return Err(redb::DatabaseError::Storage(redb::StorageError::Io(
                io::Error::new(io::ErrorKind::WouldBlock, "sim disk: still open elsewhere"),
            )));
        }
        {
            let mut s = self.state();
            s.open = true;
            s.dead = false;
        }
        let db = redb::Builder::new().create_with_backend(self.clone());
        if db.is_err() {
            self.state().open = false;
        }
        db
    }

    /// Syncs so far.
    pub fn syncs(&self) -> u64 {
        self.state().syncs
    }

    /// Unsynced changes waiting for a sync.
    pub fn unsynced(&self) -> usize {
        self.state().unsynced.len()
    }

    /// A power cut: every unsynced change is lost.
    pub fn crash(&self) {
        self.crash_keeping(|_| false);
    }

    /// A power cut that keeps the unsynced changes `keep` picks (by their
    /// position, oldest 0), applied in order over what was synced: the
    /// writes a disk had flushed on its own before the power went.
    pub fn crash_keeping(&self, mut keep: impl FnMut(usize) -> bool) {
        let mut s = self.state();
        let mut bytes = s.durable.clone();
        let unsynced = std::mem::take(&mut s.unsynced);
        for (i, change) in unsynced.iter().enumerate() {
            if keep(i) {
                apply(&mut bytes, change);
            }
        }
        s.current = bytes.clone();
        s.durable = bytes;
    }

    /// The machine loses power now: the unsynced changes `keep` picks
    /// survive (see [`SimDisk::crash_keeping`]), and the process that
    /// still runs on the disk can write nothing more, as a process on a
    /// dead machine cannot. Its next [`SimDisk::open`] powers it on.
    pub fn power_cut(&self, keep: impl FnMut(usize) -> bool) {
        self.crash_keeping(keep);
        self.state().dead = true;
    }

    /// Flips the bits `xor` names in the byte at `offset`, synced and
    /// visible alike: bit rot, for tests of damaged files.
    pub fn corrupt(&self, offset: u64, xor: u8) {
        let mut s = self.state();
        let i = offset as usize;
        if let Some(b) = s.current.get_mut(i) {
            *b ^= xor;
        }
        if let Some(b) = s.durable.get_mut(i) {
            *b ^= xor;
        }
    }
}

impl redb::StorageBackend for SimDisk {
    fn len(&self) -> io::Result<u64> {
        Ok(self.state().current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let s = self.state();
        let start = usize::try_from(offset).map_err(|_| out_of_range("read offset"))?;
        let source = s
            .current
            .get(start..start + out.len())
            .ok_or_else(|| out_of_range("read"))?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if len > MAX_DISK_BYTES {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "sim disk full"));
        }
        let mut s = self.state();
        if s.dead {
            return Err(power_lost());
        }
        let change = Unsynced::SetLen(len);
        apply(&mut s.current, &change);
        s.unsynced.push(change);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.state();
        if s.dead {
            return Err(power_lost());
        }
        let unsynced = std::mem::take(&mut s.unsynced);
        let State { durable, .. } = &mut *s;
        for change in &unsynced {
            apply(durable, change);
        }
        s.syncs += 1;
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        self.state().open = false;
        self.closed.notify_waiters();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut s = self.state();
        if s.dead {
            return Err(power_lost());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| out_of_range("write"))?;
        if end > s.current.len() as u64 {
            return Err(out_of_range("write past the end"));
        }
        let change = Unsynced::Write {
            offset,
            data: data.to_vec(),
        };
        apply(&mut s.current, &change);
        s.unsynced.push(change);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::rng::SimRng;
    use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn open(disk: &SimDisk) -> Database {
        redb::Builder::new()
            .create_with_backend(disk.clone())
            .expect("redb opens on the sim disk")
    }

    fn put(db: &Database, key: u64, durability: Durability) {
        let mut tx = db.begin_write().expect("write tx");
        tx.set_durability(durability).expect("durability");
        tx.open_table(T)
            .expect("table")
            .insert(key, key * 10)
            .expect("insert");
        tx.commit().expect("commit");
    }

    fn keys(db: &Database) -> Vec<u64> {
        let tx = db.begin_read().expect("read tx");
        let Ok(table) = tx.open_table(T) else {
            return Vec::new();
        };
        table
            .iter()
            .expect("iter")
            .map(|r| r.expect("row").0.value())
            .collect()
    }

    #[test]
    fn a_crash_keeps_what_was_synced_and_loses_what_was_not() {
        let disk = SimDisk::new();
        let db = open(&disk);
        put(&db, 1, Durability::Immediate);
        put(&db, 2, Durability::Immediate);
        put(&db, 3, Durability::None);
        // redb writes a commit without fsync to the disk only with the
        // next durable commit or at close; the crash comes first.
        std::mem::forget(db);
        disk.crash();
        let db = open(&disk);
        assert_eq!(keys(&db), vec![1, 2]);
    }

    #[test]
    fn unsynced_writes_are_visible_until_a_crash_and_synced_ones_after() {
        use redb::StorageBackend;
        let disk = SimDisk::new();
        disk.set_len(8).expect("len");
        disk.write(0, b"synced..").expect("write");
        disk.sync_data().expect("sync");
        disk.write(0, b"UNSYNCED").expect("write");
        let mut seen = [0u8; 8];
        disk.read(0, &mut seen).expect("read");
        assert_eq!(&seen, b"UNSYNCED", "the process sees its own writes");
        disk.crash();
        disk.read(0, &mut seen).expect("read");
        assert_eq!(&seen, b"synced..");
        assert_eq!(disk.syncs(), 1);
    }

    #[test]
    fn redb_recovers_whatever_subset_of_unsynced_writes_survives() {
        // The adversarial crash: any subset of the writes after the last
        // sync reach the disk. Every durable commit must survive, and the
        // database must open, for every seed.
        for seed in 0..200 {
            let mut rng = SimRng::new(seed);
            let disk = SimDisk::new();
            let db = open(&disk);
            let durable = 1 + rng.below(6);
            for k in 0..durable {
                put(&db, k, Durability::Immediate);
            }
            for k in 100..100 + rng.below(4) {
                put(&db, k, Durability::None);
            }
            drop(db);
            disk.crash_keeping(|_| rng.chance(50));
            let db = open(&disk);
            let got = keys(&db);
            let want: Vec<u64> = (0..durable).collect();
            assert!(
                want.iter().all(|k| got.contains(k)),
                "seed {seed}: durable keys {want:?}, found {got:?}"
            );
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_log_store_keeps_every_acknowledged_entry_across_a_crash() {
        use crate::raft::log_store::{LogStore, WriterMode};
        use crate::raft::TypeConfig;
        use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
        use openraft::type_config::TypeConfigExt;
        let disk = SimDisk::new();
        let open_store = |db| {
            LogStore::open_with(
                std::sync::Arc::new(db),
                Default::default(),
                WriterMode::Task,
            )
            .expect("store")
        };
        let mut store = open_store(disk.open().await.expect("open"));
        let entries: Vec<_> = (1..=50)
            .map(|i| openraft::testing::blank_ent::<TypeConfig>(1, 1, i))
            .collect();
        let (tx, rx) = TypeConfig::oneshot();
        store
            .append(entries, IOFlushed::signal(tx))
            .await
            .expect("append");
        rx.await.expect("flushed").expect("durable");
        assert!(disk.syncs() > 0, "durable means synced");
        // The writer task lets go of the database once its queue closes;
        // `open` waits for that.
        drop(store);
        disk.crash();
        let mut store = open_store(disk.open().await.expect("reopen"));
        let read = store.try_get_log_entries(1..=50).await.expect("read");
        assert_eq!(
            read.len(),
            50,
            "every acknowledged entry survives the crash"
        );
    }
}
