//! `bench`: Blixard's benchmark harness. Results go to stdout as Markdown
//! for `docs/benchmarks.md`; the exact command is printed with them.
//!
//! Subcommands: `write`, `failover`, `fanout`, `recovery`, `idle`,
//! `placement` (each in its own module) and `microvm`.
//!
//! Every mode runs its clusters secured, as `blixardd` ships (TLS, a token
//! on every call; see `cluster.rs`); `--insecure` runs them with
//! `--insecure` instead, so either can be measured. `write --tls both`
//! measures both in one run.
//!
//! `bench microvm [--vms N] [--raw N] [--density-max N]` measures, on a
//! one-node cluster started in this process with the QEMU backend:
//! - time from `CreateVm` returning to the guest's readiness line on its
//!   console (median, p95), one VM at a time;
//! - the raw boot time of the same QEMU command line started by hand;
//! - how many idle 128 MiB guests the host keeps running at once;
//! - the daemon's memory per running VM (RSS growth / VMs).

use blixard_daemon::backend::qemu::{AccelChoice, QemuBackend};
use blixard_daemon::config::{BackendKind, Config};
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::vm_service_client::VmServiceClient;
use clap::{Parser, Subcommand};
use cluster::Security;
use color_eyre::eyre::{bail, eyre, Result, WrapErr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "bench", about = "Blixard benchmarks")]
struct Args {
    #[command(subcommand)]
    which: Which,
}

#[derive(Subcommand)]
enum Which {
    /// The cost of one authorization decision (Cedar, default policies) and of the gate's token hash.
    Authz {
        /// Decisions to time per case.
        #[arg(long, default_value_t = 100_000)]
        iterations: usize,
    },
    /// Watch fan-out: write acknowledged to event delivered at many watchers.
    Fanout {
        /// Concurrent watchers, spread over the three members.
        #[arg(long, default_value_t = 100)]
        watchers: usize,
        /// Writes to time.
        #[arg(long, default_value_t = 200)]
        writes: usize,
        /// Run the cluster with --insecure (plaintext, no tokens).
        #[arg(long)]
        insecure: bool,
    },
    /// Failover: kill -9 of the leader to the next acknowledged write, beside etcd.
    Failover {
        /// Runs per system.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// The etcd binary; the etcd side is skipped when missing.
        #[arg(long, default_value = "/usr/bin/etcd")]
        etcd: PathBuf,
        /// Run Blixard with --insecure and etcd over http (default: TLS on both).
        #[arg(long)]
        insecure: bool,
    },
    /// Write path: committed VM updates per second and latency on a 3-node
    /// cluster of blixardd processes, beside a 3-member etcd doing puts,
    /// with TLS and in plaintext.
    Write {
        /// Concurrent clients, comma-separated.
        #[arg(long, default_value = "1,16,64", value_delimiter = ',')]
        clients: Vec<usize>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The etcd binary (Debian's etcd-server); the etcd side is skipped when missing.
        #[arg(long, default_value = "/usr/bin/etcd")]
        etcd: PathBuf,
        /// Security of both systems: both (TLS and plaintext, interleaved,
        /// with the cost of TLS), on (TLS only) or off (plaintext only).
        #[arg(long, value_enum, default_value_t = write_bench::Tls::Both)]
        tls: write_bench::Tls,
        /// The same as --tls off, as in the other modes.
        #[arg(long, conflicts_with = "tls")]
        insecure: bool,
    },
    /// Idle: leader changes on an idle 3-node cluster over some minutes.
    Idle {
        /// Minutes to watch.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Run the cluster with --insecure (plaintext, no tokens).
        #[arg(long)]
        insecure: bool,
    },
    /// Recovery: restart time of a node whose state holds many VMs.
    Recovery {
        /// VMs in the state.
        #[arg(long, default_value_t = 100_000)]
        vms: usize,
        /// Restarts to time.
        #[arg(long, default_value_t = 3)]
        restarts: usize,
        /// Concurrent clients filling the state.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Run the node with --insecure (plaintext, no tokens).
        #[arg(long)]
        insecure: bool,
    },
    /// Placements per second: the engine alone, and through Raft on a
    /// 3-node cluster, at 1,000 nodes and 100,000 VMs; and what passes cost
    /// the write path.
    Placement {
        /// Simulated nodes.
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// VMs placed by the engine alone.
        #[arg(long, default_value_t = 100_000)]
        vms: usize,
        /// VMs placed through Raft.
        #[arg(long, default_value_t = 100_000)]
        raft_vms: usize,
    },
    /// MicroVM boot latency, orchestration overhead, density and daemon memory.
    Microvm {
        /// VMs for the create-to-ready latency.
        #[arg(long, default_value_t = 20)]
        vms: usize,
        /// Raw QEMU boots for the baseline.
        #[arg(long, default_value_t = 10)]
        raw: usize,
        /// Most idle guests to try in the density run.
        #[arg(long, default_value_t = 60)]
        density_max: usize,
        /// Guest image dir (with default/); built with assets/guest/build.sh if missing.
        #[arg(long, default_value = "target/guest-images")]
        images: PathBuf,
        /// Run the node with --insecure (plaintext, no tokens).
        #[arg(long)]
        insecure: bool,
    },
}

mod authz;
mod cluster;
mod etcd;
mod failover;
mod fanout;
mod idle;
mod placement;
mod recovery;
mod write_bench;

use write_bench::percentile;

const READY: &str = "blixard-guest: ready";
const BOOT_DEADLINE: Duration = Duration::from_secs(120);

/// Resident memory of process `pid` ("self" for this one), in KiB (0 when
/// unreadable).
fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("VmRSS:")
                        .map(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                })
                .flatten()
        })
        .unwrap_or(0)
}

fn mem_available_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemAvailable:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .map_or(0, |kib| kib / 1024)
}

async fn wait_for_line(path: &Path, needle: &str, deadline: Duration) -> Result<Instant> {
    let end = Instant::now() + deadline;
    loop {
        if std::fs::read(path).is_ok_and(|b| String::from_utf8_lossy(&b).contains(needle)) {
            return Ok(Instant::now());
        }
        if Instant::now() > end {
            bail!(
                "{needle:?} did not appear in {} within {deadline:?}",
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn vm_record(name: &str, memory_mib: u64) -> blixard_daemon::state::VmRecord {
    blixard_daemon::state::VmRecord {
        name: name.into(),
        spec: blixard_daemon::state::VmSpec {
            vcpus: 1,
            memory_mib,
            image: "default".into(),
            ..Default::default()
        },
        desired: blixard_daemon::state::DesiredState::Running,
        node_id: 1,
        epoch: 1,
        state: blixard_daemon::state::VmState::Pending,
        reason: String::new(),
        created_at_ms: 0,
        updated_at_ms: 0,
        revision: 0,
        restart_nonce: 0,
        moving: None,
        trace_parent: String::new(),
        observed: Default::default(),
    }
}

fn ensure_images(images: &Path) -> Result<()> {
    if images.join("default/initrd.img").is_file() {
        return Ok(());
    }
    let status = std::process::Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/guest/build.sh"))
        .arg(images)
        .status()
        .wrap_err("running assets/guest/build.sh")?;
    if !status.success() {
        bail!("building the guest image failed");
    }
    Ok(())
}

async fn raw_boots(images: &Path, n: usize, tmp: &Path) -> Result<Vec<f64>> {
    std::fs::create_dir_all(tmp)?;
    let backend = QemuBackend::new(tmp, images.to_path_buf(), None, AccelChoice::Auto)
        .map_err(|e| eyre!("qemu backend: {e}"))?;
    let mut times = Vec::new();
    for i in 0..n {
        let dir = tmp.join(format!("raw-{i}"));
        std::fs::create_dir_all(&dir)?;
        let mut cmd = backend
            .command_for(&vm_record(&format!("raw-{i}"), 128), &dir)
            .map_err(|e| eyre!("{e}"))?;
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let started = Instant::now();
        let mut child = cmd.spawn().wrap_err("starting qemu")?;
        let ready = wait_for_line(&dir.join("console.log"), READY, BOOT_DEADLINE).await;
        let _ = child.kill();
        let _ = child.wait();
        times.push(ready?.duration_since(started).as_secs_f64());
    }
    Ok(times)
}

async fn microvm(
    vms: usize,
    raw: usize,
    density_max: usize,
    images: PathBuf,
    security: Security,
) -> Result<()> {
    ensure_images(&images)?;
    let images = images.canonicalize()?;
    let tmp = tempfile::tempdir()?;
    // One unmeasured boot warms the page cache (kernel, initrd, QEMU).
    raw_boots(&images, 1, &tmp.path().join("warmup")).await?;

    let data = tmp.path().join("node");
    let mut config = Config::for_node(1, &data, "127.0.0.1:0".parse()?);
    config.init = true;
    config.backend = BackendKind::Qemu;
    config.image_dir = images.clone();
    config.insecure = security == Security::Insecure;
    let node = blixard_daemon::server::start(config).await?;
    // `--init` has written the CA and the admin token by the time it serves.
    let creds = match security {
        Security::Secured => cluster::admin_credentials(&data)?,
        Security::Insecure => blixard_shared::Credentials::insecure(),
    };
    let mut client = VmServiceClient::new(cluster::channel(&node.address.to_string(), &creds)?);
    // Wait for the node to register (placement needs it).
    let end = Instant::now() + Duration::from_secs(30);
    while node.core.view.read().nodes.is_empty() {
        if Instant::now() > end {
            bail!("the node did not register");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let console = |name: &str| data.join("vms").join(name).join("console.log");
    let create = |name: String| pb::CreateVmRequest {
        name,
        spec: Some(pb::VmSpec {
            vcpus: 1,
            memory_mib: 128,
            ..Default::default()
        }),
        stopped: false,
    };

    // 1. Create-to-ready, one VM at a time, alternating with raw boots of
    //    the same command line so both see the same machine conditions.
    let mut latencies = Vec::new();
    let mut to_spawn = Vec::new();
    let mut sent_to_spawn = Vec::new();
    let mut ack_ms = Vec::new();
    let mut raw_times = Vec::new();
    for i in 0..vms.max(raw) {
        if i < raw {
            raw_times.extend(raw_boots(&images, 1, &tmp.path().join(format!("raw-{i}"))).await?);
        }
        if i >= vms {
            continue;
        }
        let name = format!("lat-{i}");
        let sent_wall = std::time::SystemTime::now();
        client.create_vm(create(name.clone())).await?;
        let returned = Instant::now();
        let returned_wall = std::time::SystemTime::now();
        ack_ms.push(
            returned_wall
                .duration_since(sent_wall)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        );
        let ready = wait_for_line(&console(&name), READY, BOOT_DEADLINE).await?;
        latencies.push(ready.duration_since(returned).as_secs_f64());
        // The backend opens the console log just before it spawns QEMU:
        // its birth time is the spawn, on the same clock as the ack.
        if let Ok(born) = std::fs::metadata(console(&name)).and_then(|m| m.created()) {
            let since = |t: std::time::SystemTime| match born.duration_since(t) {
                Ok(d) => d.as_secs_f64() * 1000.0,
                Err(e) => -e.duration().as_secs_f64() * 1000.0,
            };
            to_spawn.push(since(returned_wall));
            sent_to_spawn.push(since(sent_wall));
        }
        client
            .delete_vm(pb::DeleteVmRequest { name, force: true })
            .await?;
        // Wait until it is gone so the next boot has the machine to itself.
        let end = Instant::now() + Duration::from_secs(60);
        while data.join("vms").join(format!("lat-{i}")).exists() && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Let the agent stop and clean up before the density run.
    let end = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(data.join("vms"))
        .map(|d| d.count())
        .unwrap_or(0)
        > 0
        && Instant::now() < end
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 2. Density: idle 128 MiB guests until one fails to boot in time, memory runs low, or the cap.
    let rss_before = rss_kib("self");
    let mut running = 0usize;
    let mut stop_reason = format!("reached the cap of {density_max}");
    for i in 0..density_max {
        if mem_available_mib() < 1024 {
            stop_reason = "host memory available fell below 1 GiB".into();
            break;
        }
        let name = format!("idle-{i}");
        client.create_vm(create(name.clone())).await?;
        match wait_for_line(&console(&name), READY, BOOT_DEADLINE).await {
            Ok(_) => running += 1,
            Err(_) => {
                stop_reason = format!(
                    "guest {} did not reach readiness within {BOOT_DEADLINE:?}",
                    i + 1
                );
                break;
            }
        }
    }
    let rss_after = rss_kib("self");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let per_vm_kib = if running > 0 {
        rss_after.saturating_sub(rss_before) / running as u64
    } else {
        0
    };
    // Stop everything.
    let names: Vec<String> = node.core.view.read().vms.keys().cloned().collect();
    for name in names {
        client
            .delete_vm(pb::DeleteVmRequest { name, force: true })
            .await?;
    }
    let end = Instant::now() + Duration::from_secs(120);
    while std::fs::read_dir(data.join("vms"))
        .map(|d| d.count())
        .unwrap_or(0)
        > 0
        && Instant::now() < end
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.shutdown().await;

    let mut raw_sorted = raw_times.clone();
    raw_sorted.sort_by(f64::total_cmp);
    let mut lat_sorted = latencies.clone();
    lat_sorted.sort_by(f64::total_cmp);
    let raw_med = percentile(&raw_sorted, 0.5);
    let lat_med = percentile(&lat_sorted, 0.5);
    println!("### MicroVM runtime ({})", chrono_free_date());
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| raw QEMU boot to readiness, same command line by hand (n={raw}) | median {raw_med:.2} s, p95 {:.2} s |", percentile(&raw_sorted, 0.95));
    println!("| `CreateVm` returned to readiness line (n={vms}, one at a time) | median {lat_med:.2} s, p95 {:.2} s |", percentile(&lat_sorted, 0.95));
    println!(
        "| orchestration overhead (median difference) | {:.2} s |",
        lat_med - raw_med
    );
    for (what, v) in [
        ("`CreateVm` sent to acknowledged", &mut ack_ms),
        ("`CreateVm` sent to QEMU spawned", &mut sent_to_spawn),
        (
            "`CreateVm` acknowledged to QEMU spawned (negative: spawned before the answer arrived)",
            &mut to_spawn,
        ),
    ] {
        v.sort_by(f64::total_cmp);
        println!(
            "| {what} (n={}) | median {:.1} ms, p95 {:.1} ms |",
            v.len(),
            percentile(v, 0.5),
            percentile(v, 0.95)
        );
    }
    println!(
        "| idle 128 MiB guests running at once | {running} (stopped because: {stop_reason}) |"
    );
    println!(
        "| load average with them idle | {} |",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("| daemon RSS growth per running VM | {per_vm_kib} KiB ({rss_before} KiB before, {rss_after} KiB with {running} VMs) |");
    Ok(())
}

fn chrono_free_date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<()> {
    color_eyre::install()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BLIXARD_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Args::parse().which {
        Which::Authz { iterations } => authz::run(iterations),
        Which::Write {
            clients,
            seconds,
            etcd,
            tls,
            insecure,
        } => {
            let tls = if insecure { write_bench::Tls::Off } else { tls };
            write_bench::run(clients, seconds, etcd, tls).await
        }
        Which::Failover {
            runs,
            etcd,
            insecure,
        } => failover::run(runs, etcd, Security::from_insecure(insecure)).await,
        Which::Fanout {
            watchers,
            writes,
            insecure,
        } => fanout::run(watchers, writes, Security::from_insecure(insecure)).await,
        Which::Idle { minutes, insecure } => {
            idle::run(minutes, Security::from_insecure(insecure)).await
        }
        Which::Recovery {
            vms,
            restarts,
            clients,
            insecure,
        } => recovery::run(vms, restarts, clients, Security::from_insecure(insecure)).await,
        Which::Placement {
            nodes,
            vms,
            raft_vms,
        } => placement::run(nodes, vms, raft_vms).await,
        Which::Microvm {
            vms,
            raw,
            density_max,
            images,
            insecure,
        } => {
            let security = Security::from_insecure(insecure);
            microvm(vms, raw, density_max, images, security).await
        }
    }
}
