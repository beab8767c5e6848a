//! The lease file: the deadline until which this host may run VMs, on a
//! clock every process of the host shares. A leaf module, because three
//! parties read it: the lease keeper that writes it, the watchdog process,
//! and every VM start (checked again between fork and exec).

use std::io::Write;
use std::path::Path;

/// Lease file name in the data dir.
pub const LEASE_FILE: &str = "fence.lease";

/// Milliseconds on the lease clock: CLOCK_BOOTTIME, which every process
/// on the host shares, which does not jump with the wall clock, and which
/// keeps counting while the host is suspended (a host waking from sleep
/// must find its lease expired). Async-signal-safe: used between fork and
/// exec.
pub fn lease_clock_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_BOOTTIME
    // is always available on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1000) + (ts.tv_nsec as u64) / 1_000_000
}

/// Writes the lease deadline (lease-clock ms) to the lease file atomically
/// (write, fsync, rename), so the watchdog never reads half a file.
pub fn write_lease(data_dir: &Path, deadline_ms: u64) -> std::io::Result<()> {
    let path = data_dir.join(LEASE_FILE);
    let tmp = data_dir.join(format!("{LEASE_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("{deadline_ms}\n").as_bytes())?;
    f.sync_data()?;
    std::fs::rename(&tmp, &path)
}

/// Reads the lease deadline (lease-clock ms); a missing or malformed file
/// reads as 0, long expired.
pub fn read_lease(data_dir: &Path) -> u64 {
    std::fs::read_to_string(data_dir.join(LEASE_FILE))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_broken_lease_file_counts_as_expired() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(read_lease(tmp.path()), 0);
        std::fs::write(tmp.path().join(LEASE_FILE), "garbage").unwrap();
        assert_eq!(read_lease(tmp.path()), 0);
        let deadline = lease_clock_ms() + 60_000;
        write_lease(tmp.path(), deadline).unwrap();
        assert_eq!(read_lease(tmp.path()), deadline);
    }
}
