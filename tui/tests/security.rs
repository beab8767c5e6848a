//! The CLI against a secured `blixardd` (`--init`: TLS with the cluster CA,
//! bearer tokens): the CA fingerprint in `cluster status` and in a join
//! token, exit code 7 without a token, with a wrong, too weak or revoked
//! one, the plaintext warning and hint, `--token-file` over
//! `BLIXARD_TOKEN`, and tokens whose secret is shown once and never listed.

mod common;

use common::*;
use std::time::Duration;

const HINT: &str = "(is the cluster secured? pass --ca-cert FILE and a token)";
const WARNING: &str = "warning: no --ca-cert (BLIXARD_CA_CERT): talking plaintext, which only a cluster started with --insecure accepts";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn tokens_roles_and_plaintext_against_a_secured_node() {
    let tmp = tempfile::tempdir().expect("tmp");
    let node = Daemon::start(1, &tmp.path().join("n1"), "127.0.0.1:0", &["--init"]);
    let ep = node.addr.clone();
    let creds = ClusterCredentials::of_init_node(&node.dir);
    register_credentials(&ep, &creds);
    let status = eventually(
        Duration::from_secs(30),
        "a leader, with the admin token",
        || {
            let out = cli(&ep, &["cluster", "status"]);
            let v = out.status.success().then(|| json_of(&out))?;
            (v["leader_id"].as_u64()? != 0).then_some(v)
        },
    );
    let fingerprint = status["ca_fingerprint"]
        .as_str()
        .expect("ca_fingerprint")
        .to_string();
    assert!(fingerprint.starts_with("sha256:"), "{status}");
    assert_eq!(status["insecure"], false);

    // A join token says the same fingerprint.
    let out = cli(&ep, &["cluster", "join-token", "create", "--ttl", "30m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let jt = json_of(&out);
    assert!(jt["token"].as_str().is_some_and(|t| !t.is_empty()), "{jt}");
    assert_eq!(jt["ca_fingerprint"], fingerprint.as_str());
    assert!(jt["expires_at_ms"].as_u64().is_some_and(|e| e > 0), "{jt}");

    let ca = Some(creds.ca_cert.as_path());
    let admin = creds.token();

    // No token, a wrong one: not allowed.
    let out = cli_as(
        &ep,
        As {
            ca_cert: ca,
            ..As::default()
        },
        &["vm", "list"],
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let wrong = As {
        ca_cert: ca,
        token: Some("blxt_not-a-real-token"),
        ..As::default()
    };
    assert_eq!(cli_as(&ep, wrong, &["vm", "list"]).status.code(), Some(7));

    // Plaintext at a TLS server: one warning line, and the hint.
    let plain = As {
        token: Some(admin.as_str()),
        ..As::default()
    };
    let out = cli_as(&ep, plain, &["vm", "list"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.matches(WARNING).count(), 1, "{err}");
    assert!(err.contains(HINT), "{err}");
    assert!(!err.contains(&admin), "the token is never printed: {err}");

    // A viewer token: shown once, with the documented keys.
    let out = cli(
        &ep,
        &["token", "create", "--role", "viewer", "--name", "ci-viewer"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let created = json_of(&out);
    for key in ["name", "role", "created_at_ms", "expires_at_ms", "secret"] {
        assert!(
            created.get(key).is_some(),
            "token create lacks {key}: {created}"
        );
    }
    assert_eq!(created["name"], "ci-viewer");
    assert_eq!(created["role"], "viewer");
    assert_eq!(created["expires_at_ms"], 0);
    let viewer = created["secret"].as_str().expect("secret").to_string();

    // Default name and --ttl; human output says the secret is shown once.
    let out = cli_as(
        &ep,
        As {
            ca_cert: ca,
            token: Some(admin.as_str()),
            human: true,
            ..As::default()
        },
        &["token", "create", "--role", "operator", "--ttl", "1h"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("will not be shown again"), "{text}");
    assert!(text.contains("operator-"), "{text}");

    // The viewer reads but may not write or manage tokens.
    let as_viewer = As {
        ca_cert: ca,
        token: Some(viewer.as_str()),
        ..As::default()
    };
    let out = cli_as(&ep, as_viewer, &["vm", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli_as(
        &ep,
        as_viewer,
        &["vm", "create", "nope", "--vcpus", "1", "--memory", "64"],
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(
        cli_as(&ep, as_viewer, &["token", "list"]).status.code(),
        Some(7)
    );

    // --token-file wins over BLIXARD_TOKEN.
    let viewer_file = tmp.path().join("viewer.token");
    std::fs::write(&viewer_file, format!("{viewer}\n")).expect("write token");
    let file_wins = As {
        ca_cert: ca,
        token: Some(admin.as_str()),
        token_file: Some(viewer_file.as_path()),
        ..As::default()
    };
    assert_eq!(
        cli_as(&ep, file_wins, &["token", "list"]).status.code(),
        Some(7)
    );

    // The listing has names and roles, never secrets.
    let out = cli(&ep, &["token", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !stdout.contains(&viewer) && !stdout.contains("secret"),
        "{stdout}"
    );
    let list = json_of(&out);
    let entry = list
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "ci-viewer"))
        .unwrap_or_else(|| panic!("ci-viewer not listed: {list}"));
    assert_eq!(entry["role"], "viewer");
    for key in ["name", "role", "created_at_ms", "expires_at_ms"] {
        assert!(entry.get(key).is_some(), "token list lacks {key}: {entry}");
    }

    // Revoked: refused from then on.
    let out = cli(&ep, &["token", "revoke", "ci-viewer"]);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually(Duration::from_secs(10), "the revoked token refused", || {
        (cli_as(&ep, as_viewer, &["vm", "list"]).status.code() == Some(7)).then_some(())
    });
}
