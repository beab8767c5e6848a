//! `blixard-tui`: the live operations console, built as The Elm
//! Architecture: one [`model::Model`], [`msg::Msg`]s for everything that
//! happens (keys, network events, ticks), [`update::update`] that changes the
//! model and returns [`msg::Cmd`]s for the outside world, and
//! [`view::view`] that only draws. The network side ([`net`]) loads the state
//! once, then applies `Watch` events incrementally, failing over between
//! endpoints and resuming from the last revision it saw.
//!
//! [`access`] holds what the console's token may do, as the daemon
//! answers it. [`keys`] describes every key and `:` command once (dispatch, footer,
//! help, read-only); [`layout`] holds the geometry that drawing and mouse
//! hit-testing share. `update` and `view` both build on `model`, `keys` and
//! `layout`, and never on each other.

#![warn(missing_docs)]

pub mod access;
pub mod keys;
pub mod layout;
pub mod model;
pub mod msg;
pub mod net;
pub mod terminal;
pub mod update;
pub mod view;

pub use terminal::run;
