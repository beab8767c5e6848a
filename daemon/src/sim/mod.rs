//! Pieces of the deterministic simulator (issue 20), usable on their own:
//! a seeded random number generator every simulated choice draws from,
//! and a simulated disk under redb that loses unsynced writes at a crash.
//! Nothing here runs in production; the names say so.

pub mod blocking;
pub mod clock;
pub mod disk;
pub mod host;
pub mod net;
pub mod planted;
pub mod rng;
pub mod watchdog;
