//! `blixard.v1.QuotaService`: quotas per label. The rules a quota holds
//! creates and starts to are applied with each command (`state::quota`),
//! so every node refuses the same and no race slips past a quota.

use crate::core::Core;
use crate::security::authz::Resource;
use crate::security::Caller;
use crate::state::quota::{self, QuotaLimits};
use crate::state::Action;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::quota_service_server::QuotaService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Serves the quota API of one node.
pub struct QuotaApi {
    core: Arc<Core>,
}

impl QuotaApi {
    /// A service over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

fn limits_to_pb(l: &QuotaLimits) -> pb::QuotaLimits {
    pb::QuotaLimits {
        vcpus: l.vcpus,
        memory_mib: l.memory_mib,
        vms: l.vms,
    }
}

/// The quota of `label` with what its VMs use in `fleet`.
fn quota_to_pb(fleet: &crate::state::Fleet, label: &str, limits: &QuotaLimits) -> pb::Quota {
    pb::Quota {
        label: label.to_string(),
        limits: Some(limits_to_pb(limits)),
        used: Some(limits_to_pb(&quota::usage(&fleet.vms, label))),
    }
}

fn check_label(label: &str) -> Result<(), Status> {
    crate::audit::note::target(format!("Quota::{label:?}"));
    blixard_shared::validate::quota_label("label", label)
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl QuotaService for QuotaApi {
    async fn set_quota(
        &self,
        req: Request<pb::SetQuotaRequest>,
    ) -> Result<Response<pb::SetQuotaResponse>, Status> {
        self.core
            .metrics
            .observe("SetQuota", async {
                self.core
                    .authorize(&Caller::of(&req), "quota.set", Resource::Cluster)?;
                let req = req.into_inner();
                check_label(&req.label)?;
                let l = req.limits.unwrap_or_default();
                let limits = QuotaLimits {
                    vcpus: l.vcpus,
                    memory_mib: l.memory_mib,
                    vms: l.vms,
                };
                if !limits.any() {
                    return Err(Status::invalid_argument(
                        "limits: set at least one of vcpus, memory_mib and vms",
                    ));
                }
                self.core
                    .propose(Action::SetQuota {
                        label: req.label.clone(),
                        limits,
                    })
                    .await?;
                tracing::info!(label = %req.label, vcpus = limits.vcpus, memory_mib = limits.memory_mib, vms = limits.vms, "quota set");
                let fleet = self.core.view.read();
                Ok(Response::new(pb::SetQuotaResponse {
                    quota: Some(quota_to_pb(&fleet, &req.label, &limits)),
                }))
            })
            .await
    }

    async fn list_quotas(
        &self,
        req: Request<pb::ListQuotasRequest>,
    ) -> Result<Response<pb::ListQuotasResponse>, Status> {
        self.core
            .metrics
            .observe("ListQuotas", async {
                self.core
                    .authorize(&Caller::of(&req), "quota.read", Resource::Cluster)?;
                self.core
                    .read_barrier(pb::Consistency::Linearizable as i32)
                    .await?;
                let fleet = self.core.view.read();
                let used = quota::usage_all(&fleet.quotas, &fleet.vms);
                let quotas = fleet
                    .quotas
                    .iter()
                    .map(|(label, limits)| pb::Quota {
                        label: label.clone(),
                        limits: Some(limits_to_pb(limits)),
                        used: Some(limits_to_pb(&used.get(label).copied().unwrap_or_default())),
                    })
                    .collect();
                Ok(Response::new(pb::ListQuotasResponse { quotas }))
            })
            .await
    }

    async fn delete_quota(
        &self,
        req: Request<pb::DeleteQuotaRequest>,
    ) -> Result<Response<pb::DeleteQuotaResponse>, Status> {
        self.core
            .metrics
            .observe("DeleteQuota", async {
                self.core
                    .authorize(&Caller::of(&req), "quota.set", Resource::Cluster)?;
                let req = req.into_inner();
                check_label(&req.label)?;
                self.core
                    .propose(Action::DeleteQuota { label: req.label })
                    .await?;
                Ok(Response::new(pb::DeleteQuotaResponse {}))
            })
            .await
    }
}
