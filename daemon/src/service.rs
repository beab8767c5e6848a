//! What the node's tower layers (the audit layer, the admit layer, the
//! call limits) share: the boxed future they answer with and tower's rule
//! for calling a cloned inner service.

use std::future::Future;
use std::pin::Pin;

/// The future a layer's service returns.
pub type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// The inner service to call: the one `poll_ready` made ready, leaving a
/// fresh clone in its place (a clone that was not polled ready must not
/// be called).
pub fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}
