//! The daemon's handle on its host's watchdog process: finds one that runs
//! (from an earlier daemon run too) by its pid file, or starts one, before
//! and after every VM start.

use super::watchdog::{write_atomic, PID_FILE, WATCHDOG_VERSION};
use crate::host::procfs::proc_start;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

/// Watchdog log file name in the data dir.
const LOG_FILE: &str = "fence.log";
/// The watchdog's log is truncated when it is started with a log larger than this.
const MAX_LOG_BYTES: u64 = 1024 * 1024;

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
