//! One `vm create` is one trace: the CLI and three `blixardd` processes
//! export to an OTLP/gRPC receiver started here, the command goes to a
//! follower (which forwards the write to the leader), and the trace of the
//! CLI's span holds spans of the CLI, the follower, the leader (its
//! commit and apply) and the agent's start of the VM on its host.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Seen {
    trace_id: Vec<u8>,
    name: String,
    service: String,
    instance: String,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Seen>>>,
}

fn attribute(
    resource: &Option<opentelemetry_proto::tonic::resource::v1::Resource>,
    key: &str,
) -> String {
    resource
        .iter()
        .flat_map(|r| r.attributes.iter())
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.clone())
        .map(|v| match v {
            AnyValue::StringValue(s) => s,
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("lock");
        for rs in req.into_inner().resource_spans {
            let service = attribute(&rs.resource, "service.name");
            let instance = attribute(&rs.resource, "service.instance.id");
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push(Seen {
                        trace_id: span.trace_id,
                        name: span.name,
                        service: service.clone(),
                        instance: instance.clone(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[test]
fn one_vm_create_is_one_trace_from_the_cli_through_the_leader_to_the_agent() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let receiver = Receiver::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().to_path_buf();
    let config = runner_config(&root, "");
    let (daemons, all) = start_cluster(&root, &["--config", &config, "--otlp-endpoint", &url]);
    let runner = write_runner(&root).display().to_string();
    let status = json_of(&cli(&all, &["cluster", "status"]));
    let leader = status["leader_id"].as_u64().expect("leader");
    let follower = daemons.iter().find(|d| d.id != leader).expect("a follower");

    let mut cmd = Command::new(blixard_bin());
    with_credentials(&mut cmd, &follower.addr);
    let out = cmd
        .args([
            "--endpoint",
            &follower.addr,
            "--otlp-endpoint",
            &url,
            "--json",
        ])
        .args([
            "vm",
            "create",
            "traced",
            "--vcpus",
            "1",
            "--memory-mib",
            "32",
            "--runner",
            &runner,
        ])
        .env_remove("BLIXARD_ENDPOINT")
        .output()
        .expect("run blixard");
    assert!(out.status.success(), "{out:?}");
    let host = eventually(Duration::from_secs(60), "the VM to run", || {
        let v = json_of(&cli(&all, &["vm", "get", "traced"]));
        (v["state"] == "running").then(|| v["node_id"].as_u64())?
    });

    let (trace, spans) = eventually(
        Duration::from_secs(30),
        "the whole trace at the receiver",
        || {
            let seen = receiver.spans.lock().expect("lock").clone();
            let root = seen
                .iter()
                .find(|s| s.service == "blixard" && s.name == "blixard vm create")?;
            let spans: Vec<Seen> = seen
                .iter()
                .filter(|s| s.trace_id == root.trace_id)
                .cloned()
                .collect();
            let from = |service: &str, instance: &str| {
                spans
                    .iter()
                    .any(|s| s.service == service && s.instance == instance)
            };
            let leader_applied = spans
                .iter()
                .any(|s| s.instance == leader.to_string() && s.name == "raft.apply");
            let agent_started = spans
                .iter()
                .any(|s| s.instance == host.to_string() && s.name == "vm.start");
            (from("blixardd", &follower.id.to_string()) && leader_applied && agent_started)
                .then(|| (root.trace_id.clone(), spans))
        },
    );
    let nodes: BTreeSet<String> = spans
        .iter()
        .filter(|s| s.service == "blixardd")
        .map(|s| s.instance.clone())
        .collect();
    eprintln!(
        "trace {} has {} spans from the CLI and nodes {nodes:?} (leader {leader}, follower {}, host {host}): {:?}",
        trace.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        spans.len(),
        follower.id,
        spans.iter().map(|s| format!("{}@{}", s.name, s.instance)).collect::<Vec<_>>()
    );
    assert!(spans.iter().any(|s| s.service == "blixard"));
}
