//! Supervision of VM processes, shared by the QEMU and process backends.
//!
//! Each instance lives in `ROOT/NAME/`: `meta.json` (pid, epoch, the
//! process's kernel start time to tell a reused pid apart, the argv),
//! `console.log` and backend files such as `qmp.sock`. Processes start in
//! their own process group and are not killed with the daemon, so VMs
//! outlive a daemon restart; the next daemon adopts them from `meta.json`.
//! While a daemon runs, it reaps the processes it started and records how
//! they ended.

use super::meta::Meta;
use super::{BackendError, Instance, InstanceState};
use crate::host::cgroup;
use crate::host::procfs::{proc_start, proc_vm_dir, send_signal};

use std::collections::HashMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a SIGKILLed VM may take to be gone.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How often a kill looks whether the VM's cgroup emptied.
const KILL_POLL: Duration = Duration::from_millis(10);

/// `PATH` of a runner (a shell script needs one; QEMU gets none): fixed,
/// never the daemon's, which a VM has no business seeing.
pub const RUNNER_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Console logs larger than this are rotated (copied to `console.log.1`,
/// then truncated); one rotated file is kept.
pub const CONSOLE_LOG_MAX_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, Clone)]
struct ExitRecord {
    pid: u32,
    clean: bool,
    reason: String,
}

/// Starts, watches and signals VM processes under one runtime root.
pub struct Supervisor {
    root: PathBuf,
    backend: &'static str,
    exits: Arc<Mutex<HashMap<String, ExitRecord>>>,
    /// Pids this supervisor spawned and still waits for: between a child's
    /// death and the waiter recording its exit status, the process is a
    /// zombie (not alive) with no exit recorded yet, and must not read as
    /// "ended while this daemon was not watching".
    watching: Arc<Mutex<std::collections::HashSet<u32>>>,
    /// `meta.json` contents by VM: the agent asks for state every pass, so
    /// the file is read once and then kept (only this supervisor writes it).
    metas: Mutex<HashMap<String, Meta>>,
    /// The data dir whose fencing lease every start must be within (see
    /// `fence`); `None` in unit tests of the supervisor itself.
    lease_dir: Option<PathBuf>,
    /// Where this node's VM cgroups live (see `host::cgroup`); `None`
    /// without a usable cgroup v2 hierarchy.
    cgroups: Option<PathBuf>,
}

/// Leaves `cmd` only the variables its backend set on it: a VM process
/// inherits nothing of the daemon's environment (which may hold secrets; a
/// runner could print it to its console log for any API caller to read).
fn only_explicit_env(cmd: &mut Command) {
    let explicit: Vec<(std::ffi::OsString, std::ffi::OsString)> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_os_string(), v?.to_os_string())))
        .collect();
    cmd.env_clear().envs(explicit);
}

/// Describes how a process ended.
pub fn describe_exit(status: ExitStatus) -> (bool, String) {
    if let Some(code) = status.code() {
        return (code == 0, format!("exited with code {code}"));
    }
    match status.signal() {
        Some(9) => (false, "killed by SIGKILL".to_string()),
        Some(15) => (false, "stopped by SIGTERM".to_string()),
        Some(sig) => (false, format!("killed by signal {sig}")),
        None => (false, "ended for an unknown reason".to_string()),
    }
}

impl Supervisor {
    /// A supervisor for instances under `root`, started by `backend`.
    pub fn new(root: PathBuf, backend: &'static str) -> std::io::Result<Self> {
        std::fs::create_dir_all(&root)?;
        let cgroups = cgroup::node_parent(&root);
        match &cgroups {
            Some(parent) => {
                tracing::info!(cgroups = %parent.display(), "each vm runs in a cgroup of its own")
            }
            None => tracing::warn!(
                "no cgroup v2 hierarchy with cgroup.kill: vms run without cgroups, and fencing finds their processes by scanning /proc"
            ),
        }
        Ok(Self {
            root,
            backend,
            exits: Arc::default(),
            watching: Arc::default(),
            metas: Mutex::default(),
            lease_dir: None,
            cgroups,
        })
    }

    /// Makes every start check, in the child just before it runs the VM,
    /// that the fencing lease in `data_dir` has not run out: a daemon
    /// frozen between its own lease check and the spawn cannot start a VM
    /// after the lease (and so after the VM may have moved elsewhere).
    pub fn fenced_by(mut self, data_dir: &Path) -> Self {
        self.lease_dir = Some(data_dir.to_path_buf());
        self
    }

    /// The runtime dir of `name` (names are DNS labels, so no path tricks).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The console log of `name`.
    pub fn console_path(&self, name: &str) -> PathBuf {
        self.dir(name).join("console.log")
    }

    /// Creates the runtime dir, removing files a previous instance left.
    pub fn prepare(&self, name: &str) -> Result<PathBuf, BackendError> {
        let dir = self.dir(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| BackendError::io(format!("creating {}", dir.display()), e))?;
        for stale in ["qmp.sock", "meta.json"] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
        self.forget_meta(name);
        Ok(dir)
    }

    fn read_meta(&self, name: &str) -> Option<Meta> {
        let mut metas = self.metas.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(meta) = metas.get(name) {
            return Some(meta.clone());
        }
        let text = std::fs::read_to_string(self.dir(name).join("meta.json")).ok()?;
        let meta: Meta = serde_json::from_str(&text).ok()?;
        metas.insert(name.to_string(), meta.clone());
        Some(meta)
    }

    fn forget_meta(&self, name: &str) {
        self.metas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    fn write_meta(&self, meta: &Meta) -> Result<(), BackendError> {
        let dir = self.dir(&meta.name);
        let tmp = dir.join("meta.json.tmp");
        let bytes = serde_json::to_vec_pretty(meta)
            .map_err(|e| BackendError::Failed(format!("encoding meta: {e}")))?;
        // No fsync: meta.json matters only while its process lives, and a
        // crash that loses the page cache (the host's) loses the process
        // too. The rename alone keeps a daemon crash from leaving half a
        // file, and an fsync here stalled the runtime on every start.
        std::fs::write(&tmp, &bytes).map_err(|e| BackendError::io("writing meta.json", e))?;
        std::fs::rename(&tmp, dir.join("meta.json"))
            .map_err(|e| BackendError::io("writing meta.json", e))?;
        self.metas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(meta.name.clone(), meta.clone());
        Ok(())
    }

    /// Starts `cmd` for `name` with its output appended to the console log.
    pub fn spawn(
        &self,
        name: &str,
        epoch: u64,
        mut cmd: Command,
    ) -> Result<Instance, BackendError> {
        let console = self.console_path(name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&console)
            .map_err(|e| BackendError::io(format!("opening {}", console.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| BackendError::io("opening console log", e))?;
        let argv: Vec<String> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        only_explicit_env(&mut cmd);
        // Every VM process (QEMU, a runner and its children) carries its name
        // and dir, so the fence watchdog finds it even without `meta.json`.
        cmd.env("BLIXARD_VM_NAME", name)
            .env("BLIXARD_VM_DIR", self.dir(name))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        if let Some(dir) = &self.lease_dir {
            let deadline = crate::host::fence::lease_file::read_lease(dir);
            // SAFETY: the hook runs between fork and exec and only calls
            // clock_gettime(2) and builds an error from an errno, both
            // async-signal-safe (no allocation, no locks).
            unsafe {
                cmd.pre_exec(move || {
                    if crate::host::fence::lease_file::lease_clock_ms() >= deadline {
                        Err(std::io::Error::from_raw_os_error(libc::ETIME))
                    } else {
                        Ok(())
                    }
                });
            }
        }
        self.join_cgroup_at_exec(name, &mut cmd);
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| BackendError::Failed(format!("cannot start {}: {e}", argv[0])))?;
        let pid = child.id().ok_or_else(|| {
            BackendError::Failed("the process exited before it could be watched".into())
        })?;
        let proc_start_ticks = proc_start(pid).map_or(0, |(t, _)| t);
        let started_at_ms = blixard_shared::time::now_ms();
        self.exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        let recorded = self.write_meta(&Meta {
            name: name.to_string(),
            epoch,
            pid,
            proc_start_ticks,
            started_at_ms,
            backend: self.backend.to_string(),
            argv,
        });
        if let Err(e) = recorded {
            // Unrecorded, the process would run on unseen and the agent's
            // retry would start a second one: it goes before the error does,
            // with whatever it forked.
            if let Some(parent) = &self.cgroups {
                if let Err(e) = cgroup::kill_vm(parent, name) {
                    tracing::warn!(vm = %name, error = %e, "killing the vm's cgroup failed");
                }
            }
            kill_unrecorded(pid, child);
            return Err(e);
        }
        let exits = self.exits.clone();
        let watching = self.watching.clone();
        watching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid);
        let owned = name.to_string();
        tokio::spawn(async move {
            let (clean, reason) = match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(e) => (false, format!("could not be waited for: {e}")),
            };
            tracing::info!(vm = %owned, pid, clean, %reason, "vm process ended");
            exits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(owned, ExitRecord { pid, clean, reason });
            watching
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&pid);
        });
        tracing::info!(vm = %name, pid, epoch, backend = self.backend, "vm process started");
        Ok(Instance {
            name: name.to_string(),
            epoch,
            pid,
            started_at_ms,
        })
    }

    /// Makes the child join VM `name`'s cgroup between fork and exec, so
    /// nothing it ever forks is outside it. Where the cgroup cannot be made
    /// the VM runs without one (and fencing falls back to its scan).
    fn join_cgroup_at_exec(&self, name: &str, cmd: &mut Command) {
        let Some(parent) = &self.cgroups else {
            return;
        };
        let procs = match cgroup::prepare_vm(parent, name) {
            Ok(procs) => procs,
            Err(e) => {
                tracing::warn!(vm = %name, error = %e, "cannot make the vm's cgroup: it runs without one");
                return;
            }
        };
        let Ok(procs) = std::ffi::CString::new(procs.as_os_str().as_encoded_bytes()) else {
            return;
        };
        // SAFETY: the hook runs between fork and exec and calls only
        // open(2), write(2) and close(2), all async-signal-safe, on a path
        // allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if written == 1 {
                    Ok(())
                } else {
                    Err(err)
                }
            });
        }
    }

    /// Whether the process `meta` records is still this instance: alive,
    /// not a zombie, and not another process that got the pid since. The
    /// kernel start time recorded at spawn proves that; when it could not
    /// be read then (recorded as 0), the process must carry this
    /// instance's dir in its environment instead.
    fn alive(&self, meta: &Meta) -> bool {
        match proc_start(meta.pid) {
            None | Some((_, true)) => false,
            Some((start, false)) if meta.proc_start_ticks != 0 => start == meta.proc_start_ticks,
            Some(_) => proc_vm_dir(meta.pid).is_some_and(|d| d == self.dir(&meta.name)),
        }
    }

    /// The pid of a live instance of `name`, if any.
    pub fn live_pid(&self, name: &str) -> Option<u32> {
        let meta = self.read_meta(name)?;
        self.alive(&meta).then_some(meta.pid)
    }

    /// The state of `name`'s instance.
    pub fn state(&self, name: &str) -> InstanceState {
        let Some(meta) = self.read_meta(name) else {
            return InstanceState::Missing;
        };
        if let Some(exit) = self
            .exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            if exit.pid == meta.pid {
                return InstanceState::Exited {
                    clean: exit.clean,
                    reason: exit.reason.clone(),
                };
            }
        }
        let waited_for = || {
            self.watching
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&meta.pid)
        };
        // A child that just died is reaped and described by its waiter in
        // a moment; until then it reads as running (the next pass sees
        // how it ended).
        if self.alive(&meta) || waited_for() {
            InstanceState::Running { pid: meta.pid }
        } else {
            InstanceState::Exited {
                clean: false,
                reason: format!(
                    "process {} is gone (it ended while this daemon was not watching)",
                    meta.pid
                ),
            }
        }
    }

    /// Sends `signal` to the instance's process if it is alive.
    pub fn signal(&self, name: &str, signal: i32) -> bool {
        match self.read_meta(name) {
            Some(meta) if self.alive(&meta) => send_signal(meta.pid, signal),
            _ => false,
        }
    }

    /// Waits until the instance is no longer running, up to `timeout`.
    pub async fn wait_gone(&self, name: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if !matches!(self.state(name), InstanceState::Running { .. }) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the instance and its process group (SIGKILL) and waits briefly
    /// for it to go.
    pub async fn kill(&self, name: &str) -> Result<(), BackendError> {
        // Everything in its cgroup, however it forked.
        if let Some(parent) = &self.cgroups {
            if let Err(e) = cgroup::kill_vm(parent, name) {
                tracing::warn!(vm = %name, error = %e, "killing the vm's cgroup failed");
            }
        }
        // The whole group only when the start time recorded at spawn proves
        // the pid is still ours: a group of a reused pid is someone else's.
        let group = self
            .read_meta(name)
            .filter(|meta| meta.proc_start_ticks != 0 && self.alive(meta))
            .and_then(|meta| i32::try_from(meta.pid).ok());
        if let Some(pid) = group {
            // SAFETY: killpg(2) on the group the instance leads (started with
            // process_group(0)); it has no memory effects.
            unsafe { libc::killpg(pid, libc::SIGKILL) };
        }
        self.signal(name, libc::SIGKILL);
        let deadline = tokio::time::Instant::now() + KILL_GRACE;
        if !self.wait_gone(name, KILL_GRACE).await {
            return Err(BackendError::Failed(format!("vm {name} survived SIGKILL")));
        }
        // Its cgroup empty too: a child that outlives the kill for a moment
        // must not overlap with the VM started elsewhere after this returns.
        if let Some(parent) = &self.cgroups {
            while cgroup::population(parent, name) > 0 {
                if tokio::time::Instant::now() >= deadline {
                    return Err(BackendError::Failed(format!(
                        "processes of vm {name} survived SIGKILL"
                    )));
                }
                tokio::time::sleep(KILL_POLL).await;
            }
        }
        Ok(())
    }

    /// Live instances found in the runtime root that this backend started.
    pub fn adopt(&self) -> Vec<Instance> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(meta) = self.read_meta(&name) else {
                continue;
            };
            if meta.backend != self.backend || !self.alive(&meta) {
                continue;
            }
            tracing::info!(vm = %name, pid = meta.pid, epoch = meta.epoch, "found a running vm from before the restart");
            found.push(Instance {
                name,
                epoch: meta.epoch,
                pid: meta.pid,
                started_at_ms: meta.started_at_ms,
            });
        }
        found
    }

    /// Removes the runtime dir of `name`.
    pub fn cleanup(&self, name: &str) -> Result<(), BackendError> {
        self.forget_meta(name);
        if let Some(parent) = &self.cgroups {
            // Nothing of a removed VM may live on, whatever it forked.
            if let Err(e) = cgroup::kill_vm(parent, name) {
                tracing::warn!(vm = %name, error = %e, "killing the vm's cgroup failed");
            }
            cgroup::remove_vm(parent, name);
        }
        let dir = self.dir(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                self.exits
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(name);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::io(format!("removing {}", dir.display()), e)),
        }
    }

    /// Kills what is left in VM `name`'s cgroup once its main process is
    /// gone (children that outlived a graceful stop).
    pub fn kill_leftovers(&self, name: &str) {
        if let Some(parent) = &self.cgroups {
            if cgroup::population(parent, name) > 0 {
                tracing::warn!(vm = %name, "processes outlived the vm's stop: killing its cgroup");
                if let Err(e) = cgroup::kill_vm(parent, name) {
                    tracing::warn!(vm = %name, error = %e, "killing the vm's cgroup failed");
                }
            }
        }
    }

    /// Removes the cgroups of VMs whose runtime dir is gone, killing what
    /// they still hold: a cleanup that found a cgroup still busy left it.
    pub fn sweep_cgroups(&self) {
        let Some(parent) = &self.cgroups else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(parent) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && !self.dir(&name).exists() {
                if cgroup::population(parent, &name) > 0 {
                    let _ = cgroup::kill_vm(parent, &name);
                }
                cgroup::remove_vm(parent, &name);
            }
        }
    }

    /// Rotates every console log over [`CONSOLE_LOG_MAX_BYTES`], and sweeps
    /// the cgroups of removed VMs (both are periodic housekeeping).
    pub fn rotate_logs(&self) {
        self.sweep_cgroups();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let log = entry.path().join("console.log");
            if std::fs::metadata(&log).is_ok_and(|m| m.len() > CONSOLE_LOG_MAX_BYTES) {
                if let Err(e) = rotate(&log) {
                    tracing::warn!(path = %log.display(), error = %e, "console log rotation failed");
                }
            }
        }
    }

    /// The root dir.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// The last `max` bytes of the file at `path` (read from there, not from
/// its start) and the file's length.
pub fn tail_bytes(path: &Path, max: u64) -> std::io::Result<(Vec<u8>, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(usize::try_from(len - start).unwrap_or(0));
    f.take(len - start).read_to_end(&mut buf)?;
    Ok((buf, len))
}

/// Kills a just-spawned child that could not be recorded (its whole group:
/// it leads one) and reaps it in the background.
fn kill_unrecorded(pid: u32, mut child: tokio::process::Child) {
    if let Ok(group) = i32::try_from(pid) {
        // SAFETY: killpg(2) on the group the child leads (process_group(0)),
        // which we started a moment ago and have not reaped: the pid cannot
        // have been reused.
        unsafe { libc::killpg(group, libc::SIGKILL) };
    }
    if let Err(e) = child.start_kill() {
        tracing::warn!(pid, error = %e, "killing an unrecorded vm process failed");
    }
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
}

/// Moves the head of a console log aside to `console.log.1` without losing
/// a byte. Writers (QEMU's serial chardev, a runner's stdout) hold the log
/// open with O_APPEND for their whole life, so a rename would leave them
/// writing into the rotated file; and copy-then-truncate loses whatever
/// they write between the copy and the truncation. Instead the head, up to
/// a block boundary, is copied aside and then collapsed out of the file in
/// place (`FALLOC_FL_COLLAPSE_RANGE`): bytes written meanwhile stay, and
/// writers go on at the new end. Where the filesystem cannot collapse
/// (tmpfs, btrfs), it falls back to copy-then-truncate and says so. The log
/// is opened with O_NOFOLLOW: a symlink put in its place is refused, not
/// followed.
fn rotate(log: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(log)?;
    let meta = file.metadata()?;
    let block = meta.blksize().max(1);
    // Collapsing must end before the end of the file.
    let cut = meta.len().saturating_sub(1) / block * block;
    if cut == 0 {
        return Ok(());
    }
    copy_head_aside(&file, cut, &log.with_extension("log.1"))?;
    let len = i64::try_from(cut).map_err(std::io::Error::other)?;
    // SAFETY: fallocate(2) on a descriptor we own, with plain integers.
    let collapsed = unsafe {
        libc::fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::FALLOC_FL_COLLAPSE_RANGE,
            0,
            len,
        )
    };
    if collapsed == 0 {
        return add_to_log_base(log, cut);
    }
    let err = std::io::Error::last_os_error();
    if !matches!(
        err.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
    ) {
        return Err(err);
    }
    tracing::warn!(path = %log.display(), "this filesystem cannot collapse a file: rotating by copy and truncate (a few bytes written meanwhile may be lost)");
    let len = file.metadata()?.len();
    copy_head_aside(&file, len, &log.with_extension("log.1"))?;
    file.set_len(0)?;
    add_to_log_base(log, len)
}

/// The file beside a console log that counts the bytes rotation removed
/// from its head, so a follower can map its position to the file's.
fn log_base_path(log: &Path) -> PathBuf {
    log.with_extension("log.base")
}

/// How many bytes rotation has removed from the head of `log` so far: a
/// byte at position `p` of the file was byte `base + p` of the whole log.
pub fn log_base(log: &Path) -> u64 {
    std::fs::read_to_string(log_base_path(log))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn add_to_log_base(log: &Path, removed: u64) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let base = log_base(log).saturating_add(removed);
    let path = log_base_path(log);
    let tmp = path.with_extension("base.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    writeln!(f, "{base}")?;
    drop(f);
    std::fs::rename(&tmp, &path)
}

/// Writes the first `len` bytes of `file` to `aside` (replacing it whole,
/// through a temporary file, never through a symlink).
fn copy_head_aside(file: &std::fs::File, len: u64, aside: &Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = aside.with_extension("1.tmp");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let mut reader = file;
    reader.seek(SeekFrom::Start(0))?;
    std::io::copy(&mut reader.take(len), &mut out)?;
    drop(out);
    std::fs::rename(&tmp, aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_our_own_start_time() {
        let (start, zombie) = proc_start(std::process::id()).expect("own stat");
        assert!(start > 0);
        assert!(!zombie);
    }

    /// Cleans `name` up until its cgroup is gone too (killed processes take
    /// a moment to leave it), so tests leave no cgroups behind.
    async fn cleanup_fully(sup: &Supervisor, name: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            sup.cleanup(name).unwrap();
            let gone = sup.cgroups.as_ref().is_none_or(|p| !p.join(name).exists());
            if gone {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "cgroup of {name} stays"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A supervisor in a temp dir with instance `name` running `script`
    /// under `/bin/sh`.
    fn start_shell(name: &str, script: &str) -> (tempfile::TempDir, Supervisor, Instance) {
        let tmp = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(tmp.path().join("vms"), "process").unwrap();
        sup.prepare(name).unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", script]);
        let inst = sup.spawn(name, 3, cmd).unwrap();
        (tmp, sup, inst)
    }

    /// Rotation loses no byte of a writer that keeps appending meanwhile
    /// (copy-then-truncate lost what came between the copy and the cut).
    #[test]
    fn rotation_under_a_busy_writer_loses_and_repeats_nothing() {
        use std::io::Write as _;
        use std::sync::atomic::{AtomicBool, Ordering};
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("console.log");
        let mut writer = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writing = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    writeln!(writer, "line {n:012}").unwrap();
                    n += 1;
                }
                n
            })
        };
        let mut rotated = Vec::new();
        for _ in 0..20 {
            while std::fs::metadata(&log).unwrap().len() < 64 * 1024 {
                std::thread::yield_now();
            }
            rotate(&log).unwrap();
            rotated.extend(std::fs::read(log.with_extension("log.1")).unwrap());
        }
        stop.store(true, Ordering::Relaxed);
        let written = writing.join().unwrap();
        rotated.extend(std::fs::read(&log).unwrap());
        let text = String::from_utf8(rotated).unwrap();
        let mut expected = 0u64;
        for line in text.lines() {
            assert_eq!(
                line,
                format!("line {expected:012}"),
                "a line lost or repeated"
            );
            expected += 1;
        }
        assert_eq!(expected, written);
    }

    /// A failure after the spawn (here `meta.json` cannot be written: a
    /// directory stands in its way, as a full disk or EIO would) must not
    /// leave the process running unrecorded: the agent would retry and
    /// start a second one.
    #[tokio::test]
    async fn a_failure_after_the_spawn_leaves_no_process_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(tmp.path().join("vms"), "process").unwrap();
        let dir = sup.prepare("t3").unwrap();
        std::fs::create_dir_all(dir.join("meta.json").join("in-the-way")).unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "exec sleep 60"]);
        assert!(
            sup.spawn("t3", 1, cmd).is_err(),
            "meta.json cannot be written"
        );
        // Whether or not it got to run, no process of this VM may be left
        // (every VM process carries its dir in its environment).
        let vm_dir = sup.dir("t3");
        let survivors = || {
            std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| proc_start(*pid).is_some_and(|(_, zombie)| !zombie))
                .filter(|pid| proc_vm_dir(*pid).as_deref() == Some(vm_dir.as_path()))
                .count()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while survivors() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "a process of the vm still runs after a failed start"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cleanup_fully(&sup, "t3").await;
    }

    /// Without a recorded start time (it could not be read at spawn), a
    /// live process is this instance only if its environment names the
    /// instance's dir: after a restart, a pid reused by another process
    /// must not be adopted, signalled or reported as the VM.
    #[tokio::test]
    async fn without_a_start_time_the_environment_decides_identity() {
        let (_tmp, sup, inst) = start_shell("t2", "sleep 30");
        let mut meta = sup.read_meta("t2").unwrap();
        meta.proc_start_ticks = 0;
        sup.write_meta(&meta).unwrap();
        assert_eq!(sup.state("t2"), InstanceState::Running { pid: inst.pid });
        assert_eq!(sup.adopt().len(), 1);

        // The same record pointing at a live process that is not a VM (this
        // test's own process): not running, not adopted, not signalled.
        meta.pid = std::process::id();
        sup.write_meta(&meta).unwrap();
        assert!(matches!(sup.state("t2"), InstanceState::Exited { .. }));
        assert!(sup.adopt().is_empty());
        assert!(!sup.signal("t2", 0));

        assert!(send_signal(inst.pid, libc::SIGKILL));
        cleanup_fully(&sup, "t2").await;
    }

    #[tokio::test]
    async fn supervises_a_process_through_exit_and_cleanup() {
        let (_tmp, sup, inst) = start_shell("t1", "echo hello; sleep 30");
        assert_eq!(sup.state("t1"), InstanceState::Running { pid: inst.pid });
        assert_eq!(sup.adopt().len(), 1);
        // Its output reaches the console log (wait for it before stopping it,
        // or the signal may arrive before the shell has printed anything).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(sup.console_path("t1"))
            .unwrap_or_default()
            .contains("hello")
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no output in the console log"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(sup.signal("t1", libc::SIGTERM));
        assert!(sup.wait_gone("t1", Duration::from_secs(5)).await);
        // The reaper records how it ended.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let InstanceState::Exited { clean, reason } = sup.state("t1") {
                if reason.contains("SIGTERM") {
                    assert!(!clean);
                    break;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no exit record");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cleanup_fully(&sup, "t1").await;
        assert_eq!(sup.state("t1"), InstanceState::Missing);
        assert!(sup.adopt().is_empty());
    }

    /// A VM process sees only what its backend set and the supervisor's
    /// `BLIXARD_VM_*`, none of the daemon's environment (this test
    /// process has plenty: `PATH`, `HOME`, cargo's variables, ...).
    #[tokio::test]
    async fn a_vm_process_inherits_nothing_of_the_daemon_environment() {
        let tmp = tempfile::tempdir().unwrap();
        let sup = Supervisor::new(tmp.path().join("vms"), "process").unwrap();
        sup.prepare("t4").unwrap();
        let mut cmd = Command::new("/bin/sh");
        // The shell's own startup environment, before it exports anything.
        cmd.args(["-c", "tr '\\0' '\\n' < /proc/$$/environ; echo END"])
            .env("BLIXARD_VM_VCPUS", "1");
        sup.spawn("t4", 1, cmd).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let text = loop {
            let text = std::fs::read_to_string(sup.console_path("t4")).unwrap_or_default();
            if text.contains("END") {
                break text;
            }
            assert!(tokio::time::Instant::now() < deadline, "no output: {text}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let mut keys: Vec<&str> = text
            .lines()
            .filter(|l| *l != "END")
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["BLIXARD_VM_DIR", "BLIXARD_VM_NAME", "BLIXARD_VM_VCPUS"],
            "{text}"
        );
        cleanup_fully(&sup, "t4").await;
    }
}
