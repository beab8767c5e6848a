//! The words people and scripts see for enum values, in one place, so the
//! CLI's `--json`, the console and the daemon's event messages agree.

use crate::proto::v1 as pb;

/// Lower-case word for a VM state (`"unknown"` for a value this build does
/// not know, such as one from a newer server).
pub fn vm_state_word(state: impl Into<i32>) -> &'static str {
    match pb::VmState::try_from(state.into()) {
        Ok(pb::VmState::Pending) => "pending",
        Ok(pb::VmState::Scheduled) => "scheduled",
        Ok(pb::VmState::Starting) => "starting",
        Ok(pb::VmState::Running) => "running",
        Ok(pb::VmState::Stopping) => "stopping",
        Ok(pb::VmState::Stopped) => "stopped",
        Ok(pb::VmState::Failed) => "failed",
        Ok(pb::VmState::Lost) => "lost",
        Ok(pb::VmState::Unspecified) | Err(_) => "unknown",
    }
}

/// The VM state a word names (the inverse of [`vm_state_word`]), ignoring case.
pub fn parse_vm_state(word: &str) -> Option<pb::VmState> {
    let word = word.to_ascii_lowercase();
    VM_STATES
        .into_iter()
        .find(|s| vm_state_word(*s) == word.as_str())
}

/// Every VM state a VM can be in, in lifecycle order.
pub const VM_STATES: [pb::VmState; 8] = [
    pb::VmState::Pending,
    pb::VmState::Scheduled,
    pb::VmState::Starting,
    pb::VmState::Running,
    pb::VmState::Stopping,
    pb::VmState::Stopped,
    pb::VmState::Failed,
    pb::VmState::Lost,
];

/// The distinct releases among members' `versions`, sorted, unknown
/// (empty) ones left out: more than one means an upgrade is under way
/// (`blixard version`, `cluster status`, the console's overview).
pub fn releases<'a>(versions: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let set: std::collections::BTreeSet<&str> =
        versions.into_iter().filter(|v| !v.is_empty()).collect();
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_a_word_that_parses_back() {
        for s in VM_STATES {
            assert_eq!(parse_vm_state(vm_state_word(s)), Some(s));
        }
        assert_eq!(vm_state_word(pb::VmState::Unspecified), "unknown");
        assert_eq!(vm_state_word(99), "unknown");
        assert_eq!(parse_vm_state("RUNNING"), Some(pb::VmState::Running));
        assert_eq!(parse_vm_state("unknown"), None);
    }

    #[test]
    fn releases_are_distinct_sorted_and_known() {
        assert_eq!(
            releases(["0.2.0", "", "0.1.0", "0.2.0"]),
            ["0.1.0", "0.2.0"]
        );
        assert!(releases(["", ""]).is_empty());
    }
}
