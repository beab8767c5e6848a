//! The faults of a simulated run, every choice from the seed: partitions
//! of every shape (a minority cut from the majority, the leader isolated,
//! a bridge node that alone sees both halves, a link cut one way), slow
//! and lossy links, a host frozen off the network and back, power cuts
//! that lose unsynced writes with restarts on the same disk, and forward
//! steps of a host's clock.

use crate::rng::Rng;
use crate::workload;
use crate::world::{address, World};
use blixard_shared::ApiChannel;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// What the nemesis did, in order, with simulated times (ms since start).
pub type NemesisLog = Vec<(u64, String)>;

fn addrs(ids: &[usize]) -> Vec<SocketAddr> {
    ids.iter().map(|&i| address(i)).collect()
}

/// Runs faults until `until`, then heals everything and powers every host
/// on. Returns what it did.
pub async fn run(
    mut rng: Rng,
    world: &mut World,
    chans: &[ApiChannel],
    start: Instant,
    until: Instant,
) -> Result<NemesisLog, String> {
    let mut log = NemesisLog::new();
    let n = world.len();
    let mut note = |what: String| log.push((start.elapsed().as_millis() as u64, what));
    // A host that is down, and when it comes back.
    let mut down: Option<(usize, Instant, bool)> = None;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.between(300, 2_500))).await;
        if let Some((i, back_at, crashed)) = down {
            if Instant::now() >= back_at {
                if crashed {
                    world.power_on(i).await?;
                    note(format!("power on {}", i + 1));
                } else {
                    world.net.set_down(address(i), false);
                    note(format!("thaw {}", i + 1));
                }
                down = None;
                continue;
            }
        }
        let all: Vec<usize> = (0..n).collect();
        match rng.below(12) {
            0 | 1 => {
                world.net.heal();
                note("heal".into());
            }
            2 => {
                // A minority (at most half, rounded down) against the rest.
                let size = 1 + rng.below((n / 2) as u64) as usize;
                let mut ids = all.clone();
                let mut side = Vec::new();
                for _ in 0..size {
                    side.push(ids.remove(rng.below(ids.len() as u64) as usize));
                }
                world.net.partition(&addrs(&side), &addrs(&ids));
                note(format!("partition {side:?} | {ids:?}"));
            }
            3 => {
                if let Some(leader) = workload::leader(chans).await {
                    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
                    world.net.partition(&addrs(&[leader]), &addrs(&rest));
                    note(format!("isolate leader {}", leader + 1));
                }
            }
            4 => {
                // A bridge: two halves that cannot see each other, and one
                // node that sees both.
                let mut ids = all.clone();
                let bridge = ids.remove(rng.below(ids.len() as u64) as usize);
                let half = ids.len() / 2;
                let (a, b) = ids.split_at(half.max(1));
                world.net.partition(&addrs(a), &addrs(b));
                note(format!("bridge {} between {a:?} and {b:?}", bridge + 1));
            }
            5 => {
                let from = rng.below(n as u64) as usize;
                let to = (from + 1 + rng.below(n as u64 - 1) as usize) % n;
                world.net.cut_one_way(address(from), address(to));
                note(format!("cut {} -> {}", from + 1, to + 1));
            }
            6 | 7 if down.is_none() => {
                let i = rng.below(n as u64) as usize;
                // Each unsynced write survives the cut with even odds.
                let mut keep_rng = rng.fork(i as u64 + 7);
                world.power_cut(i, |_| keep_rng.below(2) == 0).await?;
                let back = Instant::now() + Duration::from_millis(rng.between(500, 6_000));
                down = Some((i, back, true));
                note(format!("power cut {}", i + 1));
            }
            8 if down.is_none() => {
                // Frozen: the node runs on but nothing reaches it or leaves
                // it, as a SIGSTOPped process seen from outside.
                let i = rng.below(n as u64) as usize;
                world.net.set_down(address(i), true);
                let back = Instant::now() + Duration::from_millis(rng.between(500, 8_000));
                down = Some((i, back, false));
                note(format!("freeze {}", i + 1));
            }
            10 => {
                let from = rng.below(n as u64) as usize;
                let to = (from + 1 + rng.below(n as u64 - 1) as usize) % n;
                let ms = rng.between(5, 300);
                world
                    .net
                    .slow_one_way(address(from), address(to), Duration::from_millis(ms));
                note(format!("slow {} -> {} +{ms}ms", from + 1, to + 1));
            }
            11 => {
                let a = rng.below(n as u64) as usize;
                let b = (a + 1 + rng.below(n as u64 - 1) as usize) % n;
                let percent = rng.between(1, 20);
                world.net.lossy_one_way(address(a), address(b), percent);
                world.net.lossy_one_way(address(b), address(a), percent);
                note(format!("lossy {} <-> {} {percent}%", a + 1, b + 1));
            }
            _ => {
                // A forward step of a host's monotonic clock (a suspend):
                // its lease runs out early, never late.
                let i = rng.below(n as u64) as usize;
                let ms = rng.between(200, 5_000);
                world.hosts[i].clock.step(ms as i64);
                note(format!("clock {} +{ms}ms", i + 1));
            }
        }
    }
    world.net.heal();
    for i in 0..n {
        world.net.set_down(address(i), false);
        world.power_on(i).await?;
    }
    note("heal all, power on all".into());
    Ok(log)
}
