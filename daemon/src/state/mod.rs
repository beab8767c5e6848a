//! The replicated model of the fleet and the commands that change it.
//!
//! `Fleet::apply` is the single writer of cluster state. It is deterministic
//! (it reads no clock, no randomness, nothing outside the command and the
//! state) and total (an invalid command is rejected with a reason and leaves
//! the state exactly as it was), so every replica that applies the same log
//! holds the same state.

pub mod audit;
pub mod command;
pub mod fleet;
pub mod model;
pub mod placement;
pub mod quota;

pub use command::{Action, Command, CommandOutcome, CommandResult, Rejection, RejectionCode};
pub use fleet::Fleet;
pub use model::*;

#[cfg(test)]
mod placement_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod token_tests;
#[cfg(test)]
mod validation_tests;
