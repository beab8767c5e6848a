//! Host-side record of what runs where: the VM processes themselves, found
//! in `/proc` by the VM cgroup that holds them (which also holds a runner's
//! child that left its process group and cleared its environment) or, for
//! a process in no VM cgroup, by the environment its daemon gave it.
//! Sampled while the run goes on; a VM name seen alive under two nodes in
//! the same sample breaks "a VM never runs on two hosts at once" (across
//! incarnations too: a VM deleted and created again under its name must
//! not overlap with its predecessor).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A live VM process.
#[derive(Clone, Debug)]
pub struct Runner {
    pub pid: i32,
    pub node: u64,
    pub name: String,
}

/// Each node's VM cgroup folder (relative to the cgroup2 mount), by node id.
fn node_cgroups(root: &Path) -> Vec<(u64, String)> {
    let Some(mount) = blixard_daemon::host::cgroup::v2_mount() else {
        return Vec::new();
    };
    (1..=9)
        .filter_map(|id| {
            let vm_root = root.join(format!("n{id}")).join("vms");
            let parent = blixard_daemon::host::cgroup::node_parent(&vm_root)?;
            let relative = parent.strip_prefix(&mount).ok()?;
            Some((id, format!("/{}/", relative.display())))
        })
        .collect()
}

/// The node and VM whose cgroup holds `pid`, if any.
fn by_cgroup(pid: i32, cgroups: &[(u64, String)]) -> Option<(u64, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    cgroups.iter().find_map(|(id, prefix)| {
        let name = path.strip_prefix(prefix.as_str())?;
        (!name.is_empty() && !name.contains('/')).then(|| (*id, name.to_string()))
    })
}

/// Every live (not zombie) VM process of the nodes under `root`.
pub fn runners(root: &Path) -> Vec<Runner> {
    let cgroups = node_cgroups(root);
    let root = root.display().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, t)| t.starts_with('Z')))
            .unwrap_or(true);
        if zombie {
            continue;
        }
        if let Some((node, name)) = by_cgroup(pid, &cgroups) {
            out.push(Runner { pid, node, name });
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let mut vm_dir = None;
        let mut name = None;
        for var in env.split(|b| *b == 0) {
            let var = String::from_utf8_lossy(var);
            if let Some(v) = var.strip_prefix("BLIXARD_VM_DIR=") {
                vm_dir = Some(v.to_string());
            } else if let Some(v) = var.strip_prefix("BLIXARD_VM_NAME=") {
                name = Some(v.to_string());
            }
        }
        let (Some(vm_dir), Some(name)) = (vm_dir, name) else {
            continue;
        };
        // <root>/n<id>/vms/<name>
        let Some(rest) = vm_dir.strip_prefix(&format!("{root}/n")) else {
            continue;
        };
        let Some(node) = rest.split('/').next().and_then(|s| s.parse().ok()) else {
            continue;
        };
        out.push(Runner { pid, node, name });
    }
    out
}

/// Samples `runners` until stopped; collects every double placement seen.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl Sampler {
    pub fn start(root: &Path, history: Arc<super::history::History>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let root = root.to_path_buf();
        let handle = std::thread::spawn(move || {
            let mut samples = 0;
            let mut violations = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                let mut homes: BTreeMap<String, Vec<(u64, i32)>> = BTreeMap::new();
                for r in runners(&root) {
                    homes.entry(r.name).or_default().push((r.node, r.pid));
                }
                for (name, at) in homes {
                    let mut nodes: Vec<u64> = at.iter().map(|(n, _)| *n).collect();
                    nodes.sort_unstable();
                    nodes.dedup();
                    if nodes.len() > 1 {
                        let msg = format!(
                            "[{:.3}s] vm {name} runs on nodes {at:?}",
                            history.now_us() as f64 / 1e6
                        );
                        violations.push(msg);
                    }
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            (samples, violations)
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling: (samples taken, violations found).
    pub fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}
