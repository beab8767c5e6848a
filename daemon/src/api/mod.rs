//! The public `blixard.v1` services. Each handler validates its request
//! (answering `InvalidArgument` naming the field), then either proposes a
//! command through the node core or reads applied state after the read
//! barrier the request asks for.

pub mod audit;
pub mod cluster;
pub mod convert;
pub mod explain;
pub mod join;
pub mod logs;
pub mod node;
pub mod pagination;
pub mod policy;
pub mod quota;
pub mod slots;
pub mod token;
pub mod vm;
pub mod watch;
