//! One cgroup (v2) per VM, so everything a VM runs can be found and killed
//! at once, children that left its process group and environment included
//! (`setsid` and a cleared environment hide a process from the fallback
//! scan, not from its cgroup). A leaf module: the supervisor puts each VM
//! process in its cgroup between fork and exec, and the fence watchdog kills
//! the cgroups with `cgroup.kill`.
//!
//! The v2 hierarchy is found from `/proc/self/mountinfo`, wherever it is
//! mounted: `/sys/fs/cgroup` on a pure v2 host, `/sys/fs/cgroup/unified` on
//! a v1/v2 hybrid. A node's VMs live under `BLIXARD/<key>/<vm name>`, the
//! key derived from the node's VM runtime dir, so two nodes on one host
//! never touch each other's. Without a v2 hierarchy (or without the rights
//! to use it) there are no cgroups and the watchdog falls back to its scan,
//! and says so.

use std::path::{Path, PathBuf};

/// The folder in the v2 hierarchy that holds every node's VM cgroups.
const BLIXARD: &str = "blixard";

/// Where the cgroup2 filesystem is mounted, if it is.
pub fn v2_mount() -> Option<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    table.lines().find_map(|line| {
        // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER"
        let (mount, fs) = line.split_once(" - ")?;
        let fstype = fs.split_whitespace().next()?;
        (fstype == "cgroup2").then(|| mount.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// The parent of a node's VM cgroups, for the node whose VM runtime dir is
/// `vm_root` (canonical), if the v2 hierarchy is mounted and supports
/// `cgroup.kill` (Linux 5.14 or later).
pub fn node_parent(vm_root: &Path) -> Option<PathBuf> {
    let mount = v2_mount()?;
    if !mount.join("cgroup.procs").exists() {
        return None;
    }
    Some(mount.join(BLIXARD).join(key(vm_root)))
}

/// A short, stable name for `vm_root` (FNV-1a over its bytes): stable across
/// daemon restarts and watchdog versions, so both find the same cgroups.
fn key(vm_root: &Path) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in vm_root.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("node-{hash:016x}")
}

/// Creates (if needed) the cgroup of VM `name` under `parent` and returns
/// its `cgroup.procs` path, to join between fork and exec.
pub fn prepare_vm(parent: &Path, name: &str) -> std::io::Result<PathBuf> {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir)?;
    let procs = dir.join("cgroup.procs");
    let kill = dir.join("cgroup.kill");
    if !kill.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "the kernel has no cgroup.kill (Linux 5.14 or later)",
        ));
    }
    Ok(procs)
}

/// Kills every process in VM `name`'s cgroup (`cgroup.kill`: SIGKILL to all
/// of them at once, however they forked). `Ok(false)` when it has no
/// cgroup.
pub fn kill_vm(parent: &Path, name: &str) -> std::io::Result<bool> {
    kill_dir(&parent.join(name))
}

fn kill_dir(dir: &Path) -> std::io::Result<bool> {
    match std::fs::write(dir.join("cgroup.kill"), b"1") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// How many processes VM `name`'s cgroup holds (0 without a cgroup).
pub fn population(parent: &Path, name: &str) -> usize {
    population_of(&parent.join(name))
}

fn population_of(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

/// Kills every VM cgroup under `parent` that holds a process; returns the
/// names of those it killed.
pub fn kill_all(parent: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.is_dir() || population_of(&dir) == 0 {
            continue;
        }
        match kill_dir(&dir) {
            Ok(_) => killed.push(entry.file_name().to_string_lossy().into_owned()),
            Err(e) => tracing::warn!(cgroup = %dir.display(), error = %e, "cgroup.kill failed"),
        }
    }
    killed
}

/// Removes VM `name`'s cgroup once it is empty (a cgroup with processes
/// cannot be removed; it is left for the next sweep), and the node's
/// folder when it was the last.
pub fn remove_vm(parent: &Path, name: &str) {
    let dir = parent.join(name);
    if let Err(e) = std::fs::remove_dir(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::debug!(cgroup = %dir.display(), error = %e, "vm cgroup not removed yet");
        }
        return;
    }
    // Fails while other VMs' cgroups remain: then it stays.
    let _ = std::fs::remove_dir(parent);
}

/// Removes every empty VM cgroup under `parent` and then `parent` itself if
/// it is left empty: the watchdog does this when it exits with nothing to
/// guard, so cgroups of VMs whose daemon never came back do not pile up.
pub fn remove_empty(parent: &Path) {
    if let Ok(entries) = std::fs::read_dir(parent) {
        for entry in entries.flatten() {
            if entry.path().is_dir() && population_of(&entry.path()) == 0 {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(parent);
}

/// Whether tests that need cgroups must run (CI sets
/// `BLIXARD_REQUIRE_CGROUP=1`) rather than skip where there are none.
pub fn required_by_tests() -> bool {
    std::env::var_os("BLIXARD_REQUIRE_CGROUP").is_some_and(|v| v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_tell_nodes_apart() {
        let a = key(Path::new("/var/lib/blixard/vms"));
        assert_eq!(a, key(Path::new("/var/lib/blixard/vms")));
        assert_ne!(a, key(Path::new("/var/lib/blixard2/vms")));
        assert!(a.starts_with("node-") && a.len() == 21);
    }
}
