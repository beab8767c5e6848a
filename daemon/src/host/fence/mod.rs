//! Fencing: a host runs VMs only while it holds a lease from the cluster,
//! so the leader can place a lost host's VMs elsewhere without ever running
//! one VM on two hosts (safety property 3 of the brief).
//!
//! - The node's lease keeper ([`keeper::keep_lease`]) commits a `RenewLease` command
//!   every [`RENEW_EVERY`]. A renewal sent at `t` and applied locally makes
//!   the lease valid until `t + lease`. It writes that deadline, on the
//!   host's monotonic clock, to the lease file for the watchdog and
//!   publishes it to the node agent, which stops its VMs and starts none
//!   while the lease has run out.
//! - The watchdog (`blixard-fence`, [`watchdog::run_watchdog`]) is a separate process,
//!   because VMs outlive their daemon by design: a daemon that is killed,
//!   frozen or cut off cannot stop them itself. Once the lease file's
//!   deadline passes it SIGKILLs every VM process under the node's runtime
//!   root, and keeps doing so until the deadline moves.
//! - The leader (see `scheduler`) takes a VM off a node only once that
//!   node's `lease_seq` has not moved for its lease plus [`HEAL_MARGIN`] on
//!   the leader's clock, naming the `lease_seq` it saw: a renewal committed
//!   before the decision makes it stale, and a renewal committed after it
//!   is applied after it, so the agent sees the VM gone before it may start
//!   anything again.

//!
//! Layout: `lease_file` (the deadline both processes read, and its clock),
//! `keeper` (renewals, in the daemon), `watchdog` (the loop of the
//! `blixard-fence` process) and `watchdog_process` (the daemon's handle that
//! starts and finds that process).

pub mod clock;
pub mod keeper;
pub mod lease_file;
pub mod watchdog;
pub mod watchdog_process;

pub use clock::LeaseClock;
pub use keeper::{keep_lease, LeaseStatus};
pub use lease_file::{lease_clock_ms, read_lease, write_lease, LEASE_FILE};
pub use watchdog::{kill_vms, run_watchdog, FENCED_MARKER};
pub use watchdog_process::{Watchdog, WatchdogError};

use std::time::Duration;

/// What the leader waits beyond a lease before it calls the lease surely
/// expired: covers the watchdog's poll, a kill in progress and clock-rate
/// differences between hosts.
pub const HEAL_MARGIN: Duration = Duration::from_secs(4);
/// How often the lease keeper renews at most (a quarter of the lease when
/// that is shorter, so a renewal never comes after the lease ran out).
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
