//! The operator side of Blixard: the `blixard-tui` console (as a library,
//! so its model, update and views are testable without a terminal) shared by
//! the `blixard-tui` binary and `blixard dev`, and the connection flags
//! ([`connect`]) the console and the `blixard` CLI share.

pub mod connect;
pub mod console;
