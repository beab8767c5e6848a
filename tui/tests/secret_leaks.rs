//! Secrets (client tokens, join tokens, private keys) never appear in
//! anything a run produces: daemon logs, events, metrics, error messages,
//! `--json` output, or the replicated state on disk. A run that uses every
//! kind of secret, right and wrong, then a grep over all of it.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

/// The base64 body of a PEM private key: what a leak of the key would show.
fn key_body(path: &Path) -> String {
    let pem = std::fs::read_to_string(path).expect("key file");
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("")
}

/// Every file under `dir`, as bytes.
fn all_files(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_files(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn no_secret_shows_in_logs_events_metrics_errors_json_or_state() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    let n1 = Daemon::start(
        1,
        &root.join("n1"),
        "127.0.0.1:0",
        &[
            "--init",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log",
            "debug",
        ],
    );
    let creds = ClusterCredentials::of_init_node(&n1.dir);
    register_credentials(&n1.addr, &creds);
    let (join, fingerprint) = join_token(&n1.addr);
    let n2 = Daemon::start(
        2,
        &root.join("n2"),
        "127.0.0.1:0",
        &[
            "--join",
            &n1.addr,
            "--join-token",
            &join,
            "--ca-fingerprint",
            &fingerprint,
            "--log",
            "debug",
        ],
    );
    register_credentials(&n2.addr, &creds);
    let eps = format!("{},{}", n1.addr, n2.addr);
    let mut seen = String::new();
    // A token of each kind, used, misused and revoked.
    let out = cli(
        &eps,
        &["token", "create", "--role", "operator", "--name", "ops"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let ops = json_of(&out)["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    let ca = Some(creds.ca_cert.as_path());
    let as_ops = As {
        ca_cert: ca,
        token: Some(&ops),
        ..As::default()
    };
    let out = cli_as(
        &eps,
        as_ops,
        &["vm", "create", "leaky", "--vcpus", "1", "--memory", "32"],
    );
    assert!(out.status.success(), "{}", text(&out));
    seen += &text(&out);
    for args in [
        &["vm", "list"][..],
        &["vm", "get", "leaky"],
        &["cluster", "status"],
        &["node", "list"],
        &["token", "list"],
        &["events", "watch", "--oldest", "--count", "1"],
    ] {
        let out = cli(&eps, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        seen += &text(&out);
    }
    // Refusals (exit code 7): a role too weak, a wrong token, a revoked one.
    let refused = |out: std::process::Output| {
        assert_eq!(out.status.code(), Some(7), "{}", text(&out));
        text(&out)
    };
    seen += &refused(cli_as(&eps, as_ops, &["token", "list"]));
    let wrong = format!("{ops}x");
    seen += &refused(cli_as(
        &eps,
        As {
            ca_cert: ca,
            token: Some(&wrong),
            ..As::default()
        },
        &["vm", "list"],
    ));
    let out = cli(&eps, &["token", "revoke", "ops"]);
    assert!(out.status.success(), "{}", text(&out));
    seen += &refused(cli_as(&eps, as_ops, &["vm", "list"]));
    // A node that tries a used join token: it fails to start; its log is kept.
    let reuse = std::process::Command::new(blixardd_bin())
        .args([
            "--node-id",
            "3",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "process",
        ])
        .arg("--data-dir")
        .arg(root.join("n3"))
        .args([
            "--join",
            &n1.addr,
            "--join-token",
            &join,
            "--ca-fingerprint",
            &fingerprint,
        ])
        .output()
        .expect("blixardd");
    assert!(!reuse.status.success(), "a used join token admits nobody");
    seen += &text(&reuse);
    // Metrics of node 1.
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(n1.dir.join("ready.json")).expect("ready"))
            .expect("json");
    let metrics_addr = ready["metrics_address"]
        .as_str()
        .expect("metrics")
        .to_string();
    let metrics = eventually(Duration::from_secs(10), "metrics", || {
        http_get(&metrics_addr, "/metrics").map(|(_, body)| body)
    });
    seen += &metrics;
    let mut files = Vec::new();
    all_files(root, &mut files);
    let admin = creds.token();
    let secrets = [
        ("the admin token", admin.clone()),
        ("an operator token", ops.clone()),
        ("a join token", join.clone()),
        ("the CA key", key_body(&n1.dir.join("tls/ca.key"))),
        ("node 1's key", key_body(&n1.dir.join("tls/node.key"))),
        ("node 2's key", key_body(&n2.dir.join("tls/node.key"))),
    ];
    for (what, secret) in &secrets {
        assert!(secret.len() > 20, "{what} is a real secret");
        assert!(
            !seen.contains(secret.as_str()),
            "{what} leaked into command output, events or metrics"
        );
        for (path, bytes) in &files {
            let is_home = |f: &str| path.ends_with(f);
            // The secret's own file, and the files that must hold it.
            let expected = match *what {
                "the admin token" => is_home("admin.token"),
                "the CA key" => is_home("ca.key"),
                "node 1's key" | "node 2's key" => is_home("node.key"),
                _ => false,
            };
            if expected {
                continue;
            }
            let hay = String::from_utf8_lossy(bytes);
            assert!(!hay.contains(secret.as_str()), "{what} leaked into {path}");
        }
    }
    drop((n1, n2));
}
