//! An outside client, as the README promises: Python grpcio with the CA
//! file and a token lists VMs (`examples/python/list_vms.py`). Needs
//! Debian's `python3-grpcio` and `python3-grpc-tools`; CI installs them and
//! sets `BLIXARD_REQUIRE_PYTHON_GRPC=1`, so there a missing one fails.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// Debian's own interpreter: the grpc packages install for it, whatever
/// `python3` a PATH finds first.
const PYTHON: &str = "/usr/bin/python3";

/// Why the example cannot run here, if it cannot.
fn unsupported() -> Option<String> {
    let probe = Command::new(PYTHON)
        .args(["-c", "import grpc, grpc_tools.protoc"])
        .output();
    match probe {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "{PYTHON} lacks grpc or grpc_tools (Debian: python3-grpcio python3-grpc-tools): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("{PYTHON}: {e}")),
    }
}

/// Whether `test` must skip for `why` (said loudly); with
/// `BLIXARD_REQUIRE_PYTHON_GRPC` set (CI) a missing package fails instead.
fn skip(test: &str, why: Option<String>) -> bool {
    let Some(why) = why else {
        return false;
    };
    if std::env::var_os("BLIXARD_REQUIRE_PYTHON_GRPC").is_some() {
        panic!("BLIXARD_REQUIRE_PYTHON_GRPC is set but: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    true
}

#[test]
fn python_grpcio_lists_vms_with_the_ca_and_a_token() {
    if skip(
        "python_grpcio_lists_vms_with_the_ca_and_a_token",
        unsupported(),
    ) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let node = Daemon::start(1, &tmp.path().join("n1"), "127.0.0.1:0", &["--init"]);
    let creds = ClusterCredentials::of_init_node(&node.dir);
    register_credentials(&node.addr, &creds);
    let out = cli(
        &node.addr,
        &["token", "create", "--role", "viewer", "--name", "py"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let viewer = json_of(&out)["secret"]
        .as_str()
        .expect("secret")
        .to_string();
    let out = cli(
        &node.addr,
        &[
            "vm",
            "create",
            "from-rust",
            "--vcpus",
            "1",
            "--memory",
            "32",
            "--stopped",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/list_vms.py");
    let run = |token: Option<&str>| {
        let mut cmd = Command::new(PYTHON);
        cmd.arg(&example)
            .env("BLIXARD_ENDPOINT", &node.addr)
            .env("BLIXARD_CA_CERT", &creds.ca_cert)
            .env_remove("BLIXARD_TOKEN");
        if let Some(t) = token {
            cmd.env("BLIXARD_TOKEN", t);
        }
        cmd.output().expect("python")
    };
    let out = run(Some(&viewer));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().any(|l| l.starts_with("from-rust ")),
        "{stdout}"
    );
    // Without a token the same client is refused.
    let out = run(None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNAUTHENTICATED"));
}

/// The interpreter with the stock PyPI packages of
/// `examples/python/requirements.txt` (CI makes a venv and names it in
/// `BLIXARD_PYTHON`); Debian's otherwise.
fn reflection_python() -> String {
    std::env::var("BLIXARD_PYTHON").unwrap_or_else(|_| PYTHON.to_string())
}

#[test]
fn python_grpcio_reflection_finds_the_api_and_lists_vms_without_protos() {
    let python = reflection_python();
    let probe = Command::new(&python)
        .args([
            "-c",
            "import grpc, grpc_reflection.v1alpha.proto_reflection_descriptor_database",
        ])
        .output();
    let why = match probe {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "{python} lacks grpcio-reflection (pip install -r examples/python/requirements.txt, then set BLIXARD_PYTHON): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("{python}: {e}")),
    };
    if skip(
        "python_grpcio_reflection_finds_the_api_and_lists_vms_without_protos",
        why,
    ) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let node = Daemon::start(1, &tmp.path().join("n1"), "127.0.0.1:0", &["--init"]);
    let creds = ClusterCredentials::of_init_node(&node.dir);
    register_credentials(&node.addr, &creds);
    let out = cli(
        &node.addr,
        &[
            "vm",
            "create",
            "found-by-reflection",
            "--vcpus",
            "1",
            "--memory-mib",
            "32",
            "--stopped",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/reflect_list_vms.py");
    let out = Command::new(&python)
        .arg(&example)
        .env("BLIXARD_ENDPOINT", &node.addr)
        .env("BLIXARD_CA_CERT", &creds.ca_cert)
        .env("BLIXARD_TOKEN", creds.token())
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("blixard.v1.VmService"), "{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("found-by-reflection STOPPED ")
                || l.starts_with("found-by-reflection ")),
        "{stdout}"
    );
}
