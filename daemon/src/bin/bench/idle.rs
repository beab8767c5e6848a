//! `bench idle`: spurious leader changes on an idle cluster. Three
//! `blixardd` processes sit idle for `--minutes`; their term is read every
//! second, and every change of term or leader is reported.

use super::cluster::{self, Security};
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::cluster_service_client::ClusterServiceClient;
use color_eyre::eyre::{bail, Result};
use std::time::{Duration, Instant};

pub async fn run(minutes: u64, security: Security) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let blixard = cluster::start(tmp.path(), 3, security, &[]).await?;
    let addrs = blixard.addrs();
    super::failover::blixard_leader(&addrs, &blixard.creds).await?;
    let start = Instant::now();
    let end = start + Duration::from_secs(minutes * 60);
    let mut last: Option<(u64, u64)> = None;
    let mut changes = Vec::new();
    let mut samples = 0u64;
    while Instant::now() < end {
        let mut seen = None;
        for addr in &addrs {
            let mut c = ClusterServiceClient::new(cluster::channel(addr, &blixard.creds)?);
            let req = pb::GetStatusRequest {
                consistency: pb::Consistency::Local as i32,
            };
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), c.get_status(req)).await
            {
                let s = s.into_inner();
                seen = seen.max(Some((s.term, s.leader_id)));
            }
        }
        let Some(now) = seen else {
            bail!("no member answered");
        };
        if let Some(prev) = last {
            if prev != now {
                changes.push(format!(
                    "{:.0} s: term {} leader {} -> term {} leader {}",
                    start.elapsed().as_secs_f64(),
                    prev.0,
                    prev.1,
                    now.0,
                    now.1
                ));
            }
        }
        last = Some(now);
        samples += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "### Idle cluster ({}): {minutes} min, {samples} samples, {} leader changes",
        security.label(),
        changes.len()
    );
    for c in changes {
        println!("- {c}");
    }
    Ok(())
}
