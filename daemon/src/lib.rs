//! `blixardd`, the Blixard host daemon, as a library: the binary is a thin
//! wrapper, and tests start real nodes in-process through [`server::start`].
//!
//! # Layout
//!
//! The folders follow `docs/architecture.md`; imports run downwards in this
//! list, never back up.
//!
//! - `server/`: start and stop of one node, one function per phase.
//! - `api/`: the `blixard.v1` services: validate, then propose or read.
//! - `leader/`: loops that act only while this node leads (placement and
//!   healing, node liveness).
//! - `host/`: this host's side: its facts, joining and registration, the
//!   agent that runs its VMs, fencing, `/proc`.
//! - `backend/`: the VM backends (QEMU, process, a fake for tests) behind
//!   one trait.
//! - `core.rs`: what every request and loop shares: Raft, the state view,
//!   the write path (forward to the leader) and the read barrier.
//! - `raft/`: openraft's type config, the redb log store, the state machine,
//!   the peer network and the internal `RaftService`.
//! - `state/`: the replicated model and its deterministic apply.
//! - `metrics/`: Prometheus metrics and `/metrics`.
//! - `config.rs`, `shutdown.rs`, `transport.rs`: settings, the node's stop
//!   signal, and the transport settings both ends of a connection share.

pub mod api;
pub mod audit;
pub mod backend;
pub mod backup;
pub mod config;
pub mod core;
pub mod host;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod raft;
pub mod security;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod sim;
pub mod state;
pub mod transport;
