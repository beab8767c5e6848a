//! What a daemon writes into a log file: plain text with no escape
//! sequences when stderr is not a terminal, and with `--log-format json`
//! one JSON object a line, each naming the node, and the VM's name in
//! `vm` on lines about a VM.

mod common;

use common::*;
use std::time::Duration;

/// Starts one node with `log_args`, runs a VM on it, stops the node and
/// returns its log file's text.
fn log_of_a_node_that_ran_a_vm(log_args: &[&str]) -> String {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().to_path_buf();
    let runner = write_runner(&root).display().to_string();
    let allowed = root.display().to_string();
    let mut args = vec!["--init", "--allowed-runner-dir", &allowed];
    args.extend_from_slice(log_args);
    let mut node = Daemon::start(5, &root.join("n5"), "127.0.0.1:0", &args);
    register_credentials(&node.addr, &ClusterCredentials::of_init_node(&node.dir));
    let out = cli(
        &node.addr,
        &[
            "vm",
            "create",
            "logged-vm",
            "--vcpus",
            "1",
            "--memory-mib",
            "32",
            "--runner",
            &runner,
        ],
    );
    assert!(out.status.success(), "{out:?}");
    eventually(Duration::from_secs(30), "the VM to run", || {
        let out = cli(&node.addr, &["vm", "get", "logged-vm"]);
        (json_of(&out)["state"] == "running").then_some(())
    });
    node.stop_gracefully();
    std::fs::read_to_string(node.dir.join("daemon.log")).expect("log file")
}

#[test]
fn a_log_file_holds_no_escape_sequences() {
    let log = log_of_a_node_that_ran_a_vm(&[]);
    assert!(log.lines().count() > 5, "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape sequences in a log file:\n{log}"
    );
}

#[test]
fn a_daemon_that_fails_reports_why_without_escape_sequences() {
    let tmp = tempfile::tempdir().expect("tmp");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").to_string();
    let out = std::process::Command::new(blixardd_bin())
        .args([
            "--node-id",
            "1",
            "--init",
            "--backend",
            "process",
            "--listen",
            &port,
        ])
        .arg("--data-dir")
        .arg(tmp.path().join("n1"))
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run blixardd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Error"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "escape sequences:\n{stderr}");
}

#[test]
fn json_log_lines_parse_and_name_the_node_and_the_vm() {
    let log = log_of_a_node_that_ran_a_vm(&["--log-format", "json"]);
    let mut about_the_vm = 0;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        assert_eq!(v["node_id"], 5, "{line}");
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        if v["vm"] == "logged-vm" {
            about_the_vm += 1;
        }
    }
    assert!(about_the_vm > 0, "no line names the VM in `vm`:\n{log}");
}
