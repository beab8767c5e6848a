//! The simulated world of one run: N hosts on one simulated network, each
//! with its disk, its clock (drifting at a rate the seed picks) and its
//! journaled test backend, and the real daemon (`server::start`) on each.

use crate::rng::Rng;
use blixard_daemon::backend::fake::FakeBackend;
use blixard_daemon::config::Config;
use blixard_daemon::server::{start, NodeHandle};
use blixard_daemon::sim::clock::SimClock;
use blixard_daemon::sim::disk::SimDisk;
use blixard_daemon::sim::host::{RunJournal, SimHost};
use blixard_daemon::sim::net::SimNet;
use blixard_daemon::transport::Transport;
use blixard_shared::{ApiChannel, Credentials};
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Endpoint;

/// Where the VMs' runner lives: one fixed path for every run, so the
/// replicated specs (and so the history) do not depend on a temp dir name.
pub const RUNNER_DIR: &str = "/tmp/blixard-sim-runner";
/// The runner every VM names (the test backend runs nothing).
pub const RUNNER: &str = "/tmp/blixard-sim-runner/runner";

/// Most a stopping node may take before the run calls it stuck.
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// Host `i`'s (0-based) address.
pub fn address(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 77, 0, i as u8 + 1], 7000))
}

/// The hosts and what runs on them.
pub struct World {
    pub net: SimNet,
    pub hosts: Vec<SimHost>,
    pub journal: RunJournal,
    configs: Vec<Config>,
    nodes: Vec<Option<NodeHandle>>,
    _tmp: tempfile::TempDir,
}

fn make_runner() -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = Path::new(RUNNER_DIR);
    std::fs::create_dir_all(dir).map_err(|e| format!("{RUNNER_DIR}: {e}"))?;
    let runner = Path::new(RUNNER);
    if !runner.exists() {
        // Written beside and renamed: parallel test processes race here.
        let tmp = dir.join(format!("runner.{}", std::process::id()));
        std::fs::write(&tmp, "#!/bin/sh\nexec sleep infinity\n").map_err(|e| e.to_string())?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, runner).map_err(|e| e.to_string())?;
    }
    Ok(dir.to_path_buf())
}

impl World {
    /// Starts `n` nodes and makes them one cluster (node 1 initializes
    /// it with all as voters). Clock rates come from `rng`.
    pub async fn start(n: usize, rng: &mut Rng) -> Result<Self, String> {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let runner_dir = make_runner()?;
        // Every write takes 0.1 to 1 ms, plus up to as much again.
        let base = Duration::from_micros(rng.between(100, 1_000));
        let net = SimNet::seeded(rng.next_u64(), base, base);
        let journal = RunJournal::default();
        let mut world = Self {
            net: net.clone(),
            hosts: Vec::new(),
            journal: journal.clone(),
            configs: Vec::new(),
            nodes: Vec::new(),
            _tmp: tmp,
        };
        for i in 0..n {
            let id = i as u64 + 1;
            let dir = world._tmp.path().join(format!("n{id}"));
            let mut config = Config::for_node(id, &dir, address(i));
            config.transport = Transport::Sim(net.clone());
            config.insecure = true;
            config.allowed_runner_dirs = vec![runner_dir.clone()];
            // VMs on every host, so every host's faults matter to them.
            config.placement_strategy = "spread".into();
            // Up to 5% fast or slow, and a different origin per host.
            let drift_ppm = rng.between(0, 100_000) as i64 - 50_000;
            let host = SimHost {
                disk: SimDisk::new(),
                clock: SimClock::new(rng.between(1_000, 1_000_000), drift_ppm),
                backend: Arc::new(FakeBackend::journaled(id, journal.clone())),
            };
            config.sim = Some(host.clone());
            let node = start(config.clone())
                .await
                .map_err(|e| format!("node {id} starts: {e}"))?;
            world.nodes.push(Some(node));
            world.configs.push(config);
            world.hosts.push(host);
        }
        let members: BTreeMap<u64, BasicNode> = (0..n)
            .map(|i| (i as u64 + 1, BasicNode::new(address(i).to_string())))
            .collect();
        let first = world.nodes[0].as_ref().ok_or("node 1 is missing")?;
        first
            .core
            .raft
            .initialize(members)
            .await
            .map_err(|e| format!("initialize: {e}"))?;
        Ok(world)
    }

    /// How many hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// A client channel to every node, each from a client address of its
    /// own (so cutting a node off cuts its clients off too only when the
    /// node is down, not when nodes are partitioned from each other).
    pub fn channels(&self) -> Vec<ApiChannel> {
        (0..self.len())
            .map(|i| {
                let endpoint = Endpoint::from_shared(format!("http://{}", address(i)))
                    .expect("a literal address")
                    .connect_timeout(Duration::from_millis(500));
                let channel = endpoint
                    .connect_with_connector_lazy(self.net.connector(self.net.client_address()));
                Credentials::insecure().wrap(channel)
            })
            .collect()
    }

    /// Host `i` loses power: off the network at once, the unsynced writes
    /// its disk had not flushed lost except those `keep` picks, its VMs
    /// gone; then what is left of its node is stopped.
    pub async fn power_cut(
        &mut self,
        i: usize,
        keep: impl FnMut(usize) -> bool,
    ) -> Result<(), String> {
        let Some(node) = self.nodes[i].take() else {
            return Ok(());
        };
        self.net.set_down(address(i), true);
        self.hosts[i].disk.power_cut(keep);
        self.hosts[i].backend.power_off();
        tokio::time::timeout(STOP_LIMIT, node.shutdown())
            .await
            .map_err(|_| {
                format!(
                    "node {} did not stop within {STOP_LIMIT:?} after its power cut",
                    i + 1
                )
            })
    }

    /// Host `i` is back: on the network again, its node started on its disk.
    pub async fn power_on(&mut self, i: usize) -> Result<(), String> {
        if self.nodes[i].is_some() {
            return Ok(());
        }
        self.hosts[i].backend.power_on();
        self.net.set_down(address(i), false);
        let node = start(self.configs[i].clone())
            .await
            .map_err(|e| format!("node {} restarts: {e}", i + 1))?;
        self.nodes[i] = Some(node);
        Ok(())
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            let _ = tokio::time::timeout(STOP_LIMIT, node.shutdown()).await;
        }
    }
}
