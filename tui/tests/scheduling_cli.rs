//! The scheduling commands of the CLI against `blixardd` processes: `vm
//! explain`, `vm get --explain`, `vm migrate` and `node drain`, with their
//! JSON keys and exit codes, and bad input refused before it is sent.

mod common;

use common::*;
use std::time::Duration;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

#[test]
fn explain_migrate_and_drain_speak_json_and_exit_codes_scripts_can_trust() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().to_path_buf();
    let config = runner_config(&root, "");
    let (_daemons, all) = start_cluster(&root, &["--config", &config]);
    let runner = write_runner(&root).display().to_string();

    // A malformed constraint is refused before anything is sent.
    let out = cli(
        &all,
        &[
            "vm",
            "create",
            "bad",
            "--vcpus",
            "1",
            "--memory",
            "64",
            "--runner",
            &runner,
            "--constraint",
            "zone within (a)",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("spec.constraints[0]"),
        "{}",
        stderr(&out)
    );

    // A VM no node matches waits, explained.
    let out = cli(
        &all,
        &[
            "vm",
            "create",
            "far",
            "--vcpus",
            "1",
            "--memory-mib",
            "64",
            "--runner",
            &runner,
            "--constraint",
            "zone=venus",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // (Every node registers its record just after it becomes a voter.)
    let v = eventually(Duration::from_secs(30), "three registered nodes", || {
        let v = json_of(&cli(&all, &["vm", "explain", "far"]));
        (v["nodes"].as_array()?.len() == 3).then_some(v)
    });
    assert_eq!(
        v["summary"], "no node fits: 3 do not match zone=venus",
        "{v}"
    );
    assert_eq!(v["chosen_node_id"], 0);
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(3));
    assert_eq!(v["nodes"][0]["fits"], false);
    let v = json_of(&cli(&all, &["vm", "get", "far", "--explain"]));
    assert_eq!(
        v["vm"]["placement"], "no node fits: 3 do not match zone=venus",
        "{v}"
    );
    assert!(v["explain"]["nodes"].is_array());

    // A migration to an unknown node is a usage error; to another node it moves.
    let out = cli(
        &all,
        &[
            "vm", "create", "mover", "--vcpus", "1", "--memory", "64", "--runner", &runner,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let from = eventually(Duration::from_secs(30), "mover running", || {
        let v = json_of(&cli(&all, &["vm", "get", "mover"]));
        (v["state"] == "running").then(|| v["node_id"].as_u64())?
    });
    let out = cli(&all, &["vm", "migrate", "mover", "--to", "9"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("to_node_id"), "{}", stderr(&out));
    let to = (1..=3).find(|n| *n != from).expect("another node");
    let out = cli(&all, &["vm", "migrate", "mover", "--to", &to.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_of(&out)["moving_from"], from);
    eventually(
        Duration::from_secs(30),
        "mover running on the target",
        || {
            let v = json_of(&cli(&all, &["vm", "get", "mover"]));
            (v["state"] == "running" && v["node_id"].as_u64() == Some(to)).then_some(())
        },
    );

    // A drain that cannot move a pinned VM ends stuck: exit 4, the reason
    // in the JSON.
    let out = cli(
        &all,
        &[
            "vm", "create", "pinned", "--vcpus", "1", "--memory", "64", "--runner", &runner,
            "--node", "3",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(
        &all,
        &["node", "drain", "3", "--deadline", "1m", "--parallel", "1"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let v = json_of(&out);
    assert_eq!(v["drain"]["outcome"], "stuck", "{v}");
    assert!(
        v["drain"]["failed"]["pinned"]
            .as_str()
            .is_some_and(|r| r.contains("pinned to node 3")),
        "{v}"
    );
    assert_eq!(v["schedulability"], "cordoned");
    let v = json_of(&cli(&all, &["node", "uncordon", "3"]));
    assert!(v["drain"].is_null(), "{v}");
    let out = cli(&all, &["node", "drain", "3", "--parallel", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // Every member's release, and not mixed.
    let v = json_of(&cli(&all, &["version"]));
    assert_eq!(v["client"], env!("CARGO_PKG_VERSION"), "{v}");
    assert_eq!(v["mixed"], false, "{v}");
    let members = v["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{v}");
    assert!(
        members
            .iter()
            .all(|m| m["version"] == env!("CARGO_PKG_VERSION")),
        "{v}"
    );

    // A daemon logging into a file (not a terminal) writes no colour codes.
    let log = std::fs::read_to_string(root.join("n1").join("daemon.log")).expect("daemon log");
    assert!(log.contains("INFO"), "the log has lines");
    assert!(!log.contains('\u{1b}'), "ANSI escapes in a log file");
}

#[test]
fn completions_are_printed_for_every_shell_and_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(blixard_bin())
            .args(["completions", shell])
            .output()
            .expect("run blixard");
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["migrate", "drain", "explain", "quota", "memory-mib"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = std::process::Command::new(blixard_bin())
        .args(["completions", "tcsh"])
        .output()
        .expect("run blixard");
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}
