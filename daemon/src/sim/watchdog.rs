//! The fence watchdog of a simulated host. In production `blixard-fence`
//! is a process of its own that SIGKILLs the host's VMs once the lease
//! file's deadline passes, whatever the daemon is doing; a simulated host
//! has no processes, so this task does the same to the test backend's
//! instances, on the host's clock, as often as the real one looks.

use super::host::SimHost;
use crate::host::fence::watchdog::WATCH_EVERY;
use crate::host::fence::LeaseStatus;
use crate::shutdown::Shutdown;
use tokio::sync::watch;

/// Kills every instance of `host` whenever its lease has run out (or was
/// never had), until shutdown.
pub async fn run(host: SimHost, lease: watch::Receiver<LeaseStatus>, mut shutdown: Shutdown) {
    loop {
        #[cfg(feature = "planted-bugs")]
        let planted = super::planted::is_on(super::planted::Planted::IgnoreLapse);
        #[cfg(not(feature = "planted-bugs"))]
        let planted = false;
        if !planted && !lease.borrow().valid() {
            host.backend.fence();
        }
        tokio::select! {
            _ = tokio::time::sleep(WATCH_EVERY) => {}
            _ = shutdown.recv() => return,
        }
    }
}
