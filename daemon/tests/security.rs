//! The trust boundary, tried as an intruder would: forged Raft messages
//! and forwards from callers without a node certificate, with another
//! CA's, with a non-member's or one claiming another node's id; joins
//! with missing, forged, expired and used tokens; and every client RPC
//! against every kind of token.

mod common;

use blixard_daemon::security::pki::{ClusterCa, TlsFiles};
use blixard_shared::auth::Secret;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::cluster_service_client::ClusterServiceClient;
use blixard_shared::proto::v1::raft_service_client::RaftServiceClient;
use blixard_shared::Credentials;
use common::{create_req, eventually, TestCluster};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The vote that bricked a cluster before the boundary existed: term
/// `u64::MAX` for a node 9 that does not exist, as a leadership transfer.
fn forged_vote(node_id: u64, term: u64) -> Vec<u8> {
    serde_json::json!({
        "vote": {"leader_id": {"term": term, "node_id": node_id}, "committed": false},
        "last_log_id": {"leader_id": {"term": term, "node_id": node_id}, "index": u64::MAX},
        "leadership_transfer": true
    })
    .to_string()
    .into_bytes()
}

/// An AppendEntries from "leader" `node_id` that would truncate everything.
fn forged_append(node_id: u64, term: u64, prev_index: u64) -> Vec<u8> {
    serde_json::json!({
        "vote": {"leader_id": {"term": term, "node_id": node_id}, "committed": true},
        "prev_log_id": {"leader_id": {"term": 1, "node_id": node_id}, "index": prev_index},
        "entries": [],
        "leader_commit": null
    })
    .to_string()
    .into_bytes()
}

/// A forwarded command, as JSON.
fn forged_forward(action: serde_json::Value) -> Vec<u8> {
    serde_json::json!({"time_ms": 1, "action": action})
        .to_string()
        .into_bytes()
}

/// A certificate and key for node `id`, signed by `ca`.
fn node_identity(ca: &ClusterCa, id: u64) -> Identity {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = ca
        .issue_node_cert(id, &key, &["127.0.0.1".into()])
        .expect("cert");
    Identity::from_pem(cert, key.serialize_pem())
}

/// A Raft client to node `i` trusting the cluster CA, presenting `identity`.
fn raft_client(
    cluster: &TestCluster,
    i: usize,
    identity: Option<Identity>,
) -> RaftServiceClient<tonic::transport::Channel> {
    let ca = std::fs::read_to_string(cluster.nodes[0].dir.join("tls/ca.pem")).expect("ca");
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    let ch = tonic::transport::Endpoint::from_shared(format!("https://{}", cluster.nodes[i].addr))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    RaftServiceClient::new(ch)
}

fn payload(data: Vec<u8>) -> pb::RaftPayload {
    pb::RaftPayload { data }
}

async fn term_of(cluster: &TestCluster) -> u64 {
    cluster.status_from_any().await.expect("status").term
}

/// The cluster still elects and writes: a leadership transfer goes
/// through and a VM is created.
async fn still_healthy(cluster: &TestCluster, vm: &str) {
    let mut client = cluster.client();
    client
        .call(|ch| async move {
            ClusterServiceClient::new(ch)
                .transfer_leadership(pb::TransferLeadershipRequest { to_node_id: 0 })
                .await
        })
        .await
        .expect("leadership moves");
    let mut vms = cluster.client();
    vms.call(|ch| async move {
        pb::vm_service_client::VmServiceClient::new(ch)
            .create_vm(create_req(vm))
            .await
    })
    .await
    .expect("the cluster writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_vote_is_refused_from_every_kind_of_stranger() {
    let cluster = TestCluster::start(3).await;
    let follower = cluster.follower().await;
    let before = term_of(&cluster).await;
    let cluster_ca = TlsFiles::new(&cluster.nodes[0].dir).read_ca().expect("ca");
    let other_ca = ClusterCa::generate().expect("other ca");
    let member = cluster.nodes[follower].id;
    let other_member = cluster
        .nodes
        .iter()
        .find(|n| n.id != member)
        .expect("other")
        .id;
    let callers = [
        ("no certificate", None, Some(tonic::Code::Unauthenticated)),
        // The TLS handshake fails: no gRPC answer at all.
        (
            "another CA's certificate",
            Some(node_identity(&other_ca, 9)),
            None,
        ),
        (
            "a non-member's certificate",
            Some(node_identity(&cluster_ca, 9)),
            Some(tonic::Code::PermissionDenied),
        ),
        (
            "a member claiming another id",
            Some(node_identity(&cluster_ca, other_member)),
            Some(tonic::Code::PermissionDenied),
        ),
    ];
    for (who, identity, code) in callers {
        let mut raft = raft_client(&cluster, follower, identity);
        let err = raft
            .vote(payload(forged_vote(9, u64::MAX)))
            .await
            .expect_err(who);
        if let Some(code) = code {
            assert_eq!(err.code(), code, "{who}: {}", err.message());
        }
    }
    // A member speaking for itself, but near the end of terms: refused too.
    let mut raft = raft_client(
        &cluster,
        follower,
        Some(node_identity(&cluster_ca, other_member)),
    );
    let err = raft
        .vote(payload(forged_vote(other_member, u64::MAX)))
        .await
        .expect_err("a term near u64::MAX");
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "{}",
        err.message()
    );
    let err = raft
        .pre_vote(payload(forged_vote(other_member, u64::MAX - 1)))
        .await
        .expect_err("a pre-vote near u64::MAX");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    still_healthy(&cluster, "after-votes").await;
    let after = term_of(&cluster).await;
    assert!(
        after < before + 10,
        "the term stays sane: {before} -> {after}"
    );
    cluster.shutdown().await;
}

/// The first chunk of a snapshot from "leader" `node_id`: an empty fleet
/// and no membership, which would wipe the receiver's state.
fn forged_snapshot(node_id: u64, term: u64) -> pb::SnapshotChunk {
    let vote: blixard_daemon::raft::Vote = serde_json::from_value(serde_json::json!({
        "leader_id": {"term": term, "node_id": node_id}, "committed": true
    }))
    .expect("vote");
    let meta = blixard_daemon::raft::SnapshotMeta::default();
    pb::SnapshotChunk {
        header: serde_json::to_vec(&(vote, meta)).expect("header"),
        data: b"{}".to_vec(),
    }
}

/// One forged peer message of each kind, "from" node `claimed`.
async fn send_forged(
    raft: &mut RaftServiceClient<tonic::transport::Channel>,
    kind: &str,
    claimed: u64,
    term: u64,
) -> tonic::Status {
    let r = match kind {
        "Vote" => raft
            .vote(payload(forged_vote(claimed, term)))
            .await
            .map(drop),
        "AppendEntries" => raft
            .append_entries(payload(forged_append(claimed, term, 0)))
            .await
            .map(drop),
        "InstallSnapshot" => raft
            .install_snapshot(tokio_stream::iter(vec![forged_snapshot(claimed, term)]))
            .await
            .map(drop),
        "Forward" => {
            let renew = serde_json::json!({"type": "renew_lease", "id": claimed, "lease_ms": 6000});
            raft.forward(payload(forged_forward(renew))).await.map(drop)
        }
        other => panic!("no forgery for {other}"),
    };
    r.expect_err(kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forged_peer_message_is_refused_from_every_kind_of_stranger() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let before = cluster.status_from_any().await.expect("status");
    let cluster_ca = TlsFiles::new(&cluster.nodes[0].dir).read_ca().expect("ca");
    let other_ca = ClusterCa::generate().expect("other ca");
    let leader_id = cluster.nodes[leader].id;
    let follower_id = cluster.nodes[follower].id;
    let third = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|id| *id != follower_id && *id != leader_id)
        .expect("third");
    // (who, identity, the id the message claims, expected code; None: the
    // TLS handshake itself fails).
    let callers = [
        (
            "no certificate",
            None,
            leader_id,
            Some(tonic::Code::Unauthenticated),
        ),
        (
            "another CA's certificate",
            Some(node_identity(&other_ca, leader_id)),
            leader_id,
            None,
        ),
        (
            "a non-member's certificate",
            Some(node_identity(&cluster_ca, 9)),
            9,
            Some(tonic::Code::PermissionDenied),
        ),
        (
            "a member claiming another id",
            Some(node_identity(&cluster_ca, third)),
            leader_id,
            Some(tonic::Code::PermissionDenied),
        ),
    ];
    for kind in ["Vote", "AppendEntries", "InstallSnapshot", "Forward"] {
        // Forward goes to the leader, the rest to a follower.
        let target = if kind == "Forward" { leader } else { follower };
        for (who, identity, claimed, code) in &callers {
            let mut raft = raft_client(&cluster, target, identity.clone());
            let err = send_forged(&mut raft, kind, *claimed, before.term + 1).await;
            match code {
                Some(code) => assert_eq!(err.code(), *code, "{kind} from {who}: {}", err.message()),
                None => assert!(
                    matches!(
                        err.code(),
                        tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled
                    ),
                    "{kind} from {who}: {err:?}"
                ),
            }
        }
    }
    // Past the boundary: a member speaking for itself, but with a term or
    // log index near u64::MAX.
    let mut member = raft_client(&cluster, follower, Some(node_identity(&cluster_ca, third)));
    let err = member
        .append_entries(payload(forged_append(third, before.term, u64::MAX)))
        .await
        .expect_err("a log index near u64::MAX");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = send_forged(&mut member, "InstallSnapshot", third, u64::MAX).await;
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // The leader's own decisions never come by Forward, even from a member.
    let place = serde_json::json!({"type": "place_vm", "name": "x", "node_id": follower_id, "expected_epoch": 0});
    let err = raft_client(
        &cluster,
        leader,
        Some(node_identity(&cluster_ca, follower_id)),
    )
    .forward(payload(forged_forward(place)))
    .await
    .expect_err("a placement by Forward");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let after = cluster.status_from_any().await.expect("status");
    assert_eq!(after.term, before.term, "no forgery moved the term");
    assert!(
        after.commit_index >= before.commit_index,
        "no forgery truncated the log"
    );
    still_healthy(&cluster, "after-forgeries").await;
    cluster.shutdown().await;
}

/// `IssueCertificate` for node `node_id` with `token`, straight to node 1.
async fn redeem(cluster: &TestCluster, node_id: u64, token: &str) -> Result<(), tonic::Status> {
    let key = rcgen::KeyPair::generate().expect("key");
    let anonymous =
        Credentials::from_ca_file(&cluster.nodes[0].dir.join("tls/ca.pem")).expect("ca");
    ClusterServiceClient::new(cluster.channel_with(0, &anonymous))
        .issue_certificate(pb::IssueCertificateRequest {
            node_id,
            join_token: token.to_string(),
            public_key_pem: key.public_key_pem(),
            hosts: vec!["127.0.0.1".into()],
        })
        .await
        .map(|_| ())
}

async fn member_ids(cluster: &TestCluster) -> Vec<u64> {
    let mut ids: Vec<u64> = cluster
        .status_from_any()
        .await
        .expect("status")
        .members
        .iter()
        .map(|m| m.node_id)
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_needs_a_fresh_valid_token() {
    let mut cluster = TestCluster::start(1).await;
    let members = member_ids(&cluster).await;
    for (what, token) in [
        ("no token", String::new()),
        ("a forged token", format!("blxj_{}", "0".repeat(64))),
    ] {
        let err = redeem(&cluster, 5, &token).await.expect_err(what);
        assert!(
            matches!(
                err.code(),
                tonic::Code::InvalidArgument | tonic::Code::Unauthenticated
            ),
            "{what}: {err:?}"
        );
    }
    // An expired one.
    let expired = ClusterServiceClient::new(cluster.channel(0))
        .create_join_token(pb::CreateJoinTokenRequest { ttl_seconds: 1 })
        .await
        .expect("join token")
        .into_inner();
    eventually(Duration::from_secs(5), "the token to expire", || async {
        (blixard_shared::time::now_ms() > expired.expires_at_ms).then_some(())
    })
    .await;
    let err = redeem(&cluster, 5, &expired.token)
        .await
        .expect_err("expired");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // A used one: node 2 joins with it, then nobody else can.
    let (token, fingerprint) = cluster.join_token().await;
    let i = cluster
        .add_node_with(|c| {
            c.join_token = Some(Secret::new(token.clone()));
            c.ca_fingerprint = Some(fingerprint.clone());
        })
        .await;
    cluster.wait_for_voters(2).await;
    assert!(cluster.nodes[i].dir.join("tls/node.pem").exists());
    let err = redeem(&cluster, 6, &token).await.expect_err("used");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // A wrong fingerprint: the joining node refuses the cluster.
    let (token, _) = cluster.join_token().await;
    let start = cluster
        .try_add_node_with(|c| {
            c.join_token = Some(Secret::new(token.clone()));
            c.ca_fingerprint = Some(format!("sha256:{}", "ab".repeat(32)));
        })
        .await;
    assert!(start.is_err(), "a wrong CA fingerprint stops the join");
    assert_eq!(member_ids(&cluster).await, [members, vec![2]].concat());
    // The node that joined restarts on its data dir without a token.
    cluster.stop(i).await;
    cluster.restart(i).await;
    cluster.wait_for_voters(2).await;
    cluster.shutdown().await;
}

/// What a role may do, by method, as the roles are documented.
const MATRIX: &[(&str, blixard_shared::auth::Role)] = {
    use blixard_shared::auth::Role::*;
    &[
        ("GetStatus", Viewer),
        ("ListVms", Viewer),
        ("GetVm", Viewer),
        ("ListNodes", Viewer),
        ("GetNode", Viewer),
        ("Watch", Viewer),
        ("StreamVmLogs", Viewer),
        ("ExplainVm", Viewer),
        ("CreateVm", Operator),
        ("StartVm", Operator),
        ("StopVm", Operator),
        ("RestartVm", Operator),
        ("DeleteVm", Operator),
        ("CordonNode", Operator),
        ("UncordonNode", Operator),
        ("DrainNode", Operator),
        ("MigrateVm", Operator),
        ("Join", Admin),
        ("RemoveNode", Admin),
        ("TransferLeadership", Admin),
        ("CreateJoinToken", Admin),
        ("Backup", Admin),
        ("CreateToken", Admin),
        ("ListTokens", Admin),
        ("RevokeToken", Admin),
        ("ReloadPolicies", Admin),
        ("GetPolicies", Admin),
        ("CheckAccess", Viewer),
        ("ListAudit", Admin),
        ("WatchAudit", Admin),
        ("SetQuota", Admin),
        ("ListQuotas", Viewer),
        ("DeleteQuota", Admin),
    ]
};

/// The client methods the matrix leaves out, and why: `IssueCertificate`
/// is open (its proof, a join token, travels in the body).
const NOT_IN_MATRIX: &[&str] = &["IssueCertificate"];

#[test]
fn the_matrix_covers_every_client_method() {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptors");
    for service in set.file.iter().flat_map(|f| &f.service) {
        if service.name() == "RaftService" {
            continue;
        }
        for method in &service.method {
            let name = method.name();
            assert!(
                MATRIX.iter().any(|(m, _)| *m == name) || NOT_IN_MATRIX.contains(&name),
                "{}/{name} is not in the authorization matrix",
                service.name()
            );
        }
    }
}

/// Calls `method` harmlessly (missing names, invalid addresses): only the
/// gate's answer matters.
async fn call(ch: blixard_shared::ApiChannel, method: &str, n: usize) -> Result<(), tonic::Status> {
    use pb::node_service_client::NodeServiceClient as Nodes;
    use pb::token_service_client::TokenServiceClient as Tokens;
    use pb::vm_service_client::VmServiceClient as Vms;
    use pb::watch_service_client::WatchServiceClient as Watch;
    let missing = || "no-such-vm".to_string();
    let r: Result<(), tonic::Status> = match method {
        "GetStatus" => ClusterServiceClient::new(ch)
            .get_status(pb::GetStatusRequest::default())
            .await
            .map(drop),
        "ListVms" => Vms::new(ch)
            .list_vms(pb::ListVmsRequest::default())
            .await
            .map(drop),
        "GetVm" => Vms::new(ch)
            .get_vm(pb::GetVmRequest {
                name: missing(),
                ..Default::default()
            })
            .await
            .map(drop),
        "ListNodes" => Nodes::new(ch)
            .list_nodes(pb::ListNodesRequest::default())
            .await
            .map(drop),
        "GetNode" => Nodes::new(ch)
            .get_node(pb::GetNodeRequest {
                node_id: 99,
                ..Default::default()
            })
            .await
            .map(drop),
        "Watch" => Watch::new(ch)
            .watch(pb::WatchRequest::default())
            .await
            .map(drop),
        "StreamVmLogs" => Vms::new(ch)
            .stream_vm_logs(pb::StreamVmLogsRequest {
                name: missing(),
                ..Default::default()
            })
            .await
            .map(drop),
        "CreateVm" => Vms::new(ch)
            .create_vm(create_req(&format!("m-{n}")))
            .await
            .map(drop),
        "StartVm" => Vms::new(ch)
            .start_vm(pb::StartVmRequest { name: missing() })
            .await
            .map(drop),
        "StopVm" => Vms::new(ch)
            .stop_vm(pb::StopVmRequest { name: missing() })
            .await
            .map(drop),
        "RestartVm" => Vms::new(ch)
            .restart_vm(pb::RestartVmRequest { name: missing() })
            .await
            .map(drop),
        "DeleteVm" => Vms::new(ch)
            .delete_vm(pb::DeleteVmRequest {
                name: missing(),
                ..Default::default()
            })
            .await
            .map(drop),
        "CordonNode" => Nodes::new(ch)
            .cordon_node(pb::CordonNodeRequest { node_id: 99 })
            .await
            .map(drop),
        "DrainNode" => Nodes::new(ch)
            .drain_node(pb::DrainNodeRequest {
                node_id: 99,
                ..Default::default()
            })
            .await
            .map(drop),
        "MigrateVm" => Vms::new(ch)
            .migrate_vm(pb::MigrateVmRequest {
                name: missing(),
                ..Default::default()
            })
            .await
            .map(drop),
        "ExplainVm" => Vms::new(ch)
            .explain_vm(pb::ExplainVmRequest {
                name: missing(),
                ..Default::default()
            })
            .await
            .map(drop),
        "UncordonNode" => Nodes::new(ch)
            .uncordon_node(pb::UncordonNodeRequest { node_id: 99 })
            .await
            .map(drop),
        "Join" => ClusterServiceClient::new(ch)
            .join(pb::JoinRequest {
                node_id: 99,
                address: "nowhere".into(),
            })
            .await
            .map(drop),
        "RemoveNode" => ClusterServiceClient::new(ch)
            .remove_node(pb::RemoveNodeRequest { node_id: 99 })
            .await
            .map(drop),
        "TransferLeadership" => ClusterServiceClient::new(ch)
            .transfer_leadership(pb::TransferLeadershipRequest { to_node_id: 99 })
            .await
            .map(drop),
        "Backup" => ClusterServiceClient::new(ch)
            .backup(pb::BackupRequest {})
            .await
            .map(drop),
        "CreateJoinToken" => ClusterServiceClient::new(ch)
            .create_join_token(pb::CreateJoinTokenRequest::default())
            .await
            .map(drop),
        "CreateToken" => Tokens::new(ch)
            .create_token(pb::CreateTokenRequest {
                name: format!("t-{n}"),
                role: "viewer".into(),
                ttl_seconds: 0,
                labels: vec![],
            })
            .await
            .map(drop),
        "ListTokens" => Tokens::new(ch)
            .list_tokens(pb::ListTokensRequest {})
            .await
            .map(drop),
        "RevokeToken" => Tokens::new(ch)
            .revoke_token(pb::RevokeTokenRequest {
                name: "no-such-token".into(),
            })
            .await
            .map(drop),
        // A policy text that does not parse: an admin gets InvalidArgument
        // (and nothing changes), anyone else PermissionDenied.
        "ReloadPolicies" => pb::policy_service_client::PolicyServiceClient::new(ch)
            .reload_policies(pb::ReloadPoliciesRequest {
                policies: "permit(".into(),
                schema: String::new(),
            })
            .await
            .map(drop),
        "GetPolicies" => pb::policy_service_client::PolicyServiceClient::new(ch)
            .get_policies(pb::GetPoliciesRequest {})
            .await
            .map(drop),
        "CheckAccess" => pb::policy_service_client::PolicyServiceClient::new(ch)
            .check_access(pb::CheckAccessRequest { queries: vec![] })
            .await
            .map(drop),
        "ListAudit" => pb::audit_service_client::AuditServiceClient::new(ch)
            .list_audit(pb::ListAuditRequest::default())
            .await
            .map(drop),
        "WatchAudit" => pb::audit_service_client::AuditServiceClient::new(ch)
            .watch_audit(pb::WatchAuditRequest::default())
            .await
            .map(drop),
        "SetQuota" => pb::quota_service_client::QuotaServiceClient::new(ch)
            .set_quota(pb::SetQuotaRequest {
                label: format!("matrix=q{n}"),
                limits: Some(pb::QuotaLimits {
                    vms: 1000,
                    ..Default::default()
                }),
            })
            .await
            .map(drop),
        "ListQuotas" => pb::quota_service_client::QuotaServiceClient::new(ch)
            .list_quotas(pb::ListQuotasRequest {})
            .await
            .map(drop),
        "DeleteQuota" => pb::quota_service_client::QuotaServiceClient::new(ch)
            .delete_quota(pb::DeleteQuotaRequest {
                label: "no=such".into(),
            })
            .await
            .map(drop),
        other => panic!("no call for {other}"),
    };
    r
}

/// Creates a token and returns its secret.
async fn make_token(
    cluster: &TestCluster,
    name: &str,
    role: &str,
    ttl_seconds: u64,
) -> (String, u64) {
    let resp = pb::token_service_client::TokenServiceClient::new(cluster.channel(0))
        .create_token(pb::CreateTokenRequest {
            name: name.into(),
            role: role.into(),
            ttl_seconds,
            labels: vec![],
        })
        .await
        .expect("token")
        .into_inner();
    (resp.secret, resp.token.expect("info").expires_at_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_rpc_answers_each_token_as_its_role_says() {
    use blixard_shared::auth::Role;
    let cluster = TestCluster::start(1).await;
    let ca = Credentials::from_ca_file(&cluster.nodes[0].dir.join("tls/ca.pem")).expect("ca");
    let with = |secret: &str| ca.clone().token(&Secret::new(secret)).expect("token");
    let (viewer, _) = make_token(&cluster, "viewer-1", "viewer", 0).await;
    let (operator, _) = make_token(&cluster, "operator-1", "operator", 0).await;
    let (admin, _) = make_token(&cluster, "admin-2", "admin", 0).await;
    let (revoked, _) = make_token(&cluster, "revoked-1", "admin", 0).await;
    pb::token_service_client::TokenServiceClient::new(cluster.channel(0))
        .revoke_token(pb::RevokeTokenRequest {
            name: "revoked-1".into(),
        })
        .await
        .expect("revoke");
    let (expired, expires_at) = make_token(&cluster, "expired-1", "admin", 1).await;
    eventually(Duration::from_secs(5), "the token to expire", || async {
        (blixard_shared::time::now_ms() > expires_at).then_some(())
    })
    .await;
    let unauthenticated = [
        ("no token", ca.clone()),
        ("a wrong token", with(&format!("blxt_{}", "1".repeat(64)))),
        ("an expired token", with(&expired)),
        ("a revoked token", with(&revoked)),
    ];
    let mut n = 0;
    for (method, needs) in MATRIX {
        for (who, creds) in &unauthenticated {
            n += 1;
            let err = call(cluster.channel_with(0, creds), method, n)
                .await
                .expect_err(who);
            assert_eq!(
                err.code(),
                tonic::Code::Unauthenticated,
                "{method} with {who}: {}",
                err.message()
            );
        }
        for (role, secret) in [
            (Role::Viewer, &viewer),
            (Role::Operator, &operator),
            (Role::Admin, &admin),
        ] {
            n += 1;
            let r = call(cluster.channel_with(0, &with(secret)), method, n).await;
            let refused = matches!(&r, Err(s) if s.code() == tonic::Code::PermissionDenied);
            assert_eq!(
                refused,
                role < *needs,
                "{method} as {role}: {r:?} (needs {needs})"
            );
        }
    }
    cluster.shutdown().await;
}

/// The forged vote of the issue, on an `--insecure` cluster where nobody is
/// asked for proof: the term bound alone keeps the cluster alive (before
/// it, this one call ended the cluster's elections for good; see
/// `docs/security.md`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn even_without_credentials_a_vote_near_the_end_of_terms_cannot_end_elections() {
    let cluster = TestCluster::start_with(3, |c| c.insecure = true).await;
    let follower = cluster.follower().await;
    let before = term_of(&cluster).await;
    let mut raft = RaftServiceClient::new(cluster.channel(follower));
    let err = raft
        .vote(payload(forged_vote(9, u64::MAX)))
        .await
        .expect_err("the forged vote");
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "{}",
        err.message()
    );
    still_healthy(&cluster, "after-the-vote").await;
    let after = term_of(&cluster).await;
    assert!(
        after < before + 10,
        "the term stays sane: {before} -> {after}"
    );
    cluster.shutdown().await;
}
