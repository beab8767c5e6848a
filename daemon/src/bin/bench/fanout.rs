//! `bench fanout`: time from a write's acknowledgement to its event reaching
//! each of many watchers, spread over the three members of a cluster of
//! `blixardd` processes.

use super::cluster::{self, Security};
use super::write_bench::percentile;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::watch_service_client::WatchServiceClient;
use color_eyre::eyre::{bail, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;

/// Runs the fan-out benchmark and prints Markdown.
pub async fn run(watchers: usize, writes: usize, security: Security) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let blixard = cluster::start(tmp.path(), 3, security, &[]).await?;
    let addrs = blixard.addrs();
    let mut client = blixard.client()?;
    let leader = client
        .status(pb::Consistency::Linearizable)
        .await?
        .leader_address;
    client
        .create_vm(super::write_bench::parked_vm("fanout"))
        .await?;
    let start_rev = client
        .get_vm("fanout", pb::Consistency::Linearizable)
        .await?
        .revision;

    // revision -> arrival instants, one per watcher.
    let arrivals: Arc<Mutex<HashMap<u64, Vec<Instant>>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..watchers {
        let addr = addrs[w % addrs.len()].clone();
        let arrivals = arrivals.clone();
        let mut stream = WatchServiceClient::new(cluster::channel(&addr, &blixard.creds)?)
            .watch(pb::WatchRequest {
                from_revision: start_rev,
                from_oldest: false,
            })
            .await?
            .into_inner();
        tasks.push(tokio::spawn(async move {
            while let Some(Ok(resp)) = stream.next().await {
                if let Some(e) = resp.event {
                    let now = Instant::now();
                    arrivals
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(e.revision)
                        .or_default()
                        .push(now);
                }
            }
        }));
    }

    // Sequential writes; remember when each was acknowledged.
    let mut acked = Vec::new();
    let mut vms = blixard_shared::BlixardClient::new([leader.as_str()])?
        .with_credentials(blixard.creds.clone());
    for i in 0..writes {
        let vm = if i % 2 == 0 {
            vms.start_vm("fanout").await?
        } else {
            vms.stop_vm("fanout").await?
        };
        acked.push((vm.revision, Instant::now()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Wait until every watcher has every event (bounded).
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let complete = {
            let a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
            acked
                .iter()
                .all(|(rev, _)| a.get(rev).is_some_and(|v| v.len() == watchers))
        };
        if complete {
            break;
        }
        if Instant::now() > end {
            bail!("not every watcher received every event within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        t.abort();
    }
    let a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
    let mut lat: Vec<f64> = Vec::new();
    for (rev, at) in &acked {
        for arrival in a.get(rev).into_iter().flatten() {
            // A watcher can see the event before the writer sees its ack.
            let ms = if arrival > at {
                arrival.duration_since(*at).as_secs_f64() * 1000.0
            } else {
                -(at.duration_since(*arrival).as_secs_f64() * 1000.0)
            };
            lat.push(ms);
        }
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "### Watch fan-out ({}): {watchers} watchers over 3 members, {writes} writes",
        security.label()
    );
    println!();
    println!("| measure | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!(
        "| write acknowledged to event delivered (ms; negative: delivered first) | {:.2} | {:.2} | {:.2} |",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}
