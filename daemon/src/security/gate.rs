//! The one place every call is authenticated: a tower layer in front of
//! all of the node's gRPC services. It reads the caller's proof (a client
//! token in `authorization: Bearer …`, or the node certificate the TLS
//! handshake verified), decides with [`rules::need`] whether the method
//! allows that caller, and hands the handlers a [`Caller`] in the request's
//! extensions. A refusal is answered here; the service never sees it.

use super::admit::{Admit, AdmitLayer};
use super::rules::{self, Need};
use super::secrets::hash_token;
use super::Caller;
use crate::core::Core;
use blixard_shared::auth::{AUTHORIZATION_HEADER, BEARER_PREFIX};
use std::sync::Arc;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

/// The gate's layer (see the module doc).
pub type GateLayer = AdmitLayer<Gate>;

impl GateLayer {
    /// A layer that judges callers against `core`'s tokens and membership.
    pub fn new(core: Arc<Core>) -> Self {
        AdmitLayer {
            check: Gate { core },
        }
    }
}

/// The gate's check: who calls, and may they call this method at all.
#[derive(Clone)]
pub struct Gate {
    core: Arc<Core>,
}

impl Admit for Gate {
    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<(), Status> {
        let note = req
            .extensions()
            .get::<std::sync::Arc<crate::audit::note::Note>>()
            .cloned();
        match judge(&self.core, req) {
            Ok(caller) => {
                if let Some(note) = note {
                    note.set_caller(caller.clone());
                }
                req.extensions_mut().insert(caller);
                Ok(())
            }
            Err(status) => {
                if let (Some(note), Some(id)) = (note, peer_node(req)) {
                    note.set_caller(Caller::Node(id));
                }
                let path = req.uri().path();
                let code = blixard_shared::client::code_name(status.code());
                self.core
                    .metrics
                    .auth_refusals
                    .get_or_create(&crate::metrics::CodeOnly { code })
                    .inc();
                tracing::info!(%path, code, reason = %status.message(), "call refused");
                Err(status)
            }
        }
    }
}

/// Who `req` comes from, or why it may not go on.
fn judge<B>(core: &Core, req: &http::Request<B>) -> Result<Caller, Status> {
    let path = req.uri().path();
    let need = rules::need(path);
    if core.config.insecure {
        return Ok(Caller::Anonymous);
    }
    let node = peer_node(req);
    match need {
        Need::Open => Ok(node.map(Caller::Node).unwrap_or(Caller::Anonymous)),
        Need::Closed => Err(Status::permission_denied(format!(
            "{path}: no caller may call this method"
        ))),
        Need::Member => match node {
            Some(id) if core.accepts_peer(id) => Ok(Caller::Node(id)),
            Some(id) => Err(Status::permission_denied(format!(
                "node {id} is not a member of this cluster"
            ))),
            None => Err(Status::unauthenticated(
                "this method is for cluster nodes: it needs a node certificate of the cluster CA",
            )),
        },
        Need::TokenOrNode => match node {
            Some(id) => Ok(Caller::Node(id)),
            None => token_caller(core, req),
        },
        Need::Token => match node {
            Some(id) if core.accepts_peer(id) => Ok(Caller::Node(id)),
            _ => token_caller(core, req),
        },
    }
}

/// The node id in the verified client certificate of the connection, if
/// the caller presented one (rustls has checked it against the CA).
fn peer_node<B>(req: &http::Request<B>) -> Option<u64> {
    let info = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    super::pki::node_id_of_cert(certs.first()?)
}

/// The answer to a token this node does not know: `Unauthenticated`, unless
/// the node has not yet applied everything it knows to be committed (a
/// restart replaying its log, a follower catching up): then the token may
/// be one it has not seen yet, and `Unavailable` (naming the leader) sends
/// the client to retry or elsewhere.
fn unknown_token(core: &Core) -> Status {
    if !core.caught_up() {
        return core.unavailable("this node is catching up with the cluster; retry shortly");
    }
    Status::unauthenticated("token is not valid: unknown, expired or revoked")
}

/// The token's caller, if the token is valid (what it may do is the
/// policies' decision, in the handler).
fn token_caller<B>(core: &Core, req: &http::Request<B>) -> Result<Caller, Status> {
    let header = req
        .headers()
        .get(AUTHORIZATION_HEADER)
        .ok_or_else(|| {
            Status::unauthenticated(
                "no token: send `authorization: Bearer TOKEN` (blixard: --token-file FILE or BLIXARD_TOKEN)",
            )
        })?;
    let secret = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix(BEARER_PREFIX))
        .map(str::trim)
        .ok_or_else(|| Status::unauthenticated("authorization: expected `Bearer TOKEN`"))?;
    let hash = hash_token(secret);
    let now = blixard_shared::time::now_ms();
    let found = core
        .view
        .read()
        .token_by_hash(&hash, now)
        .map(|record| (record.name.clone(), record.role, record.labels.clone()));
    let Some((name, role, labels)) = found else {
        return Err(unknown_token(core));
    };
    Ok(Caller::Token { name, role, labels })
}
