//! Settings of the gRPC transport that the server and the peer channels
//! share, in one place so both ends agree (and `raft/` need not import the
//! server to learn them).

use std::time::Duration;

/// How often an HTTP/2 connection is pinged: by the server on every
/// connection, and by each daemon on its channels to its peers. Finds peers
/// and clients that vanished without closing their connection (power loss,
/// partition), so their long-lived calls (StreamAppend, Watch) end instead
/// of waiting on TCP's timeouts.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the connection is closed.
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a node's gRPC connections travel: real TCP in production, or the
/// in-memory network of a simulation (tests only; see `sim::net`).
#[derive(Debug, Clone, Default)]
pub enum Transport {
    /// TCP on the host's network.
    #[default]
    Tcp,
    /// The simulation's network; the node listens on its `listen` address
    /// there and dials its peers from it.
    Sim(crate::sim::net::SimNet),
}
