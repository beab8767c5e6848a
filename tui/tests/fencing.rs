//! Safety property 3 end to end: a host whose daemon is frozen past its
//! fencing lease has its VM killed by the watchdog, the leader runs the VM
//! on another host only after that, and the frozen host, once thawed, does
//! not start it again. A sampler of the process table checks that no
//! sample ever shows the VM on two hosts.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::Duration;

fn vm_placement(endpoints: &str) -> Option<(u64, String)> {
    let out = cli(endpoints, &["vm", "get", "web"]);
    if !out.status.success() {
        return None;
    }
    let v = json_of(&out);
    Some((v["node_id"].as_u64()?, v["state"].as_str()?.to_string()))
}

#[test]
fn a_frozen_host_loses_its_vm_to_another_host_and_never_runs_it_alongside() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().to_path_buf();
    // A short lease keeps the test short: fenced after 2 s, re-placed after 6 s.
    let config = root.join("fence.toml");
    // The runner is written to `root`, which the hosts must allow.
    let toml = format!(
        "fence_lease_ms = 2000\nallowed_runner_dirs = [{:?}]\n",
        root
    );
    std::fs::write(&config, toml).expect("config");
    let config = config.display().to_string();
    let (daemons, all) = start_cluster(&root, &["--config", &config]);
    let runner = write_runner(&root).display().to_string();
    let out = cli(
        &all,
        &[
            "vm", "create", "web", "--vcpus", "1", "--memory", "64", "--runner", &runner,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = eventually(Duration::from_secs(30), "web running", || {
        let (node, state) = vm_placement(&all)?;
        (state == "running" && hosts_running(&root, "web") == BTreeSet::from([node]))
            .then_some(node)
    });

    let sampler = HostSampler::start(&root, "web");
    let frozen = daemon_pid(&daemons, first);
    // SAFETY: kill(2) on a daemon this test spawned.
    unsafe { libc::kill(frozen, libc::SIGSTOP) };
    let others = endpoints_except(&daemons, first);
    let second = eventually(
        Duration::from_secs(60),
        "web running on another host",
        || {
            let (node, state) = vm_placement(&others)?;
            (node != first && state == "running" && hosts_running(&root, "web").contains(&node))
                .then_some(node)
        },
    );
    // SAFETY: as above.
    unsafe { libc::kill(frozen, libc::SIGCONT) };
    // The thawed host learns that web is no longer its own and cleans up.
    let old_dir = root.join(format!("n{first}")).join("vms").join("web");
    eventually(Duration::from_secs(30), "the old host to clean up", || {
        (!old_dir.exists()).then_some(())
    });
    let samples = sampler.finish_never_on_two_hosts();
    assert!(
        samples.iter().any(|s| s.contains(&first)),
        "sampled on the first host"
    );
    assert!(
        samples.iter().any(|s| s.contains(&second)),
        "sampled on the second host"
    );
    assert_eq!(
        hosts_running(&root, "web"),
        BTreeSet::from([second]),
        "still on the second host only"
    );
}
