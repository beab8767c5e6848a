//! One tower layer for every check a call must pass before any service
//! sees it (the gate's authentication, the request rate): the check looks
//! at the request (and may add to its extensions) and either lets it on or
//! gives the answer itself. Below the layer, the caller the gate
//! established is also the task's [`CURRENT_CALLER`], for code that works
//! on the caller's behalf without the request in hand (`Core::forward`).

use super::Caller;
use std::task::{Context, Poll};
use tonic::Status;

tokio::task_local! {
    /// The caller of the call being handled, for code below the handlers
    /// that forwards work on its behalf (`Core::forward` names it to the
    /// leader); unset outside a call (the node's own loops).
    pub static CURRENT_CALLER: Caller;
}

/// The caller of the call this task is handling, if any.
pub fn current_caller() -> Option<Caller> {
    CURRENT_CALLER.try_with(Caller::clone).ok()
}

/// A check in front of every service.
pub trait Admit: Clone + Send + Sync + 'static {
    /// `Ok`: the call goes on; `Err`: the call's answer, given here.
    fn admit<B>(&self, req: &mut http::Request<B>) -> Result<(), Status>;
}

/// Wraps every service in an [`Admitted`] running `check`.
#[derive(Clone)]
pub struct AdmitLayer<A> {
    pub(super) check: A,
}

impl<A: Clone, S> tower_layer::Layer<S> for AdmitLayer<A> {
    type Service = Admitted<A, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admitted {
            check: self.check.clone(),
            inner,
        }
    }
}

/// The service [`AdmitLayer`] makes.
#[derive(Clone)]
pub struct Admitted<A, S> {
    check: A,
    inner: S,
}

use crate::service::BoxFuture;

impl<A, S, B> tower_service::Service<http::Request<B>> for Admitted<A, S>
where
    A: Admit,
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
        if let Err(status) = self.check.admit(&mut req) {
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        let mut inner = crate::service::take_ready(&mut self.inner);
        match req.extensions().get::<Caller>().cloned() {
            Some(caller) => Box::pin(CURRENT_CALLER.scope(caller, inner.call(req))),
            None => Box::pin(inner.call(req)),
        }
    }
}
