//! Daemon configuration: command-line flags, each with a `BLIXARD_*`
//! environment variable and a key in the optional TOML file. Precedence:
//! flag, then environment, then file, then default.

use blixard_shared::validate;
use clap::{Parser, ValueEnum};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which accelerator QEMU should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccelChoice {
    /// KVM where usable, TCG otherwise.
    Auto,
    /// Always KVM (the operator vouches for it).
    Kvm,
    /// Always TCG (software emulation).
    Tcg,
}

/// Default fencing lease: how long a host keeps running its VMs without a
/// renewal. Long enough to ride out a daemon restart, short enough to heal
/// quickly (see `host::fence`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(6);

/// Default vCPUs offered per host CPU, and the range allowed.
pub const DEFAULT_VCPU_OVERCOMMIT: u32 = 8;
/// Range of `vcpu_overcommit`.
const VCPU_OVERCOMMIT_RANGE: std::ops::RangeInclusive<u32> = 1..=64;
/// Default grace of a VM's graceful stop before it is killed [ms].
pub const DEFAULT_VM_STOP_TIMEOUT_MS: u64 = 10_000;
/// Range of `vm_stop_timeout_ms`.
const VM_STOP_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=600_000;
/// Range of `max_voters`: an odd quorum up to 9 voters; more only slows writes.
const MAX_VOTERS_RANGE: std::ops::RangeInclusive<usize> = 1..=9;
/// Default memory kept back for the host itself [MiB].
pub const DEFAULT_RESERVE_MEMORY_MIB: u64 = 512;

/// Heartbeat of [`Config::for_node`] (tests, several debug-built nodes on
/// one machine) [ms]: twice the default, so a busy machine does not call
/// elections.
const LOCAL_HEARTBEAT_MS: u64 = 100;
/// Election timeout range of [`Config::for_node`] [ms].
const LOCAL_ELECTION_TIMEOUT_MS: (u64, u64) = (400, 800);
/// Leader heartbeat period [ms].
pub const DEFAULT_HEARTBEAT_MS: u64 = 50;
/// Election timeout range [ms]. openraft also uses the maximum as the
/// followers' leader lease, and a follower stands for election only once
/// both its lease and a random timeout have run out since it last heard
/// from the leader: 300-500 ms here (plus a per-node stagger, see
/// `server.rs`), six to ten missed heartbeats, before a dead leader is
/// replaced.
pub const DEFAULT_ELECTION_TIMEOUT_MS: (u64, u64) = (150, 250);

/// Log entries between snapshots unless the config says otherwise. Each
/// snapshot copies and encodes the whole fleet and its event ring and
/// holds redb's single write transaction while it is stored, stalling the
/// log; 20,000 keeps that to about once a second at 15,000 writes/s
/// (5,000 cost a quarter of p99 at 64 clients) while a restart replays
/// at most 20,000 entries (0.4 s here; see docs/benchmarks.md).
pub const DEFAULT_SNAPSHOT_THRESHOLD: u64 = 20_000;

/// Range of `max_snapshot_bytes`: at least one wire chunk, at most the
/// default (4 GiB).
const MAX_SNAPSHOT_BYTES_RANGE: std::ops::RangeInclusive<u64> =
    (blixard_shared::limits::SNAPSHOT_CHUNK_BYTES as u64)
        ..=blixard_shared::limits::MAX_SNAPSHOT_BYTES;
/// Range of `token_requests_per_sec`.
const TOKEN_RATE_RANGE: std::ops::RangeInclusive<u32> = 1..=1_000_000;
/// Range of `token_request_burst`.
const TOKEN_BURST_RANGE: std::ops::RangeInclusive<u32> = 1..=10_000_000;

/// VM backend a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// QEMU `-M microvm`.
    Qemu,
    /// A supervised host process.
    Process,
}

impl BackendKind {
    /// Name recorded in the node record.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Qemu => "qemu",
            BackendKind::Process => "process",
        }
    }
}

/// Flags of `blixardd`.
#[derive(Debug, Clone, Parser, Default)]
#[command(
    name = "blixardd",
    version,
    about = "Blixard host daemon: Raft-replicated microVM orchestration",
    args_conflicts_with_subcommands = true
)]
pub struct Flags {
    /// A one-off task instead of running the node.
    #[command(subcommand)]
    pub command: Option<DaemonCommand>,
    /// This node's id: a positive integer, unique in the cluster, kept for the node's life.
    #[arg(long, env = "BLIXARD_NODE_ID")]
    pub node_id: Option<u64>,
    /// Directory for the node's redb file and runtime state.
    #[arg(long, env = "BLIXARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the gRPC server binds (host:port; port 0 picks a free one).
    #[arg(long, env = "BLIXARD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address other nodes and clients use to reach this node (defaults to --listen).
    #[arg(long, env = "BLIXARD_ADVERTISE")]
    pub advertise: Option<String>,
    /// Address of the Prometheus /metrics HTTP endpoint (off when unset).
    #[arg(long, env = "BLIXARD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Bootstrap a new cluster with this node as its only voter.
    #[arg(long, env = "BLIXARD_INIT", conflicts_with = "join")]
    pub init: bool,
    /// Join the cluster that the member at this address belongs to.
    #[arg(long, env = "BLIXARD_JOIN")]
    pub join: Option<String>,
    /// VM backend of this node.
    #[arg(long, env = "BLIXARD_BACKEND", value_enum)]
    pub backend: Option<BackendKind>,
    /// TOML file with any of these settings (keys are the flag names with '_').
    #[arg(long, env = "BLIXARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of guest images (IMAGE/vmlinux, IMAGE/initrd.img, IMAGE/cmdline); default DATA_DIR/images.
    #[arg(long, env = "BLIXARD_IMAGE_DIR")]
    pub image_dir: Option<PathBuf>,
    /// QEMU accelerator: auto (KVM only where usable), kvm or tcg.
    #[arg(long, env = "BLIXARD_ACCEL", value_enum)]
    pub accel: Option<AccelChoice>,
    /// Log level or filter (tracing EnvFilter syntax: info, or info,blixard_daemon=debug).
    #[arg(long = "log-level", visible_alias = "log", env = "BLIXARD_LOG")]
    pub log: Option<String>,
    /// Send traces to this OpenTelemetry collector over OTLP/gRPC (http://HOST:4317); off when unset.
    #[arg(long, env = "BLIXARD_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Log line format: text (colour only on a terminal) or json (one object a line, with node_id).
    #[arg(long, env = "BLIXARD_LOG_FORMAT", value_enum)]
    pub log_format: Option<crate::logging::LogFormat>,
    /// One-time token from `blixard cluster join-token create`, for --join.
    #[arg(long, env = "BLIXARD_JOIN_TOKEN")]
    pub join_token: Option<blixard_shared::auth::Secret>,
    /// SHA-256 fingerprint of the cluster CA (`cluster status` shows it), for --join.
    #[arg(long, env = "BLIXARD_CA_FINGERPRINT")]
    pub ca_fingerprint: Option<String>,
    /// Directory of Cedar policies (`*.cedar`, and `schema.cedarschema`) that
    /// SIGHUP and `blixard policy reload` replicate (default: the built-in policies).
    #[arg(long, env = "BLIXARD_POLICY_DIR")]
    pub policy_dir: Option<PathBuf>,
    /// Serve plaintext gRPC and ask no caller for proof. For trying things
    /// out on one machine only: anyone who reaches the port owns the cluster.
    #[arg(long, env = "BLIXARD_INSECURE")]
    pub insecure: bool,
    /// Write a JSON line with the bound addresses to this file once serving (for tools and tests).
    #[arg(long, env = "BLIXARD_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Directory VM runners (and kernels, initrds) may come from; repeat or comma-separate (file key: allowed_runner_dirs). Default: none.
    #[arg(
        long = "allowed-runner-dir",
        env = "BLIXARD_ALLOWED_RUNNER_DIRS",
        value_delimiter = ','
    )]
    pub allowed_runner_dirs: Vec<PathBuf>,
}

/// `blixardd`'s one-off tasks.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DaemonCommand {
    /// Seed a new one-node cluster in an empty data dir from a backup file
    /// or, to a revision or time, from a node's archive (`backup_dir`).
    Restore(crate::backup::restore::RestoreArgs),
    /// Write the man pages of `blixardd` and its subcommands into a directory (for packagers).
    #[command(hide = true)]
    Man {
        /// Where to write `blixardd.1`, `blixardd-restore.1`.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Settings that only the TOML file sets (with defaults).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    node_id: Option<u64>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    metrics_listen: Option<SocketAddr>,
    init: Option<bool>,
    join: Option<String>,
    join_token: Option<String>,
    ca_fingerprint: Option<String>,
    insecure: Option<bool>,
    policy_dir: Option<PathBuf>,
    /// Extra host names or IPs this node's certificate names (besides the
    /// advertised and listen addresses, localhost and 127.0.0.1).
    #[serde(default)]
    tls_hosts: Vec<String>,
    backend: Option<BackendKind>,
    #[serde(alias = "log_level")]
    log: Option<String>,
    log_format: Option<crate::logging::LogFormat>,
    otlp_endpoint: Option<String>,
    image_dir: Option<PathBuf>,
    accel: Option<AccelChoice>,
    /// Path of qemu-system-x86_64 (default: found on PATH).
    qemu_binary: Option<PathBuf>,
    /// How long a VM gets to power off before it is killed.
    vm_stop_timeout_ms: Option<u64>,
    /// vCPUs offered per host CPU (microVMs are mostly idle).
    vcpu_overcommit: Option<u32>,
    /// Labels of this node.
    #[serde(default)]
    labels: BTreeMap<String, String>,
    zone: Option<String>,
    rack: Option<String>,
    /// vCPUs kept for the host itself.
    reserve_vcpus: Option<u32>,
    /// Memory (MiB) kept for the host itself.
    reserve_memory_mib: Option<u64>,
    /// Most Raft voters; further nodes join as non-voting members.
    max_voters: Option<usize>,
    /// Log entries since the last snapshot that trigger a new snapshot.
    snapshot_threshold: Option<u64>,
    heartbeat_interval_ms: Option<u64>,
    election_timeout_min_ms: Option<u64>,
    election_timeout_max_ms: Option<u64>,
    /// Fencing lease: how long this host keeps its VMs running without
    /// contact with the cluster.
    fence_lease_ms: Option<u64>,
    /// Path of the `blixard-fence` watchdog (default: beside `blixardd`).
    fence_watchdog: Option<PathBuf>,
    /// Directories VM runners, kernels and initrds may come from.
    allowed_runner_dirs: Option<Vec<PathBuf>>,
    /// Largest snapshot this node accepts from a leader (bytes).
    max_snapshot_bytes: Option<u64>,
    /// Requests per second one client token (or all anonymous callers) may
    /// make to this node, on average.
    token_requests_per_sec: Option<u32>,
    /// Requests one client token may make at once after being idle.
    token_request_burst: Option<u32>,
    /// Records the replicated audit trail keeps (the leader's setting is
    /// the cluster's).
    audit_ring_len: Option<u32>,
    /// How the scheduler ranks the nodes that fit: `binpack` or `spread`
    /// (the leader's setting is the cluster's).
    placement_strategy: Option<String>,
    /// Start with placement paused (see `Config::placement_paused`).
    placement_paused: Option<bool>,
    /// Directory of this node's point-in-time archive (off when unset).
    backup_dir: Option<PathBuf>,
    /// Seconds between the archive's snapshots.
    backup_snapshot_interval_s: Option<u64>,
    /// Seconds the archive keeps snapshots and entries.
    backup_retention_s: Option<u64>,
}

/// The resolved configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Node id (> 0).
    pub node_id: u64,
    /// Data directory.
    pub data_dir: PathBuf,
    /// gRPC bind address.
    pub listen: SocketAddr,
    /// Advertised gRPC address (None: the bound address).
    pub advertise: Option<String>,
    /// Metrics bind address.
    pub metrics_listen: Option<SocketAddr>,
    /// Bootstrap a new cluster.
    pub init: bool,
    /// Join through this member.
    pub join: Option<String>,
    /// The join token proving this node may join (first start only).
    pub join_token: Option<blixard_shared::auth::Secret>,
    /// The cluster CA's fingerprint the joining node pins.
    pub ca_fingerprint: Option<String>,
    /// Plaintext, no credentials: `--insecure`.
    pub insecure: bool,
    /// Where SIGHUP and `policy reload` read policies (None: built-in).
    pub policy_dir: Option<PathBuf>,
    /// Extra names in this node's certificate.
    pub tls_hosts: Vec<String>,
    /// VM backend.
    pub backend: BackendKind,
    /// Log filter.
    pub log: String,
    /// Log line format.
    pub log_format: crate::logging::LogFormat,
    /// OTLP/gRPC collector traces go to (None: no tracing).
    pub otlp_endpoint: Option<String>,
    /// Ready file.
    pub ready_file: Option<PathBuf>,
    /// Guest image directory.
    pub image_dir: PathBuf,
    /// QEMU accelerator choice.
    pub accel: AccelChoice,
    /// QEMU binary (None: search PATH).
    pub qemu_binary: Option<PathBuf>,
    /// Grace period of a VM stop.
    pub vm_stop_timeout: Duration,
    /// vCPUs offered per host CPU.
    pub vcpu_overcommit: u32,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Zone.
    pub zone: String,
    /// Rack.
    pub rack: String,
    /// vCPUs reserved for the host.
    pub reserve_vcpus: u32,
    /// Memory reserved for the host.
    pub reserve_memory_mib: u64,
    /// Most voters.
    pub max_voters: usize,
    /// Entries between snapshots.
    pub snapshot_threshold: u64,
    /// Leader heartbeat period.
    pub heartbeat_interval: Duration,
    /// Lower bound of the election timeout.
    pub election_timeout_min: Duration,
    /// Upper bound of the election timeout.
    pub election_timeout_max: Duration,
    /// Fencing lease (see `fence`): VMs are stopped after this long without
    /// a renewal, and re-placed elsewhere after it plus a margin.
    pub fence_lease: Duration,
    /// The watchdog binary; `None`: `blixard-fence` beside this executable.
    pub fence_watchdog: Option<PathBuf>,
    /// Directories whose files VMs may name as `runner`, `kernel` or
    /// `initrd` (kernels and initrds may also come from `image_dir`): what
    /// a VM runs on a host is its operator's decision, not the API
    /// caller's (see `host::allowlist`). Absolute; empty: no runner VMs
    /// and no kernels from outside the image dir. The API node checks new
    /// VMs against its own list and every host again before it starts one,
    /// so the list is expected to agree across hosts.
    pub allowed_runner_dirs: Vec<PathBuf>,
    /// Largest snapshot this node receives from a leader (default
    /// `limits::MAX_SNAPSHOT_BYTES`); a bigger transfer is refused once it
    /// passes this, without ever being held in memory.
    pub max_snapshot_bytes: u64,
    /// Average requests per second one identity (a client token; all
    /// anonymous callers together) may make to this node (default
    /// `limits::DEFAULT_TOKEN_REQUESTS_PER_SEC`); members are not limited.
    pub token_requests_per_sec: u32,
    /// Requests one identity may make at once after being idle (default
    /// `limits::DEFAULT_TOKEN_REQUEST_BURST`).
    pub token_request_burst: u32,
    /// Records the audit trail keeps, the oldest dropped first (default
    /// `limits::DEFAULT_AUDIT_RING_LEN`). A cluster-wide setting: the
    /// leader's is the one in force, so set it alike on every node.
    pub audit_ring_len: u32,
    /// The cluster's default placement strategy, `binpack` (default) or
    /// `spread`; a VM's `strategy` overrides it. The leader's is in force.
    pub placement_strategy: String,
    /// While this node leads, place, preempt and drain nothing (healing
    /// goes on): for maintenance, as Nomad's scheduler pause. Default off.
    pub placement_paused: bool,
    /// The point-in-time archive this node keeps (`backup_dir` and its
    /// periods), or `None`: one node's archive is enough for the cluster's
    /// history, since every node applies the same entries.
    pub backup: Option<crate::backup::archive::Settings>,
    /// How connections travel: TCP, or a simulation's network (set only
    /// by tests; no flag or file key names it).
    pub transport: crate::transport::Transport,
    /// A simulated host (set only by simulation tests): redb on its disk
    /// with the Raft log writer run as a task, the lease on its clock, VMs
    /// on its test backend and no watchdog process. `None`: the data dir's
    /// file, the writer thread, CLOCK_BOOTTIME and the configured backend.
    pub sim: Option<crate::sim::host::SimHost>,
}

/// A configuration problem, naming the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A setting is missing or out of range.
    #[error("{setting}: {message}")]
    Invalid {
        /// Flag name.
        setting: &'static str,
        /// What to fix.
        message: String,
    },
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.into(),
    }
}

impl Config {
    /// Resolves flags (with their environment variables) over the file over defaults.
    pub fn resolve(flags: Flags) -> Result<Self, ConfigError> {
        let file = match &flags.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let node_id = flags
            .node_id
            .or(file.node_id)
            .ok_or_else(|| invalid("--node-id", "is required (a positive integer)"))?;
        if node_id == 0 {
            return Err(invalid("--node-id", "must be a positive integer"));
        }
        let data_dir = flags
            .data_dir
            .or(file.data_dir)
            .ok_or_else(|| invalid("--data-dir", "is required"))?;
        let listen = flags
            .listen
            .or(file.listen)
            .ok_or_else(|| invalid("--listen", "is required (host:port)"))?;
        let init = flags.init || file.init.unwrap_or(false);
        let join = flags.join.or(file.join);
        if init && join.is_some() {
            return Err(invalid("--init", "cannot be combined with --join"));
        }
        let insecure = flags.insecure || file.insecure.unwrap_or(false);
        let join_token = flags
            .join_token
            .or_else(|| file.join_token.map(blixard_shared::auth::Secret::new));
        let ca_fingerprint = flags.ca_fingerprint.or(file.ca_fingerprint);
        check_registration_fields(&file.labels, &file.zone, &file.rack)?;
        let advertise = flags.advertise.or(file.advertise);
        if let Some(address) = &advertise {
            validate::node_address("--advertise", address)
                .map_err(|e| invalid("--advertise", e.message))?;
        }
        let max_voters = file
            .max_voters
            .unwrap_or(blixard_shared::limits::DEFAULT_MAX_VOTERS);
        if !MAX_VOTERS_RANGE.contains(&max_voters) {
            return Err(invalid("max_voters", between(&MAX_VOTERS_RANGE)));
        }
        let heartbeat = file.heartbeat_interval_ms.unwrap_or(DEFAULT_HEARTBEAT_MS);
        let emin = file
            .election_timeout_min_ms
            .unwrap_or(DEFAULT_ELECTION_TIMEOUT_MS.0);
        let emax = file
            .election_timeout_max_ms
            .unwrap_or(DEFAULT_ELECTION_TIMEOUT_MS.1);
        if heartbeat == 0 || emin <= heartbeat || emax <= emin {
            return Err(invalid(
                "election_timeout_min_ms",
                "need 0 < heartbeat_interval_ms < election_timeout_min_ms < election_timeout_max_ms",
            ));
        }
        let vcpu_overcommit = file.vcpu_overcommit.unwrap_or(DEFAULT_VCPU_OVERCOMMIT);
        if !VCPU_OVERCOMMIT_RANGE.contains(&vcpu_overcommit) {
            return Err(invalid("vcpu_overcommit", between(&VCPU_OVERCOMMIT_RANGE)));
        }
        let vm_stop_timeout_ms = file
            .vm_stop_timeout_ms
            .unwrap_or(DEFAULT_VM_STOP_TIMEOUT_MS);
        if !VM_STOP_TIMEOUT_RANGE_MS.contains(&vm_stop_timeout_ms) {
            return Err(invalid(
                "vm_stop_timeout_ms",
                between(&VM_STOP_TIMEOUT_RANGE_MS),
            ));
        }
        let fence_lease_ms = file
            .fence_lease_ms
            .unwrap_or(DEFAULT_LEASE.as_millis() as u64);
        validate::lease_ms("fence_lease_ms", fence_lease_ms)
            .map_err(|e| invalid("fence_lease_ms", e.message))?;
        let allowed_runner_dirs =
            allowed_runner_dirs(flags.allowed_runner_dirs, file.allowed_runner_dirs)?;
        let snapshot_threshold = file
            .snapshot_threshold
            .unwrap_or(DEFAULT_SNAPSHOT_THRESHOLD);
        if snapshot_threshold == 0 {
            return Err(invalid("snapshot_threshold", "must be positive"));
        }
        let max_snapshot_bytes = file
            .max_snapshot_bytes
            .unwrap_or(blixard_shared::limits::MAX_SNAPSHOT_BYTES);
        if !MAX_SNAPSHOT_BYTES_RANGE.contains(&max_snapshot_bytes) {
            return Err(invalid(
                "max_snapshot_bytes",
                between(&MAX_SNAPSHOT_BYTES_RANGE),
            ));
        }
        let token_requests_per_sec = file
            .token_requests_per_sec
            .unwrap_or(blixard_shared::limits::DEFAULT_TOKEN_REQUESTS_PER_SEC);
        if !TOKEN_RATE_RANGE.contains(&token_requests_per_sec) {
            return Err(invalid(
                "token_requests_per_sec",
                between(&TOKEN_RATE_RANGE),
            ));
        }
        let token_request_burst = file
            .token_request_burst
            .unwrap_or(blixard_shared::limits::DEFAULT_TOKEN_REQUEST_BURST);
        if !TOKEN_BURST_RANGE.contains(&token_request_burst) {
            return Err(invalid("token_request_burst", between(&TOKEN_BURST_RANGE)));
        }
        let audit_ring_len = file
            .audit_ring_len
            .unwrap_or(blixard_shared::limits::DEFAULT_AUDIT_RING_LEN);
        if !blixard_shared::limits::AUDIT_RING_LEN_RANGE.contains(&audit_ring_len) {
            return Err(invalid(
                "audit_ring_len",
                between(&blixard_shared::limits::AUDIT_RING_LEN_RANGE),
            ));
        }
        let placement_strategy = file
            .placement_strategy
            .unwrap_or_else(|| "binpack".to_string());
        if !matches!(placement_strategy.as_str(), "binpack" | "spread") {
            return Err(invalid("placement_strategy", "must be binpack or spread"));
        }
        let backup = backup_settings(
            file.backup_dir,
            file.backup_snapshot_interval_s,
            file.backup_retention_s,
        )?;
        Ok(Self {
            transport: crate::transport::Transport::Tcp,
            sim: None,
            backup,
            node_id,
            data_dir: data_dir.clone(),
            listen,
            advertise,
            metrics_listen: flags.metrics_listen.or(file.metrics_listen),
            init,
            join,
            join_token,
            ca_fingerprint,
            insecure,
            policy_dir: flags.policy_dir.or(file.policy_dir),
            tls_hosts: file.tls_hosts,
            backend: flags.backend.or(file.backend).unwrap_or(BackendKind::Qemu),
            log: flags.log.or(file.log).unwrap_or_else(|| "info".into()),
            log_format: flags.log_format.or(file.log_format).unwrap_or_default(),
            otlp_endpoint: flags.otlp_endpoint.or(file.otlp_endpoint),
            ready_file: flags.ready_file,
            image_dir: flags
                .image_dir
                .or(file.image_dir)
                .unwrap_or_else(|| data_dir.join("images")),
            accel: flags.accel.or(file.accel).unwrap_or(AccelChoice::Auto),
            qemu_binary: file.qemu_binary,
            vm_stop_timeout: Duration::from_millis(vm_stop_timeout_ms),
            vcpu_overcommit,
            labels: file.labels,
            zone: file.zone.unwrap_or_default(),
            rack: file.rack.unwrap_or_default(),
            reserve_vcpus: file.reserve_vcpus.unwrap_or(0),
            reserve_memory_mib: file
                .reserve_memory_mib
                .unwrap_or(DEFAULT_RESERVE_MEMORY_MIB),
            max_voters,
            snapshot_threshold,
            heartbeat_interval: Duration::from_millis(heartbeat),
            election_timeout_min: Duration::from_millis(emin),
            election_timeout_max: Duration::from_millis(emax),
            fence_lease: Duration::from_millis(fence_lease_ms),
            fence_watchdog: file.fence_watchdog,
            allowed_runner_dirs,
            max_snapshot_bytes,
            token_requests_per_sec,
            token_request_burst,
            audit_ring_len,
            placement_strategy,
            placement_paused: file.placement_paused.unwrap_or(false),
        })
    }

    /// A configuration for tests and `blixard dev`: defaults for everything
    /// but identity and place.
    pub fn for_node(node_id: u64, data_dir: &Path, listen: SocketAddr) -> Self {
        Self {
            node_id,
            data_dir: data_dir.to_path_buf(),
            listen,
            advertise: None,
            metrics_listen: None,
            init: false,
            join: None,
            join_token: None,
            ca_fingerprint: None,
            insecure: false,
            policy_dir: None,
            tls_hosts: Vec::new(),
            backend: BackendKind::Process,
            log: "info".into(),
            log_format: crate::logging::LogFormat::Text,
            otlp_endpoint: None,
            ready_file: None,
            image_dir: data_dir.join("images"),
            accel: AccelChoice::Auto,
            qemu_binary: None,
            vm_stop_timeout: Duration::from_millis(DEFAULT_VM_STOP_TIMEOUT_MS),
            vcpu_overcommit: DEFAULT_VCPU_OVERCOMMIT,
            labels: BTreeMap::new(),
            zone: String::new(),
            rack: String::new(),
            reserve_vcpus: 0,
            reserve_memory_mib: 0,
            max_voters: blixard_shared::limits::DEFAULT_MAX_VOTERS,
            snapshot_threshold: DEFAULT_SNAPSHOT_THRESHOLD,
            heartbeat_interval: Duration::from_millis(LOCAL_HEARTBEAT_MS),
            election_timeout_min: Duration::from_millis(LOCAL_ELECTION_TIMEOUT_MS.0),
            election_timeout_max: Duration::from_millis(LOCAL_ELECTION_TIMEOUT_MS.1),
            fence_lease: DEFAULT_LEASE,
            fence_watchdog: None,
            allowed_runner_dirs: Vec::new(),
            max_snapshot_bytes: blixard_shared::limits::MAX_SNAPSHOT_BYTES,
            token_requests_per_sec: blixard_shared::limits::DEFAULT_TOKEN_REQUESTS_PER_SEC,
            token_request_burst: blixard_shared::limits::DEFAULT_TOKEN_REQUEST_BURST,
            audit_ring_len: blixard_shared::limits::DEFAULT_AUDIT_RING_LEN,
            placement_strategy: "binpack".to_string(),
            placement_paused: false,
            backup: None,
            transport: crate::transport::Transport::Tcp,
            sim: None,
        }
    }
}

/// Default time between the archive's snapshots: an hour, so a restore
/// replays at most an hour of entries.
pub const DEFAULT_BACKUP_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(3600);
/// Default retention of the archive: a week.
pub const DEFAULT_BACKUP_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Range of `backup_snapshot_interval_s`: a minute to a day.
const BACKUP_SNAPSHOT_INTERVAL_RANGE_S: std::ops::RangeInclusive<u64> = 60..=86_400;
/// Range of `backup_retention_s`: an hour to a year.
const BACKUP_RETENTION_RANGE_S: std::ops::RangeInclusive<u64> = 3600..=366 * 86_400;

/// The archive's settings from the file's keys; the periods without a
/// directory are a mistake worth naming.
fn backup_settings(
    dir: Option<PathBuf>,
    interval_s: Option<u64>,
    retention_s: Option<u64>,
) -> Result<Option<crate::backup::archive::Settings>, ConfigError> {
    let Some(dir) = dir else {
        if interval_s.is_some() || retention_s.is_some() {
            return Err(invalid(
                "backup_dir",
                "is required when backup_snapshot_interval_s or backup_retention_s is set",
            ));
        }
        return Ok(None);
    };
    if !dir.is_absolute() {
        return Err(invalid(
            "backup_dir",
            format!("{} is not an absolute path", dir.display()),
        ));
    }
    let interval = interval_s.unwrap_or(DEFAULT_BACKUP_SNAPSHOT_INTERVAL.as_secs());
    if !BACKUP_SNAPSHOT_INTERVAL_RANGE_S.contains(&interval) {
        return Err(invalid(
            "backup_snapshot_interval_s",
            between(&BACKUP_SNAPSHOT_INTERVAL_RANGE_S),
        ));
    }
    let retention = retention_s.unwrap_or(DEFAULT_BACKUP_RETENTION.as_secs());
    if !BACKUP_RETENTION_RANGE_S.contains(&retention) {
        return Err(invalid(
            "backup_retention_s",
            between(&BACKUP_RETENTION_RANGE_S),
        ));
    }
    Ok(Some(crate::backup::archive::Settings {
        dir,
        snapshot_interval: Duration::from_secs(interval),
        retention: Duration::from_secs(retention),
    }))
}

/// What the node registers about itself from the file (labels, zone,
/// rack), held to the rules the cluster applies to a registration, so a
/// node that would be refused does not start.
fn check_registration_fields(
    labels: &BTreeMap<String, String>,
    zone: &Option<String>,
    rack: &Option<String>,
) -> Result<(), ConfigError> {
    let labels = labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    validate::label_pairs("labels", labels).map_err(|e| invalid("labels", e.to_string()))?;
    for (setting, value) in [("zone", zone), ("rack", rack)] {
        if let Some(value) = value {
            validate::topology(setting, value).map_err(|e| invalid(setting, e.message))?;
        }
    }
    Ok(())
}

/// The allowed runner dirs: the flags' (or environment's) when any are
/// given, else the file's. Each must be absolute: a relative one would
/// depend on the daemon's working directory.
fn allowed_runner_dirs(
    flags: Vec<PathBuf>,
    file: Option<Vec<PathBuf>>,
) -> Result<Vec<PathBuf>, ConfigError> {
    let dirs = if flags.is_empty() {
        file.unwrap_or_default()
    } else {
        flags
    };
    match dirs.iter().find(|d| !d.is_absolute()) {
        Some(d) => Err(invalid(
            "allowed_runner_dirs",
            format!("{} is not an absolute path", d.display()),
        )),
        None => Ok(dirs),
    }
}

/// "must be between A and B", the words every range check uses.
fn between<T: std::fmt::Display>(range: &std::ops::RangeInclusive<T>) -> String {
    format!("must be between {} and {}", range.start(), range.end())
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Flags {
        Flags {
            node_id: Some(1),
            data_dir: Some("/tmp/x".into()),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "node_id = 7\nzone = \"z1\"\nmax_voters = 3\n[labels]\nrole = \"edge\"\n",
        )
        .unwrap();
        let mut f = base();
        f.config = Some(path);
        let c = Config::resolve(f).unwrap();
        assert_eq!(c.node_id, 1);
        assert_eq!(c.zone, "z1");
        assert_eq!(c.max_voters, 3);
        assert_eq!(c.labels.get("role").map(String::as_str), Some("edge"));
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "nodeid = 7\n").unwrap();
        let mut f = base();
        f.config = Some(path.clone());
        assert!(matches!(Config::resolve(f), Err(ConfigError::Parse { .. })));
        for (text, setting) in [
            ("[labels]\n\"bad key\" = \"v\"\n", "labels"),
            ("zone = \"a\\tb\"\n", "zone"),
            ("advertise = \"no-port\"\n", "--advertise"),
            ("fence_lease_ms = 500\n", "fence_lease_ms"),
            ("max_snapshot_bytes = 1000\n", "max_snapshot_bytes"),
            ("token_requests_per_sec = 0\n", "token_requests_per_sec"),
            ("token_request_burst = 0\n", "token_request_burst"),
            ("audit_ring_len = 5\n", "audit_ring_len"),
        ] {
            std::fs::write(&path, text).unwrap();
            let mut f = base();
            f.config = Some(path.clone());
            match Config::resolve(f) {
                Err(ConfigError::Invalid { setting: s, .. }) => assert_eq!(s, setting, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        for backend in [BackendKind::Qemu, BackendKind::Process] {
            assert_eq!(validate::backend("backend", backend.as_str()), Ok(()));
        }
        let mut f = base();
        f.node_id = Some(0);
        assert!(matches!(
            Config::resolve(f),
            Err(ConfigError::Invalid {
                setting: "--node-id",
                ..
            })
        ));
    }

    #[test]
    fn allowed_runner_dirs_from_file_or_flags_and_absolute_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "allowed_runner_dirs = [\"/opt/run\", \"/srv/vms\"]\n",
        )
        .unwrap();
        let mut f = base();
        f.config = Some(path.clone());
        let c = Config::resolve(f).unwrap();
        assert_eq!(
            c.allowed_runner_dirs,
            vec![PathBuf::from("/opt/run"), PathBuf::from("/srv/vms")]
        );
        let flags = Flags::try_parse_from([
            "blixardd",
            "--allowed-runner-dir",
            "/a,/b",
            "--allowed-runner-dir",
            "/c",
        ])
        .unwrap();
        let mut f = base();
        f.allowed_runner_dirs = flags.allowed_runner_dirs;
        f.config = Some(path);
        let c = Config::resolve(f).unwrap();
        assert_eq!(
            c.allowed_runner_dirs,
            vec![
                PathBuf::from("/a"),
                PathBuf::from("/b"),
                PathBuf::from("/c")
            ],
            "flags win over the file"
        );
        assert!(Config::resolve(base())
            .unwrap()
            .allowed_runner_dirs
            .is_empty());
        let mut f = base();
        f.allowed_runner_dirs = vec![PathBuf::from("relative/run")];
        assert!(matches!(
            Config::resolve(f),
            Err(ConfigError::Invalid {
                setting: "allowed_runner_dirs",
                ..
            })
        ));
    }
}
