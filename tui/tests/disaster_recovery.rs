//! The disaster-recovery runbook of `docs/operations.md`, run step by
//! step with the binaries against a 3-node cluster of `blixardd`
//! processes: back up with `blixard cluster backup`, lose every node for
//! good, see a damaged copy refused, restore one node with `blixardd
//! restore`, start it, remove the lost nodes and join two fresh ones
//! with join tokens.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

#[test]
fn the_disaster_recovery_runbook_restores_a_cluster_that_lost_every_node() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    let (mut daemons, all) = start_cluster(root, &[]);
    for name in ["web-1", "web-2", "db-1"] {
        let out = cli(
            &all,
            &[
                "vm",
                "create",
                name,
                "--vcpus",
                "1",
                "--memory-mib",
                "64",
                "--stopped",
            ],
        );
        assert!(out.status.success(), "create {name}: {out:?}");
    }
    let before = vm_names(&all).expect("vm list");

    // 1. Back up (through any member: the leader takes it).
    let file = root.join("cluster.bkp");
    let out = cli(
        &daemons[2].addr,
        &["cluster", "backup", file.to_str().expect("utf-8")],
    );
    assert!(out.status.success(), "backup: {out:?}");
    let v = json_of(&out);
    assert!(v["revision"].as_u64().expect("revision") > 0);
    assert_eq!(
        v["bytes"].as_u64(),
        Some(std::fs::metadata(&file).expect("file").len())
    );
    let old_token = ClusterCredentials::of_init_node(&daemons[0].dir).token();

    // 2. Quorum is lost for good.
    for d in &mut daemons {
        d.kill9();
    }

    // 3. A damaged copy is refused before anything is written.
    let bytes = std::fs::read(&file).expect("read backup");
    let damaged = root.join("damaged.bkp");
    std::fs::write(&damaged, &bytes[..bytes.len() - 7]).expect("write");
    let refused_dir = root.join("refused");
    let out = Command::new(blixardd_bin())
        .args(["restore", "--node-id", "1", "--from"])
        .arg(&damaged)
        .arg("--data-dir")
        .arg(&refused_dir)
        .output()
        .expect("run blixardd restore");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("damaged.bkp"), "{stderr}");
    assert!(!refused_dir.exists(), "nothing may be written");

    // 4. Restore one node into a new data dir, and start it.
    let new1 = root.join("new-1");
    let out = Command::new(blixardd_bin())
        .args(["restore", "--node-id", "1", "--from"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&new1)
        .output()
        .expect("run blixardd restore");
    assert!(out.status.success(), "restore: {out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("new cluster CA fingerprint: sha256:"),
        "{said}"
    );
    let restored = Daemon::start(1, &new1, "127.0.0.1:0", &[]);
    let creds = ClusterCredentials::of_init_node(&new1);
    register_credentials(&restored.addr, &creds);
    let seed = restored.addr.clone();
    let after = eventually(
        Duration::from_secs(30),
        "the restored node to serve",
        || vm_names(&seed),
    );
    assert_eq!(after, before);
    // The old cluster's admin token still works, against the new CA.
    let out = cli_as(
        &seed,
        As {
            ca_cert: Some(&creds.ca_cert),
            token: Some(&old_token),
            ..Default::default()
        },
        &["vm", "list"],
    );
    assert!(out.status.success(), "old token: {out:?}");

    // 5. Forget the lost nodes, then join them again as new nodes (their
    //    old data dirs are gone).
    for id in ["2", "3"] {
        let out = cli(&seed, &["cluster", "remove-node", id]);
        assert!(out.status.success(), "remove-node {id}: {out:?}");
    }
    let mut fresh = vec![restored];
    for id in 2..=3u64 {
        let (token, fingerprint) = join_token(&seed);
        let d = Daemon::start(
            id,
            &root.join(format!("new-{id}")),
            "127.0.0.1:0",
            &[
                "--join",
                &seed,
                "--join-token",
                &token,
                "--ca-fingerprint",
                &fingerprint,
            ],
        );
        register_credentials(&d.addr, &creds);
        fresh.push(d);
    }
    let endpoints: String = fresh
        .iter()
        .map(|d| d.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    eventually(Duration::from_secs(60), "three voters again", || {
        let out = cli(&endpoints, &["cluster", "status"]);
        let v = json_of(&out);
        let voters: BTreeSet<u64> = v["members"]
            .as_array()?
            .iter()
            .filter(|m| m["voter"] == true)
            .filter_map(|m| m["node_id"].as_u64())
            .collect();
        (voters == BTreeSet::from([1, 2, 3])).then_some(())
    });
    // Every member serves the restored state.
    for d in &fresh {
        let names = eventually(Duration::from_secs(30), "a member to catch up", || {
            vm_names(&d.addr).filter(|n| *n == before)
        });
        assert_eq!(names, before);
    }
}
