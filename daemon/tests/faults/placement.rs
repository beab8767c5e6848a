//! Host-side record of what runs where: the VM processes themselves, found
//! in `/proc` by the environment their daemon gave them. Sampled while the
//! run goes on; a VM incarnation (name + creation time) seen alive under two
//! nodes' data dirs in the same sample breaks "a VM never runs on two hosts
//! at once".

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
    pub created_at_ms: String,
}

/// Every live (not zombie) VM process whose VM dir lies under `root`.
pub fn runners(root: &Path) -> Vec<Runner> {
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
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let mut vm_dir = None;
        let mut name = None;
        let mut created = String::new();
        for var in env.split(|b| *b == 0) {
            let var = String::from_utf8_lossy(var);
            if let Some(v) = var.strip_prefix("BLIXARD_VM_DIR=") {
                vm_dir = Some(v.to_string());
            } else if let Some(v) = var.strip_prefix("BLIXARD_VM_NAME=") {
                name = Some(v.to_string());
            } else if let Some(v) = var.strip_prefix("BLIXARD_VM_CREATED_AT_MS=") {
                created = v.to_string();
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
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, t)| t.starts_with('Z')))
            .unwrap_or(true);
        if !zombie {
            out.push(Runner {
                pid,
                node,
                name,
                created_at_ms: created,
            });
        }
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
                let mut homes: BTreeMap<(String, String), Vec<(u64, i32)>> = BTreeMap::new();
                for r in runners(&root) {
                    homes
                        .entry((r.name, r.created_at_ms))
                        .or_default()
                        .push((r.node, r.pid));
                }
                for ((name, created), at) in homes {
                    let mut nodes: Vec<u64> = at.iter().map(|(n, _)| *n).collect();
                    nodes.sort_unstable();
                    nodes.dedup();
                    if nodes.len() > 1 {
                        let msg = format!(
                            "[{:.3}s] vm {name} (created {created}) runs on nodes {at:?}",
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
