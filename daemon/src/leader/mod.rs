//! Loops that act only while this node leads: placement and healing
//! (`scheduler`) and the judgement of every node's liveness from Raft's
//! heartbeats (`liveness`). Each runs on every node and idles while the
//! node follows, so a new leader takes over without a hand-off.

pub mod drain;
pub mod liveness;
pub mod scheduler;
