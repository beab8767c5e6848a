//! Fencing: a host runs VMs only while it holds a lease from the cluster,
//! so the leader can place a lost host's VMs elsewhere without ever running
//! one VM on two hosts (safety property 3 of the brief).
//!
//! - The node's lease keeper ([`keep_lease`]) commits a `RenewLease` command
//!   every [`RENEW_EVERY`]. A renewal sent at `t` and applied locally makes
//!   the lease valid until `t + lease`. It writes that deadline, on the
//!   host's monotonic clock, to the lease file for the watchdog and
//!   publishes it to the node agent, which stops its VMs and starts none
//!   while the lease has run out.
//! - The watchdog (`blixard-fence`, [`run_watchdog`]) is a separate process,
//!   because VMs outlive their daemon by design: a daemon that is killed,
//!   frozen or cut off cannot stop them itself. Once the lease file's
//!   deadline passes it SIGKILLs every VM process under the node's runtime
//!   root, and keeps doing so until the deadline moves.
//! - The leader (see `scheduler`) takes a VM off a node only once that
//!   node's `lease_seq` has not moved for its lease plus [`HEAL_MARGIN`] on
//!   the leader's clock, naming the `lease_seq` it saw: a renewal committed
//!   before the decision makes it stale, and a renewal committed after it
//!   is applied after it, so the agent sees the VM gone before it may start
//!   anything again.

use crate::backend::supervisor::{proc_start, proc_vm_dir, send_signal, Meta};
use crate::core::Core;
use crate::state::{Action, CommandOutcome};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Default lease: how long a host keeps running its VMs without a renewal.
/// Long enough to ride out a daemon restart, short enough to heal quickly.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(6);
/// What the leader waits beyond a lease before it calls the lease surely
/// expired: covers the watchdog's poll, a kill in progress and clock-rate
/// differences between hosts.
pub const HEAL_MARGIN: Duration = Duration::from_secs(4);
/// How often the lease keeper renews at most (a quarter of the lease when
/// that is shorter, so a renewal never comes after the lease ran out).
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often the watchdog looks at the lease file.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// Polls with an expired lease and no VM left before the watchdog exits
/// (the daemon starts a new one before it starts a VM).
const IDLE_POLLS_BEFORE_EXIT: u32 = 20;
/// File the watchdog leaves in a VM's runtime dir when it kills the VM, so
/// a daemon that comes back later knows the fence, not a failure, ended it.
pub const FENCED_MARKER: &str = "fenced";
/// Lease file name in the data dir.
pub const LEASE_FILE: &str = "fence.lease";
/// Watchdog pid file name in the data dir (pid, kernel start time and
/// [`WATCHDOG_VERSION`]).
const PID_FILE: &str = "fence.pid";
/// Names the watchdog's behaviour (lease clock, how it finds VMs); a
/// watchdog registered under another version is replaced, not trusted.
const WATCHDOG_VERSION: &str = "v2";
/// Watchdog log file name in the data dir.
const LOG_FILE: &str = "fence.log";
/// The watchdog's log is truncated when it is started with a log larger than this.
const MAX_LOG_BYTES: u64 = 1024 * 1024;

/// Milliseconds on the lease clock: CLOCK_BOOTTIME, which every process
/// on the host shares, which does not jump with the wall clock, and which
/// keeps counting while the host is suspended (a host waking from sleep
/// must find its lease expired). Async-signal-safe: used between fork and
/// exec.
pub fn lease_clock_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_BOOTTIME
    // is always available on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1000) + (ts.tv_nsec as u64) / 1_000_000
}

/// Writes the lease deadline (lease-clock ms) to the lease file atomically
/// (write, fsync, rename), so the watchdog never reads half a file.
pub fn write_lease(data_dir: &Path, deadline_ms: u64) -> std::io::Result<()> {
    let path = data_dir.join(LEASE_FILE);
    let tmp = data_dir.join(format!("{LEASE_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("{deadline_ms}\n").as_bytes())?;
    f.sync_data()?;
    std::fs::rename(&tmp, &path)
}

/// Reads the lease deadline (lease-clock ms); a missing or malformed file
/// reads as 0, long expired.
pub fn read_lease(data_dir: &Path) -> u64 {
    std::fs::read_to_string(data_dir.join(LEASE_FILE))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// The lease as the node agent sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseStatus {
    /// Until when VMs may run, on the lease clock (the deadline the lease
    /// file holds); `None` before the first renewal.
    pub deadline_ms: Option<u64>,
    /// How many times the lease ran out and was renewed again: an instance
    /// started before the latest of these and found ended was stopped by
    /// the fence, not by a failure of its own.
    pub lapses: u64,
}

impl LeaseStatus {
    /// Whether VMs may run now.
    pub fn valid(&self) -> bool {
        self.deadline_ms.is_some_and(|d| lease_clock_ms() < d)
    }

    /// Time left on the lease (zero when it has run out or never began).
    pub fn remaining(&self) -> Duration {
        let left = self
            .deadline_ms
            .map_or(0, |d| d.saturating_sub(lease_clock_ms()));
        Duration::from_millis(left)
    }
}

/// Renews the lease until shutdown, publishing each renewal on `status`
/// and (when `data_dir` is given: a backend that runs processes) writing
/// it to the lease file for the watchdog.
pub async fn keep_lease(
    core: Arc<Core>,
    lease: Duration,
    data_dir: Option<PathBuf>,
    status: watch::Sender<LeaseStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    let every = RENEW_EVERY.min(lease / 4);
    if let Some(dir) = &data_dir {
        // A deadline from an earlier run with a longer lease must not
        // outlast what the leader now assumes (this run's lease).
        let cap = lease_clock_ms().saturating_add(lease_ms);
        if read_lease(dir) > cap {
            if let Err(e) = write_lease(dir, cap) {
                tracing::error!(error = %e, "cannot shorten the lease file");
            }
        }
    }
    let mut file_ok = true;
    let mut held = false;
    let mut lapse_counted = false;
    loop {
        let valid = status.borrow().valid();
        if held && !valid {
            core.metrics.fence_lease_lapses.inc();
            lapse_counted = true;
            tracing::warn!(
                "fencing lease has run out: this node's VMs are stopped until it is renewed"
            );
        }
        held = valid;
        core.metrics.fence_lease_valid.set(u64::from(valid));
        let sent = Instant::now();
        let sent_mono = lease_clock_ms();
        // After a failed write, renew only once the file is writable again:
        // a renewal the watchdog cannot see would keep the leader from
        // healing while this host's VMs stay fenced.
        if !file_ok {
            if let Some(dir) = &data_dir {
                file_ok = write_lease(dir, read_lease(dir)).is_ok();
            }
        }
        if !file_ok {
            tokio::select! {
                _ = tokio::time::sleep_until(sent + every) => continue,
                _ = shutdown.changed() => return,
            }
        }
        // A renewal that takes longer than half the lease is worth little.
        let renewed = tokio::select! {
            r = tokio::time::timeout(lease / 2, renew(&core, lease_ms)) => r.ok().and_then(|r| r.ok()),
            _ = shutdown.changed() => return,
        };
        if renewed.is_some() {
            let deadline = sent_mono.saturating_add(lease_ms);
            let written = match &data_dir {
                Some(dir) => write_lease(dir, deadline),
                None => Ok(()),
            };
            match written {
                Ok(()) => {
                    status.send_modify(|s| {
                        if !s.valid() && s.deadline_ms.is_some() {
                            s.lapses += 1;
                            if !lapse_counted {
                                core.metrics.fence_lease_lapses.inc();
                            }
                            tracing::warn!("fencing lease renewed after it had run out");
                        }
                        s.deadline_ms = Some(deadline);
                    });
                    lapse_counted = false;
                    held = status.borrow().valid();
                    core.metrics.fence_lease_valid.set(u64::from(held));
                }
                Err(e) => {
                    file_ok = false;
                    tracing::error!(error = %e, "cannot write the lease file; the lease will run out")
                }
            }
        }
        let next = sent + every;
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One renewal: commits it, then waits until this node has applied it, so
/// the agent acts on state at least as new as the renewal.
async fn renew(core: &Core, lease_ms: u64) -> Result<(), String> {
    let outcome = core
        .propose(Action::RenewLease {
            id: core.id,
            lease_ms,
        })
        .await
        .map_err(|e| e.message().to_string())?;
    let CommandOutcome::Node(node) = outcome else {
        return Err("unexpected outcome of a lease renewal".into());
    };
    let mut applied = core.view.subscribe();
    loop {
        {
            let fleet = core.view.read();
            if fleet
                .nodes
                .get(&core.id)
                .is_some_and(|n| n.lease_seq >= node.lease_seq)
            {
                return Ok(());
            }
        }
        applied
            .changed()
            .await
            .map_err(|_| "state machine stopped".to_string())?;
    }
}

/// A VM process on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VmProcess {
    pid: u32,
    name: String,
    /// The VM's runtime dir.
    dir: PathBuf,
    /// Leads the VM's process group (recorded in `meta.json`).
    leader: bool,
}

/// Every live VM process of this host: the ones `meta.json` records (pid
/// and kernel start time must match, so a reused pid is never taken for a
/// VM), and any process whose environment places it under `vm_root`
/// (children of a runner, a VM whose `meta.json` was not written yet).
fn vm_processes(vm_root: &Path) -> Vec<VmProcess> {
    let mut found = std::collections::BTreeMap::new();
    if let Ok(dirs) = std::fs::read_dir(vm_root) {
        for dir in dirs.flatten() {
            let Ok(text) = std::fs::read(dir.path().join("meta.json")) else {
                continue;
            };
            let Ok(meta) = serde_json::from_slice::<Meta>(&text) else {
                continue;
            };
            if proc_start(meta.pid) == Some((meta.proc_start_ticks, false)) {
                found.insert(
                    meta.pid,
                    VmProcess {
                        pid: meta.pid,
                        name: meta.name,
                        dir: dir.path(),
                        leader: true,
                    },
                );
            }
        }
    }
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found.into_values().collect();
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || found.contains_key(&pid) {
            continue;
        }
        let Some(dir) = proc_vm_dir(pid) else {
            continue;
        };
        // Only a direct child of this node's runtime root, spelled plainly
        // (no `..`), is one of its VMs.
        let direct_child = dir.parent() == Some(vm_root)
            && dir.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::RootDir
                )
            });
        if !direct_child || !matches!(proc_start(pid), Some((_, false))) {
            continue;
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        found.insert(
            pid,
            VmProcess {
                pid,
                name,
                dir,
                leader: false,
            },
        );
    }
    found.into_values().collect()
}

/// Kills every live VM process of this host (see [`vm_processes`]) and
/// marks their VMs fenced; returns how many were alive. Pids in `reported`
/// are not logged again (a process stuck in the kernel survives SIGKILL
/// for a while).
pub fn kill_vms(
    vm_root: &Path,
    lease_dir: Option<&Path>,
    reported: &mut std::collections::HashSet<u32>,
) -> usize {
    let live = vm_processes(vm_root);
    // The scan takes a while: a renewal meanwhile cancels the kills.
    if lease_dir.is_some_and(|d| lease_clock_ms() < read_lease(d)) {
        return live.len();
    }
    for p in &live {
        let first = reported.insert(p.pid);
        if first {
            if let Err(e) = std::fs::write(p.dir.join(FENCED_MARKER), b"") {
                tracing::warn!(vm = %p.name, error = %e, "cannot mark the vm fenced");
            }
        }
        if p.leader {
            if let Ok(pgid) = i32::try_from(p.pid) {
                // SAFETY: killpg(2) on a group whose leader we just identified.
                unsafe { libc::killpg(pgid, libc::SIGKILL) };
            }
        }
        if send_signal(p.pid, libc::SIGKILL) && first {
            tracing::warn!(vm = %p.name, pid = p.pid, "lease ran out: killed vm process");
        }
    }
    live.len()
}

/// Writes `text` to `path` atomically (write, rename), through a temporary
/// file of this process's own (the daemon and the watchdog both write the
/// pid file).
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Records this process as the host's watchdog.
fn write_own_pid_file(data_dir: &Path) {
    let pid = std::process::id();
    let ticks = proc_start(pid).map_or(0, |(t, _)| t);
    if let Err(e) = write_atomic(
        &data_dir.join(PID_FILE),
        &format!("{pid} {ticks} {WATCHDOG_VERSION}\n"),
    ) {
        tracing::error!(error = %e, "cannot write the watchdog pid file");
    }
}

/// The watchdog's loop: kills the VMs under `vm_root` whenever the lease in
/// `data_dir` has run out. Returns when the data dir is gone, or when the
/// lease has run out and no VM is left to guard.
pub fn run_watchdog(data_dir: &Path, vm_root: &Path) {
    tracing::info!(data_dir = %data_dir.display(), "fence watchdog started");
    write_own_pid_file(data_dir);
    let mut idle = 0;
    let mut reported = std::collections::HashSet::new();
    while data_dir.is_dir() {
        if lease_clock_ms() >= read_lease(data_dir) {
            if kill_vms(vm_root, Some(data_dir), &mut reported) == 0 {
                idle += 1;
                if idle >= IDLE_POLLS_BEFORE_EXIT {
                    // Unregister first, then look once more: the daemon
                    // checks the pid file after each VM start, so a VM
                    // started meanwhile is either seen here (and guarded)
                    // or finds no watchdog registered (and starts one).
                    let pid_file = data_dir.join(PID_FILE);
                    let own = format!("{} ", std::process::id());
                    if std::fs::read_to_string(&pid_file).is_ok_and(|t| t.starts_with(&own)) {
                        let _ = std::fs::remove_file(&pid_file);
                    }
                    if vm_processes(vm_root).is_empty() {
                        tracing::info!("lease expired and no vm left: fence watchdog exits");
                        return;
                    }
                    write_own_pid_file(data_dir);
                    idle = 0;
                }
            } else {
                idle = 0;
            }
        } else {
            idle = 0;
            reported.clear();
        }
        std::thread::sleep(WATCH_EVERY);
    }
}

/// Why VMs cannot be started: no watchdog could be run.
#[derive(Debug, thiserror::Error)]
#[error("fence watchdog {path}: {message}")]
pub struct WatchdogError {
    path: PathBuf,
    message: String,
}

/// The daemon's handle on its host's watchdog process.
pub struct Watchdog {
    exe: PathBuf,
    data_dir: PathBuf,
    vm_root: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Watchdog {
    /// A handle; nothing is started until [`Watchdog::ensure`].
    pub fn new(exe: PathBuf, data_dir: PathBuf, vm_root: PathBuf) -> Self {
        Self {
            exe,
            data_dir,
            vm_root,
            child: Mutex::new(None),
        }
    }

    /// The watchdog binary next to the running executable.
    pub fn default_exe() -> Option<PathBuf> {
        let exe = std::env::current_exe().ok()?;
        Some(exe.parent()?.join("blixard-fence"))
    }

    fn running(&self) -> bool {
        let Ok(text) = std::fs::read_to_string(self.data_dir.join(PID_FILE)) else {
            return false;
        };
        let mut fields = text.split_whitespace();
        let pid = fields.next().and_then(|f| f.parse::<u32>().ok());
        let ticks = fields.next().and_then(|f| f.parse::<u64>().ok());
        match (pid, ticks, fields.next()) {
            (Some(pid), Some(ticks), Some(WATCHDOG_VERSION)) => {
                proc_start(pid).is_some_and(|s| s == (ticks, false))
            }
            _ => false,
        }
    }

    /// Makes sure a watchdog guards this host (one from an earlier daemon
    /// run counts); call before starting a VM and again after it started
    /// (a watchdog that was just exiting is then replaced).
    pub fn ensure(&self) -> Result<(), WatchdogError> {
        let err = |message: String| WatchdogError {
            path: self.exe.clone(),
            message,
        };
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        // Reap one that exited, so it does not linger as a zombie.
        if let Some(c) = child.as_mut() {
            if !matches!(c.try_wait(), Ok(None)) {
                *child = None;
            }
        }
        if self.running() {
            return Ok(());
        }
        let log_path = self.data_dir.join(LOG_FILE);
        if std::fs::metadata(&log_path).is_ok_and(|m| m.len() > MAX_LOG_BYTES) {
            let _ = std::fs::remove_file(&log_path);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| err(format!("opening {}: {e}", log_path.display())))?;
        use std::os::unix::process::CommandExt;
        let spawned = Command::new(&self.exe)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--vm-root")
            .arg(&self.vm_root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| err(format!("cannot start it: {e}")))?;
        let mut spawned = spawned;
        let pid = spawned.id();
        let ticks = proc_start(pid).map_or(0, |(t, _)| t);
        if let Err(e) = write_atomic(
            &self.data_dir.join(PID_FILE),
            &format!("{pid} {ticks} {WATCHDOG_VERSION}\n"),
        ) {
            let _ = spawned.kill();
            let _ = spawned.wait();
            return Err(err(format!("writing its pid file: {e}")));
        }
        tracing::info!(pid, "started the fence watchdog");
        *child = Some(spawned);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_broken_lease_file_counts_as_expired() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(read_lease(tmp.path()), 0);
        std::fs::write(tmp.path().join(LEASE_FILE), "garbage").unwrap();
        assert_eq!(read_lease(tmp.path()), 0);
        let deadline = lease_clock_ms() + 60_000;
        write_lease(tmp.path(), deadline).unwrap();
        assert_eq!(read_lease(tmp.path()), deadline);
    }

    #[test]
    fn kill_vms_kills_recorded_live_processes_only() {
        let tmp = tempfile::tempdir().unwrap();
        let mut child = Command::new("sleep").arg("60").spawn().unwrap();
        let pid = child.id();
        let ticks = proc_start(pid).unwrap().0;
        let meta = |name: &str, pid: u32, ticks: u64| Meta {
            name: name.into(),
            epoch: 1,
            pid,
            proc_start_ticks: ticks,
            started_at_ms: 0,
            backend: "process".into(),
            argv: vec![],
        };
        for (name, m) in [
            ("live", meta("live", pid, ticks)),
            // Same pid, other start time: a reused pid is not ours to kill.
            ("reused", meta("reused", pid, ticks + 1)),
        ] {
            let dir = tmp.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("meta.json"), serde_json::to_vec(&m).unwrap()).unwrap();
        }
        let mut reported = std::collections::HashSet::new();
        assert_eq!(kill_vms(tmp.path(), None, &mut reported), 1);
        assert!(tmp.path().join("live").join(FENCED_MARKER).exists());
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert_eq!(
            kill_vms(tmp.path(), None, &mut reported),
            0,
            "nothing left alive"
        );
    }

    #[test]
    fn kill_vms_finds_vm_processes_by_their_environment() {
        let tmp = tempfile::tempdir().unwrap();
        // A child of a runner: no meta.json names it, its environment does.
        let mut child = Command::new("sleep")
            .arg("60")
            .env("BLIXARD_VM_DIR", tmp.path().join("web"))
            .spawn()
            .unwrap();
        let mut other = Command::new("sleep")
            .arg("60")
            .env("BLIXARD_VM_DIR", "/elsewhere/web")
            .spawn()
            .unwrap();
        std::fs::create_dir_all(tmp.path().join("web")).unwrap();
        let mut reported = std::collections::HashSet::new();
        assert_eq!(kill_vms(tmp.path(), None, &mut reported), 1);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert_eq!(
            other.try_wait().unwrap(),
            None,
            "another node's VM is left alone"
        );
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
