//! Checkers over a recorded history.
//!
//! * [`linearizable`]: each VM is a register (absent, or its desired state);
//!   a WGL-style search (Wing & Gong, with Lowe's memoisation of visited
//!   configurations) looks for an order of the operations that respects real
//!   time and the register's rules. Operations on different VMs are checked
//!   apart (linearizability is compositional). An operation whose outcome
//!   is unknown may take effect at any point after its invocation, or never.
//! * [`acknowledged_writes_kept`]: every acknowledged create's revision
//!   holds its event in the final, agreed event log.
//! * [`watchers_gapless`]: each watcher saw strictly increasing revisions,
//!   and between two consecutive events it saw, the final log holds none it
//!   missed (unless the server said so).
//! * [`logs_agree`]: every node ends with the same event log.

use super::history::{Call, Op, Outcome, SeenEvent, WatcherLog};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// A register's value: `None` absent, `Some(true)` desired running.
type Value = Option<bool>;

/// Most configurations one key's search may visit before giving up (and
/// failing the run as inconclusive: better a loud "could not check" than a
/// silent pass).
const SEARCH_BUDGET: usize = 2_000_000;

/// The register's rules: the value after `call` ended with `outcome` in
/// state `v`, or `None` when that outcome is impossible in `v`.
fn step(v: Value, call: Call, outcome: &Outcome) -> Option<Value> {
    let unknown = matches!(outcome, Outcome::Unknown(_));
    match call {
        Call::Create { running } => match (v, outcome) {
            (None, Outcome::Ok) => Some(Some(running)),
            (Some(_), Outcome::Exists) => Some(v),
            (None, _) if unknown => Some(Some(running)),
            (Some(_), _) if unknown => Some(v),
            _ => None,
        },
        Call::Start | Call::Stop => {
            let to = call == Call::Start;
            match (v, outcome) {
                (Some(_), Outcome::Ok) => Some(Some(to)),
                (None, Outcome::NotFound) => Some(None),
                (Some(_), _) if unknown => Some(Some(to)),
                (None, _) if unknown => Some(None),
                _ => None,
            }
        }
        Call::Delete => match (v, outcome) {
            (Some(_), Outcome::Ok) => Some(None),
            (None, Outcome::NotFound) => Some(None),
            (_, _) if unknown => Some(None),
            _ => None,
        },
        Call::Read => match outcome {
            Outcome::Value(seen) if *seen == v => Some(v),
            _ => None,
        },
    }
}

/// Why a history is not linearizable (or could not be checked).
#[derive(Debug)]
pub struct Violation {
    pub key: String,
    pub detail: String,
}

/// Checks every key's operations; `Ok` carries the most configurations
/// one key's search visited.
pub fn linearizable(ops: &[Op]) -> Result<usize, Violation> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        // A read that got no answer tells nothing.
        if op.call == Call::Read && op.returned_us.is_none() {
            continue;
        }
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut most = 0;
    for (key, ops) in by_key {
        most = most.max(check_key(key, ops)?);
    }
    Ok(most)
}

fn check_key(key: &str, mut ops: Vec<&Op>) -> Result<usize, Violation> {
    ops.sort_by_key(|o| o.invoked_us);
    let n = ops.len();
    let words = n.div_ceil(64);
    let mut search = Search {
        ops: &ops,
        memo: HashSet::new(),
        done: vec![0u64; words],
        pending: (0..n).collect(),
        outstanding: (0..n)
            .filter_map(|i| ops[i].returned_us.map(|r| (r, i)))
            .collect(),
        best_prefix: Vec::new(),
        path: Vec::new(),
    };
    match search.run(None) {
        Some(true) => Ok(search.memo.len()),
        Some(false) => {
            let stuck: Vec<String> = search
                .best_prefix
                .iter()
                .map(|&i| describe(ops[i]))
                .collect();
            let next: Vec<String> = (0..n)
                .filter(|&i| !search.best_prefix.contains(&i))
                .take(6)
                .map(|i| describe(ops[i]))
                .collect();
            Err(Violation {
                key: key.to_string(),
                detail: format!(
                    "no linearization of {n} operations; the longest valid prefix ({} ops) ends with:\n  {}\nand none of these can follow:\n  {}",
                    stuck.len(),
                    stuck[stuck.len().saturating_sub(6)..].join("\n  "),
                    next.join("\n  ")
                ),
            })
        }
        None => Err(Violation {
            key: key.to_string(),
            detail: format!(
                "inconclusive: the search visited {SEARCH_BUDGET} configurations of {n} operations"
            ),
        }),
    }
}

fn describe(op: &Op) -> String {
    format!(
        "client {} -> node {}: {:?} = {:?} [{:.3}s .. {}]",
        op.client,
        op.node,
        op.call,
        op.outcome,
        op.invoked_us as f64 / 1e6,
        op.returned_us
            .map_or("?".to_string(), |r| format!("{:.3}s", r as f64 / 1e6))
    )
}

struct Search<'a> {
    ops: &'a [&'a Op],
    memo: HashSet<(Vec<u64>, Value)>,
    done: Vec<u64>,
    /// Operations not yet linearized, by index (= invocation order).
    pending: BTreeSet<usize>,
    /// Acknowledged operations not yet linearized, by return time.
    outstanding: BTreeSet<(u64, usize)>,
    best_prefix: Vec<usize>,
    path: Vec<usize>,
}

impl Search<'_> {
    fn take(&mut self, i: usize) {
        self.done[i / 64] ^= 1 << (i % 64);
        self.pending.remove(&i);
        if let Some(r) = self.ops[i].returned_us {
            self.outstanding.remove(&(r, i));
        }
        self.path.push(i);
    }

    fn undo(&mut self) {
        if let Some(i) = self.path.pop() {
            self.done[i / 64] ^= 1 << (i % 64);
            self.pending.insert(i);
            if let Some(r) = self.ops[i].returned_us {
                self.outstanding.insert((r, i));
            }
        }
    }

    /// The next operation that can be linearized from `value`, trying
    /// candidates from index `from` on: invoked no later than every
    /// outstanding acknowledged operation returned, and allowed by the
    /// register.
    fn candidate(&self, value: Value, from: usize) -> Option<(usize, Value)> {
        let horizon = self.outstanding.first().map_or(u64::MAX, |&(r, _)| r);
        for &i in self.pending.range(from..) {
            let op = self.ops[i];
            // Invoked when (or before) the earliest outstanding operation
            // returned: concurrent with it, so it may come first. Equal
            // times are common on the simulator's clock.
            if op.invoked_us > horizon {
                break;
            }
            if let Some(after) = step(value, op.call, &op.outcome) {
                // An unknown outcome that changes nothing here is better
                // left pending: that keeps every option open.
                if !(op.returned_us.is_none() && after == value) {
                    return Some((i, after));
                }
            }
        }
        None
    }

    /// `Some(true)`: linearizable; `Some(false)`: not; `None`: out of
    /// budget. Depth-first with an explicit stack (long histories would
    /// overflow a thread's stack), each frame holding the value before its
    /// step and the next candidate index to try.
    fn run(&mut self, start: Value) -> Option<bool> {
        let mut stack: Vec<(Value, usize)> = vec![(start, 0)];
        while let Some(&(value, from)) = stack.last() {
            if self.outstanding.is_empty() {
                return Some(true);
            }
            match self.candidate(value, from) {
                Some((i, after)) => {
                    if let Some(top) = stack.last_mut() {
                        top.1 = i + 1;
                    }
                    self.take(i);
                    if self.memo.insert((self.done.clone(), after)) {
                        if self.memo.len() > SEARCH_BUDGET {
                            return None;
                        }
                        if self.path.len() > self.best_prefix.len() {
                            self.best_prefix = self.path.clone();
                        }
                        stack.push((after, 0));
                    } else {
                        self.undo();
                    }
                }
                None => {
                    stack.pop();
                    if !stack.is_empty() {
                        self.undo();
                    }
                }
            }
        }
        Some(false)
    }
}

/// Every acknowledged create's revision holds that create's `vm.created`
/// event in the final, agreed event log (unless the ring has since dropped
/// it). Starts and stops are not checked here: one that changed nothing
/// returns the revision of the record's last change, and a status report
/// can change a record (its reason, what was observed) without an event
/// about it; a lost start or stop fails the linearizability check through
/// the final reads instead.
pub fn acknowledged_writes_kept(
    ops: &[Op],
    final_log: &BTreeMap<u64, SeenEvent>,
    pruned_through: u64,
) -> Result<usize, String> {
    let mut checked = 0;
    for op in ops {
        let (Outcome::Ok, Some(rev), Call::Create { .. }) = (&op.outcome, op.revision, op.call)
        else {
            continue;
        };
        if rev <= pruned_through {
            continue;
        }
        let subject = format!("vm/{}", op.key);
        match final_log.get(&rev) {
            Some(e) if e.subject == subject && e.kind == "vm.created" => checked += 1,
            other => {
                return Err(format!(
                    "acknowledged create of {} at revision {rev} (client {}, {:.3}s) is not in the final log: found {other:?}",
                    op.key,
                    op.client,
                    op.invoked_us as f64 / 1e6
                ))
            }
        }
    }
    Ok(checked)
}

/// Watchers saw strictly increasing revisions, the same events as the final
/// log at those revisions, and no silent gaps.
pub fn watchers_gapless(
    watchers: &[WatcherLog],
    final_log: &BTreeMap<u64, SeenEvent>,
) -> Result<usize, String> {
    let mut delivered = 0;
    for w in watchers {
        for pair in w.events.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if b.revision <= a.revision {
                return Err(format!(
                    "watcher on node {}: revision {} after {}",
                    w.node, b.revision, a.revision
                ));
            }
            if w.declared_gaps.contains(&a.revision) {
                continue;
            }
            if let Some((missed, e)) = final_log.range(a.revision + 1..b.revision).next() {
                return Err(format!(
                    "watcher on node {}: silent gap between {} and {}: missed {missed} ({} {})",
                    w.node, a.revision, b.revision, e.kind, e.subject
                ));
            }
        }
        for e in &w.events {
            if let Some(f) = final_log.get(&e.revision) {
                if f != e {
                    return Err(format!(
                        "watcher on node {} saw {e:?} at revision {} but the final log holds {f:?}",
                        w.node, e.revision
                    ));
                }
            }
        }
        delivered += w.events.len();
    }
    Ok(delivered)
}

/// All nodes hold the same events over the revisions they all still hold.
pub fn logs_agree(logs: &[BTreeMap<u64, SeenEvent>]) -> Result<(), String> {
    let from = logs
        .iter()
        .filter_map(|l| l.keys().next().copied())
        .max()
        .unwrap_or(0);
    let Some(first) = logs.first() else {
        return Ok(());
    };
    for (i, log) in logs.iter().enumerate().skip(1) {
        let a: Vec<_> = first.range(from..).collect();
        let b: Vec<_> = log.range(from..).collect();
        if a != b {
            let diverge = a
                .iter()
                .zip(&b)
                .find(|(x, y)| x != y)
                .map(|(x, y)| format!("{x:?} vs {y:?}"))
                .unwrap_or_else(|| format!("lengths {} vs {}", a.len(), b.len()));
            return Err(format!("node 0 and node {i} logs differ: {diverge}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, call: Call, outcome: Outcome, inv: u64, ret: Option<u64>) -> Op {
        Op {
            client,
            node: 0,
            key: "k".into(),
            call,
            outcome,
            invoked_us: inv,
            returned_us: ret,
            revision: None,
        }
    }

    const CREATE: Call = Call::Create { running: true };

    #[test]
    fn sequential_history_passes() {
        let h = vec![
            op(0, CREATE, Outcome::Ok, 0, Some(10)),
            op(0, Call::Read, Outcome::Value(Some(true)), 20, Some(30)),
            op(0, Call::Stop, Outcome::Ok, 40, Some(50)),
            op(0, Call::Read, Outcome::Value(Some(false)), 60, Some(70)),
            op(0, Call::Delete, Outcome::Ok, 80, Some(90)),
            op(0, Call::Read, Outcome::Value(None), 100, Some(110)),
        ];
        assert!(linearizable(&h).is_ok());
    }

    #[test]
    fn stale_read_fails() {
        let h = vec![
            op(0, CREATE, Outcome::Ok, 0, Some(10)),
            op(0, Call::Stop, Outcome::Ok, 20, Some(30)),
            // Invoked after the stop returned, yet sees it running.
            op(1, Call::Read, Outcome::Value(Some(true)), 40, Some(50)),
        ];
        let err = linearizable(&h).unwrap_err();
        assert_eq!(err.key, "k");
    }

    #[test]
    fn lost_acknowledged_create_fails() {
        let h = vec![
            op(0, CREATE, Outcome::Ok, 0, Some(10)),
            op(1, Call::Read, Outcome::Value(None), 20, Some(30)),
        ];
        assert!(linearizable(&h).is_err());
    }

    #[test]
    fn concurrent_operations_may_order_either_way() {
        let h = vec![
            op(0, CREATE, Outcome::Ok, 0, Some(10)),
            op(0, Call::Stop, Outcome::Ok, 20, Some(60)),
            op(1, Call::Start, Outcome::Ok, 25, Some(55)),
            op(2, Call::Read, Outcome::Value(Some(false)), 30, Some(40)),
            op(2, Call::Read, Outcome::Value(Some(true)), 70, Some(80)),
        ];
        // stop, read(false), start, read(true) is a valid order.
        assert!(linearizable(&h).is_ok());
    }

    #[test]
    fn unknown_outcome_may_apply_late_or_never() {
        let late = vec![
            op(0, CREATE, Outcome::Ok, 0, Some(10)),
            op(
                0,
                Call::Delete,
                Outcome::Unknown("timeout".into()),
                20,
                None,
            ),
            op(1, Call::Read, Outcome::Value(Some(true)), 100, Some(110)),
            op(1, Call::Read, Outcome::Value(None), 200, Some(210)),
        ];
        assert!(linearizable(&late).is_ok());
        let never = vec![
            op(0, CREATE, Outcome::Ok, 0, Some(10)),
            op(
                0,
                Call::Delete,
                Outcome::Unknown("timeout".into()),
                20,
                None,
            ),
            op(1, Call::Read, Outcome::Value(Some(true)), 200, Some(210)),
        ];
        assert!(linearizable(&never).is_ok());
        // But it cannot take effect before it was invoked.
        let early = vec![
            op(0, CREATE, Outcome::Ok, 0, Some(10)),
            op(1, Call::Read, Outcome::Value(None), 20, Some(30)),
            op(
                0,
                Call::Delete,
                Outcome::Unknown("timeout".into()),
                40,
                None,
            ),
        ];
        assert!(linearizable(&early).is_err());
    }

    #[test]
    fn definite_failure_must_match_state() {
        // NotFound on a stop while the VM certainly exists.
        let h = vec![
            op(0, CREATE, Outcome::Ok, 0, Some(10)),
            op(1, Call::Stop, Outcome::NotFound, 20, Some(30)),
        ];
        assert!(linearizable(&h).is_err());
    }

    #[test]
    fn many_unknowns_stay_within_budget() {
        let mut h = vec![op(0, CREATE, Outcome::Ok, 0, Some(10))];
        for i in 0..40u64 {
            let call = if i % 2 == 0 { Call::Stop } else { Call::Start };
            h.push(op(1, call, Outcome::Unknown("t".into()), 20 + i * 10, None));
        }
        h.push(op(
            2,
            Call::Read,
            Outcome::Value(Some(false)),
            1000,
            Some(1010),
        ));
        h.push(op(
            2,
            Call::Read,
            Outcome::Value(Some(true)),
            1020,
            Some(1030),
        ));
        assert!(linearizable(&h).is_ok());
    }

    #[test]
    fn a_lost_acknowledged_create_is_caught() {
        let created = |r: u64, vm: &str| SeenEvent {
            revision: r,
            kind: "vm.created".into(),
            subject: format!("vm/{vm}"),
        };
        let mut create = op(0, CREATE, Outcome::Ok, 0, Some(10));
        create.revision = Some(7);
        let mut stop = op(1, Call::Stop, Outcome::Ok, 20, Some(30));
        stop.revision = Some(9);
        let kept: BTreeMap<u64, SeenEvent> = [(7, created(7, "k")), (9, created(9, "other"))]
            .into_iter()
            .collect();
        assert_eq!(
            acknowledged_writes_kept(&[create.clone(), stop], &kept, 0),
            Ok(1)
        );
        let lost: BTreeMap<u64, SeenEvent> = [(7, created(7, "other"))].into_iter().collect();
        assert!(acknowledged_writes_kept(&[create.clone()], &lost, 0).is_err());
        // Dropped by the ring: not checkable, not a failure.
        assert_eq!(acknowledged_writes_kept(&[create], &lost, 7), Ok(0));
    }

    #[test]
    fn watcher_gap_and_order_are_caught() {
        let ev = |r: u64| SeenEvent {
            revision: r,
            kind: "vm.created".into(),
            subject: format!("vm/{r}"),
        };
        let log: BTreeMap<u64, SeenEvent> = [3, 5, 8].into_iter().map(|r| (r, ev(r))).collect();
        let ok = WatcherLog {
            events: vec![ev(3), ev(5), ev(8)],
            ..Default::default()
        };
        assert_eq!(watchers_gapless(&[ok], &log), Ok(3));
        let gap = WatcherLog {
            events: vec![ev(3), ev(8)],
            ..Default::default()
        };
        assert!(watchers_gapless(&[gap], &log).is_err());
        let back = WatcherLog {
            events: vec![ev(5), ev(3)],
            ..Default::default()
        };
        assert!(watchers_gapless(&[back], &log).is_err());
    }
}
