//! The two calls that admit a node: an admin creates a one-time join
//! token (`CreateJoinToken`), and the joining node proves it to receive
//! its certificate (`IssueCertificate`). Only the token's hash is ever
//! replicated; the redemption is a Raft write, so a token is used once
//! cluster-wide even when two nodes race with it.

use crate::core::Core;
use crate::security::pki::TlsFiles;
use crate::security::secrets;
use crate::state::Action;
use blixard_shared::proto::v1 as pb;
use std::time::Duration;
use tonic::Status;

/// A join token's life when the request names none.
pub const DEFAULT_JOIN_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The longest life a join token may have: it admits a node and hands it
/// the CA, so it must not linger.
pub const MAX_JOIN_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most names a joining node's certificate may carry.
const MAX_CERT_HOSTS: usize = 16;
/// Longest host name (DNS limit).
const MAX_HOST_LEN: usize = 253;
/// Longest public key PEM accepted (a P-256 or Ed25519 key is ~180 bytes).
const MAX_PUBLIC_KEY_PEM: usize = 4096;
/// Longest join token accepted before it is hashed.
const MAX_JOIN_TOKEN_LEN: usize = 256;

fn secure_only(core: &Core) -> Result<&crate::security::pki::TlsMaterial, Status> {
    core.tls.as_ref().ok_or_else(|| {
        Status::failed_precondition(
            "this cluster runs --insecure: nodes join with --join alone, without tokens",
        )
    })
}

/// `CreateJoinToken`: a fresh secret, its hash replicated with its expiry.
pub async fn create_join_token(
    core: &Core,
    req: pb::CreateJoinTokenRequest,
) -> Result<pb::CreateJoinTokenResponse, Status> {
    let tls = secure_only(core)?;
    let ttl = match req.ttl_seconds {
        0 => DEFAULT_JOIN_TOKEN_TTL,
        s if s > MAX_JOIN_TOKEN_TTL.as_secs() => {
            return Err(Status::invalid_argument(format!(
                "ttl_seconds: at most {} (7 days)",
                MAX_JOIN_TOKEN_TTL.as_secs()
            )))
        }
        s => Duration::from_secs(s),
    };
    let secret = secrets::new_join_token().map_err(|e| Status::internal(e.to_string()))?;
    let expires_ms = blixard_shared::time::now_ms() + ttl.as_millis() as u64;
    core.propose(Action::CreateJoinToken {
        hash: secrets::hash_token(&secret),
        expires_ms,
    })
    .await?;
    tracing::info!(expires_ms, "join token created");
    Ok(pb::CreateJoinTokenResponse {
        token: secret,
        expires_at_ms: expires_ms,
        ca_fingerprint: tls.ca_fingerprint.clone(),
    })
}

fn check_issue_request(req: &pb::IssueCertificateRequest) -> Result<(), Status> {
    if req.node_id == 0 {
        return Err(Status::invalid_argument(
            "node_id: must be a positive node id",
        ));
    }
    if req.join_token.is_empty() || req.join_token.len() > MAX_JOIN_TOKEN_LEN {
        return Err(Status::invalid_argument(
            "join_token: missing or too long (create one with `blixard cluster join-token create`)",
        ));
    }
    if req.public_key_pem.len() > MAX_PUBLIC_KEY_PEM {
        return Err(Status::invalid_argument("public_key_pem: too long"));
    }
    if req.hosts.len() > MAX_CERT_HOSTS
        || req
            .hosts
            .iter()
            .any(|h| h.is_empty() || h.len() > MAX_HOST_LEN)
    {
        return Err(Status::invalid_argument(format!(
            "hosts: at most {MAX_CERT_HOSTS} names of 1 to {MAX_HOST_LEN} characters"
        )));
    }
    Ok(())
}

/// `IssueCertificate`: uses the join token up (a Raft write), then signs
/// the joining node's key for its id and names.
pub async fn issue_certificate(
    core: &Core,
    req: pb::IssueCertificateRequest,
) -> Result<pb::IssueCertificateResponse, Status> {
    let tls = secure_only(core)?;
    check_issue_request(&req)?;
    let public_key = rcgen::SubjectPublicKeyInfo::from_pem(&req.public_key_pem)
        .map_err(|_| Status::invalid_argument("public_key_pem: not a PEM public key"))?;
    let is_member = core
        .raft_metrics()
        .membership_config
        .membership()
        .get_node(&req.node_id)
        .is_some();
    if is_member {
        return Err(Status::failed_precondition(format!(
            "node_id: node {} is already a member; a restarted node needs no token",
            req.node_id
        )));
    }
    let hash = secrets::hash_token(&req.join_token);
    // A token this node knows nothing of is refused here, without a Raft
    // write: strangers guessing tokens must not grow the log. The write
    // below stays the judge (it is what makes a token work once).
    let known = core.view.read().join_tokens.contains_key(&hash);
    if !known && core.caught_up() {
        return Err(Status::unauthenticated(
            crate::state::fleet::JOIN_TOKEN_INVALID,
        ));
    }
    core.propose(Action::RedeemJoinToken {
        hash,
        node_id: req.node_id,
    })
    .await?;
    let ca = TlsFiles::new(&core.config.data_dir)
        .read_ca()
        .map_err(|e| Status::internal(format!("reading the cluster CA: {e}")))?;
    let certificate_pem = ca
        .issue_node_cert(req.node_id, &public_key, &req.hosts)
        .map_err(|e| Status::invalid_argument(format!("hosts: {e}")))?;
    tracing::info!(
        node_id = req.node_id,
        "issued a node certificate for a join token"
    );
    Ok(pb::IssueCertificateResponse {
        certificate_pem,
        ca_certificate_pem: tls.ca_pem.clone(),
        ca_key_pem: ca.key_pem,
    })
}
