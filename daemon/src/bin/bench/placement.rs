//! `bench placement`: how fast the scheduler places VMs at scale.
//!
//! 1. The engine alone: a fleet of `--nodes` simulated nodes (10 zones,
//!    mixed labels) and `--vms` pending VMs (a fifth in anti-affinity
//!    groups, a tenth with a zone constraint, some spread), each placed
//!    by `state::placement::decide` in queue order with the pass's plan
//!    counted, as the leader's pass does; then the same decisions applied
//!    through `Fleet::apply` (what the state machine adds per placement).
//! 2. Through Raft: a 3-node in-process cluster (plaintext: the proposals
//!    are made in-process, no client traffic), `--raft-vms` VMs created
//!    pending (they ask for a label only the simulated nodes carry), then
//!    `--nodes` simulated nodes registered, each renewing its fencing
//!    lease every 2 s as a host would; timed from the first registration
//!    to the last placement committed by the real scheduler loop.
//! 3. What scheduler passes cost the write path at that size: 16 writers
//!    create (stopped) and delete VMs for 10 s, with the scheduler running
//!    (a pass wakes on every applied entry) and with placement paused,
//!    alternated twice; then once with VMs that each need a placement.

use blixard_daemon::config::{BackendKind, Config};
use blixard_daemon::core::Core;
use blixard_daemon::server::{self, NodeHandle};
use blixard_daemon::state::command::NodeRegistration;
use blixard_daemon::state::placement::{decide, Input, Planned, Policy};
use blixard_daemon::state::{Action, Command, DesiredState, Fleet, Resources, VmSpec};
use color_eyre::eyre::{bail, Result};
use futures_util::stream::{self, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Proposals in flight at once when filling the cluster.
const IN_FLIGHT: usize = 256;
/// Id of the first simulated node (the real ones are 1 to 3).
const FIRST_SIM: u64 = 1000;

/// Runs the three measurements and prints them as Markdown.
pub async fn run(nodes: usize, vms: usize, raft_vms: usize) -> Result<()> {
    println!("Command: `bench placement --nodes {nodes} --vms {vms} --raft-vms {raft_vms}` (release build)\n");
    engine_alone(nodes, vms)?;
    through_raft(nodes, raft_vms).await
}

fn sim_registration(i: usize) -> NodeRegistration {
    let mut labels = BTreeMap::from([("sim".to_string(), "yes".to_string())]);
    if i % 3 == 0 {
        labels.insert("ssd".into(), "yes".into());
    }
    NodeRegistration {
        id: FIRST_SIM + i as u64,
        address: format!("10.1.{}.{}:7000", i / 250, i % 250),
        capacity: Resources {
            vcpus: 256,
            memory_mib: 256 * 1024,
            disk_mib: 0,
        },
        labels,
        zone: format!("z{}", i % 10),
        rack: format!("r{}", i % 40),
        backend: "qemu".into(),
        version: String::new(),
    }
}

fn sim_spec(i: usize) -> VmSpec {
    let mut spec = VmSpec {
        vcpus: 1,
        memory_mib: 1024,
        image: "default".into(),
        constraints: vec!["sim exists".into()],
        ..Default::default()
    };
    if i % 5 == 0 {
        spec.group = format!("g{}", i % 500);
        spec.max_per_node = 2;
        spec.spread_by = "zone".into();
    }
    if i % 10 == 1 {
        spec.constraints.push("zone in (z1,z2,z3,z4,z5)".into());
    }
    if i % 7 == 0 {
        spec.strategy = "spread".into();
    }
    spec
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn engine_alone(nodes: usize, vms: usize) -> Result<()> {
    let mut fleet = Fleet::default();
    let mut rev = 0;
    let mut apply = |fleet: &mut Fleet, action: Action| {
        rev += 1;
        fleet.apply(
            rev,
            &Command {
                time_ms: 1,
                action,
                trace: None,
            },
        )
    };
    for i in 0..nodes {
        apply(&mut fleet, Action::RegisterNode(sim_registration(i)))?;
    }
    for i in 0..vms {
        apply(
            &mut fleet,
            Action::CreateVm {
                name: format!("vm-{i}"),
                spec: sim_spec(i),
                desired: DesiredState::Running,
            },
        )?;
    }
    let queue: Vec<String> = fleet.index.pending().map(|k| k.name.clone()).collect();
    let lost = BTreeSet::new();
    let policy = Policy::default();
    let mut planned = Planned::default();
    let mut decisions = Vec::with_capacity(queue.len());
    let mut each = Vec::with_capacity(queue.len());
    let start = Instant::now();
    for name in &queue {
        let t = Instant::now();
        let vm = &fleet.vms[name];
        let input = Input::planned(&fleet, &planned, &lost, policy);
        if let Some(node) = decide(&input, vm, false).node {
            planned.add(node, vm);
            decisions.push((name.clone(), node, vm.epoch));
        }
        each.push(t.elapsed());
    }
    let engine = start.elapsed();
    let start = Instant::now();
    let mut applied = 0usize;
    for (name, node_id, expected_epoch) in &decisions {
        let vm = &fleet.vms[name];
        let lost = BTreeSet::new();
        let _ = decide(&Input::of(&fleet, &lost, policy), vm, false);
        if apply(
            &mut fleet,
            Action::PlaceVm {
                name: name.clone(),
                node_id: *node_id,
                expected_epoch: *expected_epoch,
            },
        )
        .is_ok()
        {
            applied += 1;
        }
    }
    let with_apply = start.elapsed();
    each.sort();
    println!("### Engine alone ({nodes} nodes, {vms} VMs)\n");
    println!("| measure | value |\n|---|---|");
    println!(
        "| placements decided | {} of {} |",
        decisions.len(),
        queue.len()
    );
    println!(
        "| engine alone | {:.0} placements/s ({:.2} s) |",
        decisions.len() as f64 / engine.as_secs_f64(),
        engine.as_secs_f64()
    );
    println!(
        "| one decision | p50 {} µs, p99 {} µs |",
        percentile(&each, 0.5).as_micros(),
        percentile(&each, 0.99).as_micros()
    );
    println!(
        "| decision + apply (`Fleet::apply` of `PlaceVm`, which re-checks every rule) | {:.0} placements/s ({applied} applied) |",
        applied as f64 / with_apply.as_secs_f64()
    );
    println!(
        "| one scheduler pass of 256 placements at this size (decisions only) | {:.1} ms |\n",
        percentile(&each, 0.5).as_secs_f64() * 256.0 * 1000.0
    );
    Ok(())
}

async fn start_cluster(dir: &std::path::Path) -> Result<Vec<NodeHandle>> {
    let mut handles: Vec<NodeHandle> = Vec::new();
    for id in 1..=3u64 {
        let mut config = Config::for_node(id, &dir.join(format!("n{id}")), "127.0.0.1:0".parse()?);
        config.insecure = true;
        config.backend = BackendKind::Process;
        if id == 1 {
            config.init = true;
        } else {
            config.join = Some(handles[0].address.to_string());
        }
        handles.push(server::start(config).await?);
    }
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let m = handles[0].core.raft_metrics();
        let voters = m.membership_config.membership().voter_ids().count();
        if voters == 3 && m.current_leader.is_some() {
            break;
        }
        if Instant::now() > end {
            bail!("the cluster did not form");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(handles)
}

fn leader_of(handles: &[NodeHandle]) -> Option<Arc<Core>> {
    let id = handles[0].core.raft_metrics().current_leader?;
    handles
        .iter()
        .find(|h| h.core.id == id)
        .map(|h| h.core.clone())
}

/// Proposes `actions` through `core` with [`IN_FLIGHT`] in flight; the
/// latency of each.
async fn propose_all(core: &Arc<Core>, actions: Vec<Action>) -> Vec<(Duration, bool)> {
    stream::iter(actions)
        .map(|action| {
            let core = core.clone();
            async move {
                let t = Instant::now();
                let ok = core.propose(action).await.is_ok();
                (t.elapsed(), ok)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await
}

async fn through_raft(nodes: usize, vms: usize) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let handles = start_cluster(tmp.path()).await?;
    let Some(leader) = leader_of(&handles) else {
        bail!("no leader");
    };
    let creates = (0..vms)
        .map(|i| Action::CreateVm {
            name: format!("vm-{i}"),
            spec: sim_spec(i),
            desired: DesiredState::Running,
        })
        .collect();
    let fill = Instant::now();
    let created = propose_all(&leader, creates).await;
    let failed = created.iter().filter(|(_, ok)| !ok).count();
    if failed > 0 {
        bail!("{failed} creates failed");
    }
    println!("### Through Raft (3-node in-process cluster, {nodes} simulated nodes, {vms} VMs)\n");
    println!("| measure | value |\n|---|---|");
    println!(
        "| {vms} creates (pending), {IN_FLIGHT} in flight | {:.1} s |",
        fill.elapsed().as_secs_f64()
    );
    // The simulated hosts: registered, then renewing their leases.
    let start = Instant::now();
    let registrations = (0..nodes)
        .map(|i| Action::RegisterNode(sim_registration(i)))
        .collect();
    propose_all(&leader, registrations).await;
    let renewer = {
        let leader = leader.clone();
        tokio::spawn(async move {
            loop {
                let renewals = (0..nodes)
                    .map(|i| Action::RenewLease {
                        id: FIRST_SIM + i as u64,
                        lease_ms: 6000,
                    })
                    .collect();
                propose_all(&leader, renewals).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    let end = Instant::now() + Duration::from_secs(600);
    loop {
        let left = leader.view.read().index.pending_len();
        if left == 0 {
            break;
        }
        if Instant::now() > end {
            bail!("{left} VMs still pending after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let placing = start.elapsed();
    println!(
        "| registration of {nodes} nodes to the last of {vms} placements committed | {:.2} s: {:.0} placements/s |",
        placing.as_secs_f64(),
        vms as f64 / placing.as_secs_f64()
    );
    println!();
    // 3. The write path at this size: the same writes (VMs created stopped,
    //    then deleted) with the scheduler's passes running on every applied
    //    entry, and with placement paused; alternated. Then writes whose
    //    VMs each need a placement (one more log entry each).
    println!("| round | scheduler | writes | ops/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|");
    let rounds = [
        (false, false),
        (true, false),
        (false, false),
        (true, false),
        (false, true),
    ];
    for (round, (paused, placing)) in rounds.into_iter().enumerate() {
        for h in &handles {
            h.core
                .placement_paused
                .store(paused, std::sync::atomic::Ordering::Relaxed);
        }
        let (p50, p99, ops) = write_load(&leader, placing, round).await;
        println!(
            "| {} | {} | {} | {ops:.0} | {:.2} | {:.2} |",
            round + 1,
            if paused { "paused" } else { "running" },
            if placing {
                "create (placed) + delete"
            } else {
                "create (stopped) + delete"
            },
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0
        );
    }
    println!();
    renewer.abort();
    for h in handles {
        h.shutdown().await;
    }
    Ok(())
}

/// 16 writers creating and deleting VMs for 10 s; p50, p99 and ops/s.
async fn write_load(leader: &Arc<Core>, placing: bool, round: usize) -> (Duration, Duration, f64) {
    let stop = Instant::now() + Duration::from_secs(10);
    let tasks: Vec<_> = (0..16)
        .map(|w| {
            let core = leader.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0;
                while Instant::now() < stop {
                    let name = format!("w{round}-{w}-{i}");
                    i += 1;
                    let desired = if placing {
                        DesiredState::Running
                    } else {
                        DesiredState::Stopped
                    };
                    let t = Instant::now();
                    let create = Action::CreateVm {
                        name: name.clone(),
                        spec: sim_spec(i),
                        desired,
                    };
                    if core.propose(create).await.is_ok() {
                        lat.push(t.elapsed());
                    }
                    let t = Instant::now();
                    if core
                        .propose(Action::DeleteVm { name, force: true })
                        .await
                        .is_ok()
                    {
                        lat.push(t.elapsed());
                    }
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(lat) = t.await {
            all.extend(lat);
        }
    }
    all.sort();
    let ops = all.len() as f64 / 10.0;
    (percentile(&all, 0.5), percentile(&all, 0.99), ops)
}
