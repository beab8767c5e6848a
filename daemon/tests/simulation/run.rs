//! One seeded run: the world, the clients and watchers of the fault test's
//! workload, the nemesis, then the fault test's checkers on the recorded
//! history plus the placement check on the test backends' journal. Every
//! source of nondeterminism is pinned to the seed first: tokio's own
//! random choices (`select!`), openraft's, the daemon's jitter and client
//! names, the wall clock, and blocking work, which runs inline.

use crate::checker;
use crate::history::{Call, History};
use crate::nemesis;
use crate::rng::Rng;
use crate::workload;
use crate::world::{World, RUNNER};
use blixard_daemon::sim::host::{RunChange, RunRecord};
use blixard_daemon::sim::planted::{plant_on_this_thread, Planted};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The shape of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub nodes: usize,
    pub clients: usize,
    pub keys: usize,
    /// Simulated time the faults run for.
    pub fault_time: Duration,
    /// Percent of the clients' writes sent twice at once with one
    /// request id (a duplicated request).
    pub dup_percent: u64,
    /// A bug planted on purpose (needs the `planted-bugs` feature).
    pub planted: Option<Planted>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            nodes: 3,
            clients: 3,
            keys: 4,
            fault_time: Duration::from_secs(12),
            dup_percent: 10,
            planted: None,
        }
    }
}

/// What a run recorded (the history, rendered the same way every time)
/// and what the checkers found wrong with it.
pub struct Report {
    pub history: String,
    pub failures: Vec<String>,
    /// Simulated time the whole run took.
    pub simulated: Duration,
}

/// Wall-clock base of every simulation (2027-01-01): timestamps in the
/// replicated state are the same in every replay.
const WALL_BASE_MS: u64 = 1_798_761_600_000;

/// Runs seed `seed` on a fresh single-threaded runtime on paused time.
pub fn run_seed(seed: u64, settings: &Settings) -> Report {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()))
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            return Report {
                history: String::new(),
                failures: vec![format!("no runtime: {e}")],
                simulated: Duration::ZERO,
            }
        }
    };
    let report = runtime.block_on(async {
        let rng = Rng::new(seed);
        blixard_daemon::sim::blocking::run_inline_on_this_thread();
        plant_on_this_thread(settings.planted);
        blixard_daemon::raft::runtime::seed_this_thread(rng.fork(1).next_u64());
        blixard_shared::sim_hooks::simulate_this_thread(rng.fork(2).next_u64(), WALL_BASE_MS);
        let started = Instant::now();
        let mut report = simulate(rng, settings).await;
        report.simulated = started.elapsed();
        report
    });
    blixard_shared::sim_hooks::stop_simulating_this_thread();
    plant_on_this_thread(None);
    // Tasks still parked (a node's stragglers) go with the runtime.
    runtime.shutdown_background();
    report
}

async fn simulate(rng: Rng, settings: &Settings) -> Report {
    let mut history_text = String::new();
    let mut failures = Vec::new();
    match simulate_inner(rng, settings, &mut history_text).await {
        Ok(found) => failures.extend(found),
        Err(e) => failures.push(e),
    }
    Report {
        history: history_text,
        failures,
        simulated: Duration::ZERO,
    }
}

async fn simulate_inner(
    seed: Rng,
    settings: &Settings,
    text: &mut String,
) -> Result<Vec<String>, String> {
    let mut world_rng = seed.fork(3);
    let mut world = World::start(settings.nodes, &mut world_rng).await?;
    let chans = world.channels();
    workload::converged(&chans, settings.nodes, Duration::from_secs(60)).await?;

    let history = Arc::new(History::new());
    let start = Instant::now();
    let keys: Arc<Vec<String>> = Arc::new((0..settings.keys).map(|k| format!("reg-{k}")).collect());
    let stop_clients = Arc::new(AtomicBool::new(false));
    let stop_watchers = Arc::new(AtomicBool::new(false));
    let watch_until = Arc::new(AtomicU64::new(u64::MAX));
    let watchers: Vec<_> = (0..settings.nodes)
        .map(|i| {
            tokio::spawn(workload::watcher(
                i,
                chans[i].clone(),
                stop_watchers.clone(),
                watch_until.clone(),
            ))
        })
        .collect();
    let clients: Vec<_> = (0..settings.clients)
        .map(|c| {
            tokio::spawn(workload::client(
                c,
                seed.fork(100 + c as u64),
                keys.clone(),
                chans.clone(),
                RUNNER.to_string(),
                history.clone(),
                stop_clients.clone(),
                settings.dup_percent,
            ))
        })
        .collect();
    let until = Instant::now() + settings.fault_time;
    let faults = nemesis::run(seed.fork(4), &mut world, &chans, start, until).await;
    stop_clients.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.await;
    }
    let faults = faults?;
    workload::converged(&chans, settings.nodes, Duration::from_secs(60)).await?;

    workload::read_every_key(&chans, &keys, RUNNER, &history).await;
    // A marker write every watcher and every node's log must reach.
    let (outcome, marker) = workload::invoke(
        chans[0].clone(),
        "zz-final-marker",
        Call::Create { running: false },
        RUNNER,
    )
    .await;
    let marker = marker.ok_or_else(|| format!("final marker write failed: {outcome:?}"))?;
    watch_until.store(marker, Ordering::SeqCst);
    stop_watchers.store(true, Ordering::SeqCst);
    let mut watcher_logs = Vec::new();
    for w in watchers {
        match tokio::time::timeout(Duration::from_secs(60), w).await {
            Ok(Ok(log)) => watcher_logs.push(log),
            _ => return Err("a watcher did not reach the final marker in 60 s".into()),
        }
    }
    let mut logs = Vec::new();
    for ch in &chans {
        logs.push(workload::event_log(ch.clone(), marker, Duration::from_secs(30)).await?);
    }
    let journal = world.journal.records();
    let journal_end = Instant::now();
    world.shutdown().await;

    // The history, rendered.
    let ops = history.ops();
    for (at, what) in &faults {
        let _ = writeln!(text, "nemesis {at} {what}");
    }
    for op in &ops {
        let _ = writeln!(
            text,
            "op c{} n{} {} {:?} {:?} {}..{:?} rev {:?}",
            op.client,
            op.node,
            op.key,
            op.call,
            op.outcome,
            op.invoked_us,
            op.returned_us,
            op.revision
        );
    }
    for w in &watcher_logs {
        let revisions: Vec<u64> = w.events.iter().map(|e| e.revision).collect();
        let _ = writeln!(
            text,
            "watcher n{} {revisions:?} gaps {:?}",
            w.node, w.declared_gaps
        );
    }
    for r in &journal {
        let at = r.at.duration_since(start).as_micros();
        let _ = match r.change {
            RunChange::Started => writeln!(
                text,
                "host n{} {} start epoch {} at {at}",
                r.node, r.vm, r.epoch
            ),
            RunChange::Ended => writeln!(
                text,
                "host n{} {} end epoch {} at {at}",
                r.node, r.vm, r.epoch
            ),
            RunChange::LeaseUntil(until) => writeln!(
                text,
                "host n{} lease until {} at {at}",
                r.node,
                until.duration_since(start).as_micros()
            ),
        };
    }

    // The checks.
    let mut found = history.anomalies();
    if let Err(e) = checker::logs_agree(&logs) {
        found.push(format!("event logs: {e}"));
    }
    let final_log: BTreeMap<_, _> = logs.first().cloned().unwrap_or_default();
    let pruned_through = final_log.keys().next().map_or(0, |r| r.saturating_sub(1));
    if let Err(e) = checker::acknowledged_writes_kept(&ops, &final_log, pruned_through) {
        found.push(format!("lost write: {e}"));
    }
    if let Err(e) = checker::watchers_gapless(&watcher_logs, &final_log) {
        found.push(format!("watch: {e}"));
    }
    if let Err(e) = one_host_at_a_time(&journal, start) {
        found.push(format!("VM on two hosts: {e}"));
    }
    if let Err(e) = within_leases(&journal, start, journal_end) {
        found.push(format!("fencing: {e}"));
    }
    if let Err(v) = checker::linearizable(&ops) {
        found.push(format!("not linearizable on {}: {}", v.key, v.detail));
    }
    Ok(found)
}

/// No VM ran on two hosts at once: from the test backends' journal of
/// starts and ends, with simulated times.
pub fn one_host_at_a_time(journal: &[RunRecord], start: Instant) -> Result<(), String> {
    // VM -> host -> since when it runs there.
    let mut running: BTreeMap<&str, BTreeMap<u64, Instant>> = BTreeMap::new();
    for r in journal {
        let hosts = running.entry(r.vm.as_str()).or_default();
        match r.change {
            RunChange::Started => {
                if let Some((other, since)) = hosts.iter().find(|(h, _)| **h != r.node) {
                    return Err(format!(
                        "{} started on node {} at {:?} (epoch {}) while running on node {} since {:?}",
                        r.vm,
                        r.node,
                        r.at.duration_since(start),
                        r.epoch,
                        other,
                        since.duration_since(start)
                    ));
                }
                hosts.insert(r.node, r.at);
            }
            RunChange::Ended => {
                hosts.remove(&r.node);
            }
            RunChange::LeaseUntil(_) => {}
        }
    }
    Ok(())
}

/// How late after its host's lease ran out an instance may still end: the
/// fence watchdog (simulated: `sim::watchdog`) looks every 100 ms.
const LAPSE_SLACK: Duration = Duration::from_millis(200);

/// Fencing's own rule: an instance runs only while its host holds a lease.
/// From the journal: each host's deadlines as its lease keeper published
/// them (converted to tokio's clock) and its instances' starts and ends.
/// `end` closes the intervals of what still runs.
pub fn within_leases(journal: &[RunRecord], start: Instant, end: Instant) -> Result<(), String> {
    let at = |t: Instant| t.duration_since(start);
    // Per host: its lease deadline now, and its running instances.
    let mut lease: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut running: BTreeMap<(u64, &str), Instant> = BTreeMap::new();
    // An instance still running past its host's deadline, found when the
    // next record of that host (or the end of the run) comes.
    let overdue = |node: u64,
                   now: Instant,
                   lease: &BTreeMap<u64, Instant>,
                   running: &BTreeMap<(u64, &str), Instant>|
     -> Result<(), String> {
        let Some(&until) = lease.get(&node) else {
            return Ok(());
        };
        if now <= until + LAPSE_SLACK {
            return Ok(());
        }
        match running.iter().find(|((n, _), _)| *n == node) {
            Some(((_, vm), since)) => Err(format!(
                "{vm} ran on node {node} (since {:?}) past its lease, which ran out at {:?}; still running at {:?}",
                at(*since),
                at(until),
                at(now)
            )),
            None => Ok(()),
        }
    };
    for r in journal {
        match r.change {
            RunChange::Started => {
                overdue(r.node, r.at, &lease, &running)?;
                if lease.get(&r.node).is_none_or(|until| *until < r.at) {
                    return Err(format!(
                        "{} started on node {} at {:?} without a lease",
                        r.vm,
                        r.node,
                        at(r.at)
                    ));
                }
                running.insert((r.node, r.vm.as_str()), r.at);
            }
            RunChange::Ended => {
                overdue(r.node, r.at, &lease, &running)?;
                running.remove(&(r.node, r.vm.as_str()));
            }
            RunChange::LeaseUntil(until) => {
                overdue(r.node, r.at, &lease, &running)?;
                lease.insert(r.node, until);
            }
        }
    }
    let nodes: Vec<u64> = lease.keys().copied().collect();
    for node in nodes {
        overdue(node, end, &lease, &running)?;
    }
    Ok(())
}
