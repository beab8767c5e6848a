//! The rolling upgrade of `docs/operations.md`, followed step by step
//! with the CLI against a 3-node cluster of `blixardd` processes while a
//! client keeps writing: every write succeeds (a CLI call that answers
//! "unavailable", exit 5, is retried, as the runbook says scripts should),
//! and no VM is restarted (same pid, same start time, no restarts).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Exit code of the CLI for "unavailable, retry later".
const UNAVAILABLE: i32 = 5;

/// Each VM's (pid, start time, restarts), from `vm list --json`.
fn instances(all: &str) -> Option<BTreeMap<String, (u64, u64, u64)>> {
    let out = cli(all, &["vm", "list"]);
    if !out.status.success() {
        return None;
    }
    let v = json_of(&out);
    Some(
        v.as_array()?
            .iter()
            .filter(|vm| vm["name"].as_str().is_some_and(|n| n.starts_with("keep-")))
            .filter_map(|vm| {
                Some((
                    vm["name"].as_str()?.to_string(),
                    (
                        vm["pid"].as_u64()?,
                        vm["started_at_ms"].as_u64()?,
                        vm["restarts"].as_u64()?,
                    ),
                ))
            })
            .collect(),
    )
}

/// Runs a CLI command until it succeeds, retrying only "unavailable";
/// returns the other failure, if any, and counts the retries.
fn retrying(all: &str, args: &[&str], retries: &AtomicUsize) -> Result<(), String> {
    for _ in 0..100 {
        let out = cli(all, args);
        match out.status.code() {
            Some(0) => return Ok(()),
            Some(UNAVAILABLE) => {
                retries.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
            _ => {
                return Err(format!(
                    "{args:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        }
    }
    Err(format!("{args:?}: unavailable 100 times"))
}

/// Waits until node `id` is a voter, alive, in contact and caught up.
fn caught_up(all: &str, id: u64) {
    eventually(Duration::from_secs(60), "the node to catch up", || {
        let out = cli(all, &["cluster", "status"]);
        let v = json_of(&out);
        let member = v["members"]
            .as_array()?
            .iter()
            .find(|m| m["node_id"].as_u64() == Some(id))?
            .clone();
        (out.status.success()
            && member["voter"] == true
            && member["health"] == "alive"
            && member["lag"].as_u64()? < 64
            && member["last_contact_ms"].as_u64()? < 1000)
            .then_some(())
    });
}

#[test]
fn a_rolling_upgrade_by_the_runbook_fails_no_write_and_restarts_no_vm() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().to_path_buf();
    let config = runner_config(&root, "");
    let (mut daemons, all) = start_cluster(&root, &["--config", &config]);
    // The "new release": the binary the upgrade puts in place.
    let new_bin = root.join("v2").join("blixardd");
    std::fs::create_dir_all(root.join("v2")).expect("dir");
    std::fs::copy(blixardd_bin(), &new_bin).expect("copy the new binary");

    let runner = write_runner(&root).display().to_string();
    for i in 0..3 {
        let name = format!("keep-{i}");
        let out = cli(
            &all,
            &[
                "vm", "create", &name, "--vcpus", "1", "--memory", "64", "--runner", &runner,
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let before = eventually(Duration::from_secs(60), "the VMs running", || {
        let now = instances(&all)?;
        (now.len() == 3
            && now
                .values()
                .all(|(pid, started, _)| *pid != 0 && *started != 0))
        .then_some(now)
    });

    // A client keeps writing through the whole upgrade.
    let stop = Arc::new(AtomicBool::new(false));
    let retries = Arc::new(AtomicUsize::new(0));
    let writes = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, retries, writes, all) =
            (stop.clone(), retries.clone(), writes.clone(), all.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w-{i}");
                i += 1;
                let create = [
                    "vm",
                    "create",
                    &name,
                    "--vcpus",
                    "1",
                    "--memory",
                    "64",
                    "--stopped",
                ];
                if let Err(e) = retrying(&all, &create, &retries) {
                    failures.push(e);
                }
                if let Err(e) = retrying(&all, &["vm", "delete", &name], &retries) {
                    failures.push(e);
                }
                writes.fetch_add(2, Ordering::Relaxed);
            }
            failures
        })
    };

    // The runbook: one node at a time, the leader last.
    let leader = json_of(&cli(&all, &["cluster", "status"]))["leader_id"]
        .as_u64()
        .expect("leader");
    let mut order: Vec<u64> = daemons
        .iter()
        .map(|d| d.id)
        .filter(|id| *id != leader)
        .collect();
    order.push(leader);
    for id in order {
        // 1. Move leadership away from the node.
        let status = json_of(&cli(&all, &["cluster", "status"]));
        if status["leader_id"].as_u64() == Some(id) {
            let to = daemons
                .iter()
                .map(|d| d.id)
                .find(|d| *d != id)
                .expect("another");
            let out = cli(
                &all,
                &["cluster", "transfer-leader", "--to", &to.to_string()],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            eventually(Duration::from_secs(30), "leadership to move", || {
                let v = json_of(&cli(&all, &["cluster", "status"]));
                (v["leader_id"].as_u64()? != id && v["leader_id"].as_u64()? != 0).then_some(())
            });
        }
        // 2. Stop it, 3. replace the binary, 4. start it on its data dir.
        let d = daemons.iter_mut().find(|d| d.id == id).expect("daemon");
        d.stop_gracefully();
        let (dir, addr) = (d.dir.clone(), d.addr.clone());
        let mut again = Daemon::start_binary(&new_bin, id, &dir, &addr, &["--config", &config]);
        d.child = again.child.take();
        let pid = d.child.as_ref().map(|c| c.id()).expect("running");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe");
        assert_eq!(exe, new_bin, "node {id} runs the new binary");
        // 5. Wait until it has caught up before the next node.
        caught_up(&all, id);
    }
    let seen = writes.load(Ordering::Relaxed);
    eventually(Duration::from_secs(30), "writes after the upgrade", || {
        (writes.load(Ordering::Relaxed) >= seen + 4).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let failures = writer.join().expect("writer");
    assert!(failures.is_empty(), "failed writes: {failures:?}");
    assert!(writes.load(Ordering::Relaxed) > 0);
    let after = instances(&all).expect("vms");
    assert_eq!(after, before, "no VM restarted (pid, start time, restarts)");
    eprintln!(
        "upgrade: {} writes, {} retried unavailable answers",
        writes.load(Ordering::Relaxed),
        retries.load(Ordering::Relaxed)
    );
}
