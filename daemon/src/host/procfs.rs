//! What `/proc` says about a process: its kernel start time (to tell a
//! reused pid from the process we started), the VM dir its environment
//! names, and signalling it. A leaf module: the backends' supervisor and the
//! fence watchdog both use it, and neither depends on the other.

use std::path::PathBuf;

/// The kernel's start time of `pid` (field 22 of `/proc/PID/stat`), and
/// whether it is a zombie.
pub fn proc_start(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let zombie = fields.first() == Some(&"Z");
    let start = fields.get(19)?.parse().ok()?;
    Some((start, zombie))
}

/// The VM dir a process carries in its environment (`BLIXARD_VM_DIR`, set
/// on every VM process at spawn and inherited by its children), if any.
///
/// Reading another user's process environment needs the rights of root or
/// its owner; VM processes are the daemon's own children.
pub fn proc_vm_dir(pid: u32) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(b"BLIXARD_VM_DIR="))
        .map(|d| PathBuf::from(std::ffi::OsStr::from_bytes(d)))
}

/// Sends `signal` to `pid`; false if there is no such process.
pub fn send_signal(pid: u32, signal: i32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) takes plain integers and has no memory effects.
    unsafe { libc::kill(pid, signal) == 0 }
}
