//! A client for a Blixard cluster that is given several endpoints and keeps
//! working while members come and go: it tries each endpoint in turn, and
//! when a member answers `Unavailable` naming the leader, it goes there.
//!
//! Retries are bounded ([`MAX_ATTEMPTS`] and [`RETRY_DEADLINE`]) and only
//! happen on `Unavailable`, and on `ResourceExhausted` carrying
//! [`RETRY_AFTER_KEY`] (a node's request rate limit, which refuses before
//! anything is done): after the wait it names, on the same endpoint. A
//! daemon answers `Unavailable` to a write only before acting on it, or when
//! the write carries a request id (every write this client's typed
//! operations send does: [`crate::request_id`]), so a retried write is not
//! applied twice.

use crate::credentials::{ApiChannel, Credentials};
use crate::leader_hint;
use crate::request_id::RequestIds;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

/// Most tries of one call across all endpoints.
pub const MAX_ATTEMPTS: usize = 12;
/// Longest one call keeps retrying before it reports the last error.
pub const RETRY_DEADLINE: Duration = Duration::from_secs(20);
/// Time allowed to open a connection to one endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_START: Duration = Duration::from_millis(50);
/// Metadata a daemon sets on a refusal over its request rate: milliseconds
/// until a retry can pass.
pub const RETRY_AFTER_KEY: &str = "retry-after-ms";

/// The wait a rate refusal asks for, if `status` is one.
pub fn retry_after(status: &tonic::Status) -> Option<Duration> {
    if status.code() != tonic::Code::ResourceExhausted {
        return None;
    }
    let ms: u64 = status
        .metadata()
        .get(RETRY_AFTER_KEY)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_millis(ms))
}
const BACKOFF_MAX: Duration = Duration::from_millis(1000);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No endpoint was given.
    #[error("no endpoint given: pass --endpoint HOST:PORT or set BLIXARD_ENDPOINT")]
    NoEndpoints,
    /// An endpoint is not a valid address.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    BadEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What the parser said.
        reason: String,
    },
    /// The server answered with an error status (the last one, after retries).
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[from] tonic::Status),
}

impl ClientError {
    /// The gRPC code behind this error, if the server answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}

/// Short, stable snake_case name of a gRPC code for messages and JSON.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

/// Cluster client over a list of endpoints, following leader hints.
#[derive(Debug, Clone)]
pub struct BlixardClient {
    endpoints: Vec<String>,
    current: usize,
    channels: HashMap<String, ApiChannel>,
    request_timeout: Option<Duration>,
    credentials: Credentials,
    /// Ids for this client's writes, so their retries are safe.
    ids: std::sync::Arc<RequestIds>,
}

impl BlixardClient {
    /// A client over `endpoints` (`host:port`, tried in order). Nothing is
    /// connected until the first call.
    pub fn new<I, S>(endpoints: I) -> Result<Self, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .flat_map(|e| {
                e.as_ref()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|s| !s.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        for e in &endpoints {
            Credentials::insecure()
                .endpoint(e)
                .map_err(|err| ClientError::BadEndpoint {
                    endpoint: e.clone(),
                    reason: err.to_string(),
                })?;
        }
        Ok(Self {
            endpoints,
            current: 0,
            channels: HashMap::new(),
            request_timeout: Some(Duration::from_secs(30)),
            credentials: Credentials::insecure(),
            ids: std::sync::Arc::default(),
        })
    }

    /// Uses `credentials` (TLS and token) for every call from now on.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self.channels.clear();
        self
    }

    /// The credentials calls are made with.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Sets the per-request deadline (`None` for long-lived streams).
    pub fn with_request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The endpoint the next call goes to first.
    pub fn current_endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    /// All known endpoints, including leaders learned from hints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Moves to the next endpoint (used by long-lived streams on failure).
    pub fn rotate(&mut self) {
        self.current = (self.current + 1) % self.endpoints.len();
    }

    fn channel(&mut self, address: &str) -> Result<ApiChannel, ClientError> {
        if let Some(ch) = self.channels.get(address) {
            return Ok(ch.clone());
        }
        let bad = |err: tonic::transport::Error| ClientError::BadEndpoint {
            endpoint: address.to_string(),
            reason: err.to_string(),
        };
        let mut endpoint = self
            .credentials
            .endpoint(address)
            .map_err(bad)?
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(t) = self.request_timeout {
            endpoint = endpoint.timeout(t);
        }
        let ch = self.credentials.wrap(endpoint.connect_lazy());
        self.channels.insert(address.to_string(), ch.clone());
        Ok(ch)
    }

    /// A channel to the current endpoint, for callers that manage their own
    /// retries (streams).
    pub fn current_channel(&mut self) -> Result<ApiChannel, ClientError> {
        let address = self.endpoints[self.current].clone();
        self.channel(&address)
    }

    /// A fresh request id for one write; send it with every retry of that
    /// write (see [`crate::request_id`]).
    pub fn next_request_id(&self) -> String {
        self.ids.next_id()
    }

    /// Runs `op` against the cluster, moving between endpoints and following
    /// leader hints on `Unavailable`, up to the retry bounds.
    pub async fn call<T, F, Fut>(&mut self, mut op: F) -> Result<T, ClientError>
    where
        F: FnMut(ApiChannel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = tokio::time::Instant::now();
        let mut backoff = BACKOFF_START;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let address = self.endpoints[self.current].clone();
            let channel = self.channel(&address)?;
            match op(channel).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    let out_of_budget =
                        attempt >= MAX_ATTEMPTS || started.elapsed() + backoff > RETRY_DEADLINE;
                    if out_of_budget {
                        return Err(ClientError::Status(status));
                    }
                    match leader_hint::from_status(&status) {
                        Some(hint) if hint.address != address => {
                            tracing::debug!(leader = hint.id, address = %hint.address, "following leader hint");
                            self.current =
                                match self.endpoints.iter().position(|e| *e == hint.address) {
                                    Some(i) => i,
                                    None => {
                                        self.endpoints.push(hint.address);
                                        self.endpoints.len() - 1
                                    }
                                };
                            continue;
                        }
                        _ => {
                            tracing::debug!(endpoint = %address, error = %status.message(), "endpoint unavailable, trying the next");
                            self.rotate();
                            tokio::time::sleep(crate::backoff::jittered(backoff)).await;
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                        }
                    }
                }
                Err(status) => {
                    let Some(wait) = retry_after(&status) else {
                        return Err(ClientError::Status(status));
                    };
                    if attempt >= MAX_ATTEMPTS || started.elapsed() + wait > RETRY_DEADLINE {
                        return Err(ClientError::Status(status));
                    }
                    tracing::debug!(endpoint = %address, wait_ms = wait.as_millis() as u64, "over the request rate; waiting as asked");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_comma_separated_endpoints() {
        let c = BlixardClient::new(["127.0.0.1:1, 127.0.0.1:2", "127.0.0.1:3"]).unwrap();
        assert_eq!(c.endpoints(), ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
    }

    #[test]
    fn only_a_rate_refusal_with_its_hint_is_waited_out() {
        let mut status = tonic::Status::resource_exhausted("request_rate: ...");
        assert_eq!(retry_after(&status), None, "no hint, no retry");
        status.metadata_mut().insert(
            RETRY_AFTER_KEY,
            tonic::metadata::MetadataValue::from_static("250"),
        );
        assert_eq!(retry_after(&status), Some(Duration::from_millis(250)));
        let mut other = tonic::Status::invalid_argument("x");
        other.metadata_mut().insert(
            RETRY_AFTER_KEY,
            tonic::metadata::MetadataValue::from_static("250"),
        );
        assert_eq!(retry_after(&other), None, "only ResourceExhausted");
    }

    #[test]
    fn refuses_an_empty_list() {
        assert!(matches!(
            BlixardClient::new(Vec::<String>::new()),
            Err(ClientError::NoEndpoints)
        ));
    }
}
