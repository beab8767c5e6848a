//! `blixard dev`: a local cluster of real `blixardd` processes on
//! 127.0.0.1 for trying Blixard out. Node 1 bootstraps, the others join it;
//! Ctrl-C stops all of them (SIGTERM, then SIGKILL after a grace period).
//! Run again on the same data dir and the nodes come back with their state.
//!
//! Secure by default, as a real cluster: node 1 starts with `--init`
//! (creating the cluster CA and the bootstrap admin token in its data
//! dir), and each new node joins with a one-time join token this command
//! creates through node 1 with that admin token. The console it opens, and
//! the commands it suggests, use node 1's CA and admin token (the global
//! `--ca-cert`/`--token-file` are not used here). `--insecure` runs every
//! node with `--insecure` instead: plaintext, no tokens.

use super::exit::ExitCode;
use super::CliError;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::cluster_service_client::ClusterServiceClient;
use blixard_shared::{BlixardClient, Credentials};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the cluster may take to form.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often a stopping node is checked for having exited.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How often the forming cluster is asked for its status.
const FORM_POLL: Duration = Duration::from_millis(200);
/// Default gRPC port of node 1 (the CLI's default endpoint).
const DEFAULT_BASE_PORT: u16 = 7001;
/// Default number of nodes: the smallest cluster that survives a failure.
const DEFAULT_NODES: u64 = 3;
/// Most nodes a dev cluster runs (all of them voters).
const MAX_DEV_NODES: u64 = 5;
/// One past the highest TCP port.
const PORT_LIMIT: u32 = 65_536;
/// Time allowed to open a connection to a node while the cluster forms.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Lifetime of the join tokens `dev` makes: each is used at once.
const JOIN_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
/// The cluster CA certificate under a node's data dir (written by `--init`
/// and by a first `--join`).
const CA_CERT_FILE: &str = "tls/ca.pem";
/// The bootstrap admin token under node 1's data dir (written by `--init`).
const ADMIN_TOKEN_FILE: &str = "admin.token";
/// A node's Raft and state database under its data dir: there when the
/// node has run before.
const DB_FILE: &str = "blixard.redb";
/// The environment variable `blixardd` reads `--join-token` from.
const JOIN_TOKEN_ENV: &str = "BLIXARD_JOIN_TOKEN";

/// Options of `blixard dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory holding each node's data dir and log.
    #[arg(long, default_value = ".blixard-dev")]
    data_dir: PathBuf,
    /// gRPC port of node 1; node N listens on base_port + N - 1.
    #[arg(long, default_value_t = DEFAULT_BASE_PORT)]
    base_port: u16,
    /// Number of nodes (1 to 5).
    #[arg(long, default_value_t = DEFAULT_NODES, value_parser = clap::value_parser!(u64).range(1..=MAX_DEV_NODES))]
    nodes: u64,
    /// Delete the data dir first and start an empty cluster.
    #[arg(long)]
    fresh: bool,
    /// Do not open the console; print the endpoints and wait for Ctrl-C.
    #[arg(long)]
    pub no_console: bool,
    /// Path of the blixardd binary (default: beside this binary, built through cargo when run by cargo).
    #[arg(long, env = "BLIXARDD")]
    blixardd: Option<PathBuf>,
    /// Run every node with --insecure: plaintext gRPC and no tokens (anyone who reaches the ports owns the cluster).
    #[arg(long)]
    insecure: bool,
}

/// The `blixardd` binary to run: given, or beside this executable. When run
/// through `cargo run`, build it first so the two never disagree.
fn find_blixardd(given: Option<PathBuf>) -> Result<PathBuf, CliError> {
    if let Some(p) = given {
        return Ok(p);
    }
    let exe = std::env::current_exe()
        .map_err(|e| CliError::other(format!("cannot locate this binary: {e}")))?;
    let dir = exe
        .parent()
        .ok_or_else(|| CliError::other("this binary has no directory"))?;
    if let Ok(cargo) = std::env::var("CARGO") {
        let release = dir.ends_with("release");
        let mut cmd = Command::new(cargo);
        // Not --quiet: cargo's own progress (its bar on a terminal, a
        // line per crate elsewhere) shows that the first build, minutes
        // long, is moving.
        cmd.args([
            "build",
            "-p",
            "blixard-daemon",
            "--bin",
            "blixardd",
            "--bin",
            "blixard-fence",
        ]);
        if release {
            cmd.arg("--release");
        }
        eprintln!(
            "building blixardd and blixard-fence (the first build takes minutes; cargo shows its progress) ..."
        );
        let status = cmd
            .status()
            .map_err(|e| CliError::other(format!("cannot run cargo to build blixardd: {e}")))?;
        if !status.success() {
            return Err(CliError::other("building blixardd failed"));
        }
    }
    let path = dir.join("blixardd");
    if path.exists() {
        Ok(path)
    } else {
        Err(CliError::usage(format!(
            "blixardd not found at {}; build it (cargo build --bins) or pass --blixardd PATH",
            path.display()
        )))
    }
}

/// The running nodes (id and process); dropping it stops them, so an early
/// return never leaves daemons behind.
struct Nodes(Vec<(u64, Child)>);

impl Nodes {
    /// SIGTERM to every node, then SIGKILL to those still running after
    /// [`STOP_GRACE`].
    fn stop(&mut self) {
        for (id, child) in &self.0 {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill(2) with a pid we spawned and a valid signal has no memory effects.
                let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
                if rc != 0 {
                    eprintln!("node {id}: SIGTERM failed");
                }
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for (id, child) in &mut self.0 {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(STOP_POLL),
                    _ => {
                        eprintln!("node {id} did not stop in time; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        self.0.clear();
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The backend the dev nodes use, with the reason for the choice.
struct BackendChoice {
    name: &'static str,
    image_dir: Option<PathBuf>,
    why: String,
}

/// Whether an executable called `name` is in a `PATH` directory.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// QEMU with the default guest image when QEMU is installed and the image
/// exists or can be built from Debian packages; the process backend otherwise.
fn choose_backend(data: &Path) -> BackendChoice {
    if !on_path("qemu-system-x86_64") {
        return BackendChoice {
            name: "process",
            image_dir: None,
            why: "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86), so VMs with a runner only".into(),
        };
    }
    let images = data.join("images");
    if !images.join("default").join("initrd.img").is_file() {
        let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/guest/build.sh");
        eprintln!("building the default guest image (kernel and busybox from Debian packages) ...");
        let built = Command::new("bash")
            .arg(&recipe)
            .arg(&images)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !built {
            return BackendChoice {
                name: "process",
                image_dir: None,
                why: format!(
                    "the default guest image could not be built with {} (needs busybox-static, lz4 and apt access)",
                    recipe.display()
                ),
            };
        }
    }
    BackendChoice {
        name: "qemu",
        image_dir: Some(images),
        why: "QEMU microVMs with the default guest image".into(),
    }
}

/// How a node starts.
enum Start {
    /// Bootstrap a new cluster (`--init`).
    Init,
    /// Join the member on port `seed` (`--join`), with a join token and the
    /// CA fingerprint when the cluster is secured.
    Join {
        /// Port of the member to join through.
        seed: u16,
        /// Join token and CA fingerprint (secure clusters).
        proof: Option<JoinProof>,
    },
    /// Come back on its data dir (neither flag: the node knows its cluster).
    Restart,
}

/// What a new node of a secured cluster joins with.
struct JoinProof {
    /// The one-time join token (a secret: never printed).
    token: String,
    /// The cluster CA's fingerprint the node checks before trusting it.
    ca_fingerprint: String,
}

/// A node's data dir under the dev data dir.
fn node_dir(data: &Path, id: u64) -> PathBuf {
    data.join(format!("node-{id}"))
}

/// Starts node `id` on `port` as `start` says (with `--insecure` when
/// `insecure`); its output goes to `node-ID.log` in the data dir.
fn spawn_node(
    bin: &Path,
    data: &Path,
    id: u64,
    port: u16,
    start: &Start,
    backend: &BackendChoice,
    insecure: bool,
) -> Result<Child, CliError> {
    let dir = node_dir(data, id);
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::other(format!("cannot create {}: {e}", dir.display())))?;
    let log_path = data.join(format!("node-{id}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| CliError::other(format!("cannot open {}: {e}", log_path.display())))?;
    let log2 = log
        .try_clone()
        .map_err(|e| CliError::other(format!("cannot open {}: {e}", log_path.display())))?;
    let mut cmd = Command::new(bin);
    // Only a joining node gets a join token (below).
    cmd.env_remove(JOIN_TOKEN_ENV);
    cmd.arg("--node-id")
        .arg(id.to_string())
        .arg("--data-dir")
        .arg(&dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--backend")
        .arg(backend.name)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    if let Some(images) = &backend.image_dir {
        cmd.arg("--image-dir").arg(images);
    }
    cmd.arg("--allowed-runner-dir").arg(runner_dir(data)?);
    if insecure {
        cmd.arg("--insecure");
    }
    match start {
        Start::Init => {
            cmd.arg("--init");
        }
        Start::Join { seed, proof } => {
            cmd.arg("--join").arg(format!("127.0.0.1:{seed}"));
            if let Some(p) = proof {
                // `--join-token` through its environment variable: a
                // command line is readable by every local user (`ps`).
                cmd.env(JOIN_TOKEN_ENV, &p.token)
                    .arg("--ca-fingerprint")
                    .arg(&p.ca_fingerprint);
            }
        }
        Start::Restart => {}
    }
    tracing::debug!(node = id, port, insecure, "starting a dev node");
    cmd.spawn()
        .map_err(|e| CliError::other(format!("cannot start {}: {e}", bin.display())))
}

/// Fails when a node has exited, naming it (its log says why).
fn check_alive(nodes: &mut Nodes) -> Result<(), CliError> {
    for (id, child) in &mut nodes.0 {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(CliError::other(format!(
                "node {id} exited ({status}); see its log in the data dir"
            )));
        }
    }
    Ok(())
}

/// `DATA/runners`, created and absolute: the one directory the dev nodes
/// run VM runners (and kernels outside the image dir) from, since what a VM
/// may run on a host is the host operator's decision (`allowed_runner_dirs`).
fn runner_dir(data: &Path) -> Result<PathBuf, CliError> {
    let dir = data.join("runners");
    std::fs::create_dir_all(&dir)
        .and_then(|()| dir.canonicalize())
        .map_err(|e| CliError::other(format!("cannot create {}: {e}", dir.display())))
}

/// Waits until some node reports a leader and `want` voters, failing early
/// when a node exits and with `Unavailable` after [`FORM_TIMEOUT`].
async fn wait_for_members(
    endpoints: &[String],
    want: usize,
    nodes: &mut Nodes,
    credentials: &Credentials,
) -> Result<pb::ClusterStatus, CliError> {
    let deadline = Instant::now() + FORM_TIMEOUT;
    let mut last_err = String::new();
    loop {
        check_alive(nodes)?;
        for ep in endpoints {
            let Ok(ch) = blixard_tui::connect::lazy_channel(ep, credentials, CONNECT_TIMEOUT)
            else {
                continue;
            };
            match ClusterServiceClient::new(ch)
                .get_status(pb::GetStatusRequest {
                    consistency: pb::Consistency::Local as i32,
                })
                .await
            {
                Ok(s) => {
                    let s = s.into_inner();
                    let voters = s.members.iter().filter(|m| m.voter).count();
                    if s.leader_id != 0 && voters >= want {
                        return Ok(s);
                    }
                    last_err = format!("{voters} of {want} voters so far");
                }
                // Includes `Unauthenticated` while node 1 is still
                // registering its admin token.
                Err(e) => last_err = e.message().to_string(),
            }
        }
        if Instant::now() > deadline {
            return Err(CliError::new(
                ExitCode::Unavailable,
                format!("the cluster did not form within {FORM_TIMEOUT:?}: {last_err}"),
            ));
        }
        tokio::time::sleep(FORM_POLL).await;
    }
}

/// Node 1's CA and admin token, once its `--init` has written them (or
/// at once on a restart), failing early when a node exits.
async fn admin_credentials(data: &Path, nodes: &mut Nodes) -> Result<Credentials, CliError> {
    let dir = node_dir(data, 1);
    let (ca, token_file) = (dir.join(CA_CERT_FILE), dir.join(ADMIN_TOKEN_FILE));
    let deadline = Instant::now() + FORM_TIMEOUT;
    loop {
        check_alive(nodes)?;
        // The token file is created, then written: wait for its line.
        let written = ca.is_file()
            && Credentials::read_token_file(&token_file).is_ok_and(|t| !t.expose().is_empty());
        if written {
            let token = Credentials::read_token_file(&token_file)?;
            return Ok(Credentials::from_ca_file(&ca)?.token(&token)?);
        }
        if Instant::now() > deadline {
            return Err(CliError::new(
                ExitCode::Unavailable,
                format!(
                    "node 1 did not write {} and {} within {FORM_TIMEOUT:?}; see its log in the data dir",
                    ca.display(),
                    token_file.display()
                ),
            ));
        }
        tokio::time::sleep(FORM_POLL).await;
    }
}

/// A one-time join token for a new node, made through the started members
/// with the admin token.
async fn join_proof(
    endpoints: &[String],
    credentials: &Credentials,
) -> Result<JoinProof, CliError> {
    let resp = BlixardClient::new(endpoints)?
        .with_credentials(credentials.clone())
        .create_join_token(JOIN_TOKEN_TTL)
        .await?;
    Ok(JoinProof {
        token: resp.token,
        ca_fingerprint: resp.ca_fingerprint,
    })
}

/// Refuses data dirs a secure start would get wrong: nodes made by
/// `dev --insecure` (they have state but no CA, and would not get one), and
/// a node 1 that is gone while others remain (it would make a new CA the
/// others do not trust).
fn check_secure_restart(data: &Path, nodes: u64) -> Result<(), CliError> {
    let has_state = |id| node_dir(data, id).join(DB_FILE).exists();
    let has_ca = |id| node_dir(data, id).join(CA_CERT_FILE).exists();
    for id in 1..=nodes {
        if has_state(id) && !has_ca(id) {
            return Err(CliError::usage(format!(
                "{} was made by `blixard dev --insecure` (it has no cluster CA): run with --insecure, or --fresh to start over",
                node_dir(data, id).display()
            )));
        }
    }
    if !has_ca(1) {
        if let Some(id) = (2..=nodes).find(|&id| has_ca(id)) {
            return Err(CliError::usage(format!(
                "node 1's data is gone but {} belongs to a cluster: run with --fresh to start over",
                node_dir(data, id).display()
            )));
        }
    }
    Ok(())
}

/// `path` as a shell word: as is when it is plain, single-quoted otherwise.
fn shell_word(path: &Path) -> String {
    let s = path.display().to_string();
    let plain = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c));
    if plain && !s.is_empty() {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The lines that tell how to use the cluster from another shell (the
/// token by the file that holds it, never the secret itself).
fn usage_lines(endpoints: &[String], data: &Path, insecure: bool) -> Vec<String> {
    let mut lines = vec![
        "  use it from another shell:".to_string(),
        format!("    export BLIXARD_ENDPOINT={}", endpoints.join(",")),
    ];
    if insecure {
        lines.push("    unset BLIXARD_CA_CERT BLIXARD_TOKEN".to_string());
    } else {
        let node1 = node_dir(data, 1);
        lines.push(format!(
            "    export BLIXARD_CA_CERT={}",
            shell_word(&node1.join(CA_CERT_FILE))
        ));
        lines.push(format!(
            "    export BLIXARD_TOKEN=$(cat {})",
            shell_word(&node1.join(ADMIN_TOKEN_FILE))
        ));
    }
    lines.push("    blixard cluster status".to_string());
    lines
}

/// Runs the local cluster until Ctrl-C.
pub async fn run(args: DevArgs) -> Result<(), CliError> {
    if u32::from(args.base_port) + args.nodes as u32 > PORT_LIMIT || args.base_port == 0 {
        return Err(CliError::usage("--base-port: ports would be out of range"));
    }
    let bin = find_blixardd(args.blixardd.clone())?;
    if args.fresh && args.data_dir.exists() {
        std::fs::remove_dir_all(&args.data_dir).map_err(|e| {
            CliError::other(format!("cannot clear {}: {e}", args.data_dir.display()))
        })?;
    }
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| CliError::other(format!("cannot create {}: {e}", args.data_dir.display())))?;
    // The nodes get the dir as given (as before); what is printed is
    // absolute, so it works from any directory.
    let data = args.data_dir.clone();
    let shown = data
        .canonicalize()
        .map_err(|e| CliError::other(format!("cannot resolve {}: {e}", data.display())))?;
    if !args.insecure {
        check_secure_restart(&data, args.nodes)?;
    }
    let backend = choose_backend(&data);
    println!("backend: {} ({})", backend.name, backend.why);
    let mut nodes = Nodes(Vec::new());
    let endpoints: Vec<String> = (1..=args.nodes)
        .map(|id| format!("127.0.0.1:{}", port_of(args.base_port, id)))
        .collect();
    let credentials = if args.insecure {
        start_insecure(&args, &bin, &data, &backend, &mut nodes)?;
        Credentials::insecure()
    } else {
        start_secure(&args, &bin, &data, &backend, &mut nodes, &endpoints).await?
    };
    let status =
        wait_for_members(&endpoints, args.nodes as usize, &mut nodes, &credentials).await?;
    println!(
        "Blixard dev cluster is up: {} nodes, leader node {}",
        args.nodes, status.leader_id
    );
    println!("  endpoints: {}", endpoints.join(","));
    println!("  data and logs: {}", shown.display());
    println!(
        "  vm runners: only from {}",
        runner_dir(&args.data_dir)?.display()
    );
    if args.insecure {
        println!("  security: INSECURE (--insecure): plaintext, no tokens");
    } else {
        println!(
            "  security: TLS with the cluster CA ({}), admin token in {}",
            status.ca_fingerprint,
            node_dir(&shown, 1).join(ADMIN_TOKEN_FILE).display()
        );
    }
    for line in usage_lines(&endpoints, &shown, args.insecure) {
        println!("{line}");
    }
    let result = if console_wanted(&args) {
        // The console runs until the operator quits it; then the cluster stops.
        blixard_tui::console::run(endpoints.clone(), false, credentials)
            .await
            .map_err(|e| CliError::other(format!("console: {e}")))
    } else {
        println!("Press Ctrl-C to stop the cluster.");
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| CliError::other(format!("waiting for Ctrl-C: {e}")))
    };
    eprintln!("stopping the cluster ...");
    nodes.stop();
    let stopped = stop_leftover_vms(&data);
    if stopped > 0 {
        eprintln!("stopped {stopped} VM processes (they start again with the cluster)");
    }
    result
}

/// The gRPC port of node `id`.
fn port_of(base_port: u16, id: u64) -> u16 {
    // `run` checked that every node's port fits.
    base_port.saturating_add(u16::try_from(id - 1).unwrap_or(u16::MAX))
}

/// `--insecure`: every node at once, node 1 bootstrapping and the others
/// joining it (both flags are ignored by a node that has run before).
fn start_insecure(
    args: &DevArgs,
    bin: &Path,
    data: &Path,
    backend: &BackendChoice,
    nodes: &mut Nodes,
) -> Result<(), CliError> {
    for id in 1..=args.nodes {
        let start = if id == 1 {
            Start::Init
        } else {
            Start::Join {
                seed: args.base_port,
                proof: None,
            }
        };
        let port = port_of(args.base_port, id);
        nodes
            .0
            .push((id, spawn_node(bin, data, id, port, &start, backend, true)?));
    }
    Ok(())
}

/// Secure: node 1 (bootstrapping when new) and every node that has run
/// before start first; once there is a leader, each new node gets a join
/// token made with node 1's admin token, and joins with it. Returns the
/// admin credentials.
async fn start_secure(
    args: &DevArgs,
    bin: &Path,
    data: &Path,
    backend: &BackendChoice,
    nodes: &mut Nodes,
    endpoints: &[String],
) -> Result<Credentials, CliError> {
    let has_ca = |id| node_dir(data, id).join(CA_CERT_FILE).exists();
    let mut started = Vec::new();
    let mut new_nodes = Vec::new();
    for id in 1..=args.nodes {
        let start = match (id, has_ca(id)) {
            (_, true) => Start::Restart,
            (1, false) => Start::Init,
            (_, false) => {
                new_nodes.push(id);
                continue;
            }
        };
        let port = port_of(args.base_port, id);
        nodes
            .0
            .push((id, spawn_node(bin, data, id, port, &start, backend, false)?));
        started.extend(endpoints.get(id as usize - 1).cloned());
    }
    let credentials = admin_credentials(data, nodes).await?;
    if new_nodes.is_empty() {
        return Ok(credentials);
    }
    // Join tokens are made by the leader.
    wait_for_members(&started, 1, nodes, &credentials).await?;
    for id in new_nodes {
        let proof = join_proof(&started, &credentials).await?;
        let start = Start::Join {
            seed: args.base_port,
            proof: Some(proof),
        };
        let port = port_of(args.base_port, id);
        nodes
            .0
            .push((id, spawn_node(bin, data, id, port, &start, backend, false)?));
    }
    Ok(credentials)
}

/// VMs outlive their daemon by design; a dev cluster should not. Sends
/// SIGTERM to every VM process recorded under the dev data dir whose command
/// line still names that dir, and returns how many it signalled.
fn stop_leftover_vms(data: &Path) -> usize {
    let Ok(data) = data.canonicalize() else {
        return 0;
    };
    let needle = data.to_string_lossy().into_owned();
    let mut stopped = 0;
    let Ok(nodes) = std::fs::read_dir(&data) else {
        return 0;
    };
    for node in nodes.flatten() {
        let Ok(vms) = std::fs::read_dir(node.path().join("vms")) else {
            continue;
        };
        for vm in vms.flatten() {
            let Ok(text) = std::fs::read_to_string(vm.path().join("meta.json")) else {
                continue;
            };
            let Some(pid) = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["pid"].as_u64())
                .and_then(|p| i32::try_from(p).ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !String::from_utf8_lossy(&cmdline).contains(&needle) {
                continue;
            }
            // SAFETY: kill(2) with plain integers has no memory effects.
            if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
                stopped += 1;
            }
        }
    }
    stopped
}

/// Whether `dev` opens the console: not when asked not to, and not when
/// there is no terminal to draw on.
pub fn console_wanted(args: &DevArgs) -> bool {
    use std::io::IsTerminal;
    !args.no_console && std::io::stdout().is_terminal() && std::io::stdin().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usage_lines_name_files_never_secrets() {
        let eps = vec!["127.0.0.1:7001".to_string(), "127.0.0.1:7002".to_string()];
        let lines = usage_lines(&eps, Path::new("/tmp/dev"), false).join("\n");
        assert!(lines.contains("export BLIXARD_ENDPOINT=127.0.0.1:7001,127.0.0.1:7002"));
        assert!(lines.contains("export BLIXARD_CA_CERT=/tmp/dev/node-1/tls/ca.pem"));
        assert!(lines.contains("export BLIXARD_TOKEN=$(cat /tmp/dev/node-1/admin.token)"));
        let insecure = usage_lines(&eps, Path::new("/tmp/dev"), true).join("\n");
        assert!(!insecure.contains("BLIXARD_CA_CERT=") && insecure.contains("unset"));
    }

    #[test]
    fn odd_paths_are_quoted_for_the_shell() {
        assert_eq!(shell_word(Path::new("/a/b.pem")), "/a/b.pem");
        assert_eq!(shell_word(Path::new("/my dir/x")), "'/my dir/x'");
        assert_eq!(shell_word(Path::new("/it's")), "'/it'\\''s'");
    }

    #[test]
    fn restarts_that_cannot_work_securely_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path();
        // Fresh: fine.
        assert!(check_secure_restart(data, 3).is_ok());
        // Made by --insecure: state, no CA.
        std::fs::create_dir_all(node_dir(data, 1)).unwrap();
        std::fs::write(node_dir(data, 1).join(DB_FILE), "").unwrap();
        let e = check_secure_restart(data, 3).unwrap_err();
        assert!(e.to_string().contains("--insecure"), "{e}");
        // Node 1 gone, node 2 secured.
        std::fs::remove_dir_all(node_dir(data, 1)).unwrap();
        std::fs::create_dir_all(node_dir(data, 2).join("tls")).unwrap();
        std::fs::write(node_dir(data, 2).join(CA_CERT_FILE), "").unwrap();
        let e = check_secure_restart(data, 3).unwrap_err();
        assert!(e.to_string().contains("--fresh"), "{e}");
    }
}
