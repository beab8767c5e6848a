//! The reference backend: QEMU's `microvm` machine, one QEMU process per VM,
//! controlled over QMP, its serial console written to the VM's console log.
//!
//! KVM is used only where it is usable, not merely present (on nested
//! hypervisors `/dev/kvm` may exist and still be unable to boot a stock
//! kernel): `accel = auto` picks KVM only when `/dev/kvm` opens read-write
//! and the CPU advertises `vmx` or `svm`, and TCG otherwise.

use super::qmp;
use super::supervisor::{Supervisor, RUNNER_PATH};
use super::{BackendError, Instance, InstanceState, VmBackend};
use crate::state::VmRecord;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub use crate::config::AccelChoice;

/// The accelerator in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// How often a stop presses the power button again while the guest is still up.
const POWERDOWN_REPEAT: Duration = Duration::from_secs(2);
/// Default kernel command line for a kernel given by path without one.
const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1";
/// Flags that make TCG boots of a microvm quick and reliable.
const TCG_CMDLINE: &str = "pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";

/// Decides whether KVM is usable here, and why.
pub fn kvm_usable() -> (bool, String) {
    let opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !opens {
        return (false, "/dev/kvm cannot be opened".into());
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if hw {
        (true, "/dev/kvm opens and the CPU has vmx/svm".into())
    } else {
        (
            false,
            "/dev/kvm opens but the CPU advertises no vmx/svm (nested or paravirtual hypervisor)"
                .into(),
        )
    }
}

/// The host CPU frequency in kHz, from `/proc/cpuinfo`, for `tsc_early_khz`
/// (TCG guests on microvm otherwise calibrate the TSC badly and may hang).
fn host_cpu_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "cpu MHz").then(|| {
            value
                .trim()
                .parse::<f64>()
                .ok()
                .map(|mhz| (mhz * 1000.0) as u64)
        })?
    })
}

/// Finds an executable named `name` on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs VMs as QEMU microVMs.
pub struct QemuBackend {
    sup: Supervisor,
    binary: PathBuf,
    accel: Accel,
    image_dir: PathBuf,
    tsc_khz: Option<u64>,
}

/// What a VM boots.
enum BootSource {
    Kernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
    },
    Runner(PathBuf),
}

impl QemuBackend {
    /// A backend keeping runtime files under `data_dir/vms`, images under
    /// `image_dir`. Fails when no QEMU binary can be found.
    pub fn new(
        data_dir: &Path,
        image_dir: PathBuf,
        binary: Option<PathBuf>,
        accel: AccelChoice,
    ) -> Result<Self, BackendError> {
        let binary = match binary {
            Some(b) if is_executable(&b) => b,
            Some(b) => return Err(BackendError::Unsupported(format!("qemu binary {} is not executable", b.display()))),
            None => find_on_path("qemu-system-x86_64").ok_or_else(|| {
                BackendError::Unsupported(
                    "qemu-system-x86_64 is not on PATH: install qemu-system-x86, or run with --backend process".into(),
                )
            })?,
        };
        let (usable, why) = kvm_usable();
        let accel = match (accel, usable) {
            (AccelChoice::Kvm, _) => Accel::Kvm,
            (AccelChoice::Tcg, _) => Accel::Tcg,
            (AccelChoice::Auto, true) => Accel::Kvm,
            (AccelChoice::Auto, false) => Accel::Tcg,
        };
        tracing::info!(binary = %binary.display(), accel = accel_name(accel), reason = %why, "qemu backend ready");
        let sup = Supervisor::new(data_dir.join("vms"), "qemu")
            .map_err(|e| {
                BackendError::io(format!("creating {}", data_dir.join("vms").display()), e)
            })?
            .fenced_by(data_dir);
        Ok(Self {
            sup,
            binary,
            accel,
            image_dir,
            tsc_khz: host_cpu_khz(),
        })
    }

    /// The accelerator chosen at start.
    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// The supervisor (log rotation, tests).
    pub fn supervisor(&self) -> &Supervisor {
        &self.sup
    }

    fn boot_source(&self, vm: &VmRecord) -> Result<BootSource, BackendError> {
        let spec = &vm.spec;
        if !spec.runner.is_empty() {
            let runner = PathBuf::from(&spec.runner);
            if !runner.exists() {
                return Err(BackendError::InvalidSpec(format!(
                    "spec.runner: {} does not exist on this host",
                    spec.runner
                )));
            }
            if !is_executable(&runner) {
                return Err(BackendError::InvalidSpec(format!(
                    "spec.runner: {} is not executable",
                    spec.runner
                )));
            }
            return Ok(BootSource::Runner(runner));
        }
        if !spec.kernel.is_empty() {
            let kernel = PathBuf::from(&spec.kernel);
            if !kernel.is_file() {
                return Err(BackendError::InvalidSpec(format!(
                    "spec.kernel: {} does not exist on this host",
                    spec.kernel
                )));
            }
            let initrd = if spec.initrd.is_empty() {
                None
            } else {
                let p = PathBuf::from(&spec.initrd);
                if !p.is_file() {
                    return Err(BackendError::InvalidSpec(format!(
                        "spec.initrd: {} does not exist on this host",
                        spec.initrd
                    )));
                }
                Some(p)
            };
            let cmdline = if spec.cmdline.is_empty() {
                DEFAULT_CMDLINE.to_string()
            } else {
                spec.cmdline.clone()
            };
            return Ok(BootSource::Kernel {
                kernel,
                initrd,
                cmdline,
            });
        }
        let image = if spec.image.is_empty() {
            "default"
        } else {
            spec.image.as_str()
        };
        let dir = self.image_dir.join(image);
        if !dir.is_dir() {
            return Err(BackendError::InvalidSpec(format!(
                "spec.image: unknown image {image:?} (no {} on this host)",
                dir.display()
            )));
        }
        let kernel = ["vmlinux", "vmlinuz", "bzImage"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                BackendError::InvalidSpec(format!(
                    "spec.image: image {image:?} has no kernel (vmlinux) in {}",
                    dir.display()
                ))
            })?;
        let initrd = Some(dir.join("initrd.img")).filter(|p| p.is_file());
        let mut cmdline = std::fs::read_to_string(dir.join("cmdline"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| DEFAULT_CMDLINE.to_string());
        if !spec.cmdline.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(&spec.cmdline);
        }
        Ok(BootSource::Kernel {
            kernel,
            initrd,
            cmdline,
        })
    }

    /// The exact QEMU command line this backend would run for `vm` with its
    /// runtime files in `dir` (benchmarks start it by hand to compare).
    pub fn command_for(&self, vm: &VmRecord, dir: &Path) -> Result<Command, BackendError> {
        match self.boot_source(vm)? {
            BootSource::Kernel {
                kernel,
                initrd,
                cmdline,
            } => Ok(self.qemu_command(vm, dir, &kernel, initrd.as_deref(), &cmdline)),
            BootSource::Runner(_) => Err(BackendError::Unsupported(
                "runner VMs have no QEMU command line of ours".into(),
            )),
        }
    }

    /// The QEMU command line for `vm` booting `kernel`.
    fn qemu_command(
        &self,
        vm: &VmRecord,
        dir: &Path,
        kernel: &Path,
        initrd: Option<&Path>,
        cmdline: &str,
    ) -> Command {
        let mut cmdline = cmdline.to_string();
        if self.accel == Accel::Tcg {
            if !cmdline.contains("pci=off") {
                cmdline.push(' ');
                cmdline.push_str(TCG_CMDLINE);
            }
            if let (Some(khz), false) = (self.tsc_khz, cmdline.contains("tsc_early_khz")) {
                cmdline.push_str(&format!(" tsc_early_khz={khz}"));
            }
        }
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-name").arg(format!("blixard-{}", vm.name));
        cmd.args([
            "-M",
            "microvm",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
        ]);
        match self.accel {
            Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => cmd.args(["-accel", "tcg,tb-size=32"]),
        };
        cmd.arg("-smp").arg(vm.spec.vcpus.to_string());
        cmd.arg("-m").arg(format!("{}M", vm.spec.memory_mib));
        cmd.arg("-kernel").arg(kernel);
        if let Some(initrd) = initrd {
            cmd.arg("-initrd").arg(initrd);
        }
        cmd.arg("-append").arg(cmdline);
        cmd.arg("-chardev").arg(format!(
            "file,id=console,path={},append=on",
            dir.join("console.log").display()
        ));
        cmd.args(["-serial", "chardev:console"]);
        cmd.arg("-qmp").arg(format!(
            "unix:{},server=on,wait=off",
            dir.join("qmp.sock").display()
        ));
        cmd
    }
}

fn accel_name(a: Accel) -> &'static str {
    match a {
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg",
    }
}

impl VmBackend for QemuBackend {
    fn kind(&self) -> &'static str {
        "qemu"
    }

    fn check(&self, vm: &VmRecord) -> Result<(), BackendError> {
        self.boot_source(vm).map(|_| ())
    }

    async fn start(&self, vm: &VmRecord) -> Result<Instance, BackendError> {
        let source = self.boot_source(vm)?;
        let dir = self.sup.prepare(&vm.name)?;
        let cmd = match &source {
            BootSource::Kernel {
                kernel,
                initrd,
                cmdline,
            } => self.qemu_command(vm, &dir, kernel, initrd.as_deref(), cmdline),
            BootSource::Runner(runner) => {
                let mut cmd = Command::new(runner);
                // BLIXARD_VM_NAME and BLIXARD_VM_DIR come from the supervisor,
                // which passes on only the variables set here (QEMU itself
                // needs none: it runs no helper programs).
                cmd.env("PATH", RUNNER_PATH)
                    .env("BLIXARD_QMP_SOCKET", dir.join("qmp.sock"))
                    .current_dir(&dir);
                cmd
            }
        };
        self.sup.spawn(&vm.name, vm.epoch, cmd)
    }

    async fn stop(&self, name: &str, timeout: Duration) -> Result<(), BackendError> {
        if !matches!(self.sup.state(name), InstanceState::Running { .. }) {
            return Ok(());
        }
        let qmp = self.sup.dir(name).join("qmp.sock");
        // 1. Ask the guest to power off (ACPI power button). A press that
        //    comes while the guest is still booting is lost, so press again
        //    every POWERDOWN_REPEAT until the deadline.
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Err(e) = qmp::execute(&qmp, "system_powerdown", None).await {
                tracing::warn!(vm = %name, error = %e, "system_powerdown failed; sending SIGTERM");
                self.sup.signal(name, libc::SIGTERM);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.sup.wait_gone(name, left.min(POWERDOWN_REPEAT)).await {
                tracing::info!(vm = %name, "vm powered off");
                self.sup.kill_leftovers(name);
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        // 2. Tell QEMU to quit, 3. kill it.
        tracing::warn!(vm = %name, ?timeout, "vm did not power off in time; quitting qemu");
        if qmp::execute(&qmp, "quit", None).await.is_ok()
            && self.sup.wait_gone(name, Duration::from_secs(2)).await
        {
            self.sup.kill_leftovers(name);
            return Ok(());
        }
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
