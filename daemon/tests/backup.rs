//! Backups and restore: a backup taken through a follower while the
//! cluster keeps writing seeds a new cluster with the same state; a
//! damaged or truncated file is refused before anything is written; the
//! archive (`backup_dir`) rebuilds the state exactly as the cluster had it
//! at each of several revisions, as ListVms and the watch stream showed it.

mod common;

use blixard_daemon::api::convert::{event_to_pb, vm_to_pb};
use blixard_daemon::backup::archive::Settings;
use blixard_daemon::backup::replay::{fleet_at, fleet_of, Target};
use blixard_daemon::backup::restore::{run as restore, RestoreArgs};
use blixard_daemon::config::Config;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::cluster_service_client::ClusterServiceClient;
use blixard_shared::proto::v1::watch_service_client::WatchServiceClient;
use common::{admin_credentials, channel_to, create_req, eventually, TestCluster};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The backup file's bytes, streamed through node `i`.
async fn backup_through(cluster: &TestCluster, i: usize) -> (u64, Vec<u8>) {
    let mut stream = ClusterServiceClient::new(cluster.channel(i))
        .backup(pb::BackupRequest {})
        .await
        .expect("backup")
        .into_inner();
    let mut bytes = Vec::new();
    let mut revision = 0;
    while let Some(chunk) = stream.message().await.expect("backup chunk") {
        revision = chunk.revision;
        bytes.extend_from_slice(&chunk.data);
    }
    (revision, bytes)
}

fn restore_args(from: &Path, data_dir: &Path, node_id: u64) -> RestoreArgs {
    RestoreArgs {
        from: Some(from.to_path_buf()),
        from_dir: None,
        to_revision: None,
        to_time: None,
        data_dir: data_dir.to_path_buf(),
        node_id,
        advertise: None,
        insecure: false,
    }
}

/// Starts the node seeded in `dir` (listening on a new port).
async fn start_restored(dir: &Path, id: u64) -> blixard_daemon::server::NodeHandle {
    let mut config = Config::for_node(id, dir, "127.0.0.1:0".parse().expect("addr"));
    config.fence_watchdog = Some(env!("CARGO_BIN_EXE_blixard-fence").into());
    blixard_daemon::server::start(config)
        .await
        .expect("restored node starts")
}

/// All VMs the node at `channel` lists, and the revision it listed at.
async fn list_vms(channel: blixard_shared::ApiChannel) -> Option<(u64, Vec<pb::Vm>)> {
    let resp = blixard_shared::proto::v1::vm_service_client::VmServiceClient::new(channel)
        .list_vms(pb::ListVmsRequest {
            consistency: pb::Consistency::Linearizable as i32,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    assert!(resp.next_page_token.is_empty(), "one page holds them all");
    Some((resp.revision, resp.vms))
}

fn names(vms: &[pb::Vm]) -> Vec<String> {
    vms.iter().map(|v| v.name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_under_load_seeds_a_cluster_with_the_same_state() {
    let cluster = TestCluster::start(3).await;
    let mut client = cluster.client();
    for i in 0..10 {
        client
            .create_vm(create_req(&format!("before-{i}")))
            .await
            .expect("create");
    }
    // A writer keeps the cluster busy while the backup streams.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut client = cluster.client();
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut req = create_req(&format!("load-{n}"));
                req.stopped = true;
                client.create_vm(req).await.expect("create under load");
                n += 1;
            }
            n
        })
    };
    eventually(Duration::from_secs(30), "load to begin", || async {
        let (_, vms) = list_vms(cluster.channel(0)).await?;
        vms.iter()
            .any(|v| v.name.starts_with("load-"))
            .then_some(())
    })
    .await;
    let follower = cluster.follower().await;
    let (revision, bytes) = backup_through(&cluster, follower).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let created_under_load = writer.await.expect("writer");
    assert!(created_under_load > 0);

    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("cluster.bkp");
    std::fs::write(&file, &bytes).expect("write backup");
    let (header, fleet) = fleet_of(&file).expect("the backup checks out");
    assert_eq!(header.revision, revision);
    assert_eq!(header.members.len(), 3, "{:?}", header.members);
    for i in 0..10 {
        assert!(fleet.vms.contains_key(&format!("before-{i}")));
    }
    let backed_up: Vec<String> = fleet.vms.keys().cloned().collect();

    // Quorum lost for good: every node stops.
    let old_token =
        std::fs::read_to_string(cluster.nodes[0].dir.join("admin.token")).expect("old admin token");
    cluster.shutdown().await;

    let restored_dir = tmp.path().join("restored-1");
    let done = restore(restore_args(&file, &restored_dir, 1))
        .await
        .expect("restore");
    assert_eq!(done.source_revision, revision);
    assert!(done.seeded.ca_fingerprint.is_some());
    let node = start_restored(&restored_dir, 1).await;
    let credentials = admin_credentials(&restored_dir);
    let channel = channel_to(&credentials, &node.address.to_string());
    let (_, vms) = eventually(
        Duration::from_secs(30),
        "the restored node to serve",
        || list_vms(channel.clone()),
    )
    .await;
    assert_eq!(names(&vms), backed_up);
    // The old cluster's tokens came along (their hashes are state).
    let old = blixard_shared::Credentials::from_ca_file(&restored_dir.join("tls/ca.pem"))
        .expect("ca")
        .token(&blixard_shared::auth::Secret::new(old_token.trim()))
        .expect("token");
    let old_channel = channel_to(&old, &node.address.to_string());
    assert!(
        list_vms(old_channel).await.is_some(),
        "the old admin token works"
    );
    // The restored node corrected its address in the membership.
    let status = eventually(
        Duration::from_secs(30),
        "the membership to name the new address",
        || async {
            let status = ClusterServiceClient::new(channel.clone())
                .get_status(pb::GetStatusRequest::default())
                .await
                .ok()?
                .into_inner();
            (status.members.len() == 1 && status.members[0].address == node.address.to_string())
                .then_some(status)
        },
    )
    .await;
    assert_eq!(status.leader_id, 1);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_or_truncated_backup_is_refused_before_anything_is_written() {
    let cluster = TestCluster::start(1).await;
    let mut client = cluster.client();
    client.create_vm(create_req("kept")).await.expect("create");
    let (_, bytes) = backup_through(&cluster, 0).await;
    cluster.shutdown().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x20;
    let damaged: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", bytes[..bytes.len() - 100].to_vec()),
        ("cut before the trailer", bytes[..bytes.len() / 3].to_vec()),
        ("flipped", flipped),
        ("empty", Vec::new()),
        ("not a backup", b"hello, world\n".to_vec()),
    ];
    for (what, data) in damaged {
        let file = tmp.path().join(format!("{what}.bkp"));
        std::fs::write(&file, &data).expect("write");
        let dir = tmp.path().join(format!("data-{}", what.replace(' ', "-")));
        let err = restore(restore_args(&file, &dir, 1))
            .await
            .expect_err(what)
            .to_string();
        assert!(err.contains(&*file.display().to_string()), "{what}: {err}");
        assert!(
            !dir.exists(),
            "{what}: nothing may be written, yet {} exists",
            dir.display()
        );
    }
    // The intact file restores.
    let file = tmp.path().join("good.bkp");
    std::fs::write(&file, &bytes).expect("write");
    restore(restore_args(&file, &tmp.path().join("good"), 1))
        .await
        .expect("the intact backup restores");
    // A data dir that already holds a node's state is never overwritten.
    let again = restore(restore_args(&file, &tmp.path().join("good"), 1))
        .await
        .expect_err("restoring over a node's state");
    assert!(again.to_string().contains("--data-dir"), "{again}");
}

/// Every node keeps an archive in its data dir, with a snapshot every
/// 300 ms so the restores below start from different snapshots.
fn with_archive(config: &mut Config) {
    config.backup = Some(Settings {
        dir: config.data_dir.join("archive"),
        snapshot_interval: Duration::from_millis(300),
        retention: Duration::from_secs(3600),
    });
}

/// One moment the test noted: the revision ListVms answered at, and what
/// it listed.
struct Noted {
    revision: u64,
    vms: Vec<pb::Vm>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_archive_restores_the_state_at_each_noted_revision() {
    let mut cluster = TestCluster::start_with(1, with_archive).await;
    let archive: PathBuf = cluster.nodes[0].dir.join("archive");
    // The watch stream from the first event on.
    let seen: Arc<Mutex<Vec<pb::Event>>> = Arc::default();
    let mut stream = WatchServiceClient::new(cluster.channel(0))
        .watch(pb::WatchRequest {
            from_revision: 0,
            from_oldest: true,
        })
        .await
        .expect("watch")
        .into_inner();
    let watcher = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = stream.message().await {
                if let Some(event) = msg.event {
                    seen.lock().expect("lock").push(event);
                }
            }
        })
    };
    let mut client = cluster.client();
    let mut noted: Vec<Noted> = Vec::new();
    let node0 = cluster.channel(0);
    let note = || {
        let node0 = node0.clone();
        async move {
            let (revision, vms) = list_vms(node0).await.expect("list");
            Noted { revision, vms }
        }
    };
    let stopped = |name: &str| {
        let mut req = create_req(name);
        req.stopped = true;
        req
    };
    for name in ["alpha", "bravo", "charlie"] {
        client.create_vm(stopped(name)).await.expect("create");
    }
    noted.push(note().await);
    client.delete_vm("bravo", false).await.expect("delete");
    noted.push(note().await);
    let after_delete_ms = blixard_shared::time::now_ms();
    let names_after_delete = names(&noted[1].vms);
    client.start_vm("alpha").await.expect("start");
    noted.push(note().await);
    client.stop_vm("alpha").await.expect("stop");
    noted.push(note().await);
    client.create_vm(stopped("delta")).await.expect("create");
    client.delete_vm("charlie", false).await.expect("delete");
    noted.push(note().await);
    client
        .create_vm(stopped("bravo"))
        .await
        .expect("create again");
    client.restart_vm("delta").await.ok();
    noted.push(note().await);
    // Once the watch shows the last change, it has shown every earlier one.
    client.create_vm(stopped("omega")).await.expect("create");
    eventually(
        Duration::from_secs(30),
        "the watch to show omega",
        || async {
            let seen = seen.lock().expect("lock");
            seen.iter()
                .any(|e| e.kind == "vm.created" && e.subject == "vm/omega")
                .then_some(())
        },
    )
    .await;
    cluster.stop(0).await;
    watcher.abort();
    let watched = seen.lock().expect("lock").clone();

    assert!(noted.len() >= 5);
    let revisions: Vec<u64> = noted.iter().map(|n| n.revision).collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    let mut bases = std::collections::BTreeSet::new();
    for n in &noted {
        let rebuilt = fleet_at(&archive, Target::Revision(n.revision)).expect("rebuild");
        assert_eq!(rebuilt.revision, n.revision);
        bases.insert(rebuilt.base_revision);
        // `placement` (and its echo in a waiting VM's reason) is the
        // leader's scheduler's word of the moment, not replicated state
        // (see `api::explain`): the rest of each VM must match exactly.
        let unplaced = |mut vm: pb::Vm| {
            let echo = format!(": {}", vm.placement);
            if let Some(reason) = vm.reason.strip_suffix(&echo) {
                vm.reason = reason.to_string();
            }
            vm.placement.clear();
            vm
        };
        let vms: Vec<pb::Vm> = rebuilt
            .fleet
            .vms
            .values()
            .map(|v| unplaced(vm_to_pb(v)))
            .collect();
        let listed: Vec<pb::Vm> = n.vms.iter().cloned().map(unplaced).collect();
        assert_eq!(vms, listed, "the VMs at revision {}", n.revision);
        let events: Vec<pb::Event> = rebuilt.fleet.events.iter().map(event_to_pb).collect();
        let watched_then: Vec<pb::Event> = watched
            .iter()
            .filter(|e| e.revision <= n.revision)
            .cloned()
            .collect();
        assert_eq!(
            events, watched_then,
            "the events up to revision {}",
            n.revision
        );
    }
    eprintln!(
        "restored {} revisions from {} snapshot bases",
        noted.len(),
        bases.len()
    );
    // By time: the state right after the delete.
    let by_time = fleet_at(&archive, Target::Time(after_delete_ms)).expect("rebuild by time");
    assert!(by_time.revision >= noted[1].revision && by_time.revision < noted[2].revision);
    assert_eq!(
        by_time.fleet.vms.keys().cloned().collect::<Vec<_>>(),
        names_after_delete
    );

    // The same through `blixardd restore --from-dir --to-revision`, served.
    let target = &noted[2];
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("pitr");
    let mut args = restore_args(&archive, &dir, 7);
    args.from = None;
    args.from_dir = Some(archive.clone());
    args.to_revision = Some(target.revision);
    args.advertise = Some("127.0.0.1:1".into());
    restore(args).await.expect("point-in-time restore");
    let node = start_restored(&dir, 7).await;
    let channel = channel_to(&admin_credentials(&dir), &node.address.to_string());
    let (_, vms) = eventually(
        Duration::from_secs(30),
        "the restored node to serve",
        || list_vms(channel.clone()),
    )
    .await;
    assert_eq!(names(&vms), names(&target.vms));
    node.shutdown().await;
    cluster.shutdown().await;
}
