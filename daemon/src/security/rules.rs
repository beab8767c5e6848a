//! What each gRPC method needs the gate to establish before it runs, in one
//! table. The gate authenticates; what a token may do is the Cedar
//! policies' decision (`authz`), asked by each handler with the resource
//! in hand. A method missing from the table is closed, so a method added
//! later refuses everyone until it is listed here.

/// The proof a method asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health checks, reflection, and the join path whose proof
    /// (a join token) travels in the request body.
    Open,
    /// A valid client token (the handler asks the policies), or a member
    /// node relaying a client's call (it authorized the client itself).
    Token,
    /// A member node's certificate: daemon-to-daemon traffic.
    Member,
    /// A valid token, or the certificate of the node asking to join (which
    /// proved a join token to get it; the handler checks the ids).
    TokenOrNode,
    /// Nobody: a method the table does not know.
    Closed,
}

/// What `path` (`/package.Service/Method`) needs.
pub fn need(path: &str) -> Need {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return Need::Closed;
    };
    match (service, method) {
        (
            "grpc.health.v1.Health"
            | "grpc.reflection.v1.ServerReflection"
            | "grpc.reflection.v1alpha.ServerReflection",
            _,
        ) => Need::Open,
        ("blixard.v1.RaftService", _) => Need::Member,
        ("blixard.v1.ClusterService", "IssueCertificate") => Need::Open,
        ("blixard.v1.ClusterService", "Join") => Need::TokenOrNode,
        (
            "blixard.v1.ClusterService",
            "GetStatus" | "RemoveNode" | "TransferLeadership" | "CreateJoinToken" | "Backup",
        )
        | (
            "blixard.v1.NodeService",
            "ListNodes" | "GetNode" | "CordonNode" | "UncordonNode" | "DrainNode",
        )
        | (
            "blixard.v1.VmService",
            "CreateVm" | "GetVm" | "ListVms" | "StartVm" | "StopVm" | "RestartVm" | "DeleteVm"
            | "StreamVmLogs" | "MigrateVm" | "ExplainVm",
        )
        | ("blixard.v1.WatchService", "Watch")
        | ("blixard.v1.TokenService", "CreateToken" | "ListTokens" | "RevokeToken")
        | ("blixard.v1.PolicyService", "ReloadPolicies" | "GetPolicies" | "CheckAccess")
        | ("blixard.v1.AuditService", "ListAudit" | "WatchAudit")
        | ("blixard.v1.QuotaService", "SetQuota" | "ListQuotas" | "DeleteQuota") => Need::Token,
        _ => Need::Closed,
    }
}

/// How the audit trail treats a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audited {
    /// The Cedar action the method asks about (or, for the join path,
    /// which asks no policy, a name of the same form).
    pub action: &'static str,
    /// Every call is recorded; otherwise only refusals.
    pub mutating: bool,
}

/// How the audit trail treats `path`; `None`: not audited (daemon-to-daemon
/// traffic, health checks, reflection, methods the table does not know).
pub fn audited(path: &str) -> Option<Audited> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    let write = |action| {
        Some(Audited {
            action,
            mutating: true,
        })
    };
    let read = |action| {
        Some(Audited {
            action,
            mutating: false,
        })
    };
    match (service, method) {
        ("blixard.v1.ClusterService", m) => match m {
            "GetStatus" => read("cluster.status"),
            "RemoveNode" => write("cluster.remove_node"),
            "TransferLeadership" => write("cluster.transfer_leader"),
            "CreateJoinToken" => write("cluster.join_token"),
            "Join" => write("cluster.join"),
            "IssueCertificate" => write("cluster.issue_certificate"),
            // A backup carries every token's hash: each one is recorded.
            "Backup" => write("cluster.backup"),
            _ => None,
        },
        ("blixard.v1.NodeService", m) => match m {
            "ListNodes" => read("node.list"),
            "GetNode" => read("node.read"),
            "CordonNode" => write("node.cordon"),
            "UncordonNode" => write("node.uncordon"),
            "DrainNode" => write("node.drain"),
            _ => None,
        },
        ("blixard.v1.VmService", m) => match m {
            "CreateVm" => write("vm.create"),
            "GetVm" => read("vm.read"),
            "ListVms" => read("vm.list"),
            "StartVm" => write("vm.start"),
            "StopVm" => write("vm.stop"),
            "RestartVm" => write("vm.restart"),
            "DeleteVm" => write("vm.delete"),
            "MigrateVm" => write("vm.migrate"),
            "ExplainVm" => read("vm.read"),
            "StreamVmLogs" => read("logs.read"),
            _ => None,
        },
        ("blixard.v1.WatchService", "Watch") => read("events.watch"),
        ("blixard.v1.TokenService", m) => match m {
            "CreateToken" => write("token.create"),
            "ListTokens" => read("token.list"),
            "RevokeToken" => write("token.revoke"),
            _ => None,
        },
        ("blixard.v1.PolicyService", m) => match m {
            "ReloadPolicies" => write("policy.reload"),
            "GetPolicies" => read("policy.read"),
            "CheckAccess" => read("access.check"),
            _ => None,
        },
        ("blixard.v1.AuditService", "ListAudit" | "WatchAudit") => read("audit.read"),
        ("blixard.v1.QuotaService", m) => match m {
            "SetQuota" => write("quota.set"),
            "DeleteQuota" => write("quota.set"),
            "ListQuotas" => read("quota.read"),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_closes_what_it_does_not_know() {
        assert_eq!(need("/blixard.v1.VmService/ListVms"), Need::Token);
        assert_eq!(need("/blixard.v1.TokenService/CreateToken"), Need::Token);
        assert_eq!(need("/blixard.v1.RaftService/Vote"), Need::Member);
        assert_eq!(need("/blixard.v1.RaftService/Forward"), Need::Member);
        assert_eq!(need("/blixard.v1.ClusterService/Join"), Need::TokenOrNode);
        assert_eq!(
            need("/blixard.v1.ClusterService/IssueCertificate"),
            Need::Open
        );
        assert_eq!(need("/grpc.health.v1.Health/Check"), Need::Open);
        assert_eq!(need("/blixard.v1.VmService/SomethingNew"), Need::Closed);
        assert_eq!(need("garbage"), Need::Closed);
    }

    /// Every method of every `blixard.v1` service is in the table, so none
    /// is closed by mistake (and none open by one: each listed client
    /// method asks the policies in its handler; the authorization matrix
    /// test checks that).
    #[test]
    fn every_api_method_is_listed() {
        use prost::Message;
        let set =
            prost_types::FileDescriptorSet::decode(blixard_shared::proto::v1::FILE_DESCRIPTOR_SET)
                .expect("descriptor set");
        for file in set.file {
            let package = file.package().to_string();
            for service in file.service {
                for method in &service.method {
                    let path = format!("/{package}.{}/{}", service.name(), method.name());
                    assert_ne!(
                        need(&path),
                        Need::Closed,
                        "{path} is not in the gate's table"
                    );
                    assert_eq!(
                        audited(&path).is_some(),
                        service.name() != "RaftService",
                        "{path}: every client method is in the audit table, no peer method"
                    );
                }
            }
        }
    }
}
