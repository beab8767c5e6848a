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
}

const FAULTS: [Fault; 7] = [
    Fault::Crash,
    Fault::BounceLeader,
    Fault::PauseLeader,
    Fault::Pause,
    Fault::IsolateLeader,
    Fault::Split,
    Fault::Bridge,
];

fn hold(ms: u64, stop: &AtomicBool) {
    // The schedule's own clock: the pause *is* the fault's duration, not a
    // wait for some condition. Cut short when the run ends.
    let end = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < end && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs faults until `until`; leaves the lab healed, every node running.
pub fn run(
    mut rng: Rng,
    lab: Arc<Mutex<Lab>>,
    leader: impl Fn() -> Option<usize>,
    history: Arc<History>,
    until: Instant,
    stop: Arc<AtomicBool>,
) -> Result<usize, String> {
    let n = lab.lock().map_err(|e| e.to_string())?.nodes.len();
    let mut faults = 0;
    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
        hold(rng.between(1000, 3000), &stop);
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
        let target = match fault {
            Fault::PauseLeader | Fault::IsolateLeader | Fault::BounceLeader => {
                leader().unwrap_or(random_node)
            }
            _ => random_node,
        };
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
            }
        }
        if matches!(fault, Fault::BounceLeader) {
            continue;
        }
        hold(duration, &stop);
        let mut lab = lab.lock().map_err(|e| e.to_string())?;
        match fault {
            Fault::Crash => {
                history.nemesis(format!("restart node {}", target + 1));
                lab.start(target)?;
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
    Ok(faults)
}
