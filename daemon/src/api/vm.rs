//! `blixard.v1.VmService`: create, read, list, start, stop and delete VMs.

use super::convert::{spec_from_pb, vm_to_pb};
use super::explain::{explain, vm_with_placement};
use super::pagination;
use super::slots::StreamCaps;
use crate::core::Core;
use crate::host::allowlist::{HostPaths, NotAllowed};
use crate::leader::scheduler::policy_of;
use crate::metrics::Limit;
use crate::security::authz::Resource;
use crate::security::Caller;
use crate::state::placement::{self, Input};
use crate::state::{model, Action, CommandOutcome};
use blixard_shared::limits::{MAX_LOG_STREAMS_PER_IDENTITY, MAX_LOG_STREAMS_PER_NODE};
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::vm_service_server::VmService;
use blixard_shared::request_id;
use blixard_shared::validate;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Serves the VM API of one node.
pub struct VmApi {
    core: Arc<Core>,
    /// The host paths a new VM may name, from this node's config (configs
    /// are expected to agree across hosts; each host checks again before
    /// it starts a VM).
    paths: HostPaths,
    /// `StreamVmLogs` streams: [`MAX_LOG_STREAMS_PER_NODE`] in all,
    /// [`MAX_LOG_STREAMS_PER_IDENTITY`] each.
    log_streams: StreamCaps,
}

impl VmApi {
    /// A service over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        let paths = HostPaths::from_config(&core.config);
        let log_streams = StreamCaps::new(
            "StreamVmLogs",
            (MAX_LOG_STREAMS_PER_NODE, Limit::LogStreamsPerNode),
            (MAX_LOG_STREAMS_PER_IDENTITY, Limit::LogStreamsPerIdentity),
            core.metrics.clone(),
        );
        Self {
            core,
            paths,
            log_streams,
        }
    }

    /// Refuses a spec naming a runner, kernel or initrd outside the allowed
    /// dirs: what runs on a host is its operator's decision.
    fn check_paths(&self, name: &str, spec: &model::VmSpec) -> Result<(), Status> {
        self.paths.check(spec).map_err(|e| {
            tracing::warn!(vm = %name, field = e.field.name(), "create refused: a host path outside the allowed dirs");
            refused(e)
        })
    }

    async fn set_desired(
        &self,
        name: &str,
        desired: model::DesiredState,
        request_id: Option<String>,
    ) -> Result<pb::Vm, Status> {
        validate::vm_name(name)?;
        let outcome = self
            .core
            .propose_as(
                Action::SetDesired {
                    name: name.to_string(),
                    desired,
                },
                request_id,
            )
            .await?;
        vm_of(outcome)
    }
}

impl VmApi {
    /// The epoch a migration of `name` starts from, after the checks that
    /// need no proposal: the VM is placed, and with no target some other
    /// node fits it now (apply checks a named target itself).
    fn migration_precheck(&self, name: &str, to: u64) -> Result<u64, Status> {
        let policy = policy_of(&self.core);
        let fleet = self.core.view.read();
        let vm = fleet
            .vms
            .get(name)
            .ok_or_else(|| Status::not_found(format!("vm {name:?} not found")))?;
        if vm.node_id == 0 {
            return Err(Status::failed_precondition(format!(
                "vm {name:?} is not placed on any node ({}): there is nothing to migrate",
                vm.state.word()
            )));
        }
        if to == 0 && vm.spec.node_id == 0 && vm.desired == model::DesiredState::Running {
            let here = std::collections::BTreeSet::from([vm.node_id]);
            let decision = placement::decide(&Input::of(&fleet, &here, policy), vm, false);
            if decision.node.is_none() {
                return Err(Status::resource_exhausted(format!(
                    "no other node can take vm {name:?} now: {}",
                    decision.tally.refusals()
                )));
            }
        }
        Ok(vm.epoch)
    }
}

/// `PermissionDenied` naming the field and who can allow it.
fn refused(e: NotAllowed) -> Status {
    Status::permission_denied(format!("{e}; {}", e.field.remedy()))
}

fn vm_of(outcome: CommandOutcome) -> Result<pb::Vm, Status> {
    match outcome {
        CommandOutcome::Vm(vm) => Ok(vm_to_pb(&vm)),
        other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
    }
}

#[tonic::async_trait]
impl VmService for VmApi {
    type StreamVmLogsStream = super::logs::LogStream;

    async fn restart_vm(
        &self,
        req: Request<pb::RestartVmRequest>,
    ) -> Result<Response<pb::RestartVmResponse>, Status> {
        self.core
            .metrics
            .observe("RestartVm", async {
                let id = request_id::from_request(&req)?;
                let caller = Caller::of(&req);
                let name = req.into_inner().name;
                validate::vm_name(&name)?;
                self.core.authorize_vm(&caller, "vm.restart", &name)?;
                let outcome = self.core.propose_as(Action::RestartVm { name }, id).await?;
                Ok(Response::new(pb::RestartVmResponse {
                    vm: Some(vm_of(outcome)?),
                }))
            })
            .await
    }

    async fn migrate_vm(
        &self,
        req: Request<pb::MigrateVmRequest>,
    ) -> Result<Response<pb::MigrateVmResponse>, Status> {
        self.core
            .metrics
            .observe("MigrateVm", async {
                let id = request_id::from_request(&req)?;
                let caller = Caller::of(&req);
                let req = req.into_inner();
                validate::vm_name(&req.name)?;
                self.core.authorize_vm(&caller, "vm.migrate", &req.name)?;
                if req.live {
                    return Err(Status::unimplemented(
                        "live: live migration is not offered yet; migrate without it (the VM is stopped on its node, then started on the new one)",
                    ));
                }
                let expected_epoch = self.migration_precheck(&req.name, req.to_node_id)?;
                let outcome = self
                    .core
                    .propose_as(
                        Action::MoveVm {
                            name: req.name,
                            expected_epoch,
                            to: req.to_node_id,
                            cause: "migrate".into(),
                        },
                        id,
                    )
                    .await?;
                Ok(Response::new(pb::MigrateVmResponse {
                    vm: Some(vm_of(outcome)?),
                }))
            })
            .await
    }

    async fn explain_vm(
        &self,
        req: Request<pb::ExplainVmRequest>,
    ) -> Result<Response<pb::ExplainVmResponse>, Status> {
        self.core
            .metrics
            .observe("ExplainVm", async {
                let caller = Caller::of(&req);
                let req = req.into_inner();
                validate::vm_name(&req.name)?;
                self.core.read_barrier(req.consistency).await?;
                self.core.authorize_vm(&caller, "vm.read", &req.name)?;
                let policy = policy_of(&self.core);
                let fleet = self.core.view.read();
                let vm = fleet
                    .vms
                    .get(&req.name)
                    .ok_or_else(|| Status::not_found(format!("vm {:?} not found", req.name)))?;
                Ok(Response::new(explain(&fleet, vm, policy)))
            })
            .await
    }

    async fn stream_vm_logs(
        &self,
        req: Request<pb::StreamVmLogsRequest>,
    ) -> Result<Response<Self::StreamVmLogsStream>, Status> {
        self.core
            .metrics
            .observe("StreamVmLogs", async {
                validate::vm_name(&req.get_ref().name)?;
                self.core
                    .authorize_vm(&Caller::of(&req), "logs.read", &req.get_ref().name)?;
                let stream = super::logs::stream(self.core.clone(), &self.log_streams, req).await?;
                Ok(Response::new(stream))
            })
            .await
    }

    async fn create_vm(
        &self,
        req: Request<pb::CreateVmRequest>,
    ) -> Result<Response<pb::CreateVmResponse>, Status> {
        self.core
            .metrics
            .observe("CreateVm", async {
                let id = request_id::from_request(&req)?;
                let caller = Caller::of(&req);
                let req = req.into_inner();
                validate::create_vm(&req)?;
                let spec = req
                    .spec
                    .as_ref()
                    .map(spec_from_pb)
                    .ok_or_else(|| Status::invalid_argument("spec: is required"))?;
                let resource = Resource::Vm {
                    name: &req.name,
                    labels: &spec.labels,
                };
                self.core.authorize(&caller, "vm.create", resource)?;
                self.check_paths(&req.name, &spec)?;
                let desired = if req.stopped {
                    model::DesiredState::Stopped
                } else {
                    model::DesiredState::Running
                };
                let create = Action::CreateVm {
                    name: req.name,
                    spec,
                    desired,
                };
                let outcome = self.core.propose_as(create, id).await?;
                Ok(Response::new(pb::CreateVmResponse {
                    vm: Some(vm_of(outcome)?),
                }))
            })
            .await
    }

    async fn get_vm(
        &self,
        req: Request<pb::GetVmRequest>,
    ) -> Result<Response<pb::GetVmResponse>, Status> {
        self.core
            .metrics
            .observe("GetVm", async {
                let caller = Caller::of(&req);
                let req = req.into_inner();
                validate::vm_name(&req.name)?;
                self.core.read_barrier(req.consistency).await?;
                self.core.authorize_vm(&caller, "vm.read", &req.name)?;
                let fleet = self.core.view.read();
                let vm = fleet
                    .vms
                    .get(&req.name)
                    .ok_or_else(|| Status::not_found(format!("vm {:?} not found", req.name)))?;
                Ok(Response::new(pb::GetVmResponse {
                    vm: Some(vm_with_placement(&fleet, vm, policy_of(&self.core))),
                }))
            })
            .await
    }

    async fn list_vms(
        &self,
        req: Request<pb::ListVmsRequest>,
    ) -> Result<Response<pb::ListVmsResponse>, Status> {
        self.core
            .metrics
            .observe("ListVms", async {
                let caller = Caller::of(&req);
                let req = req.into_inner();
                let size = pagination::page_size(req.page_size);
                let after = pagination::vm_token(&req.page_token)?.map(str::to_string);
                let state = pb::VmState::try_from(req.state).map_err(|_| {
                    Status::invalid_argument(format!("state: unknown value {}", req.state))
                })?;
                let state = model::VmState::from_pb(state);
                validate::labels("labels", &req.labels)?;
                self.core.read_barrier(req.consistency).await?;
                let policy = policy_of(&self.core);
                let fleet = self.core.view.read();
                let range = match &after {
                    Some(name) => fleet.vms.range::<String, _>((
                        std::ops::Bound::Excluded(name),
                        std::ops::Bound::Unbounded,
                    )),
                    None => fleet.vms.range::<String, _>(..),
                };
                let mut vms = Vec::with_capacity(size.min(fleet.vms.len()));
                let mut more = false;
                for (_, vm) in range {
                    let matches = (req.node_id == 0 || vm.node_id == req.node_id)
                        && state.is_none_or(|s| vm.state == s)
                        && req
                            .labels
                            .iter()
                            .all(|(k, v)| vm.spec.labels.get(k) == Some(v));
                    // Only what the caller may see.
                    let visible = || {
                        let resource = Resource::Vm {
                            name: &vm.name,
                            labels: &vm.spec.labels,
                        };
                        self.core.authz.allows(
                            fleet.policies.as_ref(),
                            &caller,
                            "vm.list",
                            resource,
                        )
                    };
                    if !matches || !visible() {
                        continue;
                    }
                    if vms.len() == size {
                        more = true;
                        break;
                    }
                    vms.push(vm_with_placement(&fleet, vm, policy));
                }
                let next_page_token = match (more, vms.last()) {
                    (true, Some(last)) => last.name.clone(),
                    _ => String::new(),
                };
                Ok(Response::new(pb::ListVmsResponse {
                    vms,
                    next_page_token,
                    revision: fleet.revision,
                }))
            })
            .await
    }

    async fn start_vm(
        &self,
        req: Request<pb::StartVmRequest>,
    ) -> Result<Response<pb::StartVmResponse>, Status> {
        self.core
            .metrics
            .observe("StartVm", async {
                self.core
                    .authorize_vm(&Caller::of(&req), "vm.start", &req.get_ref().name)?;
                let vm = self
                    .set_desired(
                        &req.get_ref().name,
                        model::DesiredState::Running,
                        request_id::from_request(&req)?,
                    )
                    .await?;
                Ok(Response::new(pb::StartVmResponse { vm: Some(vm) }))
            })
            .await
    }

    async fn stop_vm(
        &self,
        req: Request<pb::StopVmRequest>,
    ) -> Result<Response<pb::StopVmResponse>, Status> {
        self.core
            .metrics
            .observe("StopVm", async {
                self.core
                    .authorize_vm(&Caller::of(&req), "vm.stop", &req.get_ref().name)?;
                let vm = self
                    .set_desired(
                        &req.get_ref().name,
                        model::DesiredState::Stopped,
                        request_id::from_request(&req)?,
                    )
                    .await?;
                Ok(Response::new(pb::StopVmResponse { vm: Some(vm) }))
            })
            .await
    }

    async fn delete_vm(
        &self,
        req: Request<pb::DeleteVmRequest>,
    ) -> Result<Response<pb::DeleteVmResponse>, Status> {
        self.core
            .metrics
            .observe("DeleteVm", async {
                let id = request_id::from_request(&req)?;
                let caller = Caller::of(&req);
                let req = req.into_inner();
                validate::vm_name(&req.name)?;
                self.core.authorize_vm(&caller, "vm.delete", &req.name)?;
                let delete = Action::DeleteVm {
                    name: req.name,
                    force: req.force,
                };
                self.core.propose_as(delete, id).await?;
                Ok(Response::new(pb::DeleteVmResponse {}))
            })
            .await
    }
}
