//! The VM runtime with the process backend (no QEMU needed): placement, the
//! node agent, restart policies, adoption after a daemon restart, console
//! logs relayed between nodes, and host-side bad input. Real processes, real
//! daemons, real gRPC on 127.0.0.1.

mod common;

use blixard_shared::proto::v1 as pb;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_stream::StreamExt;

/// A runner that prints a readiness line, then idles until SIGTERM.
fn write_runner(dir: &Path) -> PathBuf {
    write_script(
        dir,
        "runner.sh",
        "trap 'echo \"runner: shutting down\"; exit 0' TERM\necho \"runner: ready $BLIXARD_VM_NAME\"\nwhile :; do sleep 0.1; done\n",
    )
}

fn runner_vm(name: &str, runner: &Path, policy: pb::RestartPolicy) -> pb::CreateVmRequest {
    let mut req = create_req(name);
    if let Some(spec) = req.spec.as_mut() {
        spec.runner = runner.display().to_string();
        spec.restart_policy = policy as i32;
    }
    req
}

async fn wait_state(
    cluster: &TestCluster,
    node: usize,
    name: &str,
    state: pb::VmState,
    what: &str,
) -> pb::Vm {
    eventually(Duration::from_secs(30), what, || async {
        get_vm(cluster, node, name, pb::Consistency::Local)
            .await
            .filter(|vm| vm.state == state as i32)
    })
    .await
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

async fn read_logs_until(cluster: &TestCluster, node: usize, name: &str, needle: &str) -> String {
    let mut stream = cluster
        .vm_client(node)
        .stream_vm_logs(pb::StreamVmLogsRequest {
            name: name.into(),
            follow: true,
            tail_lines: 1000,
        })
        .await
        .expect("log stream")
        .into_inner();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !text.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in the log in time; got {text:?}"))
            .expect("stream open")
            .expect("chunk");
        text.push_str(&String::from_utf8_lossy(&chunk.data));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vm_is_placed_started_logged_stopped_and_deleted() {
    let cluster = TestCluster::start(3).await;
    let runner = write_runner(cluster.nodes[0].dir.parent().expect("tmp"));
    cluster
        .vm_client(0)
        .create_vm(runner_vm("svc", &runner, pb::RestartPolicy::Always))
        .await
        .expect("create");
    let vm = wait_state(&cluster, 0, "svc", pb::VmState::Running, "vm running").await;
    assert!(
        vm.node_id != 0 && vm.epoch == 1,
        "placed at epoch 1: {vm:?}"
    );
    let owner = cluster
        .nodes
        .iter()
        .position(|n| n.id == vm.node_id)
        .expect("owner");
    let other = (owner + 1) % 3;
    let pid = eventually(Duration::from_secs(10), "pid reported", || async {
        let vm = get_vm(&cluster, 0, "svc", pb::Consistency::Local).await?;
        let pid = vm_pid(&cluster, "svc", owner).await?;
        (vm.state == pb::VmState::Running as i32).then_some(pid)
    })
    .await;
    assert!(pid_alive(pid));

    // Logs asked of a node that does not run the VM are relayed from the owner.
    let text = read_logs_until(&cluster, other, "svc", "runner: ready svc").await;
    assert!(text.contains("runner: ready svc"));

    cluster
        .vm_client(other)
        .stop_vm(pb::StopVmRequest { name: "svc".into() })
        .await
        .expect("stop");
    wait_state(&cluster, other, "svc", pb::VmState::Stopped, "vm stopped").await;
    eventually(Duration::from_secs(10), "process gone", || async {
        (!pid_alive(pid)).then_some(())
    })
    .await;
    let text = read_logs_until(&cluster, other, "svc", "runner: shutting down").await;
    assert!(
        text.contains("runner: shutting down"),
        "graceful stop runs the process's own shutdown"
    );

    let runtime_dir = cluster.nodes[owner].dir.join("vms").join("svc");
    assert!(runtime_dir.exists());
    cluster
        .vm_client(other)
        .delete_vm(pb::DeleteVmRequest {
            name: "svc".into(),
            force: false,
        })
        .await
        .expect("delete a stopped vm");
    eventually(Duration::from_secs(10), "runtime files removed", || async {
        (!runtime_dir.exists()).then_some(())
    })
    .await;
    cluster.shutdown().await;
}

/// The pid the agent reported, read from the owner's runtime meta as a cross-check.
async fn vm_pid(cluster: &TestCluster, name: &str, owner: usize) -> Option<u32> {
    let text = std::fs::read_to_string(
        cluster.nodes[owner]
            .dir
            .join("vms")
            .join(name)
            .join("meta.json"),
    )
    .ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["pid"].as_u64().map(|p| p as u32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_policies_decide_what_happens_after_a_crash() {
    let cluster = TestCluster::start(1).await;
    let runner = write_runner(cluster.nodes[0].dir.parent().expect("tmp"));
    let mut vms = cluster.vm_client(0);
    vms.create_vm(runner_vm("always", &runner, pb::RestartPolicy::Always))
        .await
        .expect("create");
    vms.create_vm(runner_vm("never", &runner, pb::RestartPolicy::Never))
        .await
        .expect("create");
    for name in ["always", "never"] {
        wait_state(&cluster, 0, name, pb::VmState::Running, "running").await;
    }
    let always_pid = eventually(Duration::from_secs(10), "pid", || {
        vm_pid(&cluster, "always", 0)
    })
    .await;
    let never_pid = eventually(Duration::from_secs(10), "pid", || {
        vm_pid(&cluster, "never", 0)
    })
    .await;
    for pid in [always_pid, never_pid] {
        // SAFETY: kill(2) with plain integers.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    }
    let restarted = eventually(
        Duration::from_secs(30),
        "'always' restarted with a new process",
        || async {
            let pid = vm_pid(&cluster, "always", 0).await?;
            let vm = get_vm(&cluster, 0, "always", pb::Consistency::Local).await?;
            (pid != always_pid && vm.state == pb::VmState::Running as i32).then_some(vm)
        },
    )
    .await;
    assert!(restarted.revision > 0);
    let failed = wait_state(&cluster, 0, "never", pb::VmState::Failed, "'never' failed").await;
    assert!(failed.reason.contains("SIGKILL"), "{}", failed.reason);
    assert!(failed.reason.contains("not restarted"), "{}", failed.reason);
    assert_eq!(
        vm_pid(&cluster, "never", 0).await,
        Some(never_pid),
        "no new process for 'never'"
    );

    // An operator restart starts it again.
    vms.restart_vm(pb::RestartVmRequest {
        name: "never".into(),
    })
    .await
    .expect("restart");
    eventually(
        Duration::from_secs(30),
        "'never' running again after an operator restart",
        || async {
            let pid = vm_pid(&cluster, "never", 0).await?;
            let vm = get_vm(&cluster, 0, "never", pb::Consistency::Local).await?;
            (pid != never_pid && vm.state == pb::VmState::Running as i32).then_some(())
        },
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_daemon_adopts_running_vms_without_restarting_them() {
    let mut cluster = TestCluster::start(1).await;
    let runner = write_runner(cluster.nodes[0].dir.parent().expect("tmp"));
    cluster
        .vm_client(0)
        .create_vm(runner_vm("kept", &runner, pb::RestartPolicy::Always))
        .await
        .expect("create");
    wait_state(&cluster, 0, "kept", pb::VmState::Running, "running").await;
    let pid = eventually(Duration::from_secs(10), "pid", || {
        vm_pid(&cluster, "kept", 0)
    })
    .await;

    cluster.stop(0).await;
    assert!(pid_alive(pid), "the VM outlives its daemon");
    cluster.restart(0).await;
    let vm = wait_state(
        &cluster,
        0,
        "kept",
        pb::VmState::Running,
        "running after restart",
    )
    .await;
    assert_eq!(vm_pid(&cluster, "kept", 0).await, Some(pid), "same process");
    assert!(pid_alive(pid));
    let restarts = vm_restarts(&cluster, "kept").await;
    assert_eq!(restarts, 0, "adoption is not a restart: {vm:?}");
    cluster.shutdown().await;
    // Leave nothing behind.
    // SAFETY: kill(2) with plain integers.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

async fn vm_restarts(cluster: &TestCluster, name: &str) -> u32 {
    let fleet = cluster.nodes[0]
        .handle
        .as_ref()
        .expect("node")
        .core
        .view
        .read()
        .clone();
    fleet
        .vms
        .get(name)
        .map_or(u32::MAX, |vm| vm.observed.restarts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_side_bad_input_fails_the_vm_with_a_reason() {
    let cluster = TestCluster::start(1).await;
    let tmp = cluster.nodes[0].dir.parent().expect("tmp").to_path_buf();
    let not_exec = tmp.join("not-executable.sh");
    std::fs::write(&not_exec, "#!/bin/sh\n").expect("write");
    let mut vms = cluster.vm_client(0);
    vms.create_vm(runner_vm("noexec", &not_exec, pb::RestartPolicy::Always))
        .await
        .expect("create");
    // A runner the API node allowed that is gone when its host starts it:
    // the host's own check refuses it before anything is spawned.
    let vanishing = write_script(&tmp, "vanishing.sh", "exit 0\n");
    let mut nofile = runner_vm("nofile", &vanishing, pb::RestartPolicy::Always);
    nofile.stopped = true;
    vms.create_vm(nofile).await.expect("create");
    std::fs::remove_file(&vanishing).expect("remove the runner");
    vms.start_vm(pb::StartVmRequest {
        name: "nofile".into(),
    })
    .await
    .expect("start");
    let vm = wait_state(
        &cluster,
        0,
        "noexec",
        pb::VmState::Failed,
        "failed: not executable",
    )
    .await;
    assert!(
        vm.reason.contains("spec.runner") && vm.reason.contains("not executable"),
        "{}",
        vm.reason
    );
    let vm = wait_state(
        &cluster,
        0,
        "nofile",
        pb::VmState::Failed,
        "failed: missing",
    )
    .await;
    assert!(
        vm.reason.contains("spec.runner") && vm.reason.contains("allowed_runner_dirs"),
        "{}",
        vm.reason
    );
    let vm_dir = cluster.nodes[0].dir.join("vms").join("nofile");
    assert!(!vm_dir.exists(), "nothing was started for it");

    let mut huge = create_req("huge");
    if let Some(spec) = huge.spec.as_mut() {
        spec.memory_mib = 4 * 1024 * 1024;
    }
    let err = vms.create_vm(huge).await.expect_err("larger than any node");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().starts_with("spec:"), "{}", err.message());
    cluster.shutdown().await;
}

/// A VM process inherits nothing of the daemon's environment (here the
/// test process's: cargo's variables, `HOME`, ...): only the `BLIXARD_VM_*`
/// its backend sets and a fixed `PATH`. The runner prints its startup
/// environment from `/proc/$$/environ`, before the shell adds `PWD`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_sees_none_of_the_daemon_environment() {
    let cluster = TestCluster::start(1).await;
    let tmp = cluster.nodes[0].dir.parent().expect("tmp").to_path_buf();
    let runner = write_script(
        &tmp,
        "dump-env.sh",
        "tr '\\0' '\\n' < /proc/$$/environ\necho env-dump-done\n",
    );
    cluster
        .vm_client(0)
        .create_vm(runner_vm("envdump", &runner, pb::RestartPolicy::Never))
        .await
        .expect("create");
    wait_state(
        &cluster,
        0,
        "envdump",
        pb::VmState::Stopped,
        "ran and exited",
    )
    .await;
    let text = read_logs_until(&cluster, 0, "envdump", "env-dump-done").await;
    let vars: Vec<(&str, &str)> = text
        .lines()
        .take_while(|l| *l != "env-dump-done")
        .filter_map(|l| l.split_once('='))
        .collect();
    assert!(
        vars.iter()
            .all(|(k, _)| k.starts_with("BLIXARD_VM_") || *k == "PATH"),
        "only BLIXARD_VM_* and PATH: {text}"
    );
    assert!(vars.contains(&("BLIXARD_VM_NAME", "envdump")), "{text}");
    assert!(
        vars.contains(&("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")),
        "a fixed PATH, not the daemon's: {text}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vm_that_died_while_the_daemon_was_down_follows_its_restart_policy() {
    let mut cluster = TestCluster::start(1).await;
    let runner = write_runner(cluster.nodes[0].dir.parent().expect("tmp"));
    let mut vms = cluster.vm_client(0);
    vms.create_vm(runner_vm("again", &runner, pb::RestartPolicy::Always))
        .await
        .expect("create");
    vms.create_vm(runner_vm("once", &runner, pb::RestartPolicy::Never))
        .await
        .expect("create");
    let mut pids = Vec::new();
    for name in ["again", "once"] {
        wait_state(&cluster, 0, name, pb::VmState::Running, "running").await;
        pids.push(eventually(Duration::from_secs(10), "pid", || vm_pid(&cluster, name, 0)).await);
    }
    cluster.stop(0).await;
    for pid in &pids {
        // SAFETY: kill(2) with plain integers.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    eventually(Duration::from_secs(10), "both processes gone", || async {
        pids.iter().all(|p| !pid_alive(*p)).then_some(())
    })
    .await;
    cluster.restart(0).await;
    eventually(Duration::from_secs(30), "'again' restarted", || async {
        let pid = vm_pid(&cluster, "again", 0).await?;
        let vm = get_vm(&cluster, 0, "again", pb::Consistency::Local).await?;
        (pid != pids[0] && vm.state == pb::VmState::Running as i32).then_some(())
    })
    .await;
    let failed = wait_state(
        &cluster,
        0,
        "once",
        pb::VmState::Failed,
        "'once' failed, not restarted",
    )
    .await;
    assert!(failed.reason.contains("not restarted"), "{}", failed.reason);
    assert_eq!(vm_pid(&cluster, "once", 0).await, Some(pids[1]));
    let pid = vm_pid(&cluster, "again", 0).await.unwrap_or(0);
    cluster.shutdown().await;
    // SAFETY: kill(2) with plain integers.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}
