//! The operator side of Blixard: the `blixard-tui` console (as a library,
//! so its model, update and views are testable without a terminal) shared by
//! the `blixard-tui` binary and `blixard dev`.

pub mod console;
