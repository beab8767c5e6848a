//! The tower layer that notes every audited call (outside the gate, so
//! the gate's refusals are seen too): it gives the call a [`Note`], lets it
//! run, and hands the recorder one record built from the note and the
//! answer's status. What is audited, and under which action, is
//! `security::rules::audited`'s table.

use super::note::{Note, NOTE};
use super::recorder::is_refusal;
use crate::core::Core;
use crate::security::ratelimit::RETRY_AFTER_KEY;
use crate::security::rules;
use crate::security::{Caller, ON_BEHALF_OF_HEADER};
use crate::state::audit::{AuditEntry, AuditResult};
use blixard_shared::limits::MAX_AUDIT_FIELD_LEN;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// Wraps every service in an [`Audited`].
#[derive(Clone)]
pub struct AuditLayer {
    core: Arc<Core>,
}

impl AuditLayer {
    /// A layer recording into `core`'s recorder.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

impl<S> tower_layer::Layer<S> for AuditLayer {
    type Service = Audited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audited {
            core: self.core.clone(),
            inner,
        }
    }
}

/// The service [`AuditLayer`] makes.
#[derive(Clone)]
pub struct Audited<S> {
    core: Arc<Core>,
    inner: S,
}

use crate::service::BoxFuture;

impl<S, B> tower_service::Service<http::Request<B>> for Audited<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let mut inner = crate::service::take_ready(&mut self.inner);
        let method = req.uri().path().to_string();
        let Some(audited) = rules::audited(&method) else {
            return Box::pin(inner.call(req));
        };
        let note = Arc::new(Note::default());
        req.extensions_mut().insert(note.clone());
        let mut pending = Pending {
            core: self.core.clone(),
            relayed: req.headers().contains_key(ON_BEHALF_OF_HEADER),
            peer: peer_address(&req),
            note: note.clone(),
            method,
            audited,
            done: false,
        };
        let call = NOTE.scope(note, inner.call(req));
        Box::pin(async move {
            let response = call.await;
            match &response {
                Ok(r) => pending.finish(status_code(r), r.headers().contains_key(RETRY_AFTER_KEY)),
                Err(_) => pending.finish(tonic::Code::Unknown, false),
            }
            response
        })
    }
}

/// An audited call in flight: recorded when its answer is ready, or, if
/// the call is dropped first (the client went away; a write it proposed
/// may still commit), as `failed` with `cancelled` when it is dropped.
struct Pending {
    core: Arc<Core>,
    note: Arc<Note>,
    method: String,
    peer: String,
    audited: rules::Audited,
    /// The call came with `x-blixard-on-behalf-of`: from a member node, it
    /// relays a call recorded where its client called.
    relayed: bool,
    done: bool,
}

impl Pending {
    fn finish(&mut self, code: tonic::Code, rate_limited: bool) {
        self.done = true;
        let result = match code {
            tonic::Code::Ok => AuditResult::Ok,
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => AuditResult::Denied,
            _ => AuditResult::Failed,
        };
        if !(self.audited.mutating || result == AuditResult::Denied) {
            return;
        }
        let noted = self.note.read();
        if self.relayed && matches!(noted.caller, Some(Caller::Node(_))) {
            return;
        }
        let principal = noted
            .caller
            .as_ref()
            .map_or_else(|| "anonymous".to_string(), Caller::describe);
        let action = noted
            .action
            .unwrap_or_else(|| self.audited.action.to_string());
        let entry = AuditEntry {
            time_ms: blixard_shared::time::now_ms(),
            principal: cut(principal),
            peer: cut(std::mem::take(&mut self.peer)),
            method: cut(std::mem::take(&mut self.method)),
            action: cut(action),
            target: cut(noted.target.unwrap_or_default()),
            result,
            code: blixard_shared::client::code_name(code).to_string(),
        };
        self.core
            .audit
            .record(entry, is_refusal(result, rate_limited));
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.finish(tonic::Code::Cancelled, false);
        }
    }
}

/// The gRPC status of an answer: in its headers when the call failed
/// before a message (how every handler's error is sent); OK otherwise.
fn status_code(response: &http::Response<tonic::body::Body>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

/// The caller's address, as the connection shows it.
fn peer_address<B>(req: &http::Request<B>) -> String {
    let tcp = req.extensions().get::<TcpConnectInfo>().or_else(|| {
        req.extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .map(|tls| tls.get_ref())
    });
    tcp.and_then(TcpConnectInfo::remote_addr)
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// `text`, cut to the longest field a record keeps.
fn cut(mut text: String) -> String {
    crate::state::fleet::truncate_field(&mut text, MAX_AUDIT_FIELD_LEN);
    text
}
