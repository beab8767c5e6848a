//! `blixard.v1.PolicyService`: replacing the cluster's Cedar policies. A
//! text that does not parse or validate against the schema is refused with
//! the line and the reason, and the policies in force stay; a valid one is
//! replicated, so every node decides with it as soon as it applies it.
//! `SIGHUP` to `blixardd` reloads from the node's `policy_dir` the same way.

use crate::core::Core;
use crate::policy;
use crate::security::authz::Resource;
use crate::security::Caller;
use crate::state::Action;
use blixard_shared::limits::{MAX_ACCESS_QUERIES, MAX_POLICY_BYTES};
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::policy_service_server::PolicyService;
use std::path::Path;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The schema file in a `policy_dir`; the `*.cedar` files beside it are the
/// policies, read in name order.
pub const SCHEMA_FILE: &str = "schema.cedarschema";

/// Serves the policy API of one node.
pub struct PolicyApi {
    core: Arc<Core>,
}

impl PolicyApi {
    /// A service over `core`.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

/// The policies and schema in `dir`: every `*.cedar` file (name order) and
/// `schema.cedarschema` (the built-in schema when absent).
pub fn read_dir(dir: &Path) -> Result<(String, String), Status> {
    let unreadable = |e: std::io::Error| {
        Status::failed_precondition(format!("policy_dir {}: {e}", dir.display()))
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(unreadable)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    files.sort();
    let mut policies = String::new();
    for file in &files {
        let len = std::fs::metadata(file).map_err(unreadable)?.len();
        if policies.len() as u64 + len > MAX_POLICY_BYTES as u64 {
            return Err(Status::invalid_argument(format!(
                "policies: the files in {} are larger than {MAX_POLICY_BYTES} bytes",
                dir.display()
            )));
        }
        policies.push_str(&std::fs::read_to_string(file).map_err(unreadable)?);
        policies.push('\n');
    }
    let schema_path = dir.join(SCHEMA_FILE);
    let schema = if schema_path.exists() {
        std::fs::read_to_string(&schema_path).map_err(unreadable)?
    } else {
        policy::DEFAULT_SCHEMA.to_string()
    };
    Ok((policies, schema))
}

/// Compiles `policies` with `schema` and replicates them; the revision
/// that set them.
pub async fn replace(core: &Core, policies: String, schema: String) -> Result<u64, Status> {
    policy::compile(&policies, &schema).map_err(|e| Status::invalid_argument(e.to_string()))?;
    core.propose(Action::SetPolicies { policies, schema })
        .await?;
    // On a follower the write may not be applied here yet.
    core.read_barrier(pb::Consistency::Linearizable as i32)
        .await?;
    let revision = core.view.read().policies.as_ref().map_or(0, |p| p.revision);
    tracing::info!(revision, "policies replaced");
    Ok(revision)
}

/// What `SIGHUP` does: the node's `policy_dir` (the built-in defaults when
/// it has none), replicated.
pub async fn reload_from_config(core: &Core) -> Result<u64, Status> {
    let (policies, schema) = match &core.config.policy_dir {
        Some(dir) => read_dir(dir)?,
        None => (
            policy::DEFAULT_POLICIES.to_string(),
            policy::DEFAULT_SCHEMA.to_string(),
        ),
    };
    replace(core, policies, schema).await
}

#[tonic::async_trait]
impl PolicyService for PolicyApi {
    async fn reload_policies(
        &self,
        req: Request<pb::ReloadPoliciesRequest>,
    ) -> Result<Response<pb::ReloadPoliciesResponse>, Status> {
        self.core
            .metrics
            .observe("ReloadPolicies", async {
                self.core
                    .authorize(&Caller::of(&req), "policy.reload", Resource::Cluster)?;
                let req = req.into_inner();
                let revision = if req.policies.is_empty() {
                    reload_from_config(&self.core).await?
                } else {
                    let schema = if req.schema.is_empty() {
                        let fleet = self.core.view.read();
                        fleet.policies.as_ref().map_or_else(
                            || policy::DEFAULT_SCHEMA.to_string(),
                            |p| p.schema.clone(),
                        )
                    } else {
                        req.schema
                    };
                    replace(&self.core, req.policies, schema).await?
                };
                Ok(Response::new(pb::ReloadPoliciesResponse { revision }))
            })
            .await
    }

    async fn get_policies(
        &self,
        req: Request<pb::GetPoliciesRequest>,
    ) -> Result<Response<pb::GetPoliciesResponse>, Status> {
        self.core
            .metrics
            .observe("GetPolicies", async {
                self.core
                    .authorize(&Caller::of(&req), "policy.read", Resource::Cluster)?;
                let fleet = self.core.view.read();
                let resp = match &fleet.policies {
                    Some(p) => pb::GetPoliciesResponse {
                        policies: p.policies.clone(),
                        schema: p.schema.clone(),
                        revision: p.revision,
                    },
                    None => pb::GetPoliciesResponse {
                        policies: policy::DEFAULT_POLICIES.to_string(),
                        schema: policy::DEFAULT_SCHEMA.to_string(),
                        revision: 0,
                    },
                };
                Ok(Response::new(resp))
            })
            .await
    }

    async fn check_access(
        &self,
        req: Request<pb::CheckAccessRequest>,
    ) -> Result<Response<pb::CheckAccessResponse>, Status> {
        self.core
            .metrics
            .observe("CheckAccess", async {
                let caller = Caller::of(&req);
                let queries = req.into_inner().queries;
                if queries.len() > MAX_ACCESS_QUERIES {
                    return Err(Status::invalid_argument(format!(
                        "queries: at most {MAX_ACCESS_QUERIES}, got {}",
                        queries.len()
                    )));
                }
                let allowed = answer(&self.core, &caller, &queries)?;
                let (role, labels) = match &caller {
                    Caller::Token { role, labels, .. } => (
                        role.as_str().to_string(),
                        labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                    ),
                    _ => (String::new(), Vec::new()),
                };
                Ok(Response::new(pb::CheckAccessResponse {
                    principal: caller.describe(),
                    role,
                    labels,
                    allowed,
                    insecure: self.core.config.insecure,
                }))
            })
            .await
    }
}

/// Whether `caller` may do each queried action, by the policies in force
/// (a VM's labels as the state has them).
fn answer(core: &Core, caller: &Caller, queries: &[pb::AccessQuery]) -> Result<Vec<bool>, Status> {
    let fleet = core.view.read();
    let none = std::collections::BTreeMap::new();
    queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            if q.action.is_empty() || q.action.len() > 64 {
                return Err(Status::invalid_argument(format!(
                    "queries[{i}].action: 1 to 64 characters, like \"vm.stop\""
                )));
            }
            let resource = match q.kind.as_str() {
                "vm" => Resource::Vm {
                    name: &q.name,
                    labels: fleet.vms.get(&q.name).map_or(&none, |vm| &vm.spec.labels),
                },
                "node" => Resource::Node(q.name.parse().map_err(|_| {
                    Status::invalid_argument(format!(
                        "queries[{i}].name: a node id (a positive integer), got {:?}",
                        q.name
                    ))
                })?),
                "cluster" => Resource::Cluster,
                other => {
                    return Err(Status::invalid_argument(format!(
                        "queries[{i}].kind: \"vm\", \"node\" or \"cluster\", got {other:?}"
                    )))
                }
            };
            Ok(core
                .authz
                .allows(fleet.policies.as_ref(), caller, &q.action, resource))
        })
        .collect()
}
