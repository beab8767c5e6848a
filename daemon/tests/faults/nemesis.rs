//! The nemesis: from its seed, a schedule of faults with quiet gaps between
//! them, each healed before the next begins. Which node "the leader" is gets
//! decided at run time; everything else comes from the seed.

use super::history::History;
use super::lab::Lab;
use super::rng::Rng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The kinds of fault.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// `kill -9`, down for a while, restart on the same data dir.
    Crash,
    /// `kill -9` of the leader and an immediate restart: fast enough that
    /// it may come back as the leader of its old term.
    BounceLeader,
    /// SIGSTOP the leader, later SIGCONT (a paused, then stale, leader).
    PauseLeader,
    /// SIGSTOP any node.
    Pause,
    /// Cut the leader off from everyone else.
    IsolateLeader,
    /// Split into a minority and a majority.
    Split,
    /// Two halves that cannot talk, and one node that talks to both.
    Bridge,
    /// One node's data dir fills up to the last byte (its daemon may stop
    /// for good: it is started again when the disk is freed).
    DiskFull,
    /// Every fsync of one node takes 50-800 ms longer.
    SlowDisk,
    /// One node's wall clock jumps (up to an hour either way).
    ClockStep,
    /// Every VM is asked to stop (runners take 1-2 s to stop), then the
    /// node running the most VMs is killed with its stops in flight.
    CrashDuringStops,
}

const FAULTS: [Fault; 11] = [
    Fault::Crash,
    Fault::BounceLeader,
    Fault::PauseLeader,
    Fault::Pause,
    Fault::IsolateLeader,
    Fault::Split,
    Fault::Bridge,
    Fault::DiskFull,
    Fault::SlowDisk,
    Fault::ClockStep,
    Fault::CrashDuringStops,
];

fn hold(ms: u64, stop: &AtomicBool) {
    // The schedule's own clock: the pause *is* the fault's duration, not a
    // wait for some condition. Cut short when the run ends.
    let end = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < end && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The node whose data dir holds the most live VM processes.
fn busiest_node(root: &std::path::Path, n: usize) -> Option<usize> {
    let mut counts = vec![0usize; n];
    for r in super::placement::runners(root) {
        if let Some(c) = usize::try_from(r.node)
            .ok()
            .and_then(|id| counts.get_mut(id - 1))
        {
            *c += 1;
        }
    }
    let (i, most) = counts.iter().enumerate().max_by_key(|(_, c)| **c)?;
    (*most > 0).then_some(i)
}

/// Runs faults until `until`; leaves the lab healed, every node running.
pub fn run(
    mut rng: Rng,
    lab: Arc<Mutex<Lab>>,
    leader: impl Fn() -> Option<usize>,
    stop_every_vm: impl Fn(),
    history: Arc<History>,
    until: Instant,
    stop: Arc<AtomicBool>,
) -> Result<usize, String> {
    let n = lab.lock().map_err(|e| e.to_string())?.nodes.len();
    let mut faults = 0;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        hold(rng.between(1000, 3000), &stop);
        revive(&lab, &history)?;
        if Instant::now() >= until {
            break;
        }
        let fault = *rng.pick(&FAULTS);
        // Up to 8 s: past the fencing lease (2 s) and past the point where
        // the leader re-places a lost node's VMs (6 s).
        let duration = rng.between(1000, 8000);
        let random_node = rng.below(n as u64) as usize;
        let shuffle: Vec<usize> = {
            let mut v: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                v.swap(i, rng.below(i as u64 + 1) as usize);
            }
            v
        };
        let slow_ms = rng.between(50, 800);
        let step = format!(
            "{}{}",
            if rng.below(2) == 0 { "+" } else { "-" },
            rng.between(60, 3600)
        );
        let target = match fault {
            Fault::PauseLeader | Fault::IsolateLeader | Fault::BounceLeader => {
                leader().unwrap_or(random_node)
            }
            Fault::CrashDuringStops => {
                let root = lab.lock().map_err(|e| e.to_string())?.root.clone();
                busiest_node(&root, n).unwrap_or(random_node)
            }
            _ => random_node,
        };
        if matches!(fault, Fault::CrashDuringStops) {
            history.nemesis("stop every vm".into());
            stop_every_vm();
        }
        faults += 1;
        {
            let mut lab = lab.lock().map_err(|e| e.to_string())?;
            match fault {
                Fault::Crash => {
                    history.nemesis(format!("kill -9 node {} for {duration} ms", target + 1));
                    lab.kill9(target);
                }
                Fault::BounceLeader => {
                    history.nemesis(format!("kill -9 and restart node {} at once", target + 1));
                    lab.kill9(target);
                    lab.start(target)?;
                }
                Fault::Pause | Fault::PauseLeader => {
                    history.nemesis(format!(
                        "SIGSTOP node {} ({fault:?}) for {duration} ms",
                        target + 1
                    ));
                    lab.pause(target);
                }
                Fault::IsolateLeader => {
                    history.nemesis(format!("isolate node {} for {duration} ms", target + 1));
                    lab.isolate(&[target])?;
                }
                Fault::Split => {
                    let minority = &shuffle[..n / 2];
                    history.nemesis(format!(
                        "split: minority {:?} for {duration} ms",
                        minority.iter().map(|i| i + 1).collect::<Vec<_>>()
                    ));
                    lab.isolate(minority)?;
                }
                Fault::Bridge => {
                    // shuffle[0] bridges; the rest split in two halves.
                    let rest = &shuffle[1..];
                    let (a, b) = rest.split_at(rest.len() / 2);
                    history.nemesis(format!(
                        "bridge: node {} between {:?} and {:?} for {duration} ms",
                        shuffle[0] + 1,
                        a.iter().map(|i| i + 1).collect::<Vec<_>>(),
                        b.iter().map(|i| i + 1).collect::<Vec<_>>()
                    ));
                    for &x in a {
                        for &y in b {
                            lab.cut(x, y)?;
                        }
                    }
                }
                Fault::DiskFull => {
                    history.nemesis(format!("fill node {}'s disk for {duration} ms", target + 1));
                    lab.fill_disk(target)?;
                }
                Fault::SlowDisk => match &lab.fsync_shim {
                    Ok(_) => {
                        history.nemesis(format!(
                            "slow node {}'s fsyncs by {slow_ms} ms for {duration} ms",
                            target + 1
                        ));
                        lab.slow_disk(target, slow_ms)?;
                    }
                    Err(why) => history.nemesis(format!("no slow disk: {why}")),
                },
                Fault::ClockStep => match &lab.faketime {
                    Ok(_) => {
                        history.nemesis(format!(
                            "step node {}'s wall clock by {step} s for {duration} ms",
                            target + 1
                        ));
                        lab.step_clock(target, &step)?;
                    }
                    Err(why) => history.nemesis(format!("no clock step: {why}")),
                },
                Fault::CrashDuringStops => {
                    history.nemesis(format!(
                        "kill -9 node {} with its stops in flight, for {duration} ms",
                        target + 1
                    ));
                    lab.kill9(target);
                }
            }
        }
        if matches!(fault, Fault::BounceLeader) {
            continue;
        }
        hold(duration, &stop);
        let mut lab = lab.lock().map_err(|e| e.to_string())?;
        match fault {
            Fault::Crash | Fault::CrashDuringStops => {
                history.nemesis(format!("restart node {}", target + 1));
                lab.start(target)?;
            }
            Fault::DiskFull => {
                let restarted = lab.free_disk(target)?;
                history.nemesis(format!(
                    "free node {}'s disk{}",
                    target + 1,
                    if restarted {
                        "; its daemon had stopped: restarted"
                    } else {
                        ""
                    }
                ));
            }
            Fault::SlowDisk => {
                history.nemesis(format!("node {}'s disk fast again", target + 1));
                lab.slow_disk(target, 0)?;
            }
            Fault::ClockStep => {
                history.nemesis(format!("node {}'s wall clock back", target + 1));
                lab.step_clock(target, "+0")?;
            }
            Fault::Pause | Fault::PauseLeader => {
                history.nemesis(format!("SIGCONT node {}", target + 1));
                lab.resume(target);
            }
            _ => {
                history.nemesis("heal".into());
                lab.heal()?;
            }
        }
    }
    revive(&lab, &history)?;
    Ok(faults)
}

/// Starts again the daemons that stopped for good after a full disk.
fn revive(lab: &Mutex<Lab>, history: &History) -> Result<(), String> {
    let revived = lab
        .lock()
        .map_err(|e| e.to_string())?
        .revive_after_disk_faults()?;
    for i in revived {
        history.nemesis(format!(
            "node {}'s daemon had stopped after its disk filled: restarted",
            i + 1
        ));
    }
    Ok(())
}
