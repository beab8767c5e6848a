//! Helpers for tests that drive the built `blixardd` and `blixard`
//! binaries as processes.

#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn blixard_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_blixard"))
}

pub fn blixardd_bin() -> PathBuf {
    let path = blixard_bin().parent().expect("target dir").join("blixardd");
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (cargo build --bins, or cargo nextest run --workspace)",
        path.display()
    );
    path
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `limit`.
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes `runner.sh` into `dir`: a VM runner that says it is ready, then
/// idles until SIGTERM (the hosts must allow `dir`, see
/// `allowed_runner_dirs`).
pub fn write_runner(dir: &Path) -> PathBuf {
    let path = dir.join("runner.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\ntrap 'exit 0' TERM\necho \"runner: ready $BLIXARD_VM_NAME\"\nwhile :; do sleep 0.1; done\n",
    )
    .expect("write runner");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Writes `node.toml` under `root`: runners may come from `root`, plus
/// `extra` lines; returns its path for `--config`.
pub fn runner_config(root: &Path, extra: &str) -> String {
    let config = root.join("node.toml");
    std::fs::write(
        &config,
        format!("allowed_runner_dirs = [{root:?}]\n{extra}"),
    )
    .expect("config");
    config.display().to_string()
}

/// A plain HTTP/1.0 GET of `path` at `addr` (no chunking): the status code
/// and body, `None` when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

pub struct Daemon {
    pub id: u64,
    pub dir: PathBuf,
    pub addr: String,
    pub child: Option<Child>,
    /// Backend flags, kept for restarts.
    pub backend_args: Vec<String>,
}

impl Daemon {
    pub fn start(id: u64, dir: &Path, listen: &str, extra: &[&str]) -> Self {
        Self::start_binary(&blixardd_bin(), id, dir, listen, extra)
    }

    /// Like [`Daemon::start`] with the daemon binary at `bin` (an upgrade
    /// starts a node from a new binary on its old data dir).
    pub fn start_binary(bin: &Path, id: u64, dir: &Path, listen: &str, extra: &[&str]) -> Self {
        std::fs::create_dir_all(dir).expect("data dir");
        let ready = dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        // stderr (the log) and stdout (what the daemon tells its operator)
        // apart, as a service manager keeps them.
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .expect("log file")
        };
        let (log, out) = (open("daemon.log"), open("daemon.out"));
        let child = Command::new(bin)
            .args(["--node-id", &id.to_string(), "--listen", listen])
            .arg("--data-dir")
            .arg(dir)
            .arg("--ready-file")
            .arg(&ready)
            .args(extra)
            .args(if extra.contains(&"--backend") {
                &[][..]
            } else {
                &["--backend", "process"][..]
            })
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log)
            .spawn()
            .expect("spawn blixardd");
        let mut child = child;
        let log_path = dir.join("daemon.log");
        let addr = eventually(Duration::from_secs(30), "daemon ready file", || {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("blixardd {id} exited ({status}) before it was ready:\n{log}");
            }
            let text = std::fs::read_to_string(&ready).ok()?;
            let v: Value = serde_json::from_str(&text).ok()?;
            Some(v["address"].as_str()?.to_string())
        });
        let backend_args = match extra.iter().position(|a| *a == "--backend") {
            Some(i) => extra[i..].iter().map(|s| s.to_string()).collect(),
            None => Vec::new(),
        };
        Self {
            id,
            dir: dir.to_path_buf(),
            addr,
            child: Some(child),
            backend_args,
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reap");
        }
    }

    /// Stops the daemon as systemd would (SIGTERM) and waits for it to
    /// exit; its VMs keep running.
    pub fn stop_gracefully(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on a child this test spawned.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            c.wait().expect("reap");
        }
    }

    /// Starts the daemon again on its data dir and address from the
    /// binary at `bin`.
    pub fn restart_binary(&mut self, bin: &Path) {
        let args: Vec<&str> = self.backend_args.iter().map(String::as_str).collect();
        let mut again =
            Daemon::start_binary(bin, self.id, &self.dir.clone(), &self.addr.clone(), &args);
        self.child = again.child.take();
    }

    pub fn restart(&mut self) {
        let args: Vec<&str> = self.backend_args.iter().map(String::as_str).collect();
        let mut again = Daemon::start(self.id, &self.dir.clone(), &self.addr.clone(), &args);
        self.child = again.child.take();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// What a client of a test cluster proves itself with: the cluster CA
/// certificate and the bootstrap admin token that `blixardd --init` wrote
/// into node 1's data dir.
#[derive(Debug, Clone)]
pub struct ClusterCredentials {
    pub ca_cert: PathBuf,
    pub token_file: PathBuf,
}

impl ClusterCredentials {
    /// The files `--init` wrote under the data dir `dir`.
    pub fn of_init_node(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("tls").join("ca.pem"),
            token_file: dir.join("admin.token"),
        }
    }

    /// The admin token's secret.
    pub fn token(&self) -> String {
        std::fs::read_to_string(&self.token_file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.token_file.display()))
            .trim()
            .to_string()
    }
}

/// The credentials of every daemon address a test of this process
/// started, so `cli` finds them from its endpoints (tests sharing a process
/// under `cargo test` run clusters side by side; addresses are unique).
static CREDENTIALS: std::sync::Mutex<std::collections::BTreeMap<String, ClusterCredentials>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Records that the daemon at `addr` takes `creds`.
pub fn register_credentials(addr: &str, creds: &ClusterCredentials) {
    CREDENTIALS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(addr.to_string(), creds.clone());
}

/// The credentials of the cluster behind `endpoints` (comma-separated), if
/// a test registered any of them.
pub fn credentials_for(endpoints: &str) -> Option<ClusterCredentials> {
    let known = CREDENTIALS.lock().unwrap_or_else(|p| p.into_inner());
    endpoints
        .split(',')
        .find_map(|e| known.get(e.trim()).cloned())
}

/// Sets the CLI's credential variables on `cmd` for the cluster behind
/// `endpoints` (and clears any the test process inherited).
pub fn with_credentials<'a>(cmd: &'a mut Command, endpoints: &str) -> &'a mut Command {
    cmd.env_remove("BLIXARD_CA_CERT")
        .env_remove("BLIXARD_TOKEN");
    if let Some(c) = credentials_for(endpoints) {
        cmd.env("BLIXARD_CA_CERT", &c.ca_cert)
            .env("BLIXARD_TOKEN", c.token());
    }
    cmd
}

/// Runs `blixard --json` against `endpoints` with the credentials of the
/// cluster behind them (see `start_cluster`).
pub fn cli(endpoints: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(blixard_bin());
    with_credentials(&mut cmd, endpoints);
    cmd.arg("--endpoint")
        .arg(endpoints)
        .arg("--json")
        .args(args)
        .env_remove("BLIXARD_ENDPOINT")
        .output()
        .expect("run blixard")
}

/// Credentials a test hands the CLI itself (`cli_as`), to try others than
/// the cluster's admin token.
#[derive(Debug, Clone, Copy, Default)]
pub struct As<'a> {
    pub ca_cert: Option<&'a Path>,
    pub token: Option<&'a str>,
    pub token_file: Option<&'a Path>,
    /// Human output instead of `--json`.
    pub human: bool,
}

/// Runs `blixard` against `endpoints` with exactly the credentials `who`
/// names.
pub fn cli_as(endpoints: &str, who: As<'_>, args: &[&str]) -> Output {
    let mut cmd = Command::new(blixard_bin());
    cmd.env_remove("BLIXARD_CA_CERT")
        .env_remove("BLIXARD_TOKEN")
        .env_remove("BLIXARD_ENDPOINT")
        .arg("--endpoint")
        .arg(endpoints);
    if !who.human {
        cmd.arg("--json");
    }
    if let Some(ca) = who.ca_cert {
        cmd.env("BLIXARD_CA_CERT", ca);
    }
    if let Some(token) = who.token {
        cmd.env("BLIXARD_TOKEN", token);
    }
    if let Some(file) = who.token_file {
        cmd.arg("--token-file").arg(file);
    }
    cmd.args(args).output().expect("run blixard")
}

/// A one-time join token and the CA fingerprint, made through the member
/// at `seed` with the cluster's admin token (the CLI, as an operator would).
pub fn join_token(seed: &str) -> (String, String) {
    eventually(Duration::from_secs(30), "a join token", || {
        let out = cli(seed, &["cluster", "join-token", "create"]);
        if !out.status.success() {
            return None;
        }
        let v = json_of(&out);
        Some((
            v["token"].as_str()?.to_string(),
            v["ca_fingerprint"].as_str()?.to_string(),
        ))
    })
}

pub fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {:?} stderr {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub fn vm_names(endpoint: &str) -> Option<BTreeSet<String>> {
    let out = cli(endpoint, &["--local", "vm", "list"]);
    if !out.status.success() {
        return None;
    }
    let v = json_of(&out);
    Some(
        v.as_array()?
            .iter()
            .filter_map(|vm| vm["name"].as_str().map(str::to_string))
            .collect(),
    )
}

/// Starts a 3-node cluster of `blixardd` processes under `root` (node 1
/// bootstraps with `--init`, the others join it with join tokens made by
/// the CLI with node 1's admin token), with `backend` flags on each; returns
/// the daemons and the comma-separated endpoint list once all three are
/// voters. `cli` then uses node 1's CA and admin token for these endpoints.
pub fn start_cluster(root: &Path, backend: &[&str]) -> (Vec<Daemon>, String) {
    let mut first = vec!["--init"];
    first.extend_from_slice(backend);
    let mut daemons = vec![Daemon::start(1, &root.join("n1"), "127.0.0.1:0", &first)];
    let seed = daemons[0].addr.clone();
    let creds = ClusterCredentials::of_init_node(&daemons[0].dir);
    register_credentials(&seed, &creds);
    for id in 2..=3 {
        let (token, fingerprint) = join_token(&seed);
        let mut args = vec![
            "--join",
            seed.as_str(),
            "--join-token",
            token.as_str(),
            "--ca-fingerprint",
            fingerprint.as_str(),
        ];
        args.extend_from_slice(backend);
        let daemon = Daemon::start(id, &root.join(format!("n{id}")), "127.0.0.1:0", &args);
        register_credentials(&daemon.addr, &creds);
        daemons.push(daemon);
    }
    let all: String = daemons
        .iter()
        .map(|d| d.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    eventually(Duration::from_secs(60), "three voters", || {
        let out = cli(&all, &["cluster", "status"]);
        let v = json_of(&out);
        let voters = v["members"]
            .as_array()?
            .iter()
            .filter(|m| m["voter"] == true)
            .count();
        (out.status.success() && voters == 3 && v["leader_id"].as_u64()? != 0).then_some(())
    });
    // Voters are not yet hosts: each node's agent registers its record
    // after joining, and tests (a backup, a placement) need all three.
    eventually(Duration::from_secs(60), "three registered nodes", || {
        let out = cli(&all, &["node", "list"]);
        let n = json_of(&out).as_array().map_or(0, Vec::len);
        (out.status.success() && n == 3).then_some(())
    });
    (daemons, all)
}

/// The hosts (node dirs `nN`) that run a process of VM `name` right now,
/// from each process's environment (the runner and its children carry it).
pub fn hosts_running(root: &Path, name: &str) -> BTreeSet<u64> {
    let mut hosts = BTreeSet::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return hosts;
    };
    let want_name = format!("BLIXARD_VM_NAME={name}");
    for p in procs.flatten() {
        let Ok(env) = std::fs::read(p.path().join("environ")) else {
            continue;
        };
        let vars: Vec<String> = env
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if !vars.contains(&want_name) {
            continue;
        }
        let Some(dir) = vars.iter().find_map(|v| v.strip_prefix("BLIXARD_VM_DIR=")) else {
            continue;
        };
        let Ok(rel) = Path::new(dir).strip_prefix(root) else {
            continue;
        };
        if let Some(id) = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str()?.strip_prefix('n')?.parse().ok())
        {
            hosts.insert(id);
        }
    }
    hosts
}

/// Samples, every 10 ms on a thread of its own, the hosts that run VM
/// `name` (the sampling period, not a wait for a condition).
pub struct HostSampler {
    samples: std::sync::Arc<std::sync::Mutex<Vec<BTreeSet<u64>>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl HostSampler {
    pub fn start(root: &Path, name: &str) -> Self {
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            let (root, name) = (root.to_path_buf(), name.to_string());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let hosts = hosts_running(&root, &name);
                    samples.lock().expect("samples").push(hosts);
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Self {
            samples,
            stop,
            thread,
        }
    }

    /// Stops sampling; panics if any sample saw the VM on two hosts.
    pub fn finish_never_on_two_hosts(self) -> Vec<BTreeSet<u64>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("sampler");
        let samples = std::mem::take(&mut *self.samples.lock().expect("samples"));
        assert!(
            samples.iter().all(|s| s.len() <= 1),
            "a VM ran on two hosts at once: {:?}",
            samples.iter().find(|s| s.len() > 1)
        );
        samples
    }
}

/// The pid of daemon `id`'s process.
pub fn daemon_pid(daemons: &[Daemon], id: u64) -> i32 {
    daemons
        .iter()
        .find(|d| d.id == id)
        .and_then(|d| d.child.as_ref())
        .map(|c| c.id() as i32)
        .expect("a running daemon with that id")
}

/// The endpoints of every daemon but `id`.
pub fn endpoints_except(daemons: &[Daemon], id: u64) -> String {
    daemons
        .iter()
        .filter(|d| d.id != id)
        .map(|d| d.addr.clone())
        .collect::<Vec<_>>()
        .join(",")
}
