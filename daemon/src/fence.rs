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

use crate::backend::supervisor::{proc_start, send_signal, Meta};
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
/// How often the lease keeper renews.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often the watchdog looks at the lease file.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// Polls with an expired lease and no VM left before the watchdog exits
/// (the daemon starts a new one before it starts a VM).
const IDLE_POLLS_BEFORE_EXIT: u32 = 20;
/// Lease file name in the data dir.
pub const LEASE_FILE: &str = "fence.lease";
/// Watchdog pid file name in the data dir (pid and kernel start time).
const PID_FILE: &str = "fence.pid";
/// Watchdog log file name in the data dir.
const LOG_FILE: &str = "fence.log";
/// The watchdog's log is truncated when it is started with a log larger than this.
const MAX_LOG_BYTES: u64 = 1024 * 1024;

/// Milliseconds on the host's monotonic clock, which every process on the
/// host shares (and which does not jump with the wall clock).
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC
    // is always available on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1000) + (ts.tv_nsec as u64) / 1_000_000
}

/// Until when the host may run VMs, as the lease file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// No fencing: the node is the only one in the cluster, so nobody else
    /// could run its VMs.
    Never,
    /// Until this monotonic millisecond.
    At(u64),
}

impl Deadline {
    fn render(self) -> String {
        match self {
            Deadline::Never => "never\n".into(),
            Deadline::At(ms) => format!("{ms}\n"),
        }
    }

    /// Parses the lease file's contents; `None` when malformed.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "never" => Some(Deadline::Never),
            t => t.parse().ok().map(Deadline::At),
        }
    }

    /// Whether the deadline has passed at monotonic time `now_ms`.
    pub fn expired(self, now_ms: u64) -> bool {
        matches!(self, Deadline::At(d) if now_ms >= d)
    }
}

/// Writes `deadline` to the lease file atomically (write, fsync, rename), so
/// the watchdog never reads half a file.
pub fn write_lease(data_dir: &Path, deadline: Deadline) -> std::io::Result<()> {
    let path = data_dir.join(LEASE_FILE);
    let tmp = data_dir.join(format!("{LEASE_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(deadline.render().as_bytes())?;
    f.sync_data()?;
    std::fs::rename(&tmp, &path)
}

/// Reads the lease file; a missing or malformed file counts as expired.
pub fn read_lease(data_dir: &Path) -> Deadline {
    std::fs::read_to_string(data_dir.join(LEASE_FILE))
        .ok()
        .and_then(|t| Deadline::parse(&t))
        .unwrap_or(Deadline::At(0))
}

/// The lease as the node agent sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseStatus {
    /// Until when VMs may run; `None` before the first renewal.
    pub valid_until: Option<Instant>,
    /// No deadline (single-node cluster).
    pub unbounded: bool,
    /// When the lease last ran out before a renewal came, if ever: an
    /// instance that ended after this was stopped by the fence, not by a
    /// failure of its own.
    pub last_lapse: Option<Instant>,
}

impl LeaseStatus {
    /// Whether VMs may run now.
    pub fn valid(&self) -> bool {
        self.unbounded || self.valid_until.is_some_and(|t| Instant::now() < t)
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
    loop {
        let sent = Instant::now();
        let sent_mono = monotonic_ms();
        // A renewal that takes longer than half the lease is worth little.
        let renewed = tokio::select! {
            r = tokio::time::timeout(lease / 2, renew(&core, lease_ms)) => r.ok().and_then(|r| r.ok()),
            _ = shutdown.changed() => return,
        };
        if let Some(alone) = renewed {
            let deadline = if alone {
                Deadline::Never
            } else {
                Deadline::At(sent_mono.saturating_add(lease_ms))
            };
            let written = match &data_dir {
                Some(dir) => write_lease(dir, deadline),
                None => Ok(()),
            };
            match written {
                Ok(()) => status.send_modify(|s| {
                    if !s.valid() && s.valid_until.is_some() {
                        s.last_lapse = s.valid_until;
                        tracing::warn!("fencing lease renewed after it had run out");
                    }
                    s.valid_until = Some(sent + lease);
                    s.unbounded = alone;
                }),
                Err(e) => {
                    tracing::error!(error = %e, "cannot write the lease file; the lease will run out")
                }
            }
        } else if status
            .borrow()
            .valid_until
            .is_some_and(|t| Instant::now() >= t)
        {
            tracing::warn!(
                "fencing lease has run out: this node's VMs are stopped until it is renewed"
            );
        }
        let next = sent + RENEW_EVERY;
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One renewal: commits it, then waits until this node has applied it, so
/// the agent acts on state at least as new as the renewal. Returns whether
/// this node is the cluster's only node.
async fn renew(core: &Core, lease_ms: u64) -> Result<bool, String> {
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
                return Ok(fleet.nodes.len() <= 1);
            }
        }
        applied
            .changed()
            .await
            .map_err(|_| "state machine stopped".to_string())?;
    }
}

/// Kills every live VM process recorded under `vm_root`; returns how many
/// were alive.
pub fn kill_vms(vm_root: &Path) -> usize {
    let Ok(dirs) = std::fs::read_dir(vm_root) else {
        return 0;
    };
    let mut live = 0;
    for dir in dirs.flatten() {
        let Ok(text) = std::fs::read(dir.path().join("meta.json")) else {
            continue;
        };
        let Ok(meta) = serde_json::from_slice::<Meta>(&text) else {
            continue;
        };
        if proc_start(meta.pid) == Some((meta.proc_start_ticks, false)) {
            live += 1;
            // The whole process group (the supervisor starts each VM in its
            // own): a runner's children die with it.
            if let Ok(pgid) = i32::try_from(meta.pid) {
                // SAFETY: killpg(2) on a group whose leader we just identified.
                unsafe { libc::killpg(pgid, libc::SIGKILL) };
            }
            if send_signal(meta.pid, libc::SIGKILL) {
                tracing::warn!(vm = %meta.name, pid = meta.pid, "lease ran out: killed vm");
            }
        }
    }
    live
}

/// The watchdog's loop: kills the VMs under `vm_root` whenever the lease in
/// `data_dir` has run out. Returns when the data dir is gone, or when the
/// lease has run out and no VM is left to guard.
pub fn run_watchdog(data_dir: &Path, vm_root: &Path) {
    tracing::info!(data_dir = %data_dir.display(), "fence watchdog started");
    let mut idle = 0;
    while data_dir.is_dir() {
        if read_lease(data_dir).expired(monotonic_ms()) {
            if kill_vms(vm_root) == 0 {
                idle += 1;
                if idle >= IDLE_POLLS_BEFORE_EXIT {
                    tracing::info!("lease expired and no vm left: fence watchdog exits");
                    return;
                }
            } else {
                idle = 0;
            }
        } else {
            idle = 0;
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
        let mut fields = text.split_whitespace().map(str::parse::<u64>);
        match (fields.next(), fields.next()) {
            (Some(Ok(pid)), Some(Ok(ticks))) => u32::try_from(pid)
                .ok()
                .and_then(proc_start)
                .is_some_and(|s| s == (ticks, false)),
            _ => false,
        }
    }

    /// Makes sure a watchdog guards this host (one from an earlier daemon
    /// run counts); call before starting a VM.
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
        let pid = spawned.id();
        let ticks = proc_start(pid).map_or(0, |(t, _)| t);
        std::fs::write(self.data_dir.join(PID_FILE), format!("{pid} {ticks}\n"))
            .map_err(|e| err(format!("writing its pid file: {e}")))?;
        tracing::info!(pid, "started the fence watchdog");
        *child = Some(spawned);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_trip_and_expire() {
        for d in [Deadline::Never, Deadline::At(0), Deadline::At(123_456)] {
            assert_eq!(Deadline::parse(&d.render()), Some(d));
        }
        assert_eq!(Deadline::parse("soon"), None);
        assert!(!Deadline::Never.expired(u64::MAX));
        assert!(Deadline::At(10).expired(10));
        assert!(!Deadline::At(10).expired(9));
    }

    #[test]
    fn a_missing_or_broken_lease_file_counts_as_expired() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(read_lease(tmp.path()).expired(monotonic_ms()));
        std::fs::write(tmp.path().join(LEASE_FILE), "garbage").unwrap();
        assert!(read_lease(tmp.path()).expired(monotonic_ms()));
        write_lease(tmp.path(), Deadline::At(monotonic_ms() + 60_000)).unwrap();
        assert!(!read_lease(tmp.path()).expired(monotonic_ms()));
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
        assert_eq!(kill_vms(tmp.path()), 1);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert_eq!(kill_vms(tmp.path()), 0, "nothing left alive");
    }
}
