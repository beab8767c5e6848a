//! `bench recovery`: restart time of a node whose state holds many VMs.
//!
//! A one-node cluster (a `blixardd` process) is filled with `--vms` VMs
//! (created stopped, so nothing runs), then killed with SIGKILL and started
//! again on its data dir, `--restarts` times. Reported per restart: time
//! from spawn to the ready file (listening), and to the first linearizable
//! read of the last VM created (state loaded from the snapshot and the log
//! replayed, leadership regained); the daemon's RSS after recovery; the
//! size of its redb file.

use super::write_bench::{blixardd_bin, channel, free_port};
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::cluster_service_client::ClusterServiceClient;
use blixard_shared::proto::v1::vm_service_client::VmServiceClient;
use color_eyre::eyre::{bail, eyre, Result, WrapErr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(600);

/// The VMs' runner, in a dir of its own the node allows (the VMs are
/// created stopped, so it never runs).
fn write_runner(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let runner = dir.join("sleep.sh");
    std::fs::write(&runner, "#!/bin/sh\nexec sleep infinity\n")?;
    std::fs::set_permissions(&runner, std::fs::Permissions::from_mode(0o755))?;
    Ok(runner)
}

fn spawn(bin: &Path, dir: &Path, addr: &str, init: bool) -> Result<Child> {
    let _ = std::fs::remove_file(dir.join("ready.json"));
    let mut cmd = Command::new(bin);
    cmd.args(["--node-id", "1", "--listen", addr, "--backend", "process"])
        .args(["--log", "warn"])
        .arg("--allowed-runner-dir")
        .arg(runner_dir(dir))
        .arg("--data-dir")
        .arg(dir)
        .arg("--ready-file")
        .arg(dir.join("ready.json"));
    if init {
        cmd.arg("--init");
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .wrap_err("spawning blixardd")
}

/// Where the runner of the node in `dir` lives.
fn runner_dir(dir: &Path) -> PathBuf {
    dir.with_file_name("runners")
}

async fn until_ready(dir: &Path, child: &mut Child) -> Result<()> {
    let start = Instant::now();
    while !dir.join("ready.json").exists() {
        if let Some(status) = child.try_wait()? {
            bail!("blixardd exited while starting: {status}");
        }
        if start.elapsed() > DEADLINE {
            bail!("blixardd not ready after {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

async fn until_readable(addr: &str, name: &str) -> Result<()> {
    let start = Instant::now();
    let ch = channel(addr)?;
    loop {
        let mut vms = VmServiceClient::new(ch.clone());
        let req = pb::GetVmRequest {
            name: name.to_string(),
            consistency: pb::Consistency::Linearizable as i32,
        };
        if vms.get_vm(req).await.is_ok() {
            return Ok(());
        }
        if start.elapsed() > DEADLINE {
            bail!("{name} not readable after {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Creates the VMs; returns every create's latency in ms, sorted (the
/// slowest show the stalls, such as snapshots of the growing fleet).
async fn fill(addr: &str, vms: usize, clients: usize, runner: &Path) -> Result<Vec<f64>> {
    let runner = runner.display().to_string();
    let ch = channel(addr)?;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (ch, runner) = (ch.clone(), runner.clone());
        tasks.push(tokio::spawn(async move {
            let mut api = VmServiceClient::new(ch);
            let mut latencies = Vec::with_capacity(vms / clients + 1);
            for i in (c..vms).step_by(clients) {
                let req = pb::CreateVmRequest {
                    name: format!("r-{i}"),
                    spec: Some(pb::VmSpec {
                        vcpus: 1,
                        memory_mib: 64,
                        runner: runner.clone(),
                        ..Default::default()
                    }),
                    stopped: true,
                };
                let mut tries = 0;
                let started = Instant::now();
                while let Err(e) = api.create_vm(req.clone()).await {
                    tries += 1;
                    if tries > 20 {
                        return Err(eyre!("creating r-{i}: {e}"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, color_eyre::Report>(latencies)
        }));
    }
    let mut all = Vec::with_capacity(vms);
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_by(|a, b| a.total_cmp(b));
    Ok(all)
}

fn rss_mib(pid: u32) -> f64 {
    super::rss_kib(&pid.to_string()) as f64 / 1024.0
}

pub async fn run(vms: usize, restarts: usize, clients: usize) -> Result<()> {
    if vms == 0 {
        bail!("--vms must be at least 1");
    }
    let bin = blixardd_bin()?;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("node");
    std::fs::create_dir_all(&dir)?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let runner = write_runner(&runner_dir(&dir))?;
    let mut child = spawn(&bin, &dir, &addr, true)?;
    until_ready(&dir, &mut child).await?;
    let t = Instant::now();
    let latencies = fill(&addr, vms, clients, &runner).await?;
    let fill_s = t.elapsed().as_secs_f64();
    let pct = |p| super::write_bench::percentile(&latencies, p);
    let last = format!("r-{}", vms - 1);
    let status = ClusterServiceClient::new(channel(&addr)?)
        .get_status(pb::GetStatusRequest::default())
        .await?
        .into_inner();
    let rss_before = rss_mib(child.id());
    println!(
        "filled {vms} VMs in {fill_s:.1} s ({:.0} creates/s, {clients} clients); applied index {}, snapshot index {}, RSS {rss_before:.0} MiB",
        vms as f64 / fill_s,
        status.applied_index,
        status.snapshot_index
    );
    println!(
        "create latency: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        pct(0.5),
        pct(0.99),
        pct(0.999),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    println!();
    println!("| restart | to listening (s) | to first linearizable read (s) | RSS after (MiB) | redb file (MiB) |");
    println!("|---|---|---|---|---|");
    let mut totals = Vec::new();
    for r in 1..=restarts {
        let _ = child.kill();
        let _ = child.wait();
        let size = std::fs::metadata(dir.join("blixard.redb"))
            .map(|m| m.len() as f64 / (1 << 20) as f64)
            .unwrap_or(0.0);
        let start = Instant::now();
        child = spawn(&bin, &dir, &addr, false)?;
        until_ready(&dir, &mut child).await?;
        let listening = start.elapsed().as_secs_f64();
        until_readable(&addr, &last).await?;
        let readable = start.elapsed().as_secs_f64();
        totals.push(readable);
        println!(
            "| {r} | {listening:.2} | {readable:.2} | {:.0} | {size:.0} |",
            rss_mib(child.id())
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    totals.sort_by(|a, b| a.total_cmp(b));
    println!();
    println!(
        "median restart to first linearizable read: {:.2} s",
        super::write_bench::percentile(&totals, 0.5)
    );
    Ok(())
}
