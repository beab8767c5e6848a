//! Apply re-validates every command (issue "Security I"): a malformed
//! action of any kind is refused `InvalidArgument`, naming the field, and
//! changes nothing but the revision, however it reached the log; the
//! actions the daemon itself builds pass.

use super::command::{Action, Command, NodeRegistration, RejectionCode};
use super::fleet::{validate_action, Fleet};
use super::model::*;
use blixard_shared::auth::Role;
use blixard_shared::limits::{MAX_GONE_PER_REPORT, MAX_LABELS, MAX_REPORT_REASON_LEN};
use blixard_shared::proto::v1 as pb;
use std::collections::BTreeMap;

fn registration() -> NodeRegistration {
    NodeRegistration {
        id: 1,
        address: "10.0.0.1:7000".into(),
        capacity: Resources {
            vcpus: 8,
            memory_mib: 4096,
            disk_mib: 0,
        },
        labels: BTreeMap::from([("role".to_string(), "edge".to_string())]),
        zone: "z1".into(),
        rack: "r1".into(),
        backend: "qemu".into(),
        version: String::new(),
    }
}

fn spec() -> VmSpec {
    VmSpec {
        vcpus: 1,
        memory_mib: 64,
        image: "default".into(),
        ..Default::default()
    }
}

fn hash() -> String {
    "ab".repeat(32)
}

/// A fleet with a node, a placed VM, a token and a join token, so a
/// malformed action has something it could wrongly change.
fn populated() -> Fleet {
    let mut fleet = Fleet::default();
    let actions = [
        Action::RegisterNode(registration()),
        Action::CreateVm {
            name: "web".into(),
            spec: spec(),
            desired: DesiredState::Running,
        },
        Action::PlaceVm {
            name: "web".into(),
            node_id: 1,
            expected_epoch: 0,
        },
        Action::CreateToken {
            name: "ci".into(),
            role: Role::Viewer,
            hash: hash(),
            expires_ms: None,
            labels: Default::default(),
        },
        Action::CreateJoinToken {
            hash: hash(),
            expires_ms: 10_000,
        },
    ];
    for (i, action) in actions.into_iter().enumerate() {
        let shown = format!("{action:?}");
        let cmd = Command {
            time_ms: 1,
            action,
            trace: None,
        };
        if let Err(r) = fleet.apply(i as u64 + 1, &cmd) {
            panic!("{shown}: {r}");
        }
    }
    fleet
}

/// A registration changed by `f`.
fn reg(f: impl FnOnce(&mut NodeRegistration)) -> Action {
    let mut r = registration();
    f(&mut r);
    Action::RegisterNode(r)
}

/// A create whose spec is changed by `f`.
fn create(f: impl FnOnce(&mut VmSpec)) -> Action {
    let mut s = spec();
    f(&mut s);
    Action::CreateVm {
        name: "db".into(),
        spec: s,
        desired: DesiredState::Running,
    }
}

/// A status report of node 1 about `web`, changed by `f`.
fn report(f: impl FnOnce(&mut VmReport, &mut Vec<String>)) -> Action {
    let mut r = VmReport {
        name: "web".into(),
        epoch: 1,
        state: VmState::Running,
        reason: String::new(),
        observed: Observed::default(),
    };
    let mut gone = Vec::new();
    f(&mut r, &mut gone);
    Action::ReportVmStatus {
        node_id: 1,
        reports: vec![r],
        gone,
    }
}

/// Malformed node actions, each with the field its refusal names.
fn node_cases() -> Vec<(&'static str, Action)> {
    vec![
        ("id", reg(|r| r.id = 0)),
        ("address", reg(|r| r.address = "no-port".into())),
        (
            "address",
            reg(|r| r.address = format!("{}:1", "h".repeat(300))),
        ),
        (
            "labels[\"bad key\"]",
            reg(|r| {
                r.labels.insert("bad key".into(), "v".into());
            }),
        ),
        ("zone", reg(|r| r.zone = "z".repeat(300))),
        ("rack", reg(|r| r.rack = "r\n1".into())),
        ("backend", reg(|r| r.backend = "docker".into())),
        ("id", Action::RemoveNode { id: 0 }),
        (
            "id",
            Action::SetSchedulability {
                id: 0,
                value: Schedulability::Cordoned,
            },
        ),
        (
            "id",
            Action::SetNodeHealth {
                id: 0,
                health: NodeHealth::Down,
            },
        ),
        (
            "id",
            Action::RenewLease {
                id: 0,
                lease_ms: 6000,
            },
        ),
        (
            "lease_ms",
            Action::RenewLease {
                id: 1,
                lease_ms: 999,
            },
        ),
        (
            "lease_ms",
            Action::RenewLease {
                id: 1,
                lease_ms: 120_001,
            },
        ),
    ]
}

/// Malformed creates: every rule of the spec the API checks.
fn spec_cases() -> Vec<(&'static str, Action)> {
    vec![
        (
            "name",
            Action::CreateVm {
                name: "Web".into(),
                spec: spec(),
                desired: DesiredState::Running,
            },
        ),
        ("spec.vcpus", create(|s| s.vcpus = 0)),
        ("spec.vcpus", create(|s| s.vcpus = 100_000)),
        ("spec.memory_mib", create(|s| s.memory_mib = 8)),
        ("spec.image", create(|s| s.image = "Bad Image".into())),
        ("spec.image", create(|s| s.kernel = "/vmlinux".into())),
        (
            "spec.kernel",
            create(|s| {
                s.image.clear();
                s.kernel = "vmlinux".into();
            }),
        ),
        (
            "spec.kernel",
            create(|s| {
                s.image.clear();
                s.kernel = format!("/{}", "k".repeat(5000));
            }),
        ),
        ("spec.initrd", create(|s| s.initrd = "/initrd".into())),
        ("spec.cmdline", create(|s| s.cmdline = "x".repeat(5000))),
        (
            "spec.runner",
            create(|s| {
                s.image.clear();
                s.runner = "microvm-run".into();
            }),
        ),
        (
            "spec.labels",
            create(|s| {
                for i in 0..=MAX_LABELS {
                    s.labels.insert(format!("k{i}"), "v".into());
                }
            }),
        ),
        (
            "spec.labels[\"k\"]",
            create(|s| {
                s.labels.insert("k".into(), "v\u{7}".into());
            }),
        ),
        (
            "spec.constraints",
            create(|s| s.constraints = vec!["a".into(); 33]),
        ),
        (
            "spec.constraints[0]",
            create(|s| s.constraints = vec![" ".into()]),
        ),
        (
            "spec.constraints[0]",
            create(|s| s.constraints = vec!["c".repeat(300)]),
        ),
        ("spec.group", create(|s| s.group = "UPPER".into())),
        ("spec.max_per_node", create(|s| s.max_per_node = 2)),
        ("spec.priority", create(|s| s.priority = 5000)),
    ]
}

/// Malformed VM, token and retryable actions.
fn other_cases() -> Vec<(&'static str, Action)> {
    let bad = || "-web".to_string();
    vec![
        (
            "name",
            Action::SetDesired {
                name: bad(),
                desired: DesiredState::Stopped,
            },
        ),
        (
            "name",
            Action::PlaceVm {
                name: bad(),
                node_id: 1,
                expected_epoch: 1,
            },
        ),
        (
            "node_id",
            Action::PlaceVm {
                name: "web".into(),
                node_id: 0,
                expected_epoch: 1,
            },
        ),
        (
            "node_id",
            Action::RescheduleVm {
                name: "web".into(),
                node_id: 0,
                expected_epoch: 1,
                expected_lease_seq: 0,
            },
        ),
        (
            "name",
            Action::RescheduleVm {
                name: bad(),
                node_id: 1,
                expected_epoch: 1,
                expected_lease_seq: 0,
            },
        ),
        (
            "node_id",
            Action::ReportVmStatus {
                node_id: 0,
                reports: Vec::new(),
                gone: Vec::new(),
            },
        ),
        ("reports[0].name", report(|r, _| r.name = bad())),
        (
            "reports[0].reason",
            report(|r, _| {
                r.reason = "x".repeat(MAX_REPORT_REASON_LEN + 1);
            }),
        ),
        ("gone[0]", report(|_, gone| gone.push(bad()))),
        (
            "gone",
            report(|_, gone| {
                *gone = vec!["old".into(); MAX_GONE_PER_REPORT + 1];
            }),
        ),
        (
            "node_id",
            Action::ForgetDeparted {
                name: "web".into(),
                node_id: 0,
                expected_lease_seq: 0,
            },
        ),
        ("name", Action::RestartVm { name: bad() }),
        (
            "name",
            Action::DeleteVm {
                name: bad(),
                force: true,
            },
        ),
        (
            "name",
            Action::CreateToken {
                name: "CI".into(),
                role: Role::Admin,
                hash: "cd".repeat(32),
                expires_ms: None,
                labels: Default::default(),
            },
        ),
        (
            "hash",
            Action::CreateToken {
                name: "ci2".into(),
                role: Role::Admin,
                hash: "CD".repeat(32),
                expires_ms: None,
                labels: Default::default(),
            },
        ),
        (
            "name",
            Action::RevokeToken {
                name: String::new(),
            },
        ),
        (
            "hash",
            Action::CreateJoinToken {
                hash: "cd".repeat(31),
                expires_ms: 10_000,
            },
        ),
        (
            "hash",
            Action::RedeemJoinToken {
                hash: format!("{}z", "a".repeat(63)),
                node_id: 2,
            },
        ),
        (
            "x-blixard-request-id",
            Action::Retryable {
                request_id: "has space".into(),
                action: Box::new(Action::RestartVm { name: "web".into() }),
            },
        ),
        (
            "action",
            Action::Retryable {
                request_id: "c:1".into(),
                action: Box::new(Action::Retryable {
                    request_id: "c:2".into(),
                    action: Box::new(Action::RestartVm { name: "web".into() }),
                }),
            },
        ),
        (
            "name",
            Action::Retryable {
                request_id: "c:1".into(),
                action: Box::new(Action::RestartVm { name: bad() }),
            },
        ),
    ]
}

#[test]
fn a_malformed_action_of_any_kind_is_refused_and_changes_nothing() {
    let base = populated();
    let cases = node_cases()
        .into_iter()
        .chain(spec_cases())
        .chain(other_cases());
    for (i, (field, action)) in cases.enumerate() {
        let mut fleet = base.clone();
        let revision = base.revision + 1 + i as u64;
        let shown = format!("{action:?}");
        let cmd = Command {
            time_ms: 2,
            action,
            trace: None,
        };
        let Err(r) = fleet.apply(revision, &cmd) else {
            panic!("accepted {shown}");
        };
        assert_eq!(r.code, RejectionCode::InvalidArgument, "{shown}: {r}");
        assert!(
            r.message.starts_with(&format!("{field}: ")),
            "{shown}: {r:?} should name {field}"
        );
        assert_eq!(fleet.revision, revision);
        fleet.revision = base.revision;
        assert_eq!(fleet, base, "refused {shown} changed the state");
    }
}

#[test]
fn the_actions_the_daemon_builds_pass() {
    let config = crate::config::Config::for_node(
        3,
        std::path::Path::new("/tmp/x"),
        ([127, 0, 0, 1], 7000).into(),
    );
    let registration = crate::host::facts::registration(&config, "127.0.0.1:7000");
    assert_eq!(validate_action(&Action::RegisterNode(registration)), Ok(()));
    let lease_ms = u64::try_from(config.fence_lease.as_millis()).unwrap_or(u64::MAX);
    assert_eq!(
        validate_action(&Action::RenewLease { id: 3, lease_ms }),
        Ok(())
    );
    // What the API makes of the smallest request it accepts.
    let wire = pb::VmSpec {
        vcpus: 1,
        memory_mib: 16,
        ..Default::default()
    };
    assert_eq!(blixard_shared::validate::vm_spec("spec", &wire), Ok(()));
    let create = Action::CreateVm {
        name: "a".into(),
        spec: crate::api::convert::spec_from_pb(&wire),
        desired: DesiredState::Running,
    };
    assert_eq!(validate_action(&create), Ok(()));
}
