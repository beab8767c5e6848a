//! What this host offers the cluster: CPUs and memory read from the host,
//! less the configured reserve, plus labels and topology from the config.

use crate::config::Config;
use crate::state::command::NodeRegistration;
use crate::state::Resources;

/// Total memory of the host in MiB, from `/proc/meminfo` (0 if unreadable).
pub fn host_memory_mib() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/meminfo") else {
        return 0;
    };
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix("MemTotal:")?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib / 1024)
        })
        .unwrap_or(0)
}

/// CPUs available to this process.
pub fn host_vcpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// The registration this node proposes for itself.
pub fn registration(config: &Config, advertise: &str) -> NodeRegistration {
    NodeRegistration {
        id: config.node_id,
        address: advertise.to_string(),
        capacity: Resources {
            vcpus: host_vcpus()
                .saturating_mul(config.vcpu_overcommit)
                .saturating_sub(config.reserve_vcpus),
            memory_mib: host_memory_mib().saturating_sub(config.reserve_memory_mib),
            // Disk accounting arrives with images shared between hosts.
            disk_mib: 0,
        },
        labels: config.labels.clone(),
        zone: config.zone.clone(),
        rack: config.rack.clone(),
        backend: config.backend.as_str().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_host_resources() {
        assert!(super::host_vcpus() >= 1);
        assert!(
            super::host_memory_mib() > 0,
            "/proc/meminfo should be readable on Linux"
        );
    }
}
