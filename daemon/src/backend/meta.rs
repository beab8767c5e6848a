//! The record a VM's runtime dir keeps about its process (`meta.json`).
//! Its own module because two processes read it: the daemon's supervisor,
//! which writes it, and the fence watchdog, which kills what it names.

use serde::{Deserialize, Serialize};

/// What `meta.json` records about an instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// VM name.
    pub name: String,
    /// Placement epoch it was started for.
    pub epoch: u64,
    /// Host pid.
    pub pid: u32,
    /// Kernel start time of the process (clock ticks since boot), to detect pid reuse.
    pub proc_start_ticks: u64,
    /// Wall-clock start (ms since the Unix epoch).
    pub started_at_ms: u64,
    /// Backend that started it.
    pub backend: String,
    /// The command line used.
    pub argv: Vec<String>,
}
