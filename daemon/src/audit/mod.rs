//! The audit trail's writing side: every mutating call and every refused
//! call is noted as it passes the node (`layer`), handed to the node's
//! `recorder`, and written to the replicated trail (`state::audit`) in
//! batches. The handlers name what a call acted on through the call's
//! `note`, which `Core::authorize` fills in.
//!
//! What is recorded once per call, on the node that answered it: time,
//! principal (a token's name or a node's id, never a secret), the peer's
//! address, the method and its Cedar action, the target, and the result
//! (`ok`, `denied`, `failed` with the gRPC code). Daemon-to-daemon traffic
//! (`RaftService`) is not: a write a follower forwards was recorded where
//! the client called, and peers refused at the gate are counted in
//! `auth_refusals` (a removed node retries many times a second).

pub mod layer;
pub mod note;
pub mod recorder;

pub use recorder::Recorder;
