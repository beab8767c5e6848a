//! Multi-node behaviour of real in-process daemons over gRPC on 127.0.0.1:
//! follower writes, linearizable reads, failover, restart catch-up,
//! snapshot install on join, membership changes and resumable watches.

mod common;

use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::cluster_service_client::ClusterServiceClient;
use blixard_shared::proto::v1::raft_service_client::RaftServiceClient;
use blixard_shared::proto::v1::watch_service_client::WatchServiceClient;
use common::*;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_through_a_follower_is_visible_in_linearizable_reads_everywhere() {
    let cluster = TestCluster::start(3).await;
    let follower = cluster.follower().await;
    let created = cluster
        .vm_client(follower)
        .create_vm(create_req("web-1"))
        .await
        .expect("create through follower")
        .into_inner()
        .vm
        .expect("vm");
    assert_eq!(created.name, "web-1");
    assert_eq!(created.state, pb::VmState::Pending as i32);
    for i in 0..3 {
        let got = cluster
            .vm_client(i)
            .get_vm(pb::GetVmRequest {
                name: "web-1".into(),
                consistency: pb::Consistency::Linearizable as i32,
            })
            .await
            .unwrap_or_else(|e| panic!("linearizable read on node {} failed: {e}", i + 1))
            .into_inner()
            .vm
            .expect("vm");
        assert_eq!(
            got.revision,
            created.revision,
            "node {} returned a stale record",
            i + 1
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_elects_a_new_one_and_the_old_one_catches_up() {
    let mut cluster = TestCluster::start(3).await;
    let mut client = cluster.client();
    for i in 0..5 {
        let req = create_req(&format!("before-{i}"));
        client
            .call(|ch| {
                let req = req.clone();
                async move {
                    pb::vm_service_client::VmServiceClient::new(ch)
                        .create_vm(req)
                        .await
                }
            })
            .await
            .expect("write before failover");
    }
    let old_leader = cluster.leader().await;
    let old_id = cluster.nodes[old_leader].id;
    cluster.stop(old_leader).await;
    let new_leader = cluster.leader().await;
    assert_ne!(cluster.nodes[new_leader].id, old_id);

    let mut client = cluster.client();
    for i in 0..5 {
        let req = create_req(&format!("after-{i}"));
        client
            .call(|ch| {
                let req = req.clone();
                async move {
                    pb::vm_service_client::VmServiceClient::new(ch)
                        .create_vm(req)
                        .await
                }
            })
            .await
            .expect("write after failover");
    }

    cluster.restart(old_leader).await;
    let names = eventually(
        Duration::from_secs(30),
        "restarted node to catch up",
        || async {
            let names = local_vm_names(&cluster, old_leader).await?;
            (names.len() == 10).then_some(names)
        },
    )
    .await;
    assert!(names.contains(&"before-0".to_string()) && names.contains(&"after-4".to_string()));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_joining_after_compaction_is_brought_up_by_snapshot() {
    let mut cluster = TestCluster::start_with(3, |c| c.snapshot_threshold = 40).await;
    let leader = cluster.leader().await;
    for i in 0..150 {
        cluster
            .vm_client(leader)
            .create_vm(create_req(&format!("vm-{i}")))
            .await
            .expect("create");
    }
    let core = cluster.nodes[leader]
        .handle
        .as_ref()
        .expect("leader")
        .core
        .clone();
    eventually(
        Duration::from_secs(30),
        "leader to snapshot and purge its log",
        || async {
            let m = core.raft_metrics();
            (m.snapshot.is_some() && m.purged.is_some_and(|p| p.index > 10)).then_some(())
        },
    )
    .await;

    let joined = cluster.add_node().await;
    cluster.wait_for_voters(4).await;
    let names = eventually(
        Duration::from_secs(30),
        "new node to hold every VM",
        || async {
            let names = local_vm_names(&cluster, joined).await?;
            (names.len() == 150).then_some(names)
        },
    )
    .await;
    assert!(names.contains(&"vm-149".to_string()));
    let m = cluster.nodes[joined]
        .handle
        .as_ref()
        .expect("joined")
        .core
        .raft_metrics();
    assert!(
        m.snapshot.is_some(),
        "the new node should have installed a snapshot: {m:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_leadership_and_remove_node_work() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let target = (leader + 1) % 3;
    let target_id = cluster.nodes[target].id;
    // Ask a non-leader, to check forwarding too.
    let asked = (leader + 2) % 3;
    let resp = ClusterServiceClient::new(cluster.channel(asked))
        .transfer_leadership(pb::TransferLeadershipRequest {
            to_node_id: target_id,
        })
        .await
        .expect("transfer")
        .into_inner();
    assert_eq!(resp.new_leader_id, target_id);
    assert_eq!(cluster.nodes[cluster.leader().await].id, target_id);

    let err = ClusterServiceClient::new(cluster.channel(asked))
        .transfer_leadership(pb::TransferLeadershipRequest { to_node_id: 99 })
        .await
        .expect_err("unknown target");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let victim = cluster.nodes[asked].id;
    ClusterServiceClient::new(cluster.channel(target))
        .remove_node(pb::RemoveNodeRequest { node_id: victim })
        .await
        .expect("remove node");
    let status = eventually(
        Duration::from_secs(20),
        "membership without the removed node",
        || async {
            let s = ClusterServiceClient::new(cluster.channel(target))
                .get_status(pb::GetStatusRequest::default())
                .await
                .ok()?
                .into_inner();
            (!s.members.iter().any(|m| m.node_id == victim)).then_some(s)
        },
    )
    .await;
    assert_eq!(status.members.len(), 2);
    let err = pb::node_service_client::NodeServiceClient::new(cluster.channel(target))
        .get_node(pb::GetNodeRequest {
            node_id: victim,
            consistency: 0,
        })
        .await
        .expect_err("removed node record");
    assert_eq!(err.code(), tonic::Code::NotFound);
    cluster.shutdown().await;
}

async fn read_events(
    cluster: &TestCluster,
    node: usize,
    from: u64,
    until: impl Fn(&[pb::Event]) -> bool,
) -> Vec<pb::Event> {
    let mut stream = WatchServiceClient::new(cluster.channel(node))
        .watch(pb::WatchRequest {
            from_revision: from,
            from_oldest: false,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !until(&events) {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("events in time")
            .expect("stream open")
            .expect("event");
        events.push(next.event.expect("event"));
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_resumes_across_a_leader_change_without_gaps_or_repeats() {
    let mut cluster = TestCluster::start(3).await;
    let start = cluster
        .vm_client(0)
        .list_vms(pb::ListVmsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .revision;
    let leader = cluster.leader().await;
    let watcher_node = (leader + 1) % 3;
    for i in 0..5 {
        cluster
            .vm_client(leader)
            .create_vm(create_req(&format!("a-{i}")))
            .await
            .expect("create");
    }
    let count_created = |evs: &[pb::Event]| evs.iter().filter(|e| e.kind == "vm.created").count();
    let first = read_events(&cluster, watcher_node, start, |e| count_created(e) >= 5).await;
    let last_seen = first.last().expect("events").revision;

    cluster.stop(leader).await;
    let new_leader = cluster.leader().await;
    for i in 0..5 {
        cluster
            .vm_client(new_leader)
            .create_vm(create_req(&format!("b-{i}")))
            .await
            .expect("create after failover");
    }
    let survivor = (0..3)
        .find(|i| *i != leader && *i != watcher_node)
        .expect("another survivor");
    let second = read_events(&cluster, survivor, last_seen, |e| count_created(e) >= 5).await;

    let all: Vec<&pb::Event> = first.iter().chain(second.iter()).collect();
    let revisions: Vec<u64> = all.iter().map(|e| e.revision).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "revisions must strictly increase: {revisions:?}"
    );
    let created: Vec<&str> = all
        .iter()
        .filter(|e| e.kind == "vm.created")
        .map(|e| e.subject.as_str())
        .collect();
    assert_eq!(
        created,
        [
            "vm/a-0", "vm/a-1", "vm/a-2", "vm/a-3", "vm/a-4", "vm/b-0", "vm/b-1", "vm/b-2",
            "vm/b-3", "vm/b-4"
        ]
    );
    // No gaps: one uninterrupted watch from the same start sees the same events.
    let n = all.len();
    let reference = read_events(&cluster, survivor, start, |e| e.len() >= n).await;
    let ours: Vec<(u64, String, String)> = all
        .iter()
        .map(|e| (e.revision, e.kind.clone(), e.subject.clone()))
        .collect();
    let theirs: Vec<(u64, String, String)> = reference
        .iter()
        .map(|e| (e.revision, e.kind.clone(), e.subject.clone()))
        .collect();
    assert_eq!(ours, theirs);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_single_node_keeps_everything_it_acknowledged() {
    let mut cluster = TestCluster::start_with(1, |c| c.snapshot_threshold = 25).await;
    let mut acked = BTreeSet::new();
    for i in 0..60 {
        let name = format!("keep-{i}");
        cluster
            .vm_client(0)
            .create_vm(create_req(&name))
            .await
            .expect("create");
        acked.insert(name);
    }
    cluster.stop(0).await;
    cluster.restart(0).await;
    let names: BTreeSet<String> = eventually(
        Duration::from_secs(20),
        "restarted node to serve",
        || async { local_vm_names(&cluster, 0).await.filter(|n| n.len() == 60) },
    )
    .await
    .into_iter()
    .collect();
    assert_eq!(names, acked);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_stops_while_a_silent_leader_holds_a_replication_stream() {
    // Regression: the request half of a StreamAppend lives in openraft's
    // task; a leader that neither sends nor closes kept the follower's
    // server (and so its shutdown) waiting for ever.
    let mut cluster = TestCluster::start(3).await;
    let follower = cluster.follower().await;
    // Speaking as the leader would: with a member's certificate.
    let leader = cluster.leader().await;
    let as_leader = cluster.node_credentials(leader);
    let mut raft = RaftServiceClient::new(cluster.channel_with(follower, &as_leader));
    let (_keep_open, requests) = tokio::sync::mpsc::channel::<pb::RaftPayload>(1);
    let _answers = raft
        .stream_append(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await
        .expect("StreamAppend opens");
    tokio::time::timeout(Duration::from_secs(30), cluster.stop(follower))
        .await
        .expect("the follower must stop despite the open stream");
    cluster.shutdown().await;
}
