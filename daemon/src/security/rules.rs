//! What each gRPC method needs from its caller, in one table. Until Cedar
//! policies refine it (the next issue), a role allows what the roles
//! before it allow plus its own: viewer reads and watches, operator also
//! runs VM and node lifecycle, admin also membership and tokens.

use blixard_shared::auth::Role;

/// The proof a method asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health checks, reflection, and the join path whose proof
    /// (a join token) travels in the request body.
    Open,
    /// A client token with at least this role, or a member node relaying a
    /// client's call (it checked the client's token itself).
    Role(Role),
    /// A member node's certificate: daemon-to-daemon traffic.
    Member,
    /// An admin token, or the certificate of the node asking to join
    /// (which proved a join token to get it; the handler checks the ids).
    AdminOrNode,
}

/// What `path` (`/package.Service/Method`) needs. Methods not in the table
/// need an admin token, so a method added later is closed until listed.
pub fn need(path: &str) -> Need {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return Need::Role(Role::Admin);
    };
    match service {
        "grpc.health.v1.Health"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => Need::Open,
        "blixard.v1.RaftService" => Need::Member,
        "blixard.v1.ClusterService" => match method {
            "GetStatus" => Need::Role(Role::Viewer),
            "IssueCertificate" => Need::Open,
            "Join" => Need::AdminOrNode,
            _ => Need::Role(Role::Admin),
        },
        "blixard.v1.NodeService" => match method {
            "ListNodes" | "GetNode" => Need::Role(Role::Viewer),
            "CordonNode" | "UncordonNode" | "DrainNode" => Need::Role(Role::Operator),
            _ => Need::Role(Role::Admin),
        },
        "blixard.v1.VmService" => match method {
            "GetVm" | "ListVms" | "StreamVmLogs" => Need::Role(Role::Viewer),
            "CreateVm" | "StartVm" | "StopVm" | "RestartVm" | "DeleteVm" | "MigrateVm" => {
                Need::Role(Role::Operator)
            }
            _ => Need::Role(Role::Admin),
        },
        "blixard.v1.WatchService" => Need::Role(Role::Viewer),
        _ => Need::Role(Role::Admin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reads_as_the_roles_say() {
        assert_eq!(
            need("/blixard.v1.VmService/ListVms"),
            Need::Role(Role::Viewer)
        );
        assert_eq!(
            need("/blixard.v1.VmService/CreateVm"),
            Need::Role(Role::Operator)
        );
        assert_eq!(
            need("/blixard.v1.NodeService/CordonNode"),
            Need::Role(Role::Operator)
        );
        assert_eq!(
            need("/blixard.v1.ClusterService/RemoveNode"),
            Need::Role(Role::Admin)
        );
        assert_eq!(
            need("/blixard.v1.TokenService/CreateToken"),
            Need::Role(Role::Admin)
        );
        assert_eq!(need("/blixard.v1.RaftService/Vote"), Need::Member);
        assert_eq!(need("/blixard.v1.RaftService/Forward"), Need::Member);
        assert_eq!(need("/blixard.v1.ClusterService/Join"), Need::AdminOrNode);
        assert_eq!(need("/grpc.health.v1.Health/Check"), Need::Open);
        assert_eq!(
            need("/blixard.v1.VmService/SomethingNew"),
            Need::Role(Role::Admin)
        );
        assert_eq!(need("garbage"), Need::Role(Role::Admin));
    }
}
