//! The watchdog's loop, run by the `blixard-fence` process: once the lease
//! file's deadline passes it SIGKILLs every VM process of the host, again
//! on every poll until the deadline moves. A process of its own because VMs
//! outlive their daemon by design: a daemon that is killed, frozen or cut
//! off cannot stop them itself.

use super::lease_file::{lease_clock_ms, read_lease};
use crate::backend::meta::Meta;
use crate::host::cgroup;
use crate::host::procfs::{proc_start, proc_vm_dir, send_signal};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the watchdog looks at the lease file.
pub(crate) const WATCH_EVERY: Duration = Duration::from_millis(100);
/// Polls with an expired lease and no VM left before the watchdog exits
/// (the daemon starts a new one before it starts a VM).
const IDLE_POLLS_BEFORE_EXIT: u32 = 20;
/// File the watchdog leaves in a VM's runtime dir when it kills the VM, so
/// a daemon that comes back later knows the fence, not a failure, ended it.
pub const FENCED_MARKER: &str = "fenced";
/// Watchdog pid file name in the data dir (pid, kernel start time and
/// [`WATCHDOG_VERSION`]).
pub(super) const PID_FILE: &str = "fence.pid";
/// Names the watchdog's behaviour (lease clock, how it finds VMs); a
/// watchdog registered under another version is replaced, not trusted.
pub(super) const WATCHDOG_VERSION: &str = "v3";

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

/// Kills every VM of this host: each VM cgroup (`cgroup.kill`, which
/// reaches children that left the VM's process group and environment),
/// then every live VM process the scan finds (see [`vm_processes`]: the
/// fallback where there are no cgroups, and the net for processes started
/// outside one). Marks their VMs fenced; returns how many processes were
/// alive. Pids in `reported` are not logged again (a process stuck in the
/// kernel survives SIGKILL for a while).
pub fn kill_vms(
    vm_root: &Path,
    lease_dir: Option<&Path>,
    reported: &mut std::collections::HashSet<u32>,
) -> usize {
    let still_leased = || lease_dir.is_some_and(|d| lease_clock_ms() < read_lease(d));
    let mut in_cgroups = 0;
    if let Some(parent) = cgroup::node_parent(vm_root) {
        if still_leased() {
            return 0;
        }
        for name in cgroup::kill_all(&parent) {
            in_cgroups += 1;
            mark_fenced(&vm_root.join(&name), &name);
            tracing::warn!(vm = %name, "lease ran out: killed the vm's cgroup");
        }
    }
    let live = vm_processes(vm_root);
    // The scan takes a while: a renewal meanwhile cancels the kills.
    if lease_dir.is_some_and(|d| lease_clock_ms() < read_lease(d)) {
        return live.len();
    }
    for p in &live {
        let first = reported.insert(p.pid);
        if first {
            mark_fenced(&p.dir, &p.name);
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
    live.len() + in_cgroups
}

/// Leaves the marker that tells a daemon coming back that the fence, not a
/// failure, ended the VM (its dir may be gone: then there is nobody to tell).
fn mark_fenced(dir: &Path, name: &str) {
    if !dir.is_dir() {
        return;
    }
    if let Err(e) = std::fs::write(dir.join(FENCED_MARKER), b"") {
        tracing::warn!(vm = %name, error = %e, "cannot mark the vm fenced");
    }
}

/// Writes `text` to `path` atomically (write, rename), through a temporary
/// file of this process's own (the daemon and the watchdog both write the
/// pid file).
pub(super) fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
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
/// `data_dir` has run out. Fails closed: when the data dir disappears (the
/// lease with it), it kills the VMs too. Returns when the lease has run out
/// (or the data dir is gone) and no VM is left to guard.
pub fn run_watchdog(data_dir: &Path, vm_root: &Path) {
    tracing::info!(data_dir = %data_dir.display(), "fence watchdog started");
    protect_from_oom_killer();
    match cgroup::node_parent(vm_root) {
        Some(parent) => tracing::info!(cgroups = %parent.display(), "fencing kills each vm's cgroup"),
        None => tracing::warn!(
            "no cgroup v2 hierarchy with cgroup.kill: fencing finds vm processes by scanning /proc only (a child that leaves its process group and clears its environment is missed)"
        ),
    }
    write_own_pid_file(data_dir);
    let mut idle = 0;
    let mut reported = std::collections::HashSet::new();
    loop {
        let dir_gone = !data_dir.is_dir();
        if dir_gone || lease_clock_ms() >= read_lease(data_dir) {
            let lease_dir = (!dir_gone).then_some(data_dir);
            if kill_vms(vm_root, lease_dir, &mut reported) == 0 {
                idle += 1;
                if idle >= IDLE_POLLS_BEFORE_EXIT && ready_to_exit(data_dir, vm_root, dir_gone) {
                    return;
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

/// Whether the watchdog may exit after a quiet spell. Unregisters first,
/// then looks once more: the daemon checks the pid file after each VM
/// start, so a VM started meanwhile is either seen here (and guarded) or
/// finds no watchdog registered (and starts one).
fn ready_to_exit(data_dir: &Path, vm_root: &Path, dir_gone: bool) -> bool {
    if dir_gone {
        tracing::warn!("data dir gone and no vm left: fence watchdog exits");
        remove_empty_cgroups(vm_root);
        return true;
    }
    let pid_file = data_dir.join(PID_FILE);
    let own = format!("{} ", std::process::id());
    if std::fs::read_to_string(&pid_file).is_ok_and(|t| t.starts_with(&own)) {
        let _ = std::fs::remove_file(&pid_file);
    }
    if vm_processes(vm_root).is_empty() {
        tracing::info!("lease expired and no vm left: fence watchdog exits");
        remove_empty_cgroups(vm_root);
        return true;
    }
    write_own_pid_file(data_dir);
    false
}

/// Leaves no empty VM cgroups behind a watchdog that has nothing to guard.
fn remove_empty_cgroups(vm_root: &Path) {
    if let Some(parent) = cgroup::node_parent(vm_root) {
        cgroup::remove_empty(&parent);
    }
}

/// The kernel's OOM killer must not pick the process that stops VMs when
/// their host has lost its lease: `oom_score_adj` -1000 (root may set it).
fn protect_from_oom_killer() {
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", b"-1000\n") {
        tracing::warn!(error = %e, "cannot protect the watchdog from the OOM killer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A runner child that calls setsid() and clears its environment is
    /// invisible to the process scan; its cgroup still holds it.
    #[tokio::test]
    async fn kill_vms_reaches_a_child_that_left_its_group_and_environment() {
        let tmp = tempfile::tempdir().unwrap();
        let vm_root = tmp.path().join("vms");
        std::fs::create_dir_all(&vm_root).unwrap();
        if cgroup::node_parent(&vm_root).is_none() {
            assert!(
                !cgroup::required_by_tests(),
                "BLIXARD_REQUIRE_CGROUP=1 but there is no cgroup v2 hierarchy with cgroup.kill"
            );
            eprintln!("SKIPPED: no cgroup v2 hierarchy with cgroup.kill on this host");
            return;
        }
        let sup = crate::backend::supervisor::Supervisor::new(vm_root.clone(), "process").unwrap();
        sup.prepare("esc").unwrap();
        let pid_file = tmp.path().join("escapee");
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            &format!(
                "setsid env -i /bin/sleep 1000 & echo $! > {}; exec sleep 1000",
                pid_file.display()
            ),
        ]);
        let leader = sup.spawn("esc", 1, cmd).unwrap().pid;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let escapee: u32 = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                break pid;
            }
            assert!(std::time::Instant::now() < deadline, "no escapee");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // It really hides from the scan: no VM dir in its environment.
        let hidden = || proc_vm_dir(escapee).is_none();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !hidden() {
            assert!(std::time::Instant::now() < deadline, "env never cleared");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut reported = std::collections::HashSet::new();
        assert!(kill_vms(&vm_root, None, &mut reported) >= 1);
        let dead = |pid| proc_start(pid).is_none_or(|(_, zombie)| zombie);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !(dead(escapee) && dead(leader)) {
            assert!(
                std::time::Instant::now() < deadline,
                "the escapee {escapee} survived the fence"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sup.cleanup("esc").unwrap();
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
