//! Cedar policies in a running cluster: a label-scoped token sees and acts
//! on only its VMs (in lists and the watch stream too), and a policy reload
//! takes effect on every node while a broken policy changes nothing.

mod common;

use blixard_shared::proto::v1 as pb;
use common::{create_req, eventually, TestCluster};
use pb::cluster_service_client::ClusterServiceClient;
use pb::policy_service_client::PolicyServiceClient;
use pb::vm_service_client::VmServiceClient;
use pb::watch_service_client::WatchServiceClient;
use std::time::Duration;

fn labelled(name: &str, team: &str) -> pb::CreateVmRequest {
    let mut req = create_req(name);
    req.stopped = true;
    if let Some(spec) = req.spec.as_mut() {
        spec.labels.insert("team".into(), team.into());
    }
    req
}

async fn names(vms: &mut VmServiceClient<blixard_shared::ApiChannel>) -> Vec<String> {
    let mut names: Vec<String> = vms
        .list_vms(pb::ListVmsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .vms
        .into_iter()
        .map(|v| v.name)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labelled_token_sees_and_acts_on_only_its_vms() {
    let cluster = TestCluster::start(1).await;
    let mut admin = cluster.vm_client(0);
    admin
        .create_vm(labelled("web-1", "web"))
        .await
        .expect("web-1");
    admin.create_vm(labelled("db-1", "db")).await.expect("db-1");
    let web = cluster.token("web-team", "operator", &["team=web"]).await.0;
    let mut vms = VmServiceClient::new(cluster.channel_with(0, &web));
    // Its watch opens before the writes below, from now.
    let mut watch = WatchServiceClient::new(cluster.channel_with(0, &web))
        .watch(pb::WatchRequest::default())
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(names(&mut vms).await, ["web-1"], "lists show only its VMs");
    let denied = |r: Result<tonic::Response<pb::GetVmResponse>, tonic::Status>| matches!(r, Err(s) if s.code() == tonic::Code::PermissionDenied);
    assert!(denied(
        vms.get_vm(pb::GetVmRequest {
            name: "db-1".into(),
            ..Default::default()
        })
        .await
    ));
    let err = vms
        .start_vm(pb::StartVmRequest {
            name: "db-1".into(),
        })
        .await
        .expect_err("another team's VM");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("vm.start") && err.message().contains("db-1"),
        "{}",
        err.message()
    );
    let err = vms
        .create_vm(labelled("db-2", "db"))
        .await
        .expect_err("outside its labels");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    vms.create_vm(labelled("web-2", "web"))
        .await
        .expect("inside its labels");
    // Admin changes both teams' VMs; the scoped watcher hears only of its own.
    admin
        .start_vm(pb::StartVmRequest {
            name: "db-1".into(),
        })
        .await
        .expect("db-1 starts");
    vms.start_vm(pb::StartVmRequest {
        name: "web-1".into(),
    })
    .await
    .expect("web-1 starts");
    let mut seen = Vec::new();
    while !seen.iter().any(|s: &String| s == "vm/web-1") {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("an event in time")
            .expect("stream")
            .expect("open")
            .event
            .expect("event");
        seen.push(event.subject);
    }
    assert!(
        seen.iter().all(|s| !s.starts_with("vm/db-")),
        "the scoped watch saw another team's VM: {seen:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_reload_takes_effect_everywhere_and_a_broken_one_changes_nothing() {
    let cluster = TestCluster::start(3).await;
    let viewer = cluster.token("reader", "viewer", &[]).await.0;
    for i in 0..3 {
        let mut vms = VmServiceClient::new(cluster.channel_with(i, &viewer));
        vms.list_vms(pb::ListVmsRequest::default())
            .await
            .expect("viewers read");
    }
    let mut policies = PolicyServiceClient::new(cluster.channel(0));
    let before = policies
        .get_policies(pb::GetPoliciesRequest {})
        .await
        .expect("get")
        .into_inner();
    // A broken policy: refused with the line, nothing changes.
    let broken = format!(
        "{}\npermit(principal, action == Blixard::Action::\"vm.fly\", resource);\n",
        before.policies
    );
    let err = policies
        .reload_policies(pb::ReloadPoliciesRequest {
            policies: broken,
            schema: String::new(),
        })
        .await
        .expect_err("a policy that does not validate");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("line"), "{}", err.message());
    let same = policies
        .get_policies(pb::GetPoliciesRequest {})
        .await
        .expect("get")
        .into_inner();
    assert_eq!(same.revision, before.revision);
    // Admins only, from now on: every node refuses the viewer.
    let admins_only =
        "permit(principal in Blixard::Role::\"admin\", action, resource);".to_string();
    policies
        .reload_policies(pb::ReloadPoliciesRequest {
            policies: admins_only,
            schema: String::new(),
        })
        .await
        .expect("reload");
    // (A list would only come back empty: lists show what the caller may
    // see. The cluster's status is one resource: refused outright.)
    for i in 0..3 {
        let status = ClusterServiceClient::new(cluster.channel_with(i, &viewer));
        eventually(
            Duration::from_secs(10),
            "the new policies on every node",
            || {
                let mut status = status.clone();
                async move {
                    let r = status.get_status(pb::GetStatusRequest::default()).await;
                    matches!(r, Err(s) if s.code() == tonic::Code::PermissionDenied).then_some(())
                }
            },
        )
        .await;
    }
    // Admins still read everywhere.
    for i in 0..3 {
        cluster
            .vm_client(i)
            .list_vms(pb::ListVmsRequest::default())
            .await
            .expect("admins read");
    }
    cluster.shutdown().await;
}
