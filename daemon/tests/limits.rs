//! Limits no caller can exceed, tried against real in-process secured
//! clusters: streams per token (Watch, StreamVmLogs) while another token
//! still gets its own; the request rate per token (and that the rate layer
//! sits inside the gate, so it sees who calls); a member streaming a
//! snapshot past the cap is refused without the node holding it, one
//! transfer at a time, and no temp file is left; the peer pool forgets a
//! removed member.

mod common;

use blixard_daemon::metrics::Limit;
use blixard_shared::auth::Secret;
use blixard_shared::limits::{MAX_LOG_STREAMS_PER_IDENTITY, MAX_WATCHERS_PER_IDENTITY};
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::cluster_service_client::ClusterServiceClient;
use blixard_shared::proto::v1::raft_service_client::RaftServiceClient;
use blixard_shared::proto::v1::vm_service_client::VmServiceClient;
use blixard_shared::proto::v1::watch_service_client::WatchServiceClient;
use blixard_shared::{ApiChannel, Credentials};
use common::{create_req, eventually, write_script, TestCluster};
use std::path::Path;
use std::time::Duration;
use tokio_stream::StreamExt;

/// Creates a viewer token `name` through node 0 and returns a channel to
/// node 0 that sends it.
async fn viewer(cluster: &TestCluster, name: &str) -> (ApiChannel, Credentials) {
    let secret = pb::token_service_client::TokenServiceClient::new(cluster.channel(0))
        .create_token(pb::CreateTokenRequest {
            name: name.into(),
            role: "viewer".into(),
            ttl_seconds: 0,
        })
        .await
        .expect("token")
        .into_inner()
        .secret;
    let creds = Credentials::from_ca_file(&cluster.nodes[0].dir.join("tls/ca.pem"))
        .expect("ca")
        .token(&Secret::new(secret))
        .expect("token");
    (cluster.channel_with(0, &creds), creds)
}

async fn open_watch(ch: &ApiChannel) -> Result<tonic::Streaming<pb::WatchResponse>, tonic::Status> {
    WatchServiceClient::new(ch.clone())
        .watch(pb::WatchRequest::default())
        .await
        .map(tonic::Response::into_inner)
}

async fn open_logs(
    ch: &ApiChannel,
    vm: &str,
) -> Result<tonic::Streaming<pb::LogChunk>, tonic::Status> {
    VmServiceClient::new(ch.clone())
        .stream_vm_logs(pb::StreamVmLogsRequest {
            name: vm.into(),
            follow: true,
            tail_lines: 10,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A running VM on the (one-node) cluster, printing a line, so its
/// console log exists.
async fn running_vm(cluster: &TestCluster, name: &str) {
    let dir = cluster.nodes[0].dir.parent().expect("tmp");
    let runner = write_script(
        dir,
        "runner.sh",
        "echo \"runner: ready\"\nwhile :; do sleep 0.1; done\n",
    );
    let mut req = create_req(name);
    if let Some(spec) = req.spec.as_mut() {
        spec.runner = runner.display().to_string();
    }
    cluster.vm_client(0).create_vm(req).await.expect("create");
    eventually(Duration::from_secs(30), "the console log", || async {
        open_logs(&cluster.channel(0), name).await.ok().map(drop)
    })
    .await;
}

fn hits(cluster: &TestCluster, i: usize, limit: Limit) -> u64 {
    cluster.nodes[i]
        .handle
        .as_ref()
        .expect("running")
        .core
        .metrics
        .limit_hit_count(limit)
}

fn assert_exhausted(result: Result<impl Sized, tonic::Status>, needles: &[&str]) {
    let Err(status) = result else {
        panic!("expected ResourceExhausted, got a stream");
    };
    assert_eq!(
        status.code(),
        tonic::Code::ResourceExhausted,
        "{}",
        status.message()
    );
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "{needle:?} not in {:?}",
            status.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_past_its_stream_caps_is_refused_while_another_token_still_streams() {
    let cluster = TestCluster::start(1).await;
    running_vm(&cluster, "noisy").await;
    let (greedy, greedy_creds) = viewer(&cluster, "greedy").await;
    let (console, _) = viewer(&cluster, "console").await;

    let mut watches = Vec::new();
    for _ in 0..MAX_WATCHERS_PER_IDENTITY {
        watches.push(open_watch(&greedy).await.expect("a watch under the cap"));
    }
    let cap = MAX_WATCHERS_PER_IDENTITY.to_string();
    assert_exhausted(
        open_watch(&greedy).await,
        &["watchers_per_identity", "token \"greedy\"", &cap],
    );
    assert_eq!(hits(&cluster, 0, Limit::WatchersPerIdentity), 1);
    let console_watch = open_watch(&console)
        .await
        .expect("another token still watches");

    let mut logs = Vec::new();
    for _ in 0..MAX_LOG_STREAMS_PER_IDENTITY {
        logs.push(
            open_logs(&greedy, "noisy")
                .await
                .expect("a log stream under the cap"),
        );
    }
    let cap = MAX_LOG_STREAMS_PER_IDENTITY.to_string();
    assert_exhausted(
        open_logs(&greedy, "noisy").await,
        &["log_streams_per_identity", "token \"greedy\"", &cap],
    );
    assert_eq!(hits(&cluster, 0, Limit::LogStreamsPerIdentity), 1);
    let console_logs = open_logs(&console, "noisy")
        .await
        .expect("another token still streams logs");

    // A client that goes away gives its slots back: drop one stream of
    // each kind (the client resets it), then the whole connection.
    drop(watches.pop());
    drop(logs.pop());
    eventually(Duration::from_secs(10), "the freed slots", || async {
        let watch = open_watch(&greedy).await.ok()?;
        let log = open_logs(&greedy, "noisy").await.ok()?;
        Some((watch, log))
    })
    .await;
    drop((watches, logs, greedy));
    let core = cluster.nodes[0]
        .handle
        .as_ref()
        .expect("running")
        .core
        .clone();
    eventually(
        Duration::from_secs(10),
        "every greedy watch closed",
        || async {
            // The console's own watch is the only one left.
            (core.metrics.watchers_connected.get() == 1).then_some(())
        },
    )
    .await;
    // On a new connection the token has its whole share again.
    let greedy = cluster.channel_with(0, &greedy_creds);
    let mut watches = Vec::new();
    for _ in 0..MAX_WATCHERS_PER_IDENTITY {
        watches.push(open_watch(&greedy).await.expect("the share is back"));
    }
    drop((console_watch, console_logs, watches));
    cluster.shutdown().await;
}

/// A node allowing each token 5 requests a second, 10 at once.
fn slow_rate(c: &mut blixard_daemon::config::Config) {
    c.token_requests_per_sec = 5;
    c.token_request_burst = 10;
}

async fn status(ch: &ApiChannel) -> Result<pb::ClusterStatus, tonic::Status> {
    ClusterServiceClient::new(ch.clone())
        .get_status(pb::GetStatusRequest {
            consistency: pb::Consistency::Local as i32,
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_rate_is_refused_with_a_hint_while_another_token_is_served() {
    let cluster = TestCluster::start_with(1, slow_rate).await;
    let (greedy, greedy_creds) = viewer(&cluster, "greedy").await;
    let (polite, _) = viewer(&cluster, "polite").await;
    let mut refusal = None;
    for _ in 0..40 {
        if let Err(status) = status(&greedy).await {
            refusal = Some(status);
            break;
        }
    }
    let refusal = refusal.expect("40 calls at once pass a burst of 10");
    assert_eq!(
        refusal.code(),
        tonic::Code::ResourceExhausted,
        "{refusal:?}"
    );
    assert!(
        refusal.message().contains("request_rate")
            && refusal.message().contains("token \"greedy\""),
        "{}",
        refusal.message()
    );
    let retry_ms: u64 = refusal
        .metadata()
        .get("retry-after-ms")
        .expect("a retry-after-ms hint")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("a number");
    assert!(
        (1..=200).contains(&retry_ms),
        "one token in at most 200 ms at 5/s: {retry_ms}"
    );
    assert!(refusal
        .message()
        .contains(&format!("retry in {retry_ms} ms")));
    // The rate layer sees who calls (it runs inside the gate): another
    // token has its own bucket. Were it outside, every call would look
    // anonymous and share the one bucket greedy just emptied.
    status(&polite).await.expect("another token is served");
    assert!(hits(&cluster, 0, Limit::RequestRate) >= 1);
    // The client library waits out the hint and retries: the CLI is not
    // failed by a burst, only slowed to the rate.
    let mut cli = blixard_shared::BlixardClient::new([cluster.nodes[0].addr.to_string()])
        .expect("client")
        .with_credentials(greedy_creds);
    let before = hits(&cluster, 0, Limit::RequestRate);
    for _ in 0..20 {
        cli.status(pb::Consistency::Local)
            .await
            .expect("served after waiting as asked");
    }
    assert!(
        hits(&cluster, 0, Limit::RequestRate) > before,
        "20 calls at 5/s had to wait"
    );
    cluster.shutdown().await;
}
