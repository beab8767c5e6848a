//! `bench failover`: time from `kill -9` of the leader to the next
//! acknowledged write, for Blixard and etcd on the same machine.
//!
//! Each run: find the leader, kill it with SIGKILL, then try a write every
//! few milliseconds against the surviving members (each attempt bounded to
//! 200 ms) until one is acknowledged; the time from the kill to that
//! acknowledgement is the failover time. The killed member is restarted on
//! its data dir and the cluster is let settle before the next run.

use super::write_bench::{
    channel, etcd, etcd_leader, free_port, grpc_unary, parked_vm, percentile,
};
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::cluster_service_client::ClusterServiceClient;
use blixard_shared::proto::v1::vm_service_client::VmServiceClient;
use color_eyre::eyre::{bail, eyre, Result, WrapErr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(200);
const RETRY_PAUSE: Duration = Duration::from_millis(5);

pub(crate) struct Member {
    pub(crate) addr: String,
    cmd: Vec<String>,
    child: Option<Child>,
}

impl Member {
    fn spawn(&mut self) -> Result<()> {
        let (program, args) = self
            .cmd
            .split_first()
            .ok_or_else(|| eyre!("empty command line"))?;
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .wrap_err("spawning a member")?;
        self.child = Some(child);
        Ok(())
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub(crate) async fn blixard_members(root: &Path) -> Result<Vec<Member>> {
    let bin = super::write_bench::blixardd_bin()?;
    let mut members = Vec::new();
    for id in 1..=3u64 {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let dir = root.join(format!("f{id}"));
        std::fs::create_dir_all(&dir)?;
        let mut cmd: Vec<String> = vec![
            bin.display().to_string(),
            "--node-id".into(),
            id.to_string(),
            "--listen".into(),
            addr.clone(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--backend".into(),
            "process".into(),
            "--log".into(),
            "warn".into(),
        ];
        if id == 1 {
            cmd.push("--init".into());
        } else {
            cmd.push("--join".into());
            cmd.push(
                members
                    .first()
                    .map(|m: &Member| m.addr.clone())
                    .unwrap_or_default(),
            );
        }
        let mut m = Member {
            addr,
            cmd,
            child: None,
        };
        m.spawn()?;
        members.push(m);
    }
    Ok(members)
}

async fn blixard_write(addr: &str, i: u64) -> bool {
    let Ok(ch) = channel(addr) else { return false };
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

async fn etcd_write(addr: &str, _i: u64) -> bool {
    let Ok(ch) = channel(addr) else { return false };
    let req = etcd::PutRequest {
        key: b"failover".to_vec(),
        value: vec![b'x'; 128],
    };
    tokio::time::timeout(
        ATTEMPT_TIMEOUT,
        grpc_unary::<_, etcd::PutResponse>(ch, "/etcdserverpb.KV/Put", req),
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
async fn new_leader_known(survivors: &[String], old: &str) -> Result<Instant> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        for addr in survivors {
            let Ok(ch) = channel(addr) else { continue };
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

pub(crate) async fn blixard_leader(addrs: &[String]) -> Result<String> {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = blixard_shared::BlixardClient::new(addrs) {
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

/// Runs the failover benchmark and prints Markdown.
pub async fn run(runs: usize, etcd_bin: PathBuf) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut members = blixard_members(tmp.path()).await?;
    let addrs: Vec<String> = members.iter().map(|m| m.addr.clone()).collect();
    blixard_leader(&addrs).await?;
    let mut client = blixard_shared::BlixardClient::new(&addrs)?;
    client.create_vm(parked_vm("failover")).await?;
    let mut blixard_times = Vec::new();
    let mut election_times = Vec::new();
    for _ in 0..runs {
        let leader = blixard_leader(&addrs).await?;
        // Let the cluster settle after the previous run (followers caught up).
        until_write(
            &addrs,
            |a, i| async move { blixard_write(&a, i).await },
            Duration::from_secs(30),
        )
        .await?;
        let idx = members
            .iter()
            .position(|m| m.addr == leader)
            .ok_or_else(|| eyre!("leader {leader} is not a member"))?;
        let survivors: Vec<String> = addrs.iter().filter(|a| **a != leader).cloned().collect();
        let killed = Instant::now();
        members[idx].kill9();
        let (acked, elected) = tokio::join!(
            until_write(
                &survivors,
                |a, i| async move { blixard_write(&a, i).await },
                Duration::from_secs(30),
            ),
            new_leader_known(&survivors, &leader),
        );
        blixard_times.push(acked?.duration_since(killed).as_secs_f64());
        election_times.push(elected?.duration_since(killed).as_secs_f64());
        members[idx].spawn()?;
    }
    drop(members);

    let mut etcd_times = Vec::new();
    if etcd_bin.exists() {
        let mut emembers = Vec::new();
        for (addr, cmd) in super::write_bench::etcd_commands(&etcd_bin, tmp.path())? {
            let mut m = Member {
                addr,
                cmd,
                child: None,
            };
            m.spawn()?;
            emembers.push(m);
        }
        let eaddrs: Vec<String> = emembers.iter().map(|m| m.addr.clone()).collect();
        for _ in 0..runs {
            let leader = etcd_leader(&eaddrs).await?;
            until_write(
                &eaddrs,
                |a, i| async move { etcd_write(&a, i).await },
                Duration::from_secs(30),
            )
            .await?;
            let idx = emembers
                .iter()
                .position(|m| m.addr == leader)
                .ok_or_else(|| eyre!("etcd leader {leader} is not a member"))?;
            let survivors: Vec<String> = eaddrs.iter().filter(|a| **a != leader).cloned().collect();
            let killed = Instant::now();
            emembers[idx].kill9();
            let acked = until_write(
                &survivors,
                |a, i| async move { etcd_write(&a, i).await },
                Duration::from_secs(30),
            )
            .await?;
            etcd_times.push(acked.duration_since(killed).as_secs_f64());
            emembers[idx].spawn()?;
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
        "### Failover: kill -9 of the leader to the next acknowledged write ({runs} runs each)"
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
