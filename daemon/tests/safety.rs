//! Safety of VM moves and stops on real daemons with the process backend
//! (issue "Safety"): a VM deleted with force and created again under the
//! same name never runs twice at once, and one slow graceful stop holds up
//! nothing else on its host.

mod common;

use blixard_shared::proto::v1 as pb;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A runner that ignores SIGTERM: a graceful stop of it takes the whole
/// stop timeout, then a kill.
fn stubborn_runner(dir: &Path) -> PathBuf {
    write_script(
        dir,
        "stubborn.sh",
        "trap '' TERM\necho \"stubborn: up $BLIXARD_VM_NAME\"\nwhile :; do sleep 0.05; done\n",
    )
}

fn runner_vm(name: &str, runner: &Path, pin: u64) -> pb::CreateVmRequest {
    let mut req = create_req(name);
    if let Some(spec) = req.spec.as_mut() {
        spec.runner = runner.display().to_string();
        spec.node_id = pin;
    }
    req
}

/// Pids of live processes running `runner`: the shells themselves, not a
/// shell's child between its fork and its exec of `sleep` (which still
/// shows the shell's command line: counted, it looked like a second
/// instance, though it was one instance's own child).
fn runner_processes(runner: &Path) -> Vec<u32> {
    let needle = runner.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // (pid, parent pid) of every live process whose command line names it.
    let matching: Vec<(u32, u32)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the command's closing parenthesis: state, then ppid.
            let mut after = stat.rsplit_once(')')?.1.split_whitespace();
            let (state, ppid) = (after.next()?, after.next()?.parse().ok()?);
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            (state != "Z" && cmdline.windows(needle.len()).any(|w| w == needle))
                .then_some((pid, ppid))
        })
        .collect();
    let pids: std::collections::HashSet<u32> = matching.iter().map(|(pid, _)| *pid).collect();
    matching
        .into_iter()
        .filter(|(_, ppid)| !pids.contains(ppid))
        .map(|(pid, _)| pid)
        .collect()
}

/// Samples the process table every 10 ms until dropped and keeps the most
/// instances of `runner` ever seen at once.
struct Sampler {
    stop: Arc<AtomicBool>,
    most: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(runner: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let most = Arc::new(AtomicUsize::new(0));
        let (s, m) = (stop.clone(), most.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(runner_processes(&runner).len(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self {
            stop,
            most,
            thread: Some(thread),
        }
    }

    fn most(&mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("sampler");
        }
        self.most.load(Ordering::Relaxed)
    }
}

async fn wait_state(cluster: &TestCluster, name: &str, state: pb::VmState) -> pb::Vm {
    let what = format!("{name} {state:?}");
    eventually(Duration::from_secs(30), &what, || async {
        get_vm(cluster, 0, name, pb::Consistency::Linearizable)
            .await
            .filter(|v| v.state == state as i32)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_force_deleted_vm_and_its_successor_never_run_at_once() {
    let cluster = TestCluster::start(2).await;
    let runner = stubborn_runner(cluster.nodes[0].dir.parent().expect("tmp"));
    let (first, second) = (cluster.nodes[0].id, cluster.nodes[1].id);
    let mut vms = cluster.vm_client(0);
    vms.create_vm(runner_vm("svc", &runner, first))
        .await
        .expect("create");
    wait_state(&cluster, "svc", pb::VmState::Running).await;
    let mut sampler = Sampler::start(runner.clone());
    vms.delete_vm(pb::DeleteVmRequest {
        name: "svc".into(),
        force: true,
    })
    .await
    .expect("force delete");
    vms.create_vm(runner_vm("svc", &runner, second))
        .await
        .expect("create again under the same name");
    let again = wait_state(&cluster, "svc", pb::VmState::Running).await;
    assert_eq!(again.node_id, second);
    assert_eq!(
        sampler.most(),
        1,
        "the deleted instance and its successor ran at the same time"
    );
    cluster.shutdown().await;
}

fn long_stop_timeout(c: &mut blixard_daemon::config::Config) {
    c.vm_stop_timeout = Duration::from_secs(60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_slow_graceful_stop_holds_up_nothing_else_on_its_host() {
    let cluster = TestCluster::start_with(1, long_stop_timeout).await;
    let runner = stubborn_runner(cluster.nodes[0].dir.parent().expect("tmp"));
    let mut vms = cluster.vm_client(0);
    vms.create_vm(runner_vm("slow", &runner, 0))
        .await
        .expect("create slow");
    wait_state(&cluster, "slow", pb::VmState::Running).await;
    vms.stop_vm(pb::StopVmRequest {
        name: "slow".into(),
    })
    .await
    .expect("stop slow");
    // Its stop now takes the whole 60 s timeout; meanwhile the host starts
    // another VM and says the first is stopping.
    vms.create_vm(runner_vm("quick", &runner, 0))
        .await
        .expect("create quick");
    wait_state(&cluster, "quick", pb::VmState::Running).await;
    let slow = wait_state(&cluster, "slow", pb::VmState::Stopping).await;
    assert!(slow.reason.contains("stopping"), "{slow:?}");
    // A force delete does not wait for the graceful stop: it kills.
    vms.delete_vm(pb::DeleteVmRequest {
        name: "slow".into(),
        force: true,
    })
    .await
    .expect("force delete");
    eventually(Duration::from_secs(10), "slow killed", || async {
        (runner_processes(&runner).len() == 1).then_some(())
    })
    .await;
    cluster.shutdown().await;
}
