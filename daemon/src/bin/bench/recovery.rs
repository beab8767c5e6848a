//! `bench recovery`: restart time of a node whose state holds many VMs.
//!
//! A one-node cluster (a `blixardd` process) is filled with `--vms` VMs
//! (created stopped, so nothing runs), then killed with SIGKILL and started
//! again on its data dir, `--restarts` times. Reported per restart: time
//! from spawn to the ready file (listening), and to the first linearizable
//! read of the last VM created (state loaded from the snapshot and the log
//! replayed, leadership regained); the daemon's RSS after recovery; the
//! size of its redb file.

use super::cluster::{self, Member, Security};
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::cluster_service_client::ClusterServiceClient;
use blixard_shared::proto::v1::vm_service_client::VmServiceClient;
use blixard_shared::Credentials;
use color_eyre::eyre::{bail, eyre, Result};
use std::path::{Path, PathBuf};
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

/// Waits for the restarted node's ready file (polled every 2 ms: this is
/// the "to listening" time), failing when it exits first.
async fn until_ready(node: &mut Member) -> Result<()> {
    let ready = node
        .ready_file()
        .ok_or_else(|| eyre!("the node has no ready file"))?
        .to_path_buf();
    let start = Instant::now();
    while !ready.exists() {
        if let Some(status) = node.exited()? {
            return Err(node.exit_error(status));
        }
        if start.elapsed() > DEADLINE {
            bail!("blixardd not ready after {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

async fn until_readable(addr: &str, creds: &Credentials, name: &str) -> Result<()> {
    let start = Instant::now();
    let ch = cluster::channel(addr, creds)?;
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
async fn fill(
    addr: &str,
    creds: &Credentials,
    vms: usize,
    clients: usize,
    runner: &Path,
) -> Result<Vec<f64>> {
    let runner = runner.display().to_string();
    let ch = cluster::channel(addr, creds)?;
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

pub async fn run(vms: usize, restarts: usize, clients: usize, security: Security) -> Result<()> {
    if vms == 0 {
        bail!("--vms must be at least 1");
    }
    let tmp = tempfile::tempdir()?;
    let runners = tmp.path().join("runners");
    let runner = write_runner(&runners)?;
    let extra = [
        "--allowed-runner-dir".to_string(),
        runners.display().to_string(),
    ];
    let mut blixard = cluster::start(&tmp.path().join("blixard"), 1, security, &extra).await?;
    let creds = blixard.creds.clone();
    let node = blixard
        .members
        .first_mut()
        .ok_or_else(|| eyre!("the cluster has no node"))?;
    let addr = node.addr.clone();
    let t = Instant::now();
    let latencies = fill(&addr, &creds, vms, clients, &runner).await?;
    let fill_s = t.elapsed().as_secs_f64();
    let pct = |p| super::write_bench::percentile(&latencies, p);
    let last = format!("r-{}", vms - 1);
    let status = ClusterServiceClient::new(cluster::channel(&addr, &creds)?)
        .get_status(pb::GetStatusRequest::default())
        .await?
        .into_inner();
    let rss_before = node.pid().map_or(0.0, rss_mib);
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
        node.kill9();
        let size = std::fs::metadata(node.dir.join("blixard.redb"))
            .map(|m| m.len() as f64 / (1 << 20) as f64)
            .unwrap_or(0.0);
        let start = Instant::now();
        // The same command line: `--init` is ignored on a data dir that
        // belongs to a cluster, and a secured node re-issues its certificate.
        node.spawn()?;
        until_ready(node).await?;
        let listening = start.elapsed().as_secs_f64();
        until_readable(&addr, &creds, &last).await?;
        let readable = start.elapsed().as_secs_f64();
        totals.push(readable);
        println!(
            "| {r} | {listening:.2} | {readable:.2} | {:.0} | {size:.0} |",
            node.pid().map_or(0.0, rss_mib)
        );
    }
    drop(blixard);
    totals.sort_by(|a, b| a.total_cmp(b));
    println!();
    println!(
        "median restart to first linearizable read: {:.2} s",
        super::write_bench::percentile(&totals, 0.5)
    );
    Ok(())
}
