//! The gauges read from the replicated state and the disk when scraped
//! (VMs by node and state, node health, the data dir's free space): cheap
//! to compute per scrape, and never stale the way a periodic copy is.

use super::{HealthLabels, Metrics, NodeLabels, StateLabels, VmLabels};
use crate::raft::state_machine::FleetView;
use crate::state::model::{NodeHealth, VmState};
use std::path::PathBuf;

/// What a scrape refreshes from: the applied state and the data dir.
#[derive(Clone)]
pub struct Refresh {
    view: FleetView,
    data_dir: PathBuf,
}

impl Refresh {
    /// Refreshes from `view` and the file system holding `data_dir`.
    pub fn new(view: FleetView, data_dir: PathBuf) -> Self {
        Self { view, data_dir }
    }

    /// Sets the per-scrape gauges of `metrics`.
    pub fn run(&self, metrics: &Metrics) {
        {
            let fleet = self.view.read();
            // Cleared first: a state or node that went away leaves no
            // stale series behind.
            metrics.vms.clear();
            let mut by_state = [0u64; VmState::ALL.len()];
            for vm in fleet.vms.values() {
                if let Some(i) = VmState::ALL.iter().position(|s| *s == vm.state) {
                    by_state[i] += 1;
                }
                metrics
                    .vms
                    .get_or_create(&VmLabels {
                        node: vm.node_id.to_string(),
                        state: vm.state.word(),
                    })
                    .inc();
            }
            for (state, n) in VmState::ALL.iter().zip(by_state) {
                metrics
                    .vms_by_state
                    .get_or_create(&StateLabels {
                        state: state.word(),
                    })
                    .set(n);
            }
            for health in NodeHealth::ALL {
                let n = fleet.nodes.values().filter(|n| n.health == health).count();
                metrics
                    .nodes_by_health
                    .get_or_create(&HealthLabels {
                        health: health.word(),
                    })
                    .set(n as u64);
            }
            metrics.nodes.clear();
            for node in fleet.nodes.values() {
                metrics
                    .nodes
                    .get_or_create(&NodeLabels {
                        node: node.id.to_string(),
                        health: node.health.word(),
                    })
                    .set(1);
            }
        }
        match disk_space(&self.data_dir) {
            Ok((free, size)) => {
                metrics.data_dir_free_bytes.set(free);
                metrics.data_dir_size_bytes.set(size);
            }
            Err(e) => {
                tracing::warn!(dir = %self.data_dir.display(), error = %e, "cannot read the data dir's free space")
            }
        }
    }
}

/// Free bytes (for unprivileged use) and size of the file system at `dir`.
fn disk_space(dir: &std::path::Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs(3) writes into the zeroed struct we own; the path is
    // a NUL-terminated C string that outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let block = st.f_frsize as u64;
    Ok((st.f_bavail as u64 * block, st.f_blocks as u64 * block))
}
