//! Every bound the system enforces, in one place, so the API, the state
//! machine, the CLI and the documentation agree. `docs/architecture.md`
//! lists them with what happens at each limit.

/// Largest gRPC message a daemon accepts from clients (bytes). Larger
/// requests fail with `ResourceExhausted` before they are decoded.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest message between daemons (Raft append batches, snapshot chunks).
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Size of one snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// Largest snapshot a node accepts from its leader (the default of the
/// node config's `max_snapshot_bytes`). The transfer is received into a
/// file under `DATA/snapshot-incoming/`, never into memory; the chunk that
/// would take it past this size fails it with `ResourceExhausted` and the
/// file is deleted (the leader retries with back-off). Only a transfer
/// received whole and under this size is read into memory to be installed.
pub const MAX_SNAPSHOT_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Snapshot transfers a node receives at once. A second one while one is
/// in progress is refused with `Unavailable` (the condition clears when the
/// first ends; the leader retries with back-off), so two transfers never
/// fill the disk or memory twice.
pub const MAX_SNAPSHOT_TRANSFERS: usize = 1;
/// Longest wait for the next chunk of a snapshot transfer; past it the
/// transfer fails with `DeadlineExceeded` and its file is deleted, so a
/// sender that stalls cannot hold the one transfer slot for ever.
pub const SNAPSHOT_CHUNK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// VM names follow DNS label rules: at most this many characters.
pub const MAX_NAME_LEN: usize = 63;
/// Fewest and most vCPUs a VM may ask for.
pub const MIN_VCPUS: u32 = 1;
/// Most vCPUs a VM may ask for.
pub const MAX_VCPUS: u32 = 256;
/// Smallest VM memory (MiB): a Linux guest below this does not boot.
pub const MIN_MEMORY_MIB: u64 = 16;
/// Largest VM memory (MiB): 4 TiB.
pub const MAX_MEMORY_MIB: u64 = 4 * 1024 * 1024;
/// Labels per VM or per node.
pub const MAX_LABELS: usize = 64;
/// Length of a label key.
pub const MAX_LABEL_KEY_LEN: usize = 63;
/// Length of a label value.
pub const MAX_LABEL_VALUE_LEN: usize = 253;
/// Length of paths (kernel, initrd, runner) and image names.
pub const MAX_PATH_LEN: usize = 4096;
/// Length of a kernel command line (Linux's own limit on x86 is 2048).
pub const MAX_CMDLINE_LEN: usize = 2048;
/// Placement constraints per VM.
pub const MAX_CONSTRAINTS: usize = 32;
/// Length of one constraint expression.
pub const MAX_CONSTRAINT_LEN: usize = 256;
/// Length of a group name (DNS label rules apply).
pub const MAX_GROUP_LEN: usize = 63;
/// Priority range (inclusive).
pub const MIN_PRIORITY: i32 = -1000;
/// Priority range (inclusive).
pub const MAX_PRIORITY: i32 = 1000;

/// Length of a node's gRPC address (`host:port`).
pub const MAX_ADDRESS_LEN: usize = 255;
/// Length of a node's zone and rack names.
pub const MAX_TOPOLOGY_LEN: usize = 253;
/// The VM backends a node may run, by the name its record carries.
pub const BACKENDS: [&str; 2] = ["qemu", "process"];
/// Range of a fencing lease (`fence_lease_ms`, and every lease renewal) in
/// ms: under a second a renewal cannot keep up; over two minutes a lost
/// host's VMs wait too long to heal.
pub const FENCE_LEASE_RANGE_MS: std::ops::RangeInclusive<u64> = 1000..=120_000;

/// Default page size of list calls.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page a list call returns; larger requests are clamped.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Most pages a client reads to gather one whole list (enough for
/// [`MAX_VMS`] at the largest page size, with room for small pages); past
/// it the read fails rather than looping on a server that never stops.
pub const MAX_LIST_PAGES: usize = 100_000;

/// Most VM records the cluster holds; creates beyond fail with `ResourceExhausted`.
pub const MAX_VMS: usize = 1_000_000;
/// Most VMs one preemption displaces.
pub const MAX_PREEMPT_VICTIMS: usize = 256;
/// Range of a drain's `parallel` (VMs moving at once).
pub const DRAIN_PARALLEL_RANGE: std::ops::RangeInclusive<u32> = 1..=64;
/// A drain's default `parallel`.
pub const DEFAULT_DRAIN_PARALLEL: u32 = 2;
/// Longest drain deadline (7 days), ms; the default is one hour.
pub const MAX_DRAIN_DEADLINE_MS: u64 = 7 * 24 * 3600 * 1000;
/// A drain's default deadline, ms.
pub const DEFAULT_DRAIN_DEADLINE_MS: u64 = 3600 * 1000;
/// Most node records the cluster holds.
pub const MAX_NODES: usize = 10_000;
/// Events the replicated ring keeps; older ones are dropped and a watcher
/// asking for them gets `OutOfRange`.
pub const EVENT_RING_LEN: usize = 10_000;
/// Longest status reason kept in a VM record (bytes); longer ones are cut
/// at a character boundary when applied.
pub const MAX_REASON_LEN: usize = 2048;
/// Longest reason a status report may carry at all (bytes): far above what
/// an agent sends (a message and a few console lines), so a report is only
/// refused when it is not an agent's; apply keeps [`MAX_REASON_LEN`] of it.
pub const MAX_REPORT_REASON_LEN: usize = 64 * 1024;
/// Most names one status report says are gone; an agent sends the rest
/// with its next report.
pub const MAX_GONE_PER_REPORT: usize = 1024;
/// Most console lines `StreamVmLogs` returns as a tail; more is
/// `InvalidArgument` naming `tail_lines`.
pub const MAX_TAIL_LINES: u32 = 100_000;
/// Length of an event message (longer ones are cut).
pub const MAX_EVENT_MESSAGE_LEN: usize = 512;
/// Concurrent Watch streams per node, from every caller together; more
/// fail with `ResourceExhausted` naming the limit (use another member).
pub const MAX_WATCHERS_PER_NODE: usize = 1024;
/// Concurrent Watch streams one identity (a client token; all anonymous
/// callers of an `--insecure` node together) holds on one node; more fail
/// with `ResourceExhausted` naming the limit, so one client cannot take
/// every watcher slot and lock the console out. Member nodes are not held
/// to it (they relay for clients counted where those called); they count
/// toward [`MAX_WATCHERS_PER_NODE`].
pub const MAX_WATCHERS_PER_IDENTITY: usize = 64;
/// Concurrent `StreamVmLogs` streams per node, from every caller together
/// (relays from other members included); more fail with
/// `ResourceExhausted` naming the limit.
pub const MAX_LOG_STREAMS_PER_NODE: usize = 256;
/// Concurrent `StreamVmLogs` streams one identity holds on one node (as
/// for [`MAX_WATCHERS_PER_IDENTITY`]; relays from member nodes are held to
/// [`MAX_LOG_STREAMS_PER_NODE`] only); more fail with `ResourceExhausted`
/// naming the limit.
pub const MAX_LOG_STREAMS_PER_IDENTITY: usize = 16;

/// Requests per second one identity (a client token; all anonymous callers
/// together) may make to one node, on average: the default of the node
/// config's `token_requests_per_sec`. Past it (and the burst) a call fails
/// with `ResourceExhausted` and a `retry-after-ms` hint; member nodes and
/// `RaftService` methods are not limited (Raft and forwarded writes are
/// bounded by Raft itself; under `--insecure` members call as anonymous).
pub const DEFAULT_TOKEN_REQUESTS_PER_SEC: u32 = 200;
/// Requests one identity may make at once after being idle (the token
/// bucket's size): the default of the node config's `token_request_burst`.
/// Enough to read the largest cluster whole in one go ([`MAX_VMS`] at
/// [`MAX_PAGE_SIZE`] is 1000 pages, plus the nodes), as the console does
/// when it connects.
pub const DEFAULT_TOKEN_REQUEST_BURST: u32 = 2000;
/// Identities whose request rate one node tracks; a new one past it first
/// drops the idle ones (a full bucket holds nothing worth keeping), then
/// the one heard from least recently (which starts again with a full
/// burst). Far above [`MAX_TOKENS`], so only a pathological churn of names
/// ever evicts a bucket that was in use.
pub const MAX_RATE_LIMITED_IDENTITIES: usize = 4096;

/// Deadline of a unary call on the server, whatever the client asked for
/// (a shorter client deadline still wins): past it the call fails with
/// `DeadlineExceeded` naming the limit, and its handler is dropped. Streams
/// (`Watch`, `StreamVmLogs`, `StreamAppend`, `InstallSnapshot`, health
/// `Watch`, reflection) have none; `Join` has [`JOIN_CALL_DEADLINE`].
pub const CALL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// Deadline of a `Join` call, which waits up to two minutes for the new
/// node to catch up before it is made a voter (and forwards to the leader).
pub const JOIN_CALL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(150);
/// Calls one client connection has in the node's handlers at once; more
/// wait (queued, in order) for one to finish. Held until a call's answer
/// starts (a stream holds no slot once it is open; streams have their own
/// caps). Member nodes and `RaftService` methods are not held to it: one
/// pooled connection carries every write a member forwards for its clients.
pub const MAX_CALLS_PER_CONNECTION: usize = 64;

/// Channels to other nodes one node keeps open (one per member address,
/// dropped when the address leaves the membership). A new one past it
/// evicts the channel used least recently (it reconnects on next use).
pub const MAX_PEER_CHANNELS: usize = MAX_NODES;

/// Request ids remembered per client (the newest); a retry of an older one
/// is applied again rather than answered from memory.
pub const MAX_REQUEST_IDS_PER_CLIENT: usize = 16;
/// Clients whose request ids are remembered; past it the client heard from
/// least recently is forgotten.
pub const MAX_REQUEST_CLIENTS: usize = 1024;

/// Most client tokens the cluster holds; creates beyond fail with
/// `ResourceExhausted` (revoke unused ones).
pub const MAX_TOKENS: usize = 1000;
/// Most join tokens that are neither used nor expired; creates beyond fail
/// with `ResourceExhausted` until some are used or expire.
pub const MAX_JOIN_TOKENS: usize = 100;
/// Length of a token's hash as the cluster stores it: SHA-256, lowercase hex.
pub const TOKEN_HASH_LEN: usize = 64;

/// Most voters in the Raft membership; further nodes join as non-voting members.
pub const DEFAULT_MAX_VOTERS: usize = 5;

/// Largest policy text, and largest schema, `ReloadPolicies` accepts (and
/// the replicated state holds): past it the reload is refused and the old
/// policies stay.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;

/// Largest VM spec by [`crate::validate::SpecFields::weight`] (its text
/// fields): a bigger one is refused at the API and at apply. Far above any
/// real spec (a long command line, a few dozen labels), so that
/// [`MAX_VMS`] specs cannot fill a snapshot on their own.
pub const MAX_VM_SPEC_BYTES: usize = 16 * 1024;
/// Most bytes all VM specs together may weigh in the replicated state
/// (the fleet's byte budget): past it a create fails with
/// `ResourceExhausted` until VMs are deleted. With the records' own
/// overhead the state stays well under a quarter of
/// [`MAX_SNAPSHOT_BYTES`], the most a receiver accepts.
pub const MAX_FLEET_SPEC_BYTES: u64 = 512 * 1024 * 1024;

/// Most label quotas the cluster holds; a new one past it is refused
/// (`ResourceExhausted`).
pub const MAX_QUOTAS: usize = 1000;

/// The audit ring's size when the leader's config does not set
/// `audit_ring_len`.
pub const DEFAULT_AUDIT_RING_LEN: u32 = 10_000;
/// The sizes `audit_ring_len` may take. At the top, with fields bounded by
/// [`MAX_AUDIT_FIELD_LEN`], the ring weighs at most ~60 MB of state.
pub const AUDIT_RING_LEN_RANGE: std::ops::RangeInclusive<u32> = 100..=100_000;
/// Longest principal, peer, method, action or target an audit record
/// keeps (longer ones are cut, on a character boundary).
pub const MAX_AUDIT_FIELD_LEN: usize = 128;
/// Records one node holds for the trail before they are written; past it
/// new ones are counted as dropped (`limit_hits{limit="audit_queue"}`).
pub const MAX_AUDIT_QUEUE: usize = 8192;
/// Most records one audit batch (one log entry) carries. 256 was tried
/// (smaller entries, to interleave with client writes) and cost more: four
/// times the entries took 20-25% of the 64-client write throughput where
/// 1024 took 5-7% (`docs/benchmarks.md`).
pub const MAX_AUDIT_BATCH: usize = 1024;
/// How long a node gathers records before it writes a batch: the longest
/// a record takes to reach the trail when the cluster is healthy, plus
/// one commit.
pub const AUDIT_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// Refused calls one node records per second on average (a token bucket
/// with [`AUDIT_DENIAL_BURST`]); past it they are counted as dropped
/// (`limit_hits{limit="audit_denials"}`), so a flood of bad tokens cannot
/// push the real records out of the ring.
pub const AUDIT_DENIALS_PER_SEC: u32 = 50;
/// Refused calls one node records at once after a quiet spell.
pub const AUDIT_DENIAL_BURST: u32 = 500;
/// Audit records one `ListAudit` page holds at most (and by default).
pub const MAX_AUDIT_PAGE: u32 = 1000;
/// Questions one `CheckAccess` call may ask.
pub const MAX_ACCESS_QUERIES: usize = 256;
