//! `bench failover`: time from `kill -9` of the leader to the next
//! acknowledged write, for Blixard and etcd on the same machine.
//!
//! Each run: find the leader, kill it with SIGKILL, then try a write every
//! few milliseconds against the surviving members (each attempt bounded to
//! 200 ms) until one is acknowledged; the time from the kill to that
//! acknowledgement is the failover time. The killed member is restarted on
//! its data dir and the cluster is let settle before the next run.

use super::cluster::{self, Security};
use super::etcd;
use super::write_bench::{parked_vm, percentile};
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::cluster_service_client::ClusterServiceClient;
use blixard_shared::proto::v1::vm_service_client::VmServiceClient;
use blixard_shared::Credentials;
use color_eyre::eyre::{bail, eyre, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::transport::ClientTlsConfig;

const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(200);
const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// One write attempt on a fresh channel to `addr` (a fresh connection,
/// handshake included, as a client that failed over would make).
async fn blixard_write(addr: &str, creds: &Credentials, i: u64) -> bool {
    let Ok(ch) = cluster::channel(addr, creds) else {
        return false;
    };
    let name = "failover".to_string();
    let mut vms = VmServiceClient::new(ch);
    let call = async {
        if i % 2 == 0 {
            vms.start_vm(pb::StartVmRequest { name }).await.is_ok()
        } else {
            vms.stop_vm(pb::StopVmRequest { name }).await.is_ok()
        }
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, call)
        .await
        .unwrap_or(false)
}

/// One etcd write attempt on a fresh channel to `addr`, as [`blixard_write`].
async fn etcd_write(addr: &str, tls: Option<&ClientTlsConfig>, _i: u64) -> bool {
    let Ok(ch) = etcd::channel(addr, tls) else {
        return false;
    };
    let req = etcd::PutRequest {
        key: b"failover".to_vec(),
        value: vec![b'x'; 128],
    };
    tokio::time::timeout(
        ATTEMPT_TIMEOUT,
        etcd::grpc_unary::<_, etcd::PutResponse>(ch, "/etcdserverpb.KV/Put", req),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}

/// Writes round-robin over `addrs` until one is acknowledged.
async fn until_write<F, Fut>(addrs: &[String], write: F, limit: Duration) -> Result<Instant>
where
    F: Fn(String, u64) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + limit;
    let mut i = 0u64;
    loop {
        let addr = addrs[i as usize % addrs.len()].clone();
        if write(addr, i).await {
            return Ok(Instant::now());
        }
        i += 1;
        if Instant::now() > end {
            bail!("no write was acknowledged within {limit:?}");
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// When a survivor first names a leader other than `old` (local status
/// reads every few milliseconds).
async fn new_leader_known(survivors: &[String], old: &str, creds: &Credentials) -> Result<Instant> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        for addr in survivors {
            let Ok(ch) = cluster::channel(addr, creds) else {
                continue;
            };
            let mut c = ClusterServiceClient::new(ch);
            let req = pb::GetStatusRequest::default();
            if let Ok(Ok(s)) = tokio::time::timeout(ATTEMPT_TIMEOUT, c.get_status(req)).await {
                let s = s.into_inner();
                if s.leader_id != 0 && s.leader_address != old {
                    return Ok(Instant::now());
                }
            }
        }
        if Instant::now() > end {
            bail!("no new leader within 30 s");
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

pub(crate) async fn blixard_leader(addrs: &[String], creds: &Credentials) -> Result<String> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(c) = blixard_shared::BlixardClient::new(addrs) {
            let mut c = c.with_credentials(creds.clone());
            if let Ok(s) = c.status(pb::Consistency::Linearizable).await {
                if s.leader_id != 0 && s.members.iter().filter(|m| m.voter).count() == 3 {
                    return Ok(s.leader_address);
                }
            }
        }
        if Instant::now() > end {
            bail!("no blixard leader with three voters");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the failover benchmark and prints Markdown. Secured, etcd runs
/// with TLS too (see `etcd.rs`): each attempt after the kill opens a new
/// connection, so both systems pay the handshake alike.
pub async fn run(runs: usize, etcd_bin: PathBuf, security: Security) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut blixard = cluster::start(&tmp.path().join("blixard"), 3, security, &[]).await?;
    let addrs = blixard.addrs();
    let creds = blixard.creds.clone();
    let creds = &creds;
    blixard.client()?.create_vm(parked_vm("failover")).await?;
    let mut blixard_times = Vec::new();
    let mut election_times = Vec::new();
    for _ in 0..runs {
        let leader = blixard_leader(&addrs, creds).await?;
        // Let the cluster settle after the previous run (followers caught up).
        until_write(
            &addrs,
            |a, i| async move { blixard_write(&a, creds, i).await },
            Duration::from_secs(30),
        )
        .await?;
        let idx = blixard
            .members
            .iter()
            .position(|m| m.addr == leader)
            .ok_or_else(|| eyre!("leader {leader} is not a member"))?;
        let survivors: Vec<String> = addrs.iter().filter(|a| **a != leader).cloned().collect();
        let killed = Instant::now();
        blixard.members[idx].kill9();
        let (acked, elected) = tokio::join!(
            until_write(
                &survivors,
                |a, i| async move { blixard_write(&a, creds, i).await },
                Duration::from_secs(30),
            ),
            new_leader_known(&survivors, &leader, creds),
        );
        blixard_times.push(acked?.duration_since(killed).as_secs_f64());
        election_times.push(elected?.duration_since(killed).as_secs_f64());
        blixard.members[idx].spawn()?;
    }
    drop(blixard);

    let mut etcd_times = Vec::new();
    if etcd_bin.exists() {
        let mut etcd = etcd::start(&etcd_bin, &tmp.path().join("etcd"), security)?;
        let eaddrs = etcd.addrs();
        let tls = etcd.tls.clone();
        let tls = tls.as_ref();
        for _ in 0..runs {
            let leader = etcd.leader().await?;
            until_write(
                &eaddrs,
                |a, i| async move { etcd_write(&a, tls, i).await },
                Duration::from_secs(30),
            )
            .await?;
            let idx = etcd
                .members
                .iter()
                .position(|m| m.addr == leader)
                .ok_or_else(|| eyre!("etcd leader {leader} is not a member"))?;
            let survivors: Vec<String> = eaddrs.iter().filter(|a| **a != leader).cloned().collect();
            let killed = Instant::now();
            etcd.members[idx].kill9();
            let acked = until_write(
                &survivors,
                |a, i| async move { etcd_write(&a, tls, i).await },
                Duration::from_secs(30),
            )
            .await?;
            etcd_times.push(acked.duration_since(killed).as_secs_f64());
            etcd.members[idx].spawn()?;
        }
    } else {
        eprintln!(
            "etcd not found at {}: measuring Blixard only",
            etcd_bin.display()
        );
    }

    let summary = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            "-".to_string()
        } else {
            format!(
                "median {:.2} s, max {:.2} s",
                percentile(v, 0.5),
                v.last().copied().unwrap_or(f64::NAN)
            )
        }
    };
    println!(
        "### Failover: kill -9 of the leader to the next acknowledged write ({runs} runs each, {})",
        match security {
            Security::Secured => "TLS on both systems",
            Security::Insecure => "plaintext: Blixard --insecure, etcd over http",
        }
    );
    println!();
    println!("| system | failover |");
    println!("|---|---|");
    let (emin, emax) = blixard_daemon::config::DEFAULT_ELECTION_TIMEOUT_MS;
    println!(
        "| Blixard (heartbeat {} ms, election timeout {emin}-{emax} ms staggered by node id, pre-vote) | {} |",
        blixard_daemon::config::DEFAULT_HEARTBEAT_MS,
        summary(&mut blixard_times)
    );
    println!(
        "| Blixard, kill to a survivor naming the new leader | {} |",
        summary(&mut election_times)
    );
    println!(
        "| etcd (defaults: election timeout 1000 ms) | {} |",
        summary(&mut etcd_times)
    );
    Ok(())
}
