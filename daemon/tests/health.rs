//! A node tells the truth about itself (issue "Safety", finding 5): health
//! and readiness follow the node's view of its cluster, and a node whose
//! Raft stops is fatal, not a zombie that says SERVING for ever.

mod common;

use common::*;
use std::time::Duration;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// `grpc.health.v1` status of the whole server on node `i` (1 serving,
/// 2 not serving), `None` when it cannot be asked.
async fn health(cluster: &TestCluster, i: usize) -> Option<i32> {
    HealthClient::new(cluster.channel(i))
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

/// HTTP status of `path` on node `i`'s metrics port.
async fn probe(cluster: &TestCluster, i: usize, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = cluster.nodes[i].handle.as_ref()?.metrics_address?;
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.ok()?;
    let mut body = String::new();
    conn.read_to_string(&mut body).await.ok()?;
    body.split_whitespace().nth(1)?.parse().ok()
}

fn with_metrics(c: &mut blixard_daemon::config::Config) {
    c.metrics_listen = Some(([127, 0, 0, 1], 0).into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_lost_its_quorum_says_not_serving_and_recovers() {
    let mut cluster = TestCluster::start_with(3, with_metrics).await;
    for i in 0..3 {
        eventually(Duration::from_secs(10), "serving", || async {
            (health(&cluster, i).await == Some(1)).then_some(())
        })
        .await;
    }
    assert_eq!(probe(&cluster, 0, "/readyz").await, Some(200));
    assert_eq!(probe(&cluster, 0, "/healthz").await, Some(200));
    let survivor = cluster.leader().await;
    let others: Vec<usize> = (0..3).filter(|i| *i != survivor).collect();
    for i in &others {
        cluster.stop(*i).await;
    }
    eventually(
        Duration::from_secs(15),
        "not serving without a quorum",
        || async { (health(&cluster, survivor).await == Some(2)).then_some(()) },
    )
    .await;
    assert_eq!(probe(&cluster, survivor, "/readyz").await, Some(503));
    assert_eq!(
        probe(&cluster, survivor, "/healthz").await,
        Some(200),
        "alive, only not ready"
    );
    for i in &others {
        cluster.restart(*i).await;
    }
    eventually(Duration::from_secs(20), "serving again", || async {
        (health(&cluster, survivor).await == Some(1)).then_some(())
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_raft_stops_fails_instead_of_living_on() {
    let cluster = TestCluster::start_with(1, with_metrics).await;
    let handle = cluster.nodes[0].handle.as_ref().expect("running");
    handle.core.raft.shutdown().await.expect("raft stops");
    let why = tokio::time::timeout(Duration::from_secs(10), handle.fatal())
        .await
        .expect("the node reports itself failed");
    assert!(!why.is_empty());
    eventually(Duration::from_secs(5), "healthz says so", || async {
        (probe(&cluster, 0, "/healthz").await == Some(503)).then_some(())
    })
    .await;
    cluster.shutdown().await;
}
