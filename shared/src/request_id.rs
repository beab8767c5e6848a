//! Request ids make a retried write safe. A client that lost the answer to a
//! write cannot tell whether it was applied; if it sends the same write with
//! the same id again, the cluster answers with the first outcome instead of
//! applying it twice. Every mutating call of [`crate::BlixardClient`] carries
//! one in the `x-blixard-request-id` metadata; any gRPC client may set its
//! own (`CLIENT:SEQUENCE`, at most [`MAX_REQUEST_ID_LEN`] bytes of letters,
//! digits and `._:-`). The daemon remembers the newest ids of each client
//! (see `limits`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Metadata key of a mutating request's id.
pub const REQUEST_ID_KEY: &str = "x-blixard-request-id";
/// Longest request id accepted.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Why a request id was refused, naming the metadata key (the rule is
/// [`crate::validate::request_id`], which the state machine applies too).
pub fn check(id: &str) -> Result<(), tonic::Status> {
    crate::validate::request_id(REQUEST_ID_KEY, id)?;
    Ok(())
}

/// The client part of an id (before its last `:`), which bounds how many
/// ids the daemon keeps per client.
pub fn client_of(id: &str) -> &str {
    id.rsplit_once(':').map_or(id, |(client, _)| client)
}

/// The request id `req` carries, checked; `None` when it carries none.
pub fn from_request<T>(req: &tonic::Request<T>) -> Result<Option<String>, tonic::Status> {
    let Some(value) = req.metadata().get(REQUEST_ID_KEY) else {
        return Ok(None);
    };
    let id = value.to_str().map_err(|_| {
        tonic::Status::invalid_argument(format!("{REQUEST_ID_KEY}: not printable ASCII"))
    })?;
    check(id)?;
    Ok(Some(id.to_string()))
}

/// Sets `id` on `req`.
pub fn attach<T>(req: &mut tonic::Request<T>, id: &str) {
    if let Ok(value) = id.parse() {
        req.metadata_mut().insert(REQUEST_ID_KEY, value);
    }
}

/// Makes ids for one client: a name unlikely to repeat (process id, start
/// time, an address of this process) and a sequence.
#[derive(Debug)]
pub struct RequestIds {
    client: String,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        let nanos = crate::time::now_nanos();
        // On a simulator's thread the address gives way to the seed's
        // numbers, so a replay names its clients the same.
        let here =
            crate::sim_hooks::simulated_random().unwrap_or(&nanos as *const u128 as usize as u64);
        Self {
            client: format!("c{:x}-{:x}-{:x}", std::process::id(), nanos, here),
            next: AtomicU64::new(1),
        }
    }
}

impl RequestIds {
    /// A fresh id for one write (used for every retry of that write).
    pub fn next_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}:{n}", self.client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_valid_and_name_their_client() {
        let ids = RequestIds::default();
        let (a, b) = (ids.next_id(), ids.next_id());
        assert_ne!(a, b);
        assert!(check(&a).is_ok(), "{a}");
        assert_eq!(client_of(&a), client_of(&b));
        assert_ne!(client_of(&a), client_of(&RequestIds::default().next_id()));
        assert!(check("").is_err());
        assert!(check("has space").is_err());
        assert!(check(&"x".repeat(MAX_REQUEST_ID_LEN + 1)).is_err());
    }
}
