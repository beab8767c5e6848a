//! VM backends: each makes VMs real on this host in its own way, behind one
//! trait, so the node agent never knows which it drives.
//!
//! - [`qemu::QemuBackend`]: QEMU `-M microvm`, controlled over QMP.
//! - [`process::ProcessBackend`]: a supervised host process (a VM's
//!   `runner`), for hosts without QEMU.
//! - [`fake::FakeBackend`]: in-memory, for tests only.
//!
//! Every instance keeps its runtime files in `DATA_DIR/vms/NAME/` (see
//! [`supervisor`]), so a restarted daemon can find and adopt what still runs.

pub mod fake;
pub mod meta;
pub mod process;
pub mod qemu;
pub mod qmp;
pub mod supervisor;

use crate::state::VmRecord;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// Why a backend could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The VM's spec cannot run on this host (unknown image, missing kernel,
    /// runner not executable, ...). Retrying will not help until the spec
    /// or the host changes.
    #[error("{0}")]
    InvalidSpec(String),
    /// This backend cannot run this kind of VM.
    #[error("{0}")]
    Unsupported(String),
    /// Starting or controlling the instance failed; a retry may succeed.
    #[error("{0}")]
    Failed(String),
    /// A host I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

impl BackendError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether retrying the same spec on this host is pointless.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::InvalidSpec(_) | Self::Unsupported(_))
    }
}

/// A running instance of a VM on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// VM name.
    pub name: String,
    /// Placement epoch it was started for.
    pub epoch: u64,
    /// Host process id.
    pub pid: u32,
    /// Start time (ms since the Unix epoch).
    pub started_at_ms: u64,
}

/// What became of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    /// Its process is alive.
    Running {
        /// Host process id.
        pid: u32,
    },
    /// Its process ended.
    Exited {
        /// Whether it ended cleanly (exit code 0, e.g. a guest power-off).
        clean: bool,
        /// How it ended, for the VM's status reason.
        reason: String,
    },
    /// No such instance on this host.
    Missing,
}

/// Makes one kind of VM real on this host.
pub trait VmBackend: Send + Sync + 'static {
    /// Backend name as recorded in the node record (`qemu`, `process`).
    fn kind(&self) -> &'static str;

    /// Checks what only this host can know: that the image, kernel, initrd
    /// or runner exist and are usable. Cheap; called before every start.
    fn check(&self, vm: &VmRecord) -> Result<(), BackendError>;

    /// Starts an instance of `vm` (which must not be running here).
    fn start(&self, vm: &VmRecord) -> impl Future<Output = Result<Instance, BackendError>> + Send;

    /// Stops the instance: gracefully first, forcibly once `timeout` passes.
    /// Stopping an instance that is not running succeeds.
    fn stop(
        &self,
        name: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Kills the instance at once (SIGKILL to its process group): for an
    /// instance that lost its placement or its host's lease, where another
    /// host may start the VM any moment. An operator's stop is graceful
    /// ([`VmBackend::stop`]). Killing an instance that is not running succeeds.
    fn kill(&self, name: &str) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The instance's state right now.
    fn state(&self, name: &str) -> impl Future<Output = InstanceState> + Send;

    /// Instances left running by a previous daemon, found in the runtime dir.
    fn adopt(&self) -> impl Future<Output = Vec<Instance>> + Send;

    /// Removes the instance's runtime files (it must be stopped).
    fn cleanup(&self, name: &str) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The VM's console log (serial console, or the process's output).
    fn console_path(&self, name: &str) -> PathBuf;

    /// Rotates console logs that grew past their limit.
    fn rotate_logs(&self) {}
}
