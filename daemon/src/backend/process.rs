//! The `process` backend: runs a VM's `runner` as a supervised host process
//! (like Nomad's raw_exec), for hosts without QEMU and workloads that need
//! no VM. Its stdout and stderr are the VM's console log. It cannot boot
//! images or kernels, and says so.

use super::supervisor::{Supervisor, RUNNER_PATH};
use super::{BackendError, Instance, InstanceState, VmBackend};
use crate::state::VmRecord;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Runs VM runners as host processes.
pub struct ProcessBackend {
    sup: Supervisor,
}

impl ProcessBackend {
    /// A backend keeping runtime files under `data_dir/vms`.
    pub fn new(data_dir: &Path) -> Result<Self, BackendError> {
        let root = data_dir.join("vms");
        let sup = Supervisor::new(root.clone(), "process")
            .map_err(|e| BackendError::io(format!("creating {}", root.display()), e))?
            .fenced_by(data_dir);
        Ok(Self { sup })
    }

    /// The supervisor (log rotation, tests).
    pub fn supervisor(&self) -> &Supervisor {
        &self.sup
    }

    fn runner(&self, vm: &VmRecord) -> Result<PathBuf, BackendError> {
        if vm.spec.runner.is_empty() {
            return Err(BackendError::Unsupported(
                "this node runs the process backend, which runs only VMs with a runner (no images or kernels)".into(),
            ));
        }
        let runner = PathBuf::from(&vm.spec.runner);
        let meta = std::fs::metadata(&runner).map_err(|_| {
            BackendError::InvalidSpec(format!(
                "spec.runner: {} does not exist on this host",
                vm.spec.runner
            ))
        })?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(BackendError::InvalidSpec(format!(
                "spec.runner: {} is not executable",
                vm.spec.runner
            )));
        }
        Ok(runner)
    }
}

impl VmBackend for ProcessBackend {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn check(&self, vm: &VmRecord) -> Result<(), BackendError> {
        self.runner(vm).map(|_| ())
    }

    async fn start(&self, vm: &VmRecord) -> Result<Instance, BackendError> {
        let runner = self.runner(vm)?;
        let dir = self.sup.prepare(&vm.name)?;
        let mut cmd = Command::new(runner);
        // BLIXARD_VM_NAME and BLIXARD_VM_DIR come from the supervisor, which
        // passes on only the variables set here (none of the daemon's).
        cmd.env("PATH", RUNNER_PATH)
            .env("BLIXARD_VM_VCPUS", vm.spec.vcpus.to_string())
            .env("BLIXARD_VM_MEMORY_MIB", vm.spec.memory_mib.to_string())
            // Which placement and incarnation this is: a runner that keeps
            // state of its own can tell a re-created VM from a moved one.
            .env("BLIXARD_VM_EPOCH", vm.epoch.to_string())
            .env("BLIXARD_VM_CREATED_AT_MS", vm.created_at_ms.to_string())
            .current_dir(&dir);
        self.sup.spawn(&vm.name, vm.epoch, cmd)
    }

    async fn stop(&self, name: &str, timeout: Duration) -> Result<(), BackendError> {
        if !matches!(self.sup.state(name), InstanceState::Running { .. }) {
            return Ok(());
        }
        self.sup.signal(name, libc::SIGTERM);
        if self.sup.wait_gone(name, timeout).await {
            self.sup.kill_leftovers(name);
            return Ok(());
        }
        tracing::warn!(vm = %name, ?timeout, "process did not stop on SIGTERM; killing it");
        self.sup.kill(name).await
    }

    async fn kill(&self, name: &str) -> Result<(), BackendError> {
        // Even when its main process has ended: what it left in its cgroup.
        self.sup.kill(name).await
    }

    async fn state(&self, name: &str) -> InstanceState {
        self.sup.state(name)
    }

    async fn adopt(&self) -> Vec<Instance> {
        self.sup.adopt()
    }

    async fn cleanup(&self, name: &str) -> Result<(), BackendError> {
        self.sup.cleanup(name)
    }

    fn console_path(&self, name: &str) -> PathBuf {
        self.sup.console_path(name)
    }

    fn rotate_logs(&self) {
        self.sup.rotate_logs();
    }
}
