//! The node agent: makes the VMs running on this host exactly those the
//! replicated state assigns to it, at the current epoch, with desired state
//! running; and reports what it observes back through Raft.
//!
//! It reacts to every applied revision and also resyncs every second (to
//! notice processes that died). Reports are coalesced per VM and sent as one
//! `ReportVmStatus` command per pass, at most one pass every
//! [`MIN_PASS_INTERVAL`], so a flapping VM cannot flood the log; crash loops
//! back off exponentially up to [`MAX_BACKOFF`].
//!
//! Graceful stops run in the background (`stops`), so one slow guest does
//! not hold up the host. An instance that must not run here any more (its
//! record gone or moved, its epoch changed, the lease out) is killed at
//! once: another host may start the VM any moment.

mod stops;

use crate::backend::{BackendError, InstanceState, VmBackend};
use crate::core::Core;
use crate::host::allowlist::HostPaths;
use crate::host::fence::{LeaseClock, LeaseStatus, Watchdog};
use crate::shutdown::Shutdown;
use crate::state::{Action, DesiredState, Observed, RestartPolicy, VmRecord, VmReport, VmState};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use stops::Stops;
use tokio::sync::watch;
use tokio::time::Instant;

/// Shortest time between two reconcile passes.
pub const MIN_PASS_INTERVAL: Duration = Duration::from_millis(100);
/// Longest a pass waits for its status report to commit; an unanswered
/// report is sent again next pass.
const REPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often an agent waiting on a node that is not a member says so.
const NOT_A_MEMBER_REPORT_EVERY: Duration = Duration::from_secs(30);
/// Pause between attempts to catch up with the leader at start.
const CATCH_UP_RETRY: Duration = Duration::from_millis(200);
/// Resync period when nothing changes.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(1);
/// First crash-loop back-off.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest crash-loop back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// An instance that ran this long before it ended resets the back-off.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// Bytes read from the end of the console log for a failure reason.
const REASON_CONSOLE_BYTES: u64 = 4096;
/// Console lines quoted in a failure reason.
const REASON_CONSOLE_LINES: usize = 5;

/// What to do after an instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterExit {
    /// Start it again (after the back-off).
    Restart,
    /// Leave it stopped: it ended cleanly and the policy says so.
    Stopped,
    /// Leave it failed.
    Failed,
}

/// The restart policy's answer for an instance that ended.
pub fn after_exit(policy: RestartPolicy, clean: bool) -> AfterExit {
    match (policy, clean) {
        (RestartPolicy::Always, _) => AfterExit::Restart,
        (RestartPolicy::OnFailure, false) => AfterExit::Restart,
        (RestartPolicy::OnFailure, true) | (RestartPolicy::Never, true) => AfterExit::Stopped,
        (RestartPolicy::Never, false) => AfterExit::Failed,
    }
}

/// Back-off before restart number `failures` (1-based).
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    (MIN_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF)
}

/// What the agent knows of one VM on this host.
#[derive(Debug, Clone, Default)]
struct Local {
    epoch: u64,
    running: bool,
    pid: u32,
    started_at_ms: u64,
    started: Option<Instant>,
    /// The lease's lapse count when this instance started (see
    /// `LeaseStatus::lapses`).
    lapses_at_start: u64,
    restarts: u32,
    failures: u32,
    nonce_seen: u64,
    next_start: Option<Instant>,
    /// A reason not to start again until the epoch or restart nonce changes.
    blocked: Option<String>,
    /// Stopped by the fence (the lease ran out), not by a failure of its
    /// own: started again, without back-off, once the lease is renewed.
    fenced: bool,
    reported: Option<(VmState, String, u32)>,
    /// This instance's boot time is in `vm_boot_seconds` already.
    boot_observed: bool,
}

/// Reconciles one host. Generic over the backend so the loop is the same
/// for QEMU, processes and the test fake.
pub struct Agent<B: VmBackend> {
    core: Arc<Core>,
    backend: Arc<B>,
    stop_timeout: Duration,
    local: BTreeMap<String, Local>,
    pending: BTreeMap<String, VmReport>,
    lease: watch::Receiver<LeaseStatus>,
    watchdog: Option<Arc<Watchdog>>,
    heartbeat: Heartbeat,
    /// When the missing watchdog was last reported: passes run up to ten
    /// times a second, the report at most every [`WATCHDOG_REPORT_EVERY`].
    watchdog_reported: Option<Instant>,
    /// Graceful stops in flight.
    stops: Stops,
    /// Deleted VMs whose instance this host no longer runs, to report so
    /// their names may be placed again (`Fleet::departed`).
    gone: BTreeSet<String>,
    /// The host paths VMs may name here (this host's config): checked
    /// again before every start, whatever the API node allowed.
    paths: HostPaths,
}

/// How often a watchdog that cannot be started is reported again.
const WATCHDOG_REPORT_EVERY: Duration = Duration::from_secs(60);

/// What the agent needs from fencing (see `fence`).
pub struct Fencing {
    /// The lease, as the lease keeper renews it.
    pub lease: watch::Receiver<LeaseStatus>,
    /// The host's watchdog, made sure of before every start; `None` for a
    /// backend without host processes.
    pub watchdog: Option<Arc<Watchdog>>,
    /// Beaten by the agent's loop; the lease keeper renews only while fresh.
    pub heartbeat: Heartbeat,
}

/// Longest the agent's loop may go without a beat before the lease keeper
/// calls it stuck and stops renewing. A pass runs at least every
/// [`RESYNC_INTERVAL`]; a pass that kills a VM may wait a few seconds.
pub const AGENT_STALL_LIMIT: Duration = Duration::from_secs(5);
/// How often the agent beats while it waits (for current state, for a lease).
const HEARTBEAT_WHILE_WAITING: Duration = Duration::from_millis(500);

/// The agent's proof of life for the lease keeper: the lease clock's
/// milliseconds at its loop's last turn. An agent that is stuck or dead
/// must not keep a lease that keeps its VMs from being healed elsewhere.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    last: Arc<AtomicU64>,
    clock: LeaseClock,
}

impl Heartbeat {
    /// Fresh at creation: the agent has [`AGENT_STALL_LIMIT`] to first beat.
    pub fn new(clock: LeaseClock) -> Self {
        Self {
            last: Arc::new(AtomicU64::new(clock.now_ms())),
            clock,
        }
    }

    /// The agent's loop turned.
    pub fn beat(&self) {
        self.last.store(self.clock.now_ms(), Ordering::Relaxed);
    }

    /// How long since the last beat.
    pub fn age(&self) -> Duration {
        Duration::from_millis(
            self.clock
                .now_ms()
                .saturating_sub(self.last.load(Ordering::Relaxed)),
        )
    }

    /// Whether the agent counts as alive and passing.
    pub fn fresh(&self) -> bool {
        self.age() <= AGENT_STALL_LIMIT
    }
}

impl<B: VmBackend> Agent<B> {
    /// An agent for `core`'s node driving `backend`.
    pub fn new(core: Arc<Core>, backend: Arc<B>, stop_timeout: Duration, fencing: Fencing) -> Self {
        let paths = HostPaths::from_config(&core.config);
        Self {
            core,
            backend,
            stop_timeout,
            local: BTreeMap::new(),
            pending: BTreeMap::new(),
            lease: fencing.lease,
            watchdog: fencing.watchdog,
            heartbeat: fencing.heartbeat,
            watchdog_reported: None,
            stops: Stops::default(),
            gone: BTreeSet::new(),
            paths,
        }
    }

    /// Adopts what still runs from before, then reconciles until shutdown.
    pub async fn run(mut self, mut shutdown: Shutdown) {
        // Act only on current state: after a restart the node's state may
        // lag what the cluster committed (it holds the snapshot plus the log
        // up to its last committed hint), and reconciling against it could
        // stop VMs that still belong here. Until the node has caught up with
        // the leader, nothing is started or stopped.
        if !self.wait_until_current(&mut shutdown).await {
            return;
        }
        // Nothing runs here without the fencing lease (see `fence`); VMs
        // from before the restart keep running meanwhile under the lease
        // the previous daemon wrote, which the watchdog enforces.
        while !self.lease.borrow().valid() {
            self.heartbeat.beat();
            tokio::select! {
                r = self.lease.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(HEARTBEAT_WHILE_WAITING) => {}
                _ = shutdown.recv() => return,
            }
        }
        self.adopt_survivors().await;
        let mut applied = self.core.view.subscribe();
        let mut last_pass = Instant::now() - MIN_PASS_INTERVAL;
        let mut assigned = 0;
        loop {
            // A change of what this host must run (a placement, a stop,
            // a move, a restart request) is acted on at once, even while
            // waiting; anything else waits out the least interval between
            // passes, which bounds how often reports are sent.
            let next = last_pass + MIN_PASS_INTERVAL;
            loop {
                let now_assigned = self.assignment_digest();
                if now_assigned != assigned {
                    assigned = now_assigned;
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => break,
                    r = applied.changed() => if r.is_err() { return },
                    _ = shutdown.recv() => return,
                }
            }
            last_pass = Instant::now();
            self.pass().await;
            self.core.metrics.agent_passes.inc();
            self.core
                .metrics
                .agent_pass_seconds
                .observe(last_pass.elapsed().as_secs_f64());
            self.heartbeat.beat();
            // Wake when the lease runs out, too: its VMs must stop then.
            let lease = self.lease.borrow().clone();
            let lease_end = if lease.valid() {
                Instant::now() + lease.remaining()
            } else {
                Instant::now() + RESYNC_INTERVAL
            };
            tokio::select! {
                r = applied.changed() => if r.is_err() { return },
                r = self.lease.changed() => if r.is_err() { return },
                _ = self.stops.wait_any() => {}
                _ = tokio::time::sleep(RESYNC_INTERVAL) => {}
                _ = tokio::time::sleep_until(lease_end) => {}
                _ = shutdown.recv() => return,
            }
        }
    }

    /// Takes over the instances a previous daemon left running, and marks
    /// the VMs the record says ran here but that are gone, so the first
    /// pass applies their restart policy.
    async fn adopt_survivors(&mut self) {
        for inst in self.backend.adopt().await {
            let nonce = self
                .core
                .view
                .read()
                .vms
                .get(&inst.name)
                .map_or(0, |vm| vm.restart_nonce);
            tracing::info!(vm = %inst.name, pid = inst.pid, epoch = inst.epoch, "adopted running vm");
            self.local.insert(
                inst.name.clone(),
                Local {
                    epoch: inst.epoch,
                    running: true,
                    pid: inst.pid,
                    started_at_ms: inst.started_at_ms,
                    started: Some(Instant::now()),
                    nonce_seen: nonce,
                    ..Default::default()
                },
            );
        }
        // VMs the record says run here that were not adopted died while no
        // daemon watched them: mark them as running so the first pass sees
        // them ended and applies their restart policy (instead of simply
        // starting them again).
        let gone: Vec<(String, u64, u64)> = {
            let fleet = self.core.view.read();
            fleet
                .vms_on(self.core.id)
                .filter(|vm| {
                    matches!(vm.state, VmState::Running | VmState::Starting) && vm.observed.pid != 0
                })
                .filter(|vm| !self.local.contains_key(&vm.name))
                .map(|vm| (vm.name.clone(), vm.epoch, vm.restart_nonce))
                .collect()
        };
        for (name, epoch, nonce) in gone {
            // The watchdog marks what it kills: that VM did not fail, the
            // fence stopped it while the daemon was away; start it again.
            let fenced = self.fenced_marker(&name).exists();
            if fenced {
                tracing::info!(vm = %name, "vm was fenced while the daemon was down");
            } else {
                tracing::info!(vm = %name, "vm ended while the daemon was down");
            }
            self.local.insert(
                name,
                Local {
                    epoch,
                    running: !fenced,
                    fenced,
                    nonce_seen: nonce,
                    ..Default::default()
                },
            );
        }
    }

    /// Waits for a linearizable read barrier (applied state at least what
    /// the leader had committed when asked); `false` on shutdown.
    async fn wait_until_current(&self, shutdown: &mut Shutdown) -> bool {
        let linearizable = blixard_shared::proto::v1::Consistency::Linearizable as i32;
        let mut said_why: Option<Instant> = None;
        loop {
            self.heartbeat.beat();
            match self.core.read_barrier(linearizable).await {
                Ok(()) => return true,
                Err(e) => {
                    tracing::debug!(error = %e.message(), "agent waiting for current state");
                }
            }
            // Waiting silently for ever helps nobody: say why, now and then.
            let member = self
                .core
                .raft_metrics()
                .membership_config
                .membership()
                .get_node(&self.core.id)
                .is_some();
            if !member && said_why.is_none_or(|t| t.elapsed() >= NOT_A_MEMBER_REPORT_EVERY) {
                tracing::warn!(
                    node_id = self.core.id,
                    "this node is not a member of the cluster (not joined yet, or removed): \
                     no VM runs here until a member adds it"
                );
                said_why = Some(Instant::now());
            }
            tokio::select! {
                _ = tokio::time::sleep(CATCH_UP_RETRY) => {}
                _ = shutdown.recv() => return false,
            }
        }
    }

    fn report(&mut self, vm: &VmRecord, state: VmState, mut reason: String) {
        // What the record will hold: a longer reason would never match it
        // and be proposed again on every pass.
        crate::state::fleet::truncate_utf8(&mut reason, blixard_shared::limits::MAX_REASON_LEN);
        let me = self.local.entry(vm.name.clone()).or_default();
        let key = (state, reason.clone(), me.pid);
        let same_as_record = vm.state == state && vm.reason == reason && vm.observed.pid == me.pid;
        if me.reported.as_ref() == Some(&key) && same_as_record {
            return;
        }
        me.reported = Some(key);
        self.pending.insert(
            vm.name.clone(),
            VmReport {
                name: vm.name.clone(),
                epoch: vm.epoch,
                state,
                reason,
                observed: Observed {
                    pid: me.pid,
                    started_at_ms: me.started_at_ms,
                    restarts: me.restarts,
                    restart_nonce: me.nonce_seen,
                },
            },
        );
    }

    fn last_console_lines(&self, name: &str) -> String {
        let path = self.backend.console_path(name);
        let Ok((tail, _)) = crate::backend::supervisor::tail_bytes(&path, REASON_CONSOLE_BYTES)
        else {
            return String::new();
        };
        let text = String::from_utf8_lossy(&tail);
        let lines: Vec<String> = text
            .lines()
            .map(blixard_shared::text::printable)
            .filter(|l| !l.trim().is_empty())
            .collect();
        let start = lines.len().saturating_sub(REASON_CONSOLE_LINES);
        lines[start..].join(" | ")
    }

    /// Kills an instance that must not run here any more (see the module
    /// doc), abandoning a graceful stop in flight; whether it is gone. One
    /// that survives stays marked running and is tried again next pass.
    async fn kill_instance(&mut self, name: &str, why: &str) -> bool {
        tracing::warn!(vm = %name, reason = why, "killing vm");
        self.stops.abandon(name);
        let killed = match self.backend.kill(name).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(vm = %name, error = %e, "killing vm failed; trying again next pass");
                false
            }
        };
        // A kill may take seconds: the lease keeper must not take the wait
        // for a stuck agent.
        self.heartbeat.beat();
        if killed {
            if let Some(l) = self.local.get_mut(name) {
                l.running = false;
                l.pid = 0;
            }
        }
        killed
    }

    /// Starts a graceful stop (an operator's stop or restart) in the
    /// background; the pass that finds it ended marks the instance stopped.
    fn begin_stop(&mut self, name: &str, why: &str) {
        if !self.stops.in_flight(name) {
            tracing::info!(vm = %name, reason = why, "stopping vm");
        }
        self.stops.begin(&self.backend, name, self.stop_timeout);
    }

    /// Marks the instances whose graceful stop ended as not running (a stop
    /// that failed leaves the instance running; the next pass stops it
    /// again).
    fn reap_stops(&mut self) {
        for (name, stopped) in self.stops.finished() {
            if let Some(l) = self.local.get_mut(&name).filter(|_| stopped) {
                l.running = false;
                l.pid = 0;
            }
        }
    }

    /// Stops every instance here because the lease ran out: another node may
    /// soon be told to run them.
    async fn fence_all(&mut self) {
        let running: Vec<String> = self
            .local
            .iter()
            .filter(|(_, l)| l.running)
            .map(|(n, _)| n.clone())
            .collect();
        for name in running {
            tracing::warn!(vm = %name, "fencing lease ran out: stopping vm");
            // The mark tells a daemon restarted meanwhile that the fence,
            // not a failure, ended it (as the watchdog's does).
            if let Err(e) = std::fs::write(self.fenced_marker(&name), b"") {
                tracing::warn!(vm = %name, error = %e, "cannot mark the vm fenced");
            }
            self.stops.abandon(&name);
            if let Err(e) = self.backend.kill(&name).await {
                tracing::error!(vm = %name, error = %e, "fencing a vm failed (the watchdog kills it)");
            }
            self.heartbeat.beat();
            if let Some(l) = self.local.get_mut(&name) {
                l.running = false;
                l.pid = 0;
                l.fenced = true;
            }
        }
    }

    /// Whatever runs here must be guarded, adopted VMs included (the
    /// watchdog may have died, or this daemon may be the first of its
    /// version on the host); a watchdog that cannot run is reported at most
    /// every [`WATCHDOG_REPORT_EVERY`].
    fn ensure_guarded(&mut self) {
        if self.local.values().any(|l| l.running) {
            if let Some(w) = &self.watchdog {
                match w.ensure() {
                    Ok(()) => {
                        if self.watchdog_reported.take().is_some() {
                            tracing::info!("a fence watchdog guards the running vms again");
                        }
                    }
                    Err(e) => {
                        let due = self
                            .watchdog_reported
                            .is_none_or(|at| at.elapsed() >= WATCHDOG_REPORT_EVERY);
                        if due {
                            tracing::error!(error = %e, "no fence watchdog guards the running vms");
                            self.watchdog_reported = Some(Instant::now());
                        }
                    }
                }
            }
        }
    }

    /// A digest of what the state asks of this host (the fleet index's,
    /// O(1), so it is cheap on every applied entry), and how many names
    /// wait on a host to confirm them gone.
    fn assignment_digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let fleet = self.core.view.read();
        let (count, used, sum) = fleet.index.assignment(self.core.id);
        (count, used.vcpus, used.memory_mib, sum).hash(&mut h);
        fleet.departed.len().hash(&mut h);
        h.finish()
    }

    /// One reconcile pass.
    async fn pass(&mut self) {
        if !self.lease.borrow().valid() {
            #[cfg(feature = "planted-bugs")]
            if crate::sim::planted::is_on(crate::sim::planted::Planted::IgnoreLapse) {
                return;
            }
            // No reports either: they could not commit without the quorum.
            self.fence_all().await;
            return;
        }
        self.ensure_guarded();
        self.reap_stops();
        let me = self.core.id;
        let (mine, departed): (BTreeMap<String, VmRecord>, Vec<String>) = {
            let fleet = self.core.view.read();
            let mine = fleet
                .vms_on(me)
                .map(|vm| (vm.name.clone(), vm.clone()))
                .collect();
            let departed = fleet
                .departed
                .iter()
                .filter(|(_, node)| **node == me)
                .map(|(name, _)| name.clone())
                .collect();
            (mine, departed)
        };

        self.stop_unassigned(&mine).await;
        // Deleted VMs of this host whose instance is gone (just killed, or
        // never here): say so, so their names may be placed again.
        for name in departed {
            if !self.local.contains_key(&name) && !mine.contains_key(&name) {
                self.gone.insert(name);
            }
        }

        for vm in mine.values() {
            let entry = self.local.entry(vm.name.clone()).or_default();
            if entry.epoch != vm.epoch && !entry.running {
                *entry = Local {
                    epoch: vm.epoch,
                    nonce_seen: vm.restart_nonce,
                    ..Default::default()
                };
            }
            if vm.desired == DesiredState::Stopped {
                if self.stops.in_flight(&vm.name) {
                    self.report(vm, VmState::Stopping, "stopping on request".into());
                } else if vm.state != VmState::Stopped || vm.reason.is_empty() {
                    let reason = if vm.reason.is_empty() {
                        "stopped on request".to_string()
                    } else {
                        vm.reason.clone()
                    };
                    self.report(vm, VmState::Stopped, reason);
                }
                continue;
            }
            self.reconcile_running(vm).await;
        }
        self.flush().await;
    }

    /// Stops the instances that must not run here any more: no longer
    /// assigned (their files removed too), moved to a new epoch, or wanted
    /// stopped.
    async fn stop_unassigned(&mut self, mine: &BTreeMap<String, VmRecord>) {
        let held: Vec<String> = self.local.keys().cloned().collect();
        for name in held {
            let Some(local) = self.local.get(&name).cloned() else {
                continue;
            };
            match mine.get(&name) {
                None => {
                    let present = local.running
                        || !matches!(self.backend.state(&name).await, InstanceState::Missing);
                    if present
                        && !self
                            .kill_instance(&name, "no longer assigned to this node")
                            .await
                    {
                        // Not gone: no cleanup, no report; next pass again.
                        continue;
                    }
                    if let Err(e) = self.backend.cleanup(&name).await {
                        tracing::warn!(vm = %name, error = %e, "cleanup failed");
                    }
                    self.local.remove(&name);
                    self.gone.insert(name);
                }
                Some(vm) if vm.epoch != local.epoch && local.running => {
                    self.kill_instance(&name, "placement epoch changed (fenced)")
                        .await;
                }
                Some(vm) if vm.desired == DesiredState::Stopped && local.running => {
                    self.begin_stop(&name, "desired state is stopped");
                }
                _ => {}
            }
        }
    }

    async fn reconcile_running(&mut self, vm: &VmRecord) {
        let name = vm.name.clone();
        let Some(local) = self.local.get(&name).cloned() else {
            return;
        };
        if self.stops.in_flight(&name) {
            return;
        }
        if local.running {
            match self.backend.state(&name).await {
                InstanceState::Running { pid } => {
                    if vm.restart_nonce != local.nonce_seen {
                        // Started again by the pass that finds the stop ended.
                        self.begin_stop(&name, "restart requested");
                        if let Some(l) = self.local.get_mut(&name) {
                            l.nonce_seen = vm.restart_nonce;
                            l.blocked = None;
                            l.next_start = None;
                        }
                    } else {
                        if let Some(l) = self.local.get_mut(&name) {
                            l.pid = pid;
                            if !l.boot_observed {
                                l.boot_observed = true;
                                if let Some(started) = l.started {
                                    self.core
                                        .metrics
                                        .vm_boot_seconds
                                        .observe(started.elapsed().as_secs_f64());
                                }
                            }
                        }
                        self.report(vm, VmState::Running, String::new());
                    }
                }
                InstanceState::Exited { .. } | InstanceState::Missing
                    if self.fenced_since_start(&name, local.lapses_at_start) =>
                {
                    // The watchdog killed it while the lease had run out.
                    if let Some(l) = self.local.get_mut(&name) {
                        l.running = false;
                        l.pid = 0;
                        l.fenced = true;
                    }
                    self.start(vm, "restarting after the fencing lease was renewed")
                        .await;
                }
                InstanceState::Exited { clean, reason } => self.exited(vm, clean, reason),
                InstanceState::Missing => self.exited(vm, false, "its process is gone".into()),
            }
            return;
        }
        if local.fenced {
            self.start(vm, "restarting after the fencing lease was renewed")
                .await;
            return;
        }
        if local.blocked.is_some() && vm.restart_nonce == local.nonce_seen {
            return;
        }
        if vm.restart_nonce != local.nonce_seen {
            if let Some(l) = self.local.get_mut(&name) {
                l.nonce_seen = vm.restart_nonce;
                l.blocked = None;
                l.next_start = None;
                l.failures = 0;
            }
        }
        if local.next_start.is_some_and(|t| t > Instant::now()) {
            return;
        }
        let why = if local.restarts > 0 || local.failures > 0 {
            "restarting"
        } else {
            "starting"
        };
        self.start(vm, why).await;
    }

    fn exited(&mut self, vm: &VmRecord, clean: bool, how: String) {
        let console = self.last_console_lines(&vm.name);
        let Some(l) = self.local.get_mut(&vm.name) else {
            return;
        };
        l.running = false;
        l.pid = 0;
        let ran_long = l.started.is_some_and(|s| s.elapsed() >= HEALTHY_RUN);
        if ran_long {
            l.failures = 0;
        }
        let decision = after_exit(vm.spec.restart_policy, clean);
        let mut reason = how.clone();
        if !console.is_empty() && !clean {
            reason.push_str(&format!("; last console lines: {console}"));
        }
        tracing::info!(vm = %vm.name, clean, how = %how, ?decision, "vm instance ended");
        match decision {
            AfterExit::Restart => {
                l.failures += 1;
                l.restarts += 1;
                let wait = backoff(l.failures);
                l.next_start = Some(Instant::now() + wait);
                let msg = format!(
                    "{reason}; restarting in {}s (restart {})",
                    wait.as_secs(),
                    l.restarts
                );
                self.report(vm, VmState::Starting, msg);
            }
            AfterExit::Stopped => {
                l.blocked = Some("ended cleanly; the restart policy keeps it stopped".into());
                self.report(
                    vm,
                    VmState::Stopped,
                    format!("{reason}; not restarted (restart policy)"),
                );
            }
            AfterExit::Failed => {
                l.blocked = Some("failed; restart policy never".into());
                self.report(
                    vm,
                    VmState::Failed,
                    format!("{reason}; not restarted (restart policy never)"),
                );
            }
        }
    }

    /// Where the watchdog marks a VM it killed.
    fn fenced_marker(&self, name: &str) -> std::path::PathBuf {
        self.backend
            .console_path(name)
            .with_file_name(crate::host::fence::FENCED_MARKER)
    }

    /// Whether an instance started at lapse count `lapses_at_start` and
    /// now found ended was stopped by the fence: the lease is out, or ran
    /// out since, or the watchdog marked it.
    fn fenced_since_start(&self, name: &str, lapses_at_start: u64) -> bool {
        let lease = self.lease.borrow();
        !lease.valid() || lease.lapses > lapses_at_start || self.fenced_marker(name).exists()
    }

    /// Starts `vm` here, in a span that joins the trace of the command
    /// that created or started it (when tracing).
    async fn start(&mut self, vm: &VmRecord, why: &str) {
        use tracing::Instrument;
        let span = if blixard_shared::telemetry::enabled() && !vm.trace_parent.is_empty() {
            let span = tracing::info_span!("vm.start", vm = %vm.name, node_id = self.core.id);
            blixard_shared::telemetry::continue_from(&span, &vm.trace_parent);
            span
        } else {
            tracing::Span::none()
        };
        self.start_instance(vm, why).instrument(span).await
    }

    async fn start_instance(&mut self, vm: &VmRecord, why: &str) {
        let name = vm.name.clone();
        if !self.lease.borrow().valid() {
            return;
        }
        // The pass works from a copy taken at its start: the VM may have
        // been moved or stopped since.
        let current = self.core.view.read().vms.get(&name).is_some_and(|now| {
            now.node_id == self.core.id
                && now.epoch == vm.epoch
                && now.desired == DesiredState::Running
        });
        if !current {
            return;
        }
        // Before anything is spawned: the spec came through Raft, and this
        // host's operator decides what runs here.
        if let Err(e) = self.paths.check(&vm.spec) {
            tracing::warn!(vm = %name, field = e.field.name(), "not starting: a host path outside this host's allowed dirs");
            self.start_failed(vm, BackendError::InvalidSpec(e.to_string()));
            return;
        }
        if let Some(w) = &self.watchdog {
            if let Err(e) = w.ensure() {
                tracing::error!(vm = %name, error = %e, "no fence watchdog: not starting vms");
                self.start_failed(vm, BackendError::Failed(e.to_string()));
                return;
            }
        }
        if let Err(e) = self.backend.check(vm) {
            self.start_failed(vm, e);
            return;
        }
        tracing::info!(vm = %name, epoch = vm.epoch, reason = why, "starting vm");
        match self.backend.start(vm).await {
            Ok(inst) => {
                // Again after the start: a watchdog that was exiting (lease
                // ran out, nothing to guard) when we looked is replaced.
                if let Some(w) = &self.watchdog {
                    if let Err(e) = w.ensure() {
                        tracing::error!(vm = %name, error = %e, "no fence watchdog after start: stopping the vm");
                        if let Err(e) = self.backend.stop(&name, Duration::ZERO).await {
                            tracing::error!(vm = %name, error = %e, "stopping the unguarded vm failed");
                        }
                        self.start_failed(vm, BackendError::Failed(e.to_string()));
                        return;
                    }
                }
                self.core.metrics.vm_starts.inc();
                if let Some(l) = self.local.get_mut(&name) {
                    l.running = true;
                    l.pid = inst.pid;
                    l.started_at_ms = inst.started_at_ms;
                    l.started = Some(Instant::now());
                    l.boot_observed = false;
                    l.lapses_at_start = self.lease.borrow().lapses;
                    l.epoch = vm.epoch;
                    l.next_start = None;
                    l.blocked = None;
                    l.fenced = false;
                }
                let _ = std::fs::remove_file(self.fenced_marker(&name));
                self.report(vm, VmState::Running, String::new());
            }
            // The child refused to run because the lease ran out meanwhile
            // (see `Supervisor::fenced_by`): fenced, not a failure.
            Err(e) if !self.lease.borrow().valid() => {
                tracing::warn!(vm = %name, error = %e, "fencing lease ran out during the start");
                if let Some(l) = self.local.get_mut(&name) {
                    l.fenced = true;
                }
            }
            Err(e) => self.start_failed(vm, e),
        }
    }

    fn start_failed(&mut self, vm: &VmRecord, e: BackendError) {
        tracing::warn!(vm = %vm.name, error = %e, "vm could not start");
        let Some(l) = self.local.get_mut(&vm.name) else {
            return;
        };
        if e.is_permanent() {
            l.blocked = Some(e.to_string());
            self.report(vm, VmState::Failed, e.to_string());
        } else {
            l.failures += 1;
            let wait = backoff(l.failures);
            l.next_start = Some(Instant::now() + wait);
            self.report(
                vm,
                VmState::Failed,
                format!("{e}; retrying in {}s", wait.as_secs()),
            );
        }
    }

    async fn flush(&mut self) {
        // A name that runs here again is not gone (a stale entry must not
        // free a later incarnation's name).
        let local = &self.local;
        self.gone.retain(|name| !local.contains_key(name));
        if self.pending.is_empty() && self.gone.is_empty() {
            return;
        }
        let reports: Vec<VmReport> = self.pending.values().cloned().collect();
        let count = reports.len();
        let gone: Vec<String> = self
            .gone
            .iter()
            .take(blixard_shared::limits::MAX_GONE_PER_REPORT)
            .cloned()
            .collect();
        let report = self.core.propose(Action::ReportVmStatus {
            node_id: self.core.id,
            reports,
            gone: gone.clone(),
        });
        // Bounded: without a quorum a proposal can wait a long time, and an
        // agent waiting here neither passes nor beats its heartbeat.
        let outcome = tokio::time::timeout(REPORT_TIMEOUT, report)
            .await
            .unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(
                    "report not committed in time",
                ))
            });
        match outcome {
            Ok(_) => {
                tracing::debug!(count, "reported vm status");
                self.pending.clear();
                for name in &gone {
                    self.gone.remove(name);
                }
            }
            Err(e) => {
                // Keep them; the next pass sends the newest of each.
                tracing::warn!(count, error = %e.message(), "could not report vm status; will retry");
                for r in self.pending.values() {
                    if let Some(l) = self.local.get_mut(&r.name) {
                        l.reported = None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy_decisions() {
        assert_eq!(after_exit(RestartPolicy::Always, true), AfterExit::Restart);
        assert_eq!(after_exit(RestartPolicy::Always, false), AfterExit::Restart);
        assert_eq!(
            after_exit(RestartPolicy::OnFailure, false),
            AfterExit::Restart
        );
        assert_eq!(
            after_exit(RestartPolicy::OnFailure, true),
            AfterExit::Stopped
        );
        assert_eq!(after_exit(RestartPolicy::Never, true), AfterExit::Stopped);
        assert_eq!(after_exit(RestartPolicy::Never, false), AfterExit::Failed);
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(100), MAX_BACKOFF);
    }
}
