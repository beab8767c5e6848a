//! `blixardd`, the Blixard host daemon, as a library: the binary is a thin
//! wrapper, and tests start real nodes in-process through [`server::start`].

pub mod agent;
pub mod api;
pub mod backend;
pub mod config;
pub mod core;
pub mod fence;
pub mod host;
pub mod liveness;
pub mod metrics;
pub mod metrics_sync;
pub mod raft;
pub mod registration;
pub mod scheduler;
pub mod server;
pub mod state;
