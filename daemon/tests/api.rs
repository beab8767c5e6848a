//! The public API's answers to bad input, on a real node over gRPC: every
//! malformed field gets `InvalidArgument` naming it, a host path outside
//! the operator's allowed dirs gets `PermissionDenied` naming it, and the
//! node keeps serving afterwards.

mod common;

use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::node_service_client::NodeServiceClient;
use blixard_shared::proto::v1::watch_service_client::WatchServiceClient;
use common::*;
use tokio_stream::StreamExt;

fn with_spec(f: impl FnOnce(&mut pb::VmSpec)) -> pb::CreateVmRequest {
    let mut r = create_req("ok-name");
    if let Some(s) = r.spec.as_mut() {
        f(s);
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_create_vm_field_is_named_in_invalid_argument() {
    let cluster = TestCluster::start(1).await;
    let mut vms = cluster.vm_client(0);
    let named = |name: &str| {
        let mut r = create_req("x");
        r.name = name.to_string();
        r
    };
    let cases: Vec<(&str, pb::CreateVmRequest)> = vec![
        ("name", named("")),
        ("name", named(&"a".repeat(64))),
        ("name", named("Upper")),
        ("name", named("ünïcödé")),
        ("name", named("tab\tname")),
        ("name", named("-lead")),
        (
            "spec",
            pb::CreateVmRequest {
                spec: None,
                ..create_req("x")
            },
        ),
        ("spec.vcpus", with_spec(|s| s.vcpus = 0)),
        ("spec.vcpus", with_spec(|s| s.vcpus = u32::MAX)),
        ("spec.memory_mib", with_spec(|s| s.memory_mib = 0)),
        ("spec.memory_mib", with_spec(|s| s.memory_mib = u64::MAX)),
        ("spec.image", with_spec(|s| s.image = "../etc".into())),
        ("spec.kernel", with_spec(|s| s.kernel = "vmlinux".into())),
        (
            "spec.kernel",
            with_spec(|s| s.kernel = format!("/{}", "k".repeat(5000))),
        ),
        (
            "spec.initrd",
            with_spec(|s| s.initrd = "/initrd.img".into()),
        ),
        ("spec.cmdline", with_spec(|s| s.cmdline = "c".repeat(3000))),
        ("spec.runner", with_spec(|s| s.runner = "relative".into())),
        (
            "spec.labels",
            with_spec(|s| {
                for i in 0..100 {
                    s.labels.insert(format!("k{i}"), "v".into());
                }
            }),
        ),
        (
            "spec.labels[\"bad key\"]",
            with_spec(|s| {
                s.labels.insert("bad key".into(), "v".into());
            }),
        ),
        (
            "spec.labels[\"k\"]",
            with_spec(|s| {
                s.labels.insert("k".into(), "v".repeat(300));
            }),
        ),
        (
            "spec.constraints",
            with_spec(|s| s.constraints = vec!["zone=a".into(); 40]),
        ),
        (
            "spec.constraints[0]",
            with_spec(|s| s.constraints = vec!["".into()]),
        ),
        ("spec.group", with_spec(|s| s.group = "Bad_Group".into())),
        ("spec.max_per_node", with_spec(|s| s.max_per_node = 3)),
        ("spec.priority", with_spec(|s| s.priority = 1_000_000)),
        ("spec.restart_policy", with_spec(|s| s.restart_policy = 42)),
        ("spec.node_id", with_spec(|s| s.node_id = 77)),
    ];
    for (field, req) in cases {
        let err = vms.create_vm(req.clone()).await.expect_err(field);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().starts_with(&format!("{field}:")),
            "message should name {field}: {:?}",
            err.message()
        );
    }

    // Other calls validate too.
    let err = vms
        .get_vm(pb::GetVmRequest {
            name: "NOPE!".into(),
            consistency: 0,
        })
        .await
        .expect_err("bad name");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = vms
        .list_vms(pb::ListVmsRequest {
            page_token: "garbage token".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert!(err.message().starts_with("page_token:"));
    let err = vms
        .list_vms(pb::ListVmsRequest {
            consistency: 9,
            ..Default::default()
        })
        .await
        .expect_err("bad consistency");
    assert!(err.message().starts_with("consistency:"));
    let err = NodeServiceClient::new(cluster.channel(0))
        .cordon_node(pb::CordonNodeRequest { node_id: 0 })
        .await
        .expect_err("node 0");
    assert!(err.message().starts_with("node_id:"));
    let err = vms
        .create_vm(with_spec(|s| s.cmdline = "x".repeat(2 * 1024 * 1024)))
        .await
        .expect_err("oversized request");
    assert_ne!(err.code(), tonic::Code::Ok);

    // Nothing was created, and the node still serves.
    let list = vms
        .list_vms(pb::ListVmsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(
        list.vms.is_empty(),
        "bad requests must create nothing: {:?}",
        list.vms
    );
    vms.create_vm(create_req("fine"))
        .await
        .expect("valid create after bad input");
    let err = vms
        .create_vm(create_req("fine"))
        .await
        .expect_err("duplicate");
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    cluster.shutdown().await;
}

/// What a VM runs on a host is the host operator's decision: a runner,
/// kernel or initrd outside `allowed_runner_dirs` (the test cluster allows
/// its temp dir) is refused, with one answer whether or not the path
/// exists, so callers cannot probe the host's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_paths_outside_the_allowed_dirs_are_permission_denied() {
    let cluster = TestCluster::start(1).await;
    let tmp = cluster.nodes[0].dir.parent().expect("tmp").to_path_buf();
    let inside = write_script(&tmp, "ok.sh", "exit 0\n");
    let escape = tmp.join("escape");
    std::os::unix::fs::symlink("/usr/bin/env", &escape).expect("symlink");
    let inside = inside.display().to_string();
    let escape = escape.display().to_string();
    let climb = format!("{}/../../../../../../../usr/bin/env", tmp.display());
    let mut vms = cluster.vm_client(0);
    let cases: Vec<(&str, pb::CreateVmRequest)> = vec![
        ("runner", with_spec(|s| s.runner = "/usr/bin/env".into())),
        (
            "runner",
            with_spec(|s| s.runner = "/usr/bin/no-such-tool".into()),
        ),
        ("runner", with_spec(|s| s.runner = escape.clone())),
        ("runner", with_spec(|s| s.runner = climb.clone())),
        (
            "runner",
            with_spec(|s| s.runner = format!("{}-evil/x", tmp.display())),
        ),
        ("kernel", with_spec(|s| s.kernel = "/etc/hostname".into())),
        (
            "kernel",
            with_spec(|s| s.kernel = "/boot/no-such-vmlinuz".into()),
        ),
        (
            "initrd",
            with_spec(|s| {
                s.kernel = inside.clone();
                s.initrd = "/etc/passwd".into();
            }),
        ),
    ];
    let mut messages = std::collections::BTreeMap::new();
    for (field, req) in cases {
        let err = vms.create_vm(req.clone()).await.expect_err(field);
        assert_eq!(
            err.code(),
            tonic::Code::PermissionDenied,
            "{field}: {err:?}"
        );
        let message = err.message().to_string();
        assert!(
            message.starts_with(&format!("spec.{field}:")),
            "message should name {field}: {message:?}"
        );
        assert!(
            message.contains("ask the host operator") && message.contains("allowed_runner_dirs"),
            "{message:?}"
        );
        assert_eq!(
            field != "runner",
            message.contains("image dir"),
            "{message:?}"
        );
        messages.entry(field).or_insert_with(Vec::new).push(message);
    }
    for (field, all) in messages {
        assert!(
            all.windows(2).all(|w| w[0] == w[1]),
            "one answer for every refused {field}, existing or not: {all:?}"
        );
    }
    let list = vms
        .list_vms(pb::ListVmsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(
        list.vms.is_empty(),
        "refused creates create nothing: {:?}",
        list.vms
    );
    // Inside the allowed dir is fine, as are images (named, from the image dir).
    let mut ok = with_spec(|s| s.runner = inside.clone());
    ok.name = "inside".into();
    ok.stopped = true;
    vms.create_vm(ok)
        .await
        .expect("runner inside the allowed dir");
    vms.create_vm(create_req("imaged")).await.expect("image vm");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_paginate_and_filter() {
    let cluster = TestCluster::start(1).await;
    let mut vms = cluster.vm_client(0);
    for i in 0..25 {
        let mut req = create_req(&format!("vm-{i:02}"));
        if i % 5 == 0 {
            if let Some(s) = req.spec.as_mut() {
                s.labels.insert("tier".into(), "db".into());
            }
        }
        vms.create_vm(req).await.expect("create");
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = vms
            .list_vms(pb::ListVmsRequest {
                page_size: 10,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.vms.len() <= 10);
        seen.extend(page.vms.into_iter().map(|v| v.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let db = vms
        .list_vms(pb::ListVmsRequest {
            labels: [("tier".to_string(), "db".to_string())].into(),
            ..Default::default()
        })
        .await
        .expect("filtered")
        .into_inner();
    assert_eq!(db.vms.len(), 5);
    let running = vms
        .list_vms(pb::ListVmsRequest {
            state: pb::VmState::Running as i32,
            ..Default::default()
        })
        .await
        .expect("by state")
        .into_inner();
    assert!(
        running.vms.is_empty(),
        "nothing runs before the runtime exists"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_revision_is_out_of_range() {
    // The flood below is one token's ~14,000 writes as fast as the node
    // takes them: far past the default rate per token, which is not what
    // this test is about.
    let cluster = TestCluster::start_with(1, |c| {
        c.token_requests_per_sec = 1_000_000;
        c.token_request_burst = 1_000_000;
    })
    .await;
    let mut vms = cluster.vm_client(0);
    let ring = blixard_shared::limits::EVENT_RING_LEN;
    // A watcher that never reads, opened before the flood, on a connection
    // with small HTTP/2 windows so the transport cannot absorb the flood.
    let creds = cluster.credentials();
    let small_window =
        tonic::transport::Endpoint::from_shared(format!("https://{}", cluster.nodes[0].addr))
            .expect("uri")
            .tls_config(creds.tls().expect("a secured cluster").clone())
            .expect("tls")
            .initial_stream_window_size(Some(8 * 1024))
            .initial_connection_window_size(Some(8 * 1024))
            .connect_lazy();
    let small_window = creds.wrap(small_window);
    let mut slow = WatchServiceClient::new(small_window)
        .watch(pb::WatchRequest {
            from_revision: 0,
            from_oldest: false,
        })
        .await
        .expect("slow watcher")
        .into_inner();
    // Fill the ring past its end with cheap desired-state flips, from many
    // concurrent writers so they share fsyncs (group commit).
    const WRITERS: usize = 32;
    // Past the ring, plus what the server's HTTP/2 send buffer can hold.
    let per_writer = (ring + 4000) / WRITERS;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let name = format!("flip-{w}");
        vms.create_vm(create_req(&name)).await.expect("create");
        let mut client = cluster.vm_client(0);
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                if i % 2 == 0 {
                    client
                        .stop_vm(pb::StopVmRequest { name: name.clone() })
                        .await
                        .expect("stop");
                } else {
                    client
                        .start_vm(pb::StartVmRequest { name: name.clone() })
                        .await
                        .expect("start");
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let err = WatchServiceClient::new(cluster.channel(0))
        .watch(pb::WatchRequest {
            from_revision: 1,
            from_oldest: false,
        })
        .await
        .expect_err("compacted");
    assert_eq!(err.code(), tonic::Code::OutOfRange);

    // The watcher opened before the flood and never read: it blocked no one
    // (the writes above finished), and it is now cut off with a clear status.
    let mut cut_off = None;
    let mut delivered = 0usize;
    while let Some(item) = tokio::time::timeout(std::time::Duration::from_secs(20), slow.next())
        .await
        .expect("the slow watcher gets an answer")
    {
        match item {
            Ok(_) => delivered += 1,
            Err(status) => {
                cut_off = Some(status);
                break;
            }
        }
    }
    let status = cut_off.expect("the slow watcher must be cut off");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        delivered < ring + 5,
        "the watcher cannot have received every event"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_metrics_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let cluster =
        TestCluster::start_with(1, |c| c.metrics_listen = Some(([127, 0, 0, 1], 0).into())).await;
    cluster
        .vm_client(0)
        .create_vm(create_req("metered"))
        .await
        .expect("create");

    let mut health = HealthClient::new(cluster.channel(0));
    for service in ["", "blixard.v1.VmService", "blixard.v1.ClusterService"] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health of {service:?}: {e}"))
            .into_inner();
        assert_eq!(resp.status, 1, "{service:?} should be SERVING");
    }

    let mut reflection = ServerReflectionClient::new(cluster.channel(0));
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .expect("reflection")
        .into_inner();
    let resp = stream.next().await.expect("one answer").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer: {resp:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "blixard.v1.ClusterService",
        "blixard.v1.NodeService",
        "blixard.v1.VmService",
        "blixard.v1.WatchService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "reflection lacks {want}: {names:?}"
        );
    }

    // The same through v1alpha, the only one Python's grpcio-reflection speaks.
    {
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as Alpha;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
        let req = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(AlphaRequest::ListServices(String::new())),
        };
        let resp = Alpha::new(cluster.channel(0))
            .server_reflection_info(tokio_stream::iter([req]))
            .await
            .expect("v1alpha reflection")
            .into_inner()
            .next()
            .await
            .expect("one answer")
            .expect("ok");
        let Some(AlphaResponse::ListServicesResponse(list)) = resp.message_response else {
            panic!("unexpected v1alpha answer: {resp:?}");
        };
        assert!(
            list.service
                .iter()
                .any(|s| s.name == "blixard.v1.VmService"),
            "{list:?}"
        );
    }

    let addr = cluster.nodes[0]
        .handle
        .as_ref()
        .and_then(|h| h.metrics_address)
        .expect("metrics address");
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect metrics");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut body = String::new();
    conn.read_to_string(&mut body).await.expect("response");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    for want in [
        "blixard_raft_term ",
        "blixard_raft_leader_changes_total ",
        "blixard_raft_commit_index ",
        "blixard_raft_applied_index ",
        "blixard_raft_log_entries ",
        "blixard_raft_snapshot_bytes ",
        "blixard_proposal_latency_seconds_bucket",
        "blixard_grpc_request_latency_seconds_bucket",
        "blixard_watchers_connected ",
        "blixard_fence_lease_valid ",
        "blixard_fence_lease_lapses_total ",
        "blixard_vms_rescheduled_total ",
    ] {
        assert!(body.contains(want), "metrics lack {want:?}:\n{body}");
    }
    assert!(
        body.lines()
            .any(|l| l.starts_with("blixard_grpc_requests_total{")
                && l.contains("method=\"CreateVm\"")
                && l.contains("code=\"ok\"")),
        "no CreateVm request counted:\n{body}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_from_a_revision_ahead_of_the_cluster_is_out_of_range() {
    let cluster = TestCluster::start(3).await;
    let follower = cluster.follower().await;
    let created = cluster
        .vm_client(0)
        .create_vm(create_req("ahead"))
        .await
        .expect("create")
        .into_inner();
    let now = created.vm.expect("vm").revision;
    // A revision the cluster has reached (maybe not this follower yet) is
    // fine; one it has not reached would be a silent gap.
    let mut watch = WatchServiceClient::new(cluster.channel(follower));
    watch
        .watch(pb::WatchRequest {
            from_revision: now,
            from_oldest: false,
        })
        .await
        .expect("watch from the current revision");
    let err = watch
        .watch(pb::WatchRequest {
            from_revision: now + 1_000_000,
            from_oldest: false,
        })
        .await
        .expect_err("ahead of the cluster");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    assert!(err.message().starts_with("from_revision:"), "{err:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_retried_with_its_request_id_is_applied_once() {
    use blixard_shared::request_id::{attach, REQUEST_ID_KEY};
    let cluster = TestCluster::start(3).await;
    let follower = cluster.follower().await;
    let mut vms = cluster.vm_client(follower);
    let send = |id: &str| {
        let mut req = tonic::Request::new(create_req("once"));
        attach(&mut req, id);
        req
    };
    let first = vms.create_vm(send("test:1")).await.expect("create");
    let again = vms
        .create_vm(send("test:1"))
        .await
        .expect("a retry gets the first answer, not AlreadyExists");
    assert_eq!(first.into_inner().vm, again.into_inner().vm);
    let err = vms
        .create_vm(send("test:2"))
        .await
        .expect_err("a new id is a new write");
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    let mut bad = tonic::Request::new(create_req("bad-id"));
    bad.metadata_mut().insert(
        REQUEST_ID_KEY,
        tonic::metadata::MetadataValue::from_static("has space"),
    );
    let err = vms.create_vm(bad).await.expect_err("invalid id");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with(REQUEST_ID_KEY), "{err:?}");
    cluster.shutdown().await;
}
