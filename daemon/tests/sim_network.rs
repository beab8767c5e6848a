//! In-process clusters on the simulated network (`sim::net`): three real
//! nodes (openraft, redb, the API, the scheduler, the agent) whose gRPC
//! travels through in-memory pipes the test cuts and heals. A leader cut
//! off from the others loses its leadership to a new one, a write through
//! the majority commits while the old leader cannot commit, and after the
//! heal the old leader catches up. No network namespaces, no root; once on
//! real time and once on tokio's paused clock.

mod common;

use blixard_daemon::backend::fake::FakeBackend;
use blixard_daemon::config::Config;
use blixard_daemon::server::{start, NodeHandle};
use blixard_daemon::sim::clock::SimClock;
use blixard_daemon::sim::disk::SimDisk;
use blixard_daemon::sim::host::SimHost;
use blixard_daemon::sim::net::SimNet;
use blixard_daemon::transport::Transport;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::cluster_service_client::ClusterServiceClient;
use blixard_shared::proto::v1::vm_service_client::VmServiceClient;
use common::{create_req, eventually};
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

fn address(id: u64) -> SocketAddr {
    SocketAddr::from(([10, 77, 0, id as u8], 7000))
}

/// A client channel to node `id` over `net`.
fn channel(net: &SimNet, id: u64) -> Channel {
    Endpoint::from_shared(format!("http://{}", address(id)))
        .expect("endpoint")
        .timeout(Duration::from_secs(5))
        .connect_with_connector_lazy(net.connector(net.client_address()))
}

struct SimCluster {
    net: SimNet,
    nodes: Vec<Option<NodeHandle>>,
    configs: Vec<Config>,
    disks: Vec<SimDisk>,
    _tmp: tempfile::TempDir,
}

impl SimCluster {
    async fn start(n: u64) -> Self {
        let tmp = tempfile::tempdir().expect("tmp");
        let net = SimNet::new();
        let (mut nodes, mut configs, mut disks) = (Vec::new(), Vec::new(), Vec::new());
        for id in 1..=n {
            let mut config = Config::for_node(id, &tmp.path().join(format!("n{id}")), address(id));
            config.transport = Transport::Sim(net.clone());
            config.insecure = true;
            let disk = SimDisk::new();
            config.sim = Some(SimHost {
                disk: disk.clone(),
                clock: SimClock::new(0, 0),
                backend: Arc::new(FakeBackend::default()),
            });
            nodes.push(Some(start(config.clone()).await.expect("node starts")));
            configs.push(config);
            disks.push(disk);
        }
        let members: BTreeMap<u64, BasicNode> = (1..=n)
            .map(|id| (id, BasicNode::new(address(id).to_string())))
            .collect();
        nodes[0]
            .as_ref()
            .expect("node 1")
            .core
            .raft
            .initialize(members)
            .await
            .expect("initialize");
        Self {
            net,
            nodes,
            configs,
            disks,
            _tmp: tmp,
        }
    }

    /// Stops node `id` and cuts its power: what its disk had not synced
    /// is lost. The stop is clean (an in-process node cannot yet be killed
    /// mid-step), so this shows a restart from the disk alone, not yet a
    /// crash that loses acknowledged-but-unsynced writes.
    async fn crash(&mut self, id: u64) {
        let i = (id - 1) as usize;
        if let Some(node) = self.nodes[i].take() {
            node.shutdown().await;
        }
        self.disks[i].crash();
    }

    /// Starts node `id` again on its disk.
    async fn restart(&mut self, id: u64) {
        let i = (id - 1) as usize;
        let node = start(self.configs[i].clone()).await.expect("node restarts");
        self.nodes[i] = Some(node);
    }

    /// The leader node `id` reports from its local state, if any.
    async fn leader_seen_by(&self, id: u64) -> Option<(u64, u64)> {
        let status = ClusterServiceClient::new(channel(&self.net, id))
            .get_status(pb::GetStatusRequest {
                consistency: pb::Consistency::Local as i32,
            })
            .await
            .ok()?
            .into_inner();
        (status.leader_id != 0).then_some((status.leader_id, status.term))
    }

    async fn shutdown(self) {
        for node in self.nodes.into_iter().flatten() {
            node.shutdown().await;
        }
    }
}

async fn local_vm_names(net: &SimNet, id: u64) -> Option<Vec<String>> {
    let vms = VmServiceClient::new(channel(net, id))
        .list_vms(pb::ListVmsRequest {
            consistency: pb::Consistency::Local as i32,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner()
        .vms;
    Some(vms.into_iter().map(|v| v.name).collect())
}

/// Creates stopped VM `name` through node `id`, retrying until it commits.
async fn create_through(net: &SimNet, id: u64, name: &str) {
    eventually(
        Duration::from_secs(30),
        &format!("{name} created through node {id}"),
        || async {
            VmServiceClient::new(channel(net, id))
                .create_vm(stopped(name))
                .await
                .ok()
        },
    )
    .await;
}

fn stopped(name: &str) -> pb::CreateVmRequest {
    let mut req = create_req(name);
    req.stopped = true;
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_leader_is_replaced_and_catches_up_after_the_heal() {
    leader_cut_off_and_healed().await;
}

/// The same on one thread with tokio's clock paused: time moves only when
/// every task waits, so the election timeouts, the lease and every
/// deadline run on simulated time (the first step towards the seeded
/// simulator; the log writer's thread and blocking tasks still run on
/// real time, so runs are not yet replayable).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_same_on_simulated_time() {
    let wall = std::time::Instant::now();
    let simulated = tokio::time::Instant::now();
    leader_cut_off_and_healed().await;
    eprintln!(
        "simulated {:?} in {:?} of wall time",
        simulated.elapsed(),
        wall.elapsed()
    );
}

async fn leader_cut_off_and_healed() {
    let mut cluster = SimCluster::start(3).await;
    let (leader, term) = eventually(Duration::from_secs(30), "a leader all agree on", || async {
        let seen = [
            cluster.leader_seen_by(1).await?,
            cluster.leader_seen_by(2).await?,
            cluster.leader_seen_by(3).await?,
        ];
        seen.iter().all(|s| s.0 == seen[0].0).then_some(seen[0])
    })
    .await;
    let net = cluster.net.clone();
    let net = &net;
    create_through(net, leader, "before").await;

    // The leader is cut off from both followers.
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    net.partition(
        &[address(leader)],
        &others.iter().map(|id| address(*id)).collect::<Vec<_>>(),
    );
    let (new_leader, new_term) = eventually(
        Duration::from_secs(30),
        "the majority to elect a new leader",
        || async {
            let a = cluster.leader_seen_by(others[0]).await?;
            let b = cluster.leader_seen_by(others[1]).await?;
            (a == b && a.0 != leader).then_some(a)
        },
    )
    .await;
    assert!(new_term > term);
    create_through(net, new_leader, "during").await;
    // The old leader cannot commit anything on its own.
    let lonely = VmServiceClient::new(channel(net, leader))
        .create_vm(stopped("lonely"))
        .await;
    assert!(lonely.is_err(), "a minority commits nothing: {lonely:?}");
    assert!(
        !local_vm_names(net, leader)
            .await
            .unwrap_or_default()
            .contains(&"during".to_string()),
        "the cut-off node cannot have seen the majority's write"
    );

    net.heal();
    eventually(
        Duration::from_secs(30),
        "the old leader to catch up",
        || async {
            let names = local_vm_names(net, leader).await?;
            (names.contains(&"before".to_string()) && names.contains(&"during".to_string()))
                .then_some(())
        },
    )
    .await;
    let names = local_vm_names(net, leader).await.expect("list");
    assert!(!names.contains(&"lonely".to_string()), "{names:?}");

    // The old leader stops, loses power, and comes back on what its disk
    // synced: the state it had is there.
    cluster.crash(leader).await;
    cluster.restart(leader).await;
    eventually(
        Duration::from_secs(30),
        "the restarted node to serve its state",
        || async {
            let names = local_vm_names(net, leader).await?;
            (names.contains(&"before".to_string()) && names.contains(&"during".to_string()))
                .then_some(())
        },
    )
    .await;
    assert!(
        cluster.disks.iter().all(|d| d.syncs() > 0),
        "state lives on the sim disks"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_one_way_cut_refuses_new_connections_in_that_direction_only() {
    let net = SimNet::new();
    let (a, b) = (address(1), address(2));
    let mut incoming = net.bind(b).expect("bind");
    net.cut_one_way(a, b);
    assert!(!net.reachable(a, b) && net.reachable(b, a));
    assert!(net.connect(a, b).await.is_err(), "a cannot reach b");
    net.heal();
    assert!(net.connect(a, b).await.is_ok());
    {
        use futures_util::StreamExt;
        assert!(incoming.next().await.is_some(), "b accepted the connection");
    }
    assert!(
        net.bind(b).is_err(),
        "one listener per address while it lives"
    );
    drop(incoming);
    assert!(
        net.bind(b).is_ok(),
        "a restarted node binds its address again"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn writes_arrive_after_their_delay_in_order_and_a_lost_one_resets_the_connection() {
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let delay = Duration::from_millis(10);
    let net = SimNet::seeded(7, delay, Duration::from_millis(5));
    let (a, b) = (address(1), address(2));
    let mut incoming = net.bind(b).expect("bind");
    let mut client = net.connect(a, b).await.expect("connect");
    let mut server = incoming.next().await.expect("accepted").expect("stream");
    let sent = tokio::time::Instant::now();
    client.write_all(b"one").await.expect("write");
    client.write_all(b"two").await.expect("write");
    let mut got = [0u8; 6];
    server.read_exact(&mut got).await.expect("read");
    let took = sent.elapsed();
    assert_eq!(&got, b"onetwo", "bytes stay in order");
    assert!(
        took >= delay && took <= delay + Duration::from_millis(5),
        "arrived after {took:?}"
    );

    // A slow link adds its delay on top, one way only.
    net.slow_one_way(a, b, Duration::from_millis(100));
    let sent = tokio::time::Instant::now();
    client.write_all(b"x").await.expect("write");
    server.read_exact(&mut got[..1]).await.expect("read");
    assert!(sent.elapsed() >= Duration::from_millis(110));
    let sent = tokio::time::Instant::now();
    server.write_all(b"y").await.expect("write");
    client.read_exact(&mut got[..1]).await.expect("read");
    assert!(
        sent.elapsed() < Duration::from_millis(100),
        "the other way is not slow"
    );

    // A link that loses every write resets the connection at both ends.
    net.lossy_one_way(a, b, 100);
    let lost = client.write_all(b"z").await;
    assert_eq!(
        lost.expect_err("lost").kind(),
        std::io::ErrorKind::ConnectionReset
    );
    let read = server.read(&mut got).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the other end sees the reset: {read:?}"
    );
}
