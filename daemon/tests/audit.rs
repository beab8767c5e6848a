//! The audit trail in a running 3-node cluster: a mixed run of allowed
//! and refused calls on every node appears in the trail exactly once each,
//! with the right identity, node, action, target and result; the stream
//! follows new records; no secret reaches it. Quotas per label refuse a
//! create or start past them with the numbers and change nothing; the
//! console's question (`CheckAccess`) is answered by the policies.

mod common;

use blixard_shared::proto::v1 as pb;
use blixard_shared::Credentials;
use common::{create_req, eventually, TestCluster};
use pb::audit_service_client::AuditServiceClient;
use pb::quota_service_client::QuotaServiceClient;
use pb::vm_service_client::VmServiceClient;
use std::time::Duration;

/// Every record the trail holds, read through node `i`.
async fn trail(cluster: &TestCluster, i: usize) -> Vec<pb::AuditRecord> {
    let mut audit = AuditServiceClient::new(cluster.channel(i));
    let mut records = Vec::new();
    let mut after = 0;
    loop {
        let page = audit
            .list_audit(pb::ListAuditRequest {
                after_seq: after,
                page_size: 100,
                ..Default::default()
            })
            .await
            .expect("list audit")
            .into_inner();
        records.extend(page.records);
        if page.next_after_seq == 0 {
            return records;
        }
        after = page.next_after_seq;
    }
}

fn stopped(name: &str) -> pb::CreateVmRequest {
    let mut req = create_req(name);
    req.stopped = true;
    req
}

fn vms(
    cluster: &TestCluster,
    i: usize,
    who: &Credentials,
) -> VmServiceClient<blixard_shared::ApiChannel> {
    VmServiceClient::new(cluster.channel_with(i, who))
}

/// One expected record: principal, node id, action, target, result, code.
type Expected = (
    &'static str,
    u64,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_run_of_calls_is_recorded_once_each_with_its_identity() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_for_voters(3).await;
    let (viewer, viewer_secret) = cluster.token("audit-viewer", "viewer", &[]).await;
    let (operator, operator_secret) = cluster.token("audit-ops", "operator", &[]).await;
    let admin = cluster.credentials();
    // A stream on node 2 that follows the trail from now.
    let mut follow = AuditServiceClient::new(cluster.channel(1))
        .watch_audit(pb::WatchAuditRequest {
            filter: Some(pb::AuditFilter {
                principal: "token:audit-viewer".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("watch audit")
        .into_inner();

    vms(&cluster, 0, &admin)
        .create_vm(stopped("aud-1"))
        .await
        .expect("create");
    // Through a follower: forwarded to the leader, recorded where it was asked.
    vms(&cluster, 1, &operator)
        .start_vm(pb::StartVmRequest {
            name: "aud-1".into(),
        })
        .await
        .expect("start");
    let denied = vms(&cluster, 2, &viewer)
        .delete_vm(pb::DeleteVmRequest {
            name: "aud-1".into(),
            force: true,
        })
        .await
        .expect_err("a viewer may not delete");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    // A read that is allowed is not recorded; a refused one is.
    vms(&cluster, 1, &viewer)
        .get_vm(pb::GetVmRequest {
            name: "aud-1".into(),
            ..Default::default()
        })
        .await
        .expect("a viewer reads");
    let stranger = Credentials::from_ca_file(&cluster.nodes[0].dir.join("tls/ca.pem"))
        .expect("ca")
        .token(&blixard_shared::auth::Secret::new(format!(
            "blxt_{}",
            "7".repeat(64)
        )))
        .expect("token");
    let unknown = vms(&cluster, 0, &stranger)
        .list_vms(pb::ListVmsRequest::default())
        .await
        .expect_err("an unknown token");
    assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
    let failed = vms(&cluster, 2, &operator)
        .stop_vm(pb::StopVmRequest {
            name: "no-such-vm".into(),
        })
        .await
        .expect_err("no such VM");
    assert_eq!(failed.code(), tonic::Code::NotFound);
    vms(&cluster, 0, &operator)
        .stop_vm(pb::StopVmRequest {
            name: "aud-1".into(),
        })
        .await
        .expect("stop");
    // A membership call a follower relays to the leader through the public
    // API: recorded where the admin called, not again at the leader.
    let follower = cluster.follower().await;
    let relayed = pb::cluster_service_client::ClusterServiceClient::new(cluster.channel(follower))
        .transfer_leadership(pb::TransferLeadershipRequest { to_node_id: 99 })
        .await
        .expect_err("no node 99");
    let relay_code = blixard_shared::client::code_name(relayed.code());
    // A sentinel from each node: each node writes its records in order,
    // so once its sentinel is in the trail, so is everything before it.
    for i in 0..3 {
        vms(&cluster, i, &admin)
            .create_vm(stopped(&format!("sentinel-{i}")))
            .await
            .expect("sentinel");
    }
    let records = eventually(
        Duration::from_secs(20),
        "every node's sentinel in the trail",
        || async {
            let records = trail(&cluster, 0).await;
            let sentinels = records
                .iter()
                .filter(|r| r.target.starts_with("Vm::\"sentinel-"))
                .count();
            (sentinels == 3).then_some(records)
        },
    )
    .await;

    let transfers: Vec<&pb::AuditRecord> = records
        .iter()
        .filter(|r| r.action == "cluster.transfer_leader")
        .collect();
    assert_eq!(
        transfers.len(),
        1,
        "relayed once, recorded once: {transfers:#?}"
    );
    assert_eq!(transfers[0].principal, "token:admin");
    assert_eq!(transfers[0].node_id, cluster.nodes[follower].id);
    assert_eq!(
        (transfers[0].result.as_str(), transfers[0].code.as_str()),
        ("failed", relay_code)
    );
    let expected: [Expected; 7] = [
        ("token:admin", 1, "vm.create", "Vm::\"aud-1\"", "ok", "ok"),
        (
            "token:audit-ops",
            2,
            "vm.start",
            "Vm::\"aud-1\"",
            "ok",
            "ok",
        ),
        (
            "token:audit-viewer",
            3,
            "vm.delete",
            "Vm::\"aud-1\"",
            "denied",
            "permission_denied",
        ),
        ("anonymous", 1, "vm.list", "", "denied", "unauthenticated"),
        (
            "token:audit-ops",
            3,
            "vm.stop",
            "Vm::\"no-such-vm\"",
            "failed",
            "not_found",
        ),
        ("token:audit-ops", 1, "vm.stop", "Vm::\"aud-1\"", "ok", "ok"),
        (
            "token:admin",
            3,
            "vm.create",
            "Vm::\"sentinel-2\"",
            "ok",
            "ok",
        ),
    ];
    for (principal, node_id, action, target, result, code) in expected {
        let matching: Vec<&pb::AuditRecord> = records
            .iter()
            .filter(|r| {
                r.principal == principal
                    && r.node_id == node_id
                    && r.action == action
                    && r.target == target
            })
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{principal} {action} {target} on node {node_id}: {matching:#?}\nall: {records:#?}"
        );
        let r = matching[0];
        assert_eq!(
            (r.result.as_str(), r.code.as_str()),
            (result, code),
            "{r:?}"
        );
        assert!(r.peer.starts_with("127.0.0.1:"), "{r:?}");
    }
    assert!(
        !records
            .iter()
            .any(|r| r.principal == "token:audit-viewer" && r.action == "vm.read"),
        "an allowed read is not recorded"
    );
    // Sequence numbers are gap-free; the records are the same on every node.
    for pair in records.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
    let last = records.last().map(|r| r.seq).unwrap_or_default();
    let elsewhere = trail(&cluster, 2).await;
    assert_eq!(
        elsewhere.iter().filter(|r| r.seq <= last).count(),
        records.len()
    );
    // No secret anywhere in the trail.
    let text = format!("{records:?}");
    let admin_secret =
        std::fs::read_to_string(cluster.nodes[0].dir.join("admin.token")).expect("admin token");
    for secret in [
        viewer_secret.as_str(),
        operator_secret.as_str(),
        admin_secret.trim(),
        "7777777777",
    ] {
        assert!(!text.contains(secret), "a secret in the trail");
    }
    // The stream saw the viewer's refusal.
    let streamed = tokio::time::timeout(Duration::from_secs(10), follow.message())
        .await
        .expect("a streamed record in time")
        .expect("stream")
        .expect("a record")
        .record
        .expect("record");
    assert_eq!(streamed.action, "vm.delete");
    assert_eq!(streamed.result, "denied");
    // Filters: by principal and by action prefix.
    let filtered = AuditServiceClient::new(cluster.channel(0))
        .list_audit(pb::ListAuditRequest {
            filter: Some(pb::AuditFilter {
                principal: "token:audit-ops".into(),
                action: "vm.".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("filtered")
        .into_inner();
    assert_eq!(filtered.records.len(), 3, "{:#?}", filtered.records);
    // Only admins read the trail, and the refusal is itself recorded.
    let err = AuditServiceClient::new(cluster.channel_with(0, &operator))
        .list_audit(pb::ListAuditRequest::default())
        .await
        .expect_err("an operator may not read the trail");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_refuses_what_would_pass_it_with_the_numbers_and_changes_nothing() {
    let cluster = TestCluster::start(1).await;
    let mut quotas = QuotaServiceClient::new(cluster.channel(0));
    let web = |name: &str, vcpus: u32, stopped: bool| {
        let mut req = create_req(name);
        req.stopped = stopped;
        if let Some(spec) = req.spec.as_mut() {
            spec.vcpus = vcpus;
            spec.labels.insert("team".into(), "web".into());
        }
        req
    };
    let bad = quotas
        .set_quota(pb::SetQuotaRequest {
            label: "team".into(),
            limits: Some(pb::QuotaLimits {
                vms: 1,
                ..Default::default()
            }),
        })
        .await
        .expect_err("a label without a value");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("label"), "{}", bad.message());
    quotas
        .set_quota(pb::SetQuotaRequest {
            label: "team=web".into(),
            limits: Some(pb::QuotaLimits {
                vcpus: 3,
                memory_mib: 0,
                vms: 3,
            }),
        })
        .await
        .expect("set quota");
    let mut admin = cluster.vm_client(0);
    admin
        .create_vm(web("q-1", 2, true))
        .await
        .expect("stopped: no vCPUs counted");
    admin
        .create_vm(web("q-2", 2, false))
        .await
        .expect("2 of 3 vCPUs");
    let err = admin
        .create_vm(web("q-3", 2, false))
        .await
        .expect_err("4 of 3 vCPUs");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        err.message()
            .contains("quota team=web: vcpus would be 4 of 3 (in use 2, this VM 2)"),
        "{}",
        err.message()
    );
    let err = admin
        .start_vm(pb::StartVmRequest { name: "q-1".into() })
        .await
        .expect_err("starting q-1 passes the vCPUs");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    admin
        .create_vm(web("q-3", 1, true))
        .await
        .expect("the third VM");
    let err = admin
        .create_vm(web("q-4", 1, true))
        .await
        .expect_err("a fourth VM");
    assert!(
        err.message().contains("vms would be 4 of 3"),
        "{}",
        err.message()
    );
    // Nothing changed: three VMs, q-1 still stopped; VMs without the label pass.
    let vm = admin
        .get_vm(pb::GetVmRequest {
            name: "q-1".into(),
            ..Default::default()
        })
        .await
        .expect("q-1")
        .into_inner()
        .vm
        .expect("vm");
    assert_eq!(vm.desired_state, pb::DesiredState::Stopped as i32);
    admin
        .create_vm(create_req("no-team"))
        .await
        .expect("not under the quota");
    let listed = quotas
        .list_quotas(pb::ListQuotasRequest {})
        .await
        .expect("list")
        .into_inner()
        .quotas;
    assert_eq!(listed.len(), 1);
    let used = listed[0].used.expect("used");
    assert_eq!((used.vcpus, used.vms), (2, 3));
    // Viewers read quotas; only admins set them.
    let (viewer, _) = cluster.token("quota-viewer", "viewer", &[]).await;
    let mut as_viewer = QuotaServiceClient::new(cluster.channel_with(0, &viewer));
    as_viewer
        .list_quotas(pb::ListQuotasRequest {})
        .await
        .expect("viewers read");
    let err = as_viewer
        .delete_quota(pb::DeleteQuotaRequest {
            label: "team=web".into(),
        })
        .await
        .expect_err("viewers may not delete");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_access_answers_with_the_policies_in_force() {
    let cluster = TestCluster::start(1).await;
    cluster
        .vm_client(0)
        .create_vm(stopped("acc-1"))
        .await
        .expect("vm");
    let (web, _) = cluster.token("acc-web", "operator", &["team=web"]).await;
    let q = |action: &str, kind: &str, name: &str| pb::AccessQuery {
        action: action.into(),
        kind: kind.into(),
        name: name.into(),
    };
    let resp = pb::policy_service_client::PolicyServiceClient::new(cluster.channel_with(0, &web))
        .check_access(pb::CheckAccessRequest {
            queries: vec![
                q("vm.stop", "vm", "acc-1"),
                q("node.cordon", "node", "1"),
                q("token.create", "cluster", ""),
            ],
        })
        .await
        .expect("check access")
        .into_inner();
    assert_eq!(resp.principal, "token:acc-web");
    assert_eq!(resp.role, "operator");
    assert_eq!(resp.labels, ["team=web"]);
    assert_eq!(
        resp.allowed,
        [false, true, false],
        "acc-1 is not the web team's"
    );
    let err = pb::policy_service_client::PolicyServiceClient::new(cluster.channel_with(0, &web))
        .check_access(pb::CheckAccessRequest {
            queries: vec![q("vm.stop", "disk", "x")],
        })
        .await
        .expect_err("an unknown kind");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("queries[0].kind"),
        "{}",
        err.message()
    );
    cluster.shutdown().await;
}
