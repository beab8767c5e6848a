//! `bench write`: the write path against etcd, same machine, same run, with
//! and without TLS.
//!
//! Blixard: three `blixardd` processes (process backend, fsync on every
//! commit as always) on 127.0.0.1; each client owns one VM and flips its
//! desired state (`StopVm`/`StartVm`), one committed Raft entry per call, sent
//! to the leader. etcd: three `etcd` members on 127.0.0.1 (default
//! durability: fsync of the WAL before acknowledging); each client puts a
//! 128-byte value under its own key, sent to the leader. Same concurrency,
//! same duration.
//!
//! Security (`--tls`): "TLS" is Blixard as it ships (TLS, the admin token
//! on every call) beside etcd with client TLS and peer mutual TLS (see
//! `etcd.rs`); "plaintext" is Blixard `--insecure` beside etcd over http.
//! With `--tls both` all four clusters run for the whole run, and at each
//! client count the four configurations are measured one after another
//! (Blixard TLS, etcd TLS, Blixard plaintext, etcd plaintext), so a drift
//! in the host's speed lands on all of them alike rather than on whichever
//! configuration ran in a slow minute.

use super::cluster::{self, Cluster, Security};
use super::etcd::{self, Etcd};
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::vm_service_client::VmServiceClient;
use color_eyre::eyre::Result;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which security configurations `bench write` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Tls {
    /// TLS and plaintext, interleaved, and what TLS costs each system.
    Both,
    /// TLS only.
    On,
    /// Plaintext only (Blixard `--insecure`, etcd over http).
    Off,
}

impl Tls {
    /// The configurations, in the order each client count measures them.
    fn securities(self) -> &'static [Security] {
        match self {
            Self::Both => &[Security::Secured, Security::Insecure],
            Self::On => &[Security::Secured],
            Self::Off => &[Security::Insecure],
        }
    }
}

/// A stopped image VM: on process-backend nodes it is never placed, so each
/// update of it is exactly one Raft entry with no agent work.
pub(crate) fn parked_vm(name: &str) -> pb::CreateVmRequest {
    pb::CreateVmRequest {
        name: name.to_string(),
        spec: Some(pb::VmSpec {
            vcpus: 1,
            memory_mib: 64,
            ..Default::default()
        }),
        stopped: true,
    }
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Throughput (ops/s), p50 and p99 latency (ms).
struct Stats {
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

/// Runs `clients` loops of `op` for `seconds` and summarises them.
async fn drive<F, Fut>(clients: usize, seconds: u64, op: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                if op(c, i).await {
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors += 1;
                }
                i += 1;
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Stats {
        ops_per_s: all.len() as f64 / elapsed,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
        errors,
    }
}

/// One security configuration's clusters, started once and kept for the
/// whole run.
struct Side {
    security: Security,
    blixard: Cluster,
    /// The Blixard leader's address: writes go there, as a client that
    /// follows leader hints would send them.
    leader: String,
    /// etcd and its leader's address, when etcd is installed.
    etcd: Option<(Etcd, String)>,
}

/// Starts one configuration's clusters under `root` and creates the VMs
/// the clients flip.
async fn start_side(
    root: &Path,
    security: Security,
    max_clients: usize,
    etcd_bin: Option<&Path>,
) -> Result<Side> {
    let tag = match security {
        Security::Secured => "tls",
        Security::Insecure => "plain",
    };
    let blixard = cluster::start(&root.join(format!("blixard-{tag}")), 3, security, &[]).await?;
    let mut client = blixard.client()?;
    let leader = client
        .status(pb::Consistency::Linearizable)
        .await?
        .leader_address;
    for c in 0..max_clients {
        client.create_vm(parked_vm(&format!("w-{c}"))).await?;
    }
    let etcd = match etcd_bin {
        Some(bin) => {
            let mut etcd = etcd::start(bin, &root.join(format!("etcd-{tag}")), security)?;
            let leader = etcd.leader().await?;
            Some((etcd, leader))
        }
        None => None,
    };
    Ok(Side {
        security,
        blixard,
        leader,
        etcd,
    })
}

/// `n` Blixard clients flipping their VMs on `side` for `seconds`.
async fn blixard_point(side: &Side, n: usize, seconds: u64) -> Result<Stats> {
    // One connection shared by the clients, as before TLS (HTTP/2 streams).
    let ch = cluster::channel(&side.leader, &side.blixard.creds)?;
    Ok(drive(n, seconds, move |c, i| {
        let ch = ch.clone();
        async move {
            let name = format!("w-{c}");
            let mut vms = VmServiceClient::new(ch);
            if i % 2 == 0 {
                vms.start_vm(pb::StartVmRequest { name }).await.is_ok()
            } else {
                vms.stop_vm(pb::StopVmRequest { name }).await.is_ok()
            }
        }
    })
    .await)
}

/// `n` etcd clients putting their keys on `side`'s etcd for `seconds`.
async fn etcd_point(side: &Side, n: usize, seconds: u64) -> Result<Option<Stats>> {
    let Some((etcd, leader)) = &side.etcd else {
        return Ok(None);
    };
    let ch = etcd::channel(leader, etcd.tls.as_ref())?;
    let value = vec![b'x'; 128];
    Ok(Some(
        drive(n, seconds, move |c, _| {
            let ch = ch.clone();
            let req = etcd::PutRequest {
                key: format!("w-{c}").into_bytes(),
                value: value.clone(),
            };
            async move {
                etcd::grpc_unary::<_, etcd::PutResponse>(ch, "/etcdserverpb.KV/Put", req)
                    .await
                    .is_ok()
            }
        })
        .await,
    ))
}

/// `a / b` as a throughput ratio.
fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}x", a / b)
}

/// One configuration's results at one client count.
struct Point {
    clients: usize,
    security: Security,
    blixard: Stats,
    etcd: Option<Stats>,
}

impl Point {
    /// Its row of the main table.
    fn row(&self) -> String {
        let b = &self.blixard;
        let (eo, e50, e99, versus) = match &self.etcd {
            Some(e) => (
                format!("{:.0}", e.ops_per_s),
                format!("{:.2}", e.p50_ms),
                format!("{:.2}", e.p99_ms),
                ratio(b.ops_per_s, e.ops_per_s),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {eo} | {e50} | {e99} | {versus} |",
            self.clients,
            self.security.label(),
            b.ops_per_s,
            b.p50_ms,
            b.p99_ms
        )
    }
}

/// The TLS cost table: each system's throughput with TLS over its
/// throughput in plaintext, at each client count both were measured at.
fn print_tls_cost(points: &[Point]) {
    println!();
    println!("TLS cost (throughput with TLS / plaintext, same client count):");
    println!();
    println!("| clients | Blixard | etcd |");
    println!("|---|---|---|");
    for tls in points.iter().filter(|p| p.security == Security::Secured) {
        let plain = points
            .iter()
            .find(|p| p.clients == tls.clients && p.security == Security::Insecure);
        let Some(plain) = plain else { continue };
        let etcd = match (&tls.etcd, &plain.etcd) {
            (Some(t), Some(p)) => ratio(t.ops_per_s, p.ops_per_s),
            _ => "-".into(),
        };
        println!(
            "| {} | {} | {etcd} |",
            tls.clients,
            ratio(tls.blixard.ops_per_s, plain.blixard.ops_per_s)
        );
    }
}

/// Runs the write benchmark and prints Markdown.
pub async fn run(clients: Vec<usize>, seconds: u64, etcd_bin: PathBuf, tls: Tls) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let max_clients = clients.iter().copied().max().unwrap_or(1);
    let etcd_bin = if etcd_bin.exists() {
        Some(etcd_bin.as_path())
    } else {
        eprintln!(
            "etcd not found at {}: measuring Blixard only",
            etcd_bin.display()
        );
        None
    };
    let mut sides = Vec::new();
    for &security in tls.securities() {
        sides.push(start_side(tmp.path(), security, max_clients, etcd_bin).await?);
    }

    println!(
        "### Write path ({} s per point, 3 nodes on 127.0.0.1, fsync on)",
        seconds
    );
    println!();
    println!(
        "TLS: Blixard secured (TLS, admin token on every call), etcd with client TLS (no client certificates, auth off) and peer mutual TLS; plaintext: Blixard `--insecure`, etcd over http. Throughput ratio: Blixard / etcd in the same configuration."
    );
    println!();
    println!("| clients | security | Blixard ops/s | p50 ms | p99 ms | etcd ops/s | p50 ms | p99 ms | throughput ratio |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut points = Vec::new();
    for &n in &clients {
        for side in &sides {
            let blixard = blixard_point(side, n, seconds).await?;
            let etcd = etcd_point(side, n, seconds).await?;
            let point = Point {
                clients: n,
                security: side.security,
                blixard,
                etcd,
            };
            println!("{}", point.row());
            let etcd_errors = point.etcd.as_ref().map_or(0, |e| e.errors);
            if point.blixard.errors > 0 || etcd_errors > 0 {
                eprintln!(
                    "errors at {n} clients, {}: blixard {}, etcd {etcd_errors}",
                    side.security.label(),
                    point.blixard.errors
                );
            }
            points.push(point);
        }
    }
    if tls == Tls::Both {
        print_tls_cost(&points);
    }
    Ok(())
}
