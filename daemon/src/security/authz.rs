//! Authorization with Cedar: every call is one action (`vm.create`,
//! `logs.read`, `token.revoke`, ...) on one resource (`Vm::"web-1"` with its
//! labels, `Node::"2"`, the `Cluster`), and the replicated policies decide
//! whether the calling token may. A refusal is `PermissionDenied` naming the
//! action and the resource, never the policies. Member nodes (relaying a
//! client's call they authorized themselves, or reporting about
//! themselves) and callers of an `--insecure` cluster are not asked about.

use super::Caller;
use crate::policy::{self, Compiled};
use crate::state::model::PolicyRecord;
use cedar_policy::{
    Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request,
    RestrictedExpression,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use tonic::Status;

/// What a call acts on.
#[derive(Debug, Clone, Copy)]
pub enum Resource<'a> {
    /// A VM, by name, with its labels (none for one that does not exist).
    Vm {
        /// Name.
        name: &'a str,
        /// Labels.
        labels: &'a BTreeMap<String, String>,
    },
    /// A node, by id.
    Node(u64),
    /// The cluster itself (membership, tokens, policies, the event stream).
    Cluster,
}

impl std::fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Vm { name, .. } => write!(f, "Vm::{name:?}"),
            Resource::Node(id) => write!(f, "Node::\"{id}\""),
            Resource::Cluster => f.write_str("Cluster::\"cluster\""),
        }
    }
}

/// Most decisions remembered: past it the memory is cleared and refilled.
const DECISION_CACHE_LEN: usize = 4096;

/// The policies in force, compiled once per revision, and the decisions
/// made with them: a Cedar decision costs about 25 µs here (the request's
/// entities are built and checked against the schema each time), a
/// remembered one a hash lookup, and a client repeats the same few
/// decisions (its token, its VMs). Both are dropped when the policies
/// change; the decisions also when the memory is full.
#[derive(Default)]
pub struct Authorizer {
    cache: Mutex<Option<(u64, Arc<Compiled>)>>,
    decisions: Mutex<(u64, HashMap<String, bool>)>,
}

/// Everything a decision depends on, as one key.
fn decision_key(
    name: &str,
    role: &str,
    labels: &BTreeMap<String, String>,
    action: &str,
    resource: Resource<'_>,
) -> String {
    let resource_labels = match resource {
        Resource::Vm { labels, .. } => format!("{labels:?}"),
        _ => String::new(),
    };
    format!("{name}\u{0}{role}\u{0}{labels:?}\u{0}{action}\u{0}{resource}\u{0}{resource_labels}")
}

fn uid(kind: &str, id: &str) -> Result<EntityUid, String> {
    let kind = EntityTypeName::from_str(&format!("Blixard::{kind}")).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(kind, EntityId::new(id)))
}

fn label_set(labels: &BTreeMap<String, String>) -> RestrictedExpression {
    RestrictedExpression::new_set(
        labels
            .iter()
            .map(|(k, v)| RestrictedExpression::new_string(format!("{k}={v}"))),
    )
}

/// The role entities: admin in operator in viewer, so a policy for
/// viewers also covers operators and admins.
fn roles() -> Result<Vec<Entity>, String> {
    let chain = [
        ("viewer", None),
        ("operator", Some("viewer")),
        ("admin", Some("operator")),
    ];
    chain
        .iter()
        .map(|(role, parent)| {
            let parents = parent
                .map(|p| uid("Role", p))
                .transpose()?
                .into_iter()
                .collect();
            Ok(Entity::new_no_attrs(uid("Role", role)?, parents))
        })
        .collect()
}

impl Authorizer {
    /// The compiled policies of `record` (the defaults when `None`),
    /// compiled again only when the revision moved. A replicated text that
    /// no longer compiles (it was validated before it was proposed and when
    /// applied) leaves the defaults in force, loudly.
    fn compiled(&self, record: Option<&PolicyRecord>) -> Result<Arc<Compiled>, Status> {
        let revision = record.map_or(0, |r| r.revision);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, compiled)) = cache.as_ref() {
            if *at == revision {
                return Ok(compiled.clone());
            }
        }
        let compiled = match record {
            Some(r) => policy::compile(&r.policies, &r.schema).or_else(|e| {
                tracing::error!(revision, error = %e, "replicated policies do not compile; using the defaults");
                policy::defaults()
            }),
            None => policy::defaults(),
        }
        .map_err(|e| Status::internal(format!("the built-in policies do not compile: {e}")))?;
        let compiled = Arc::new(compiled);
        *cache = Some((revision, compiled.clone()));
        Ok(compiled)
    }

    /// Whether `caller` may do `action` on `resource` under `record`'s
    /// policies; `Ok(())` or `PermissionDenied` naming both.
    pub fn check(
        &self,
        record: Option<&PolicyRecord>,
        caller: &Caller,
        action: &str,
        resource: Resource<'_>,
    ) -> Result<(), Status> {
        let Caller::Token { name, role, labels } = caller else {
            return Ok(());
        };
        let revision = record.map_or(0, |r| r.revision);
        let key = decision_key(name, role.as_str(), labels, action, resource);
        let remembered = {
            let decisions = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
            (decisions.0 == revision)
                .then(|| decisions.1.get(&key).copied())
                .flatten()
        };
        let allowed = match remembered {
            Some(allowed) => allowed,
            None => {
                let compiled = self.compiled(record)?;
                let allowed = decide(&compiled, name, role.as_str(), labels, action, resource)
                    .map_err(|e| {
                        Status::internal(format!("authorizing {action} on {resource}: {e}"))
                    })?;
                let mut decisions = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
                if decisions.0 != revision || decisions.1.len() >= DECISION_CACHE_LEN {
                    *decisions = (revision, HashMap::new());
                }
                decisions.1.insert(key, allowed);
                allowed
            }
        };
        if allowed {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "token {name:?} may not {action} on {resource}"
        )))
    }

    /// [`Authorizer::check`] as a yes or no, for filtering lists and streams.
    pub fn allows(
        &self,
        record: Option<&PolicyRecord>,
        caller: &Caller,
        action: &str,
        resource: Resource<'_>,
    ) -> bool {
        self.check(record, caller, action, resource).is_ok()
    }
}

/// One Cedar decision.
fn decide(
    compiled: &Compiled,
    name: &str,
    role: &str,
    labels: &BTreeMap<String, String>,
    action: &str,
    resource: Resource<'_>,
) -> Result<bool, String> {
    let principal = uid("Token", name)?;
    let attrs = HashMap::from([
        (
            "name".to_string(),
            RestrictedExpression::new_string(name.to_string()),
        ),
        (
            "role".to_string(),
            RestrictedExpression::new_string(role.to_string()),
        ),
        ("labels".to_string(), label_set(labels)),
    ]);
    let token = Entity::new(
        principal.clone(),
        attrs,
        HashSet::from([uid("Role", role)?]),
    )
    .map_err(|e| e.to_string())?;
    let (target, resource_labels) = match resource {
        Resource::Vm { name, labels } => (uid("Vm", name)?, Some(labels)),
        Resource::Node(id) => (uid("Node", &id.to_string())?, None),
        Resource::Cluster => (uid("Cluster", "cluster")?, None),
    };
    let target_entity = match resource_labels {
        Some(labels) => Entity::new(
            target.clone(),
            HashMap::from([("labels".to_string(), label_set(labels))]),
            HashSet::new(),
        )
        .map_err(|e| e.to_string())?,
        None => Entity::new_no_attrs(target.clone(), HashSet::new()),
    };
    let mut entities = roles()?;
    entities.extend([token, target_entity]);
    let entities =
        Entities::from_entities(entities, Some(&compiled.schema)).map_err(|e| e.to_string())?;
    let action =
        EntityUid::from_str(&format!("Blixard::Action::{action:?}")).map_err(|e| e.to_string())?;
    let request = Request::new(
        principal,
        action,
        target,
        Context::empty(),
        Some(&compiled.schema),
    )
    .map_err(|e| e.to_string())?;
    let response =
        cedar_policy::Authorizer::new().is_authorized(&request, &compiled.policies, &entities);
    Ok(response.decision() == Decision::Allow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use blixard_shared::auth::Role;

    fn token(role: Role, labels: &[(&str, &str)]) -> Caller {
        Caller::Token {
            name: "t".into(),
            role,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_default_policies_read_as_the_roles_say() {
        let a = Authorizer::default();
        let web = BTreeMap::from([("team".to_string(), "web".to_string())]);
        let vm = Resource::Vm {
            name: "web-1",
            labels: &web,
        };
        let viewer = token(Role::Viewer, &[]);
        assert!(a.allows(None, &viewer, "vm.read", vm));
        assert!(!a.allows(None, &viewer, "vm.stop", vm));
        let operator = token(Role::Operator, &[]);
        assert!(a.allows(None, &operator, "vm.stop", vm));
        assert!(a.allows(None, &operator, "node.cordon", Resource::Node(2)));
        assert!(!a.allows(None, &operator, "token.create", Resource::Cluster));
        let admin = token(Role::Admin, &[]);
        assert!(a.allows(None, &admin, "token.create", Resource::Cluster));
        assert!(a.allows(None, &admin, "vm.delete", vm));
        let err = a.check(None, &viewer, "vm.stop", vm).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(
            err.message().contains("vm.stop") && err.message().contains("web-1"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn a_labelled_token_acts_only_on_its_vms() {
        let a = Authorizer::default();
        let web = BTreeMap::from([("team".to_string(), "web".to_string())]);
        let db = BTreeMap::from([("team".to_string(), "db".to_string())]);
        let scoped = token(Role::Operator, &[("team", "web")]);
        assert!(a.allows(
            None,
            &scoped,
            "vm.stop",
            Resource::Vm {
                name: "w",
                labels: &web
            }
        ));
        assert!(!a.allows(
            None,
            &scoped,
            "vm.stop",
            Resource::Vm {
                name: "d",
                labels: &db
            }
        ));
        assert!(!a.allows(
            None,
            &scoped,
            "vm.read",
            Resource::Vm {
                name: "d",
                labels: &db
            }
        ));
        assert!(a.allows(None, &scoped, "node.read", Resource::Node(1)));
        assert!(a.allows(None, &scoped, "node.list", Resource::Cluster));
    }

    #[test]
    fn new_policies_take_effect_by_revision() {
        let a = Authorizer::default();
        let viewer = token(Role::Viewer, &[]);
        let none = BTreeMap::new();
        let vm = Resource::Vm {
            name: "x",
            labels: &none,
        };
        assert!(a.allows(None, &viewer, "vm.read", vm));
        let record = PolicyRecord {
            policies: "permit(principal in Blixard::Role::\"admin\", action, resource);".into(),
            schema: policy::DEFAULT_SCHEMA.into(),
            revision: 7,
        };
        assert!(!a.allows(Some(&record), &viewer, "vm.read", vm));
        assert!(a.allows(Some(&record), &token(Role::Admin, &[]), "vm.read", vm));
    }
}
