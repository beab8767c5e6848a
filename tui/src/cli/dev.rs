//! `blixard dev`: a local cluster of real `blixardd` processes on
//! 127.0.0.1 for trying Blixard out. Node 1 bootstraps, the others join it;
//! Ctrl-C stops all of them (SIGTERM, then SIGKILL after a grace period).
//! Run again on the same data dir and the nodes come back with their state.

use super::exit::ExitCode;
use super::CliError;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::cluster_service_client::ClusterServiceClient;
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
        cmd.args([
            "build",
            "--quiet",
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
        eprintln!("building blixardd and blixard-fence ...");
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

/// Starts node `id` on `port`: bootstrapping the cluster when `seed` is
/// `None`, joining the node on port `seed` otherwise; its output goes to
/// `node-ID.log` in the data dir.
fn spawn_node(
    bin: &Path,
    data: &Path,
    id: u64,
    port: u16,
    seed: Option<u16>,
    backend: &BackendChoice,
) -> Result<Child, CliError> {
    let dir = data.join(format!("node-{id}"));
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
    match seed {
        None => {
            cmd.arg("--init");
        }
        Some(seed) => {
            cmd.arg("--join").arg(format!("127.0.0.1:{seed}"));
        }
    }
    cmd.spawn()
        .map_err(|e| CliError::other(format!("cannot start {}: {e}", bin.display())))
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
) -> Result<pb::ClusterStatus, CliError> {
    let deadline = Instant::now() + FORM_TIMEOUT;
    let mut last_err = String::new();
    loop {
        for (id, child) in &mut nodes.0 {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(CliError::other(format!(
                    "node {id} exited ({status}); see its log in the data dir"
                )));
            }
        }
        for ep in endpoints {
            let Ok(ch) = tonic::transport::Endpoint::from_shared(format!("http://{ep}"))
                .map(|e| e.connect_lazy())
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
    let backend = choose_backend(&args.data_dir);
    println!("backend: {} ({})", backend.name, backend.why);
    let mut nodes = Nodes(Vec::new());
    let mut endpoints = Vec::new();
    for id in 1..=args.nodes {
        let port = args.base_port + (id as u16 - 1);
        let seed = (id > 1).then_some(args.base_port);
        nodes.0.push((
            id,
            spawn_node(&bin, &args.data_dir, id, port, seed, &backend)?,
        ));
        endpoints.push(format!("127.0.0.1:{port}"));
    }
    let status = wait_for_members(&endpoints, args.nodes as usize, &mut nodes).await?;
    println!(
        "Blixard dev cluster is up: {} nodes, leader node {}",
        args.nodes, status.leader_id
    );
    println!("  endpoints: {}", endpoints.join(","));
    println!("  data and logs: {}", args.data_dir.display());
    println!(
        "  vm runners: only from {}",
        runner_dir(&args.data_dir)?.display()
    );
    println!(
        "  try: BLIXARD_ENDPOINT={} blixard cluster status",
        endpoints.join(",")
    );
    let result = if console_wanted(&args) {
        // The console runs until the operator quits it; then the cluster stops.
        blixard_tui::console::run(endpoints.clone(), false)
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
    let stopped = stop_leftover_vms(&args.data_dir);
    if stopped > 0 {
        eprintln!("stopped {stopped} VM processes (they start again with the cluster)");
    }
    result
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
