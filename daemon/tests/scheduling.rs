//! Scheduling on real daemons (issue "Scheduling"): constraints and a
//! group's `max_per_node` hold, a VM that fits nowhere waits with its
//! reason, bad input is refused naming the field, and migrations and
//! drains move VMs without ever running one on two hosts at once.

mod common;

use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::node_service_client::NodeServiceClient;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A runner that stays up until stopped.
fn runner(dir: &Path, name: &str) -> PathBuf {
    write_script(
        dir,
        &format!("{name}.sh"),
        "echo \"up $BLIXARD_VM_NAME\"\nwhile :; do sleep 0.05; done\n",
    )
}

fn tmp_of(cluster: &TestCluster) -> PathBuf {
    cluster.nodes[0].dir.parent().expect("tmp").to_path_buf()
}

fn vm_req(name: &str, runner: &Path, tweak: impl FnOnce(&mut pb::VmSpec)) -> pb::CreateVmRequest {
    let mut req = create_req(name);
    if let Some(spec) = req.spec.as_mut() {
        spec.runner = runner.display().to_string();
        tweak(spec);
    }
    req
}

async fn running_on(cluster: &TestCluster, name: &str) -> u64 {
    eventually(
        Duration::from_secs(30),
        &format!("{name} running"),
        || async {
            get_vm(cluster, 0, name, pb::Consistency::Linearizable)
                .await
                .filter(|v| v.state == pb::VmState::Running as i32 && v.node_id != 0)
                .map(|v| v.node_id)
        },
    )
    .await
}

fn in_mars(c: &mut blixard_daemon::config::Config) {
    c.zone = "mars".into();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_with_one_per_node_lands_once_on_each_matching_node_and_the_rest_is_explained() {
    let cluster = TestCluster::start_with(3, in_mars).await;
    let run = runner(&tmp_of(&cluster), "web");
    let mut vms = cluster.vm_client(0);
    let web = |spec: &mut pb::VmSpec| {
        spec.group = "web".into();
        spec.max_per_node = 1;
        spec.constraints = vec!["zone=mars".into()];
    };
    for i in 1..=3 {
        vms.create_vm(vm_req(&format!("web-{i}"), &run, web))
            .await
            .expect("create");
    }
    let mut nodes = BTreeSet::new();
    for i in 1..=3 {
        nodes.insert(running_on(&cluster, &format!("web-{i}")).await);
    }
    assert_eq!(nodes.len(), 3, "one per node: {nodes:?}");
    // A fourth fits nowhere: it waits, and says why, with counts.
    vms.create_vm(vm_req("web-4", &run, web))
        .await
        .expect("create");
    let waiting = eventually(Duration::from_secs(10), "web-4 explained", || async {
        get_vm(&cluster, 0, "web-4", pb::Consistency::Linearizable)
            .await
            .filter(|v| v.placement.contains("would exceed"))
    })
    .await;
    assert_eq!(waiting.node_id, 0);
    assert_eq!(
        waiting.placement,
        "no node fits: 3 would exceed group web max 1 per node"
    );
    assert!(
        waiting
            .reason
            .contains("3 would exceed group web max 1 per node"),
        "{}",
        waiting.reason
    );
    // No node in zone venus: nothing placed, the explanation names the rule.
    vms.create_vm(vm_req("far", &run, |s| {
        s.constraints = vec!["zone=venus".into()]
    }))
    .await
    .expect("create");
    let explained = vms
        .explain_vm(pb::ExplainVmRequest {
            name: "far".into(),
            consistency: 0,
        })
        .await
        .expect("explain")
        .into_inner();
    assert_eq!(explained.summary, "no node fits: 3 do not match zone=venus");
    assert_eq!(explained.nodes.len(), 3);
    assert!(explained
        .nodes
        .iter()
        .all(|n| !n.fits && n.reason == "does not match zone=venus"));
    assert_eq!(
        get_vm(&cluster, 0, "far", pb::Consistency::Linearizable)
            .await
            .expect("far")
            .node_id,
        0
    );
    // A placed VM's explanation: where it is, and every node's verdict.
    let placed = vms
        .explain_vm(pb::ExplainVmRequest {
            name: "web-1".into(),
            consistency: 0,
        })
        .await
        .expect("explain")
        .into_inner();
    assert!(
        placed.summary.starts_with("placed on node"),
        "{}",
        placed.summary
    );
    assert_eq!(
        placed.nodes.iter().filter(|n| n.fits).count(),
        1,
        "{placed:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_placement_input_is_refused_naming_the_field() {
    let cluster = TestCluster::start(3).await;
    let run = runner(&tmp_of(&cluster), "bad");
    let mut vms = cluster.vm_client(0);
    let refused =
        |r: Result<tonic::Response<pb::CreateVmResponse>, tonic::Status>| r.expect_err("refused");
    for (tweak, field) in [
        (
            Box::new(|s: &mut pb::VmSpec| s.constraints = vec!["zone within (a)".into()])
                as Box<dyn Fn(&mut pb::VmSpec)>,
            "spec.constraints[0]",
        ),
        (
            Box::new(|s: &mut pb::VmSpec| s.priority = 5000),
            "spec.priority",
        ),
        (
            Box::new(|s: &mut pb::VmSpec| s.strategy = "random".into()),
            "spec.strategy",
        ),
        (
            Box::new(|s: &mut pb::VmSpec| s.spread_by = "zone".into()),
            "spec.spread_by",
        ),
    ] {
        let e = refused(vms.create_vm(vm_req("bad", &run, |s| tweak(s))).await);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    // A group keeps one limit.
    vms.create_vm(vm_req("g-1", &run, |s| {
        s.group = "g".into();
        s.max_per_node = 1;
    }))
    .await
    .expect("create");
    let e = refused(
        vms.create_vm(vm_req("g-2", &run, |s| {
            s.group = "g".into();
            s.max_per_node = 2;
        }))
        .await,
    );
    assert!(e.message().contains("spec.max_per_node"), "{}", e.message());

    // Migrations: unknown, cordoned and too small targets, and --live.
    let on = running_on(&cluster, "g-1").await;
    let others: Vec<u64> = (1..=3).filter(|n| *n != on).collect();
    let migrate = |to: u64, live: bool| pb::MigrateVmRequest {
        name: "g-1".into(),
        to_node_id: to,
        live,
    };
    let e = vms
        .migrate_vm(migrate(9, false))
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("to_node_id"), "{}", e.message());
    let mut nodes = NodeServiceClient::new(cluster.channel(0));
    nodes
        .cordon_node(pb::CordonNodeRequest { node_id: others[0] })
        .await
        .expect("cordon");
    let e = vms
        .migrate_vm(migrate(others[0], false))
        .await
        .expect_err("cordoned");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("cordoned"), "{}", e.message());
    // Fill the other target (a pinned VM of its whole free memory).
    let target = nodes
        .get_node(pb::GetNodeRequest {
            node_id: others[1],
            consistency: 0,
        })
        .await
        .expect("node")
        .into_inner()
        .node
        .expect("node");
    let free = target.capacity.unwrap_or_default().memory_mib
        - target.allocated.unwrap_or_default().memory_mib;
    vms.create_vm(vm_req("filler", &run, |s| {
        s.memory_mib = free;
        s.node_id = others[1];
    }))
    .await
    .expect("filler");
    running_on(&cluster, "filler").await;
    let e = vms
        .migrate_vm(migrate(others[1], false))
        .await
        .expect_err("too small");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("lacks memory"), "{}", e.message());
    let e = vms
        .migrate_vm(migrate(others[1], true))
        .await
        .expect_err("live");
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
    // A pinned VM does not move.
    let e = vms
        .migrate_vm(pb::MigrateVmRequest {
            name: "filler".into(),
            to_node_id: 0,
            live: false,
        })
        .await
        .expect_err("pinned");
    assert!(e.message().contains("pinned"), "{}", e.message());
    let e = nodes
        .drain_node(pb::DrainNodeRequest {
            node_id: on,
            deadline_ms: 0,
            parallel: 100,
        })
        .await
        .expect_err("parallel");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("parallel"), "{}", e.message());
    assert_eq!(
        get_vm(&cluster, 0, "g-1", pb::Consistency::Linearizable)
            .await
            .expect("g-1")
            .node_id,
        on,
        "nothing moved"
    );
    cluster.shutdown().await;
}

/// Node `id` once its drain has ended (its outcome set).
async fn drain_ended(cluster: &TestCluster, id: u64) -> pb::Node {
    eventually(Duration::from_secs(60), "the drain to end", || async {
        let node = NodeServiceClient::new(cluster.channel(0))
            .get_node(pb::GetNodeRequest {
                node_id: id,
                consistency: 0,
            })
            .await
            .ok()?
            .into_inner()
            .node?;
        node.drain.as_ref().filter(|d| !d.outcome.is_empty())?;
        Some(node)
    })
    .await
}

/// How many hosts run each of `scripts` right now, from the process table.
fn instances(scripts: &[PathBuf]) -> BTreeMap<PathBuf, usize> {
    // Per script, the distinct VM dirs (one per host) its processes run
    // in: a shell forking its `sleep` shows the script's command line
    // twice for a moment, on one host.
    let mut hosts: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |s| s.contains(") Z "));
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if zombie {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let dir = environ
            .split(|b| *b == 0)
            .find_map(|v| v.strip_prefix(b"BLIXARD_VM_DIR="))
            .map_or_else(
                || format!("pid {pid}"),
                |d| String::from_utf8_lossy(d).into_owned(),
            );
        for script in scripts {
            let needle = script.as_os_str().as_encoded_bytes();
            if cmdline.windows(needle.len()).any(|w| w == needle) {
                hosts.entry(script.clone()).or_default().insert(dir.clone());
            }
        }
    }
    hosts.into_iter().map(|(s, h)| (s, h.len())).collect()
}

/// Samples the host's process table every 10 ms and keeps, per script,
/// the most hosts ever seen running it at once (one script per VM: two
/// means the VM ran on two hosts).
struct Sampler {
    stop: Arc<AtomicBool>,
    most: Arc<Mutex<BTreeMap<PathBuf, usize>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(scripts: Vec<PathBuf>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let most = Arc::new(Mutex::new(BTreeMap::new()));
        let (s, m) = (stop.clone(), most.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let now = instances(&scripts);
                if let Ok(mut most) = m.lock() {
                    for (script, n) in now {
                        let e = most.entry(script).or_insert(0);
                        *e = (*e).max(n);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self {
            stop,
            most,
            thread: Some(thread),
        }
    }

    fn most(&mut self) -> BTreeMap<PathBuf, usize> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("sampler");
        }
        self.most.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migration_stops_the_vm_before_it_starts_on_the_target() {
    let cluster = TestCluster::start(3).await;
    let run = runner(&tmp_of(&cluster), "mover");
    let mut vms = cluster.vm_client(0);
    vms.create_vm(vm_req("mover", &run, |_| {}))
        .await
        .expect("create");
    let from = running_on(&cluster, "mover").await;
    let before = get_vm(&cluster, 0, "mover", pb::Consistency::Linearizable)
        .await
        .expect("vm");
    let to = (1..=3).find(|n| *n != from).expect("another node");
    let mut sampler = Sampler::start(vec![run.clone()]);
    let moving = vms
        .migrate_vm(pb::MigrateVmRequest {
            name: "mover".into(),
            to_node_id: to,
            live: false,
        })
        .await
        .expect("migrate")
        .into_inner()
        .vm
        .expect("vm");
    assert_eq!(moving.moving_from, from);
    let now_on = running_on(&cluster, "mover").await;
    let after = get_vm(&cluster, 0, "mover", pb::Consistency::Linearizable)
        .await
        .expect("vm");
    let most = sampler.most();
    assert_eq!(now_on, to);
    assert!(
        after.epoch > before.epoch,
        "a new epoch: {} -> {}",
        before.epoch,
        after.epoch
    );
    assert_eq!(
        most.get(&run).copied().unwrap_or(0),
        1,
        "never two instances: {most:?}"
    );
    assert!(
        after.placement.contains(&format!("node {to}")),
        "{}",
        after.placement
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_under_load_moves_every_vm_and_never_runs_one_twice() {
    let cluster = TestCluster::start(3).await;
    let tmp = tmp_of(&cluster);
    let mut vms = cluster.vm_client(0);
    let names: Vec<String> = (0..6).map(|i| format!("d-{i}")).collect();
    let scripts: Vec<PathBuf> = names.iter().map(|n| runner(&tmp, n)).collect();
    for (name, script) in names.iter().zip(&scripts) {
        vms.create_vm(vm_req(name, script, |_| {}))
            .await
            .expect("create");
    }
    let mut placement = BTreeMap::new();
    for name in &names {
        placement.insert(name.clone(), running_on(&cluster, name).await);
    }
    // Drain the node holding the most of them.
    let mut per_node: BTreeMap<u64, usize> = BTreeMap::new();
    for node in placement.values() {
        *per_node.entry(*node).or_default() += 1;
    }
    let (&drained, _) = per_node.iter().max_by_key(|(_, n)| **n).expect("a node");
    let mut sampler = Sampler::start(scripts.clone());
    // A client keeps creating and deleting VMs meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let mut client = cluster.vm_client(1);
        let script = runner(&tmp, "load");
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("load-{i}");
                i += 1;
                let created = client.create_vm(vm_req(&name, &script, |_| {})).await;
                if let Err(e) = created {
                    failures.push(e);
                    continue;
                }
                let deleted = client
                    .delete_vm(pb::DeleteVmRequest { name, force: true })
                    .await;
                if let Err(e) = deleted {
                    failures.push(e);
                }
            }
            failures
        })
    };
    let mut nodes = NodeServiceClient::new(cluster.channel(0));
    let started = nodes
        .drain_node(pb::DrainNodeRequest {
            node_id: drained,
            deadline_ms: 120_000,
            parallel: 2,
        })
        .await
        .expect("drain")
        .into_inner()
        .node
        .expect("node");
    assert_eq!(started.schedulability, pb::Schedulability::Draining as i32);
    let done = drain_ended(&cluster, drained).await;
    stop.store(true, Ordering::Relaxed);
    let failures = load.await.expect("load");
    let drain = done.drain.clone().expect("drain");
    assert_eq!(drain.outcome, "complete", "{drain:?}");
    let moved = per_node[&drained] as u32;
    assert_eq!(drain.moved, moved, "{drain:?}");
    assert_eq!(drain.left, 0);
    assert!(
        done.vms.is_empty(),
        "the drained node holds none: {:?}",
        done.vms
    );
    assert_eq!(done.schedulability, pb::Schedulability::Cordoned as i32);
    for name in &names {
        let node = running_on(&cluster, name).await;
        assert_ne!(node, drained, "{name} still on the drained node");
    }
    let most = sampler.most();
    for script in &scripts {
        assert_eq!(
            most.get(script).copied(),
            Some(1),
            "each VM seen, and never on two hosts: {most:?}"
        );
    }
    assert!(
        failures
            .iter()
            .all(|e| e.code() == tonic::Code::Unavailable),
        "only retried Unavailable: {failures:?}"
    );
    // Uncordon ends it and clears the report.
    let node = nodes
        .uncordon_node(pb::UncordonNodeRequest { node_id: drained })
        .await
        .expect("uncordon")
        .into_inner()
        .node
        .expect("node");
    assert!(node.drain.is_none());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_that_cannot_move_a_vm_reports_it_instead_of_hanging() {
    let cluster = TestCluster::start(3).await;
    let run = runner(&tmp_of(&cluster), "pinned");
    let mut vms = cluster.vm_client(0);
    vms.create_vm(vm_req("pinned", &run, |s| s.node_id = 2))
        .await
        .expect("create");
    vms.create_vm(vm_req("free", &run, |s| s.node_id = 0))
        .await
        .expect("create");
    assert_eq!(running_on(&cluster, "pinned").await, 2);
    running_on(&cluster, "free").await;
    let mut nodes = NodeServiceClient::new(cluster.channel(0));
    nodes
        .drain_node(pb::DrainNodeRequest {
            node_id: 2,
            deadline_ms: 60_000,
            parallel: 1,
        })
        .await
        .expect("drain");
    let node = drain_ended(&cluster, 2).await;
    let drain = node.drain.expect("drain");
    assert_eq!(drain.outcome, "stuck", "{drain:?}");
    assert_eq!(drain.failed.len(), 1, "{drain:?}");
    assert_eq!(drain.failed[0].name, "pinned");
    assert!(
        drain.failed[0].reason.contains("pinned to node 2"),
        "{drain:?}"
    );
    assert_eq!(node.vms, vec!["pinned".to_string()], "it stays, running");
    assert_eq!(running_on(&cluster, "pinned").await, 2);
    assert_eq!(node.schedulability, pb::Schedulability::Cordoned as i32);
    nodes
        .uncordon_node(pb::UncordonNodeRequest { node_id: 2 })
        .await
        .expect("uncordon");
    cluster.shutdown().await;
}
