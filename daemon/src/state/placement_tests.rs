//! Safety of moves (issue "Safety", finding 1): a VM is never moved from a
//! node by a placement, only taken off through the lease-gated rescheduling;
//! and a VM deleted while placed keeps its name from being placed again
//! until its host confirms the instance gone or its lease surely ran out.

use super::command::{Action, Command, CommandOutcome, NodeRegistration, RejectionCode};
use super::fleet::Fleet;
use super::model::*;
use std::collections::BTreeMap;

/// A fleet and the next revision to apply at.
struct Run {
    fleet: Fleet,
    revision: u64,
}

impl Run {
    fn new() -> Self {
        let mut run = Self {
            fleet: Fleet::default(),
            revision: 0,
        };
        for id in [1, 2] {
            run.ok(Action::RegisterNode(NodeRegistration {
                id,
                address: format!("n{id}:7000"),
                capacity: Resources {
                    vcpus: 8,
                    memory_mib: 4096,
                    disk_mib: 0,
                },
                labels: BTreeMap::new(),
                zone: String::new(),
                rack: String::new(),
                backend: "process".into(),
                version: String::new(),
            }));
        }
        run
    }

    fn apply(&mut self, action: Action) -> Result<CommandOutcome, RejectionCode> {
        self.revision += 1;
        self.fleet
            .apply(
                self.revision,
                &Command {
                    time_ms: self.revision,
                    trace: None,
                    action,
                },
            )
            .map_err(|r| r.code)
    }

    fn ok(&mut self, action: Action) -> CommandOutcome {
        let shown = format!("{action:?}");
        self.apply(action)
            .unwrap_or_else(|code| panic!("{shown} refused: {code:?}"))
    }

    fn create(&mut self, name: &str) {
        self.ok(Action::CreateVm {
            name: name.into(),
            spec: VmSpec {
                vcpus: 1,
                memory_mib: 64,
                runner: "/bin/true".into(),
                ..Default::default()
            },
            desired: DesiredState::Running,
        });
    }

    fn place(&mut self, name: &str, node_id: u64) -> Result<CommandOutcome, RejectionCode> {
        let expected_epoch = self.fleet.vms[name].epoch;
        self.apply(Action::PlaceVm {
            name: name.into(),
            node_id,
            expected_epoch,
        })
    }

    fn report_gone(&mut self, node_id: u64, name: &str) {
        self.ok(Action::ReportVmStatus {
            node_id,
            reports: Vec::new(),
            gone: vec![name.into()],
        });
    }
}

#[test]
fn a_placed_vm_is_never_moved_by_a_placement() {
    let mut run = Run::new();
    run.create("web");
    run.place("web", 1).expect("first placement");
    assert_eq!(
        run.place("web", 2),
        Err(RejectionCode::FailedPrecondition),
        "moving a placed VM would run it on two hosts"
    );
    assert_eq!(run.fleet.vms["web"].node_id, 1);
    assert_eq!(
        run.place("web", 1),
        Err(RejectionCode::FailedPrecondition),
        "nor placed again where it is"
    );
}

#[test]
fn a_force_deleted_vm_keeps_its_name_from_placement_until_its_host_confirms() {
    let mut run = Run::new();
    run.create("web");
    run.place("web", 1).expect("placed");
    run.ok(Action::DeleteVm {
        name: "web".into(),
        force: true,
    });
    run.create("web");
    assert_eq!(
        run.place("web", 2),
        Err(RejectionCode::FailedPrecondition),
        "the old instance may still run on node 1"
    );
    run.report_gone(2, "web");
    assert_eq!(
        run.place("web", 2),
        Err(RejectionCode::FailedPrecondition),
        "only the host that ran it can confirm it gone"
    );
    run.report_gone(1, "web");
    run.place("web", 2).expect("placed once node 1 confirmed");
}

#[test]
fn a_departed_name_is_forgotten_only_once_its_host_lease_surely_ran_out() {
    let mut run = Run::new();
    run.create("web");
    run.place("web", 1).expect("placed");
    run.ok(Action::RenewLease {
        id: 1,
        lease_ms: 6000,
    });
    run.ok(Action::DeleteVm {
        name: "web".into(),
        force: true,
    });
    run.create("web");
    let forget = |seq| Action::ForgetDeparted {
        name: "web".into(),
        node_id: 1,
        expected_lease_seq: seq,
    };
    run.ok(Action::RenewLease {
        id: 1,
        lease_ms: 6000,
    });
    assert_eq!(
        run.apply(forget(1)),
        Err(RejectionCode::FailedPrecondition),
        "node 1 renewed since the leader saw its lease run out"
    );
    run.ok(forget(2));
    run.place("web", 2).expect("placed once the lease ran out");
}
