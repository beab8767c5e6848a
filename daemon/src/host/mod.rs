//! This host's side of the cluster: what it offers (`facts`), how it joins
//! and registers (`registration`), the agent that makes the VMs assigned to
//! it real (`agent`), which host paths a VM may name (`allowlist`), fencing
//! (`fence`: the lease keeper, the lease file and the watchdog process), one
//! cgroup per VM (`cgroup`), and what `/proc` says about its processes
//! (`procfs`).

pub mod agent;
pub mod allowlist;
pub mod cgroup;
pub mod facts;
pub mod fence;
pub mod procfs;
pub mod registration;
