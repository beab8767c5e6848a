//! Every console view rendered into a ratatui `TestBackend` at 80x24 and at
//! 200x50, compared with reviewed snapshots in `tests/snapshots/`. After an
//! intended change, regenerate with `BLIXARD_BLESS=1` and review the diff.

mod fixture;

use blixard_tui::console::model::View;
use blixard_tui::console::msg::Msg;
use blixard_tui::console::update::update;
use blixard_tui::console::view::view;
use fixture::*;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn render(model: &blixard_tui::console::model::Model, w: u16, h: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).expect("terminal");
    terminal.draw(|f| view(f, model)).expect("draw");
    let buffer = terminal.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..h {
        let line: String = (0..w)
            .map(|x| buffer[(x, y)].symbol().to_string())
            .collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn check(name: &str, model: &blixard_tui::console::model::Model) {
    for (w, h) in [(80u16, 24u16), (200, 50)] {
        let got = render(model, w, h);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/snapshots")
            .join(format!("{name}_{w}x{h}.txt"));
        if std::env::var("BLIXARD_BLESS").is_ok_and(|v| v == "1") {
            std::fs::write(&path, &got).expect("write snapshot");
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            panic!(
                "missing snapshot {} (run with BLIXARD_BLESS=1)",
                path.display()
            )
        });
        assert_eq!(
            got,
            want,
            "{name} at {w}x{h} differs from {}",
            path.display()
        );
    }
}

fn at(view_key: char) -> blixard_tui::console::model::Model {
    let mut m = model();
    update(&mut m, key(view_key));
    m
}

#[test]
fn overview() {
    check("overview", &model());
}

#[test]
fn nodes() {
    check("nodes", &at('1'));
}

#[test]
fn vms_with_detail() {
    let mut m = at('2');
    update(&mut m, key('j'));
    check("vms", &m);
}

#[test]
fn logs_with_search() {
    let mut m = model();
    update(&mut m, key(':'));
    typed(&mut m, "logs web-1");
    update(
        &mut m,
        Msg::LogData {
            vm: "web-1".into(),
            data:
                b"SeaBIOS\r\nblixard-guest: ready (kernel 6.1.0)\r\nblixard-guest: heartbeat 1\r\n"
                    .to_vec(),
        },
    );
    update(&mut m, key('/'));
    typed(&mut m, "heartbeat");
    check("logs", &m);
}

#[test]
fn events() {
    check("events", &at('4'));
}

#[test]
fn raft() {
    check("raft", &at('5'));
}

#[test]
fn console_log() {
    check("console", &at('6'));
}

#[test]
fn confirm_dialog_and_help() {
    let mut m = model();
    update(&mut m, key(':'));
    typed(&mut m, "vm stop web-1");
    check("confirm", &m);
    let mut m = at('2');
    update(&mut m, key('?'));
    check("help", &m);
}

#[test]
fn read_only_header_and_reconnecting_link() {
    let mut m = model();
    m.read_only = true;
    update(
        &mut m,
        Msg::Link(blixard_tui::console::msg::Link::Reconnecting {
            endpoint: "127.0.0.1:7002".into(),
            since_ms: NOW_MS - 7000,
            reason: "stream closed".into(),
        }),
    );
    update(&mut m, key('2'));
    check("vms_read_only_reconnecting", &m);
    assert!(
        !render(&m, 200, 50).contains("create"),
        "no action keys in read-only mode"
    );
    let _ = View::Vms;
}

/// A console without a CA talks plaintext: the header says INSECURE; the
/// secure model every other snapshot uses shows no marker.
#[test]
fn insecure_header() {
    let mut m = model();
    assert!(!render(&m, 80, 24).contains("INSECURE"));
    m.insecure = true;
    check("overview_insecure", &m);
    assert!(render(&m, 80, 24)
        .lines()
        .next()
        .is_some_and(|l| l.contains("INSECURE")));
}

/// The audit view follows the trail; the header names the identity the
/// console runs as once the daemon said it.
#[test]
fn audit_view_and_identity() {
    use blixard_shared::proto::v1 as pb;
    let mut m = model();
    update(
        &mut m,
        Msg::Access(blixard_tui::console::access::AccessReport {
            principal: "token:ops".into(),
            role: "operator".into(),
            labels: vec!["team=web".into()],
            answers: vec![],
        }),
    );
    for (seq, principal, action, target, result, code) in [
        (1, "token:admin", "vm.create", "Vm::\"web-1\"", "ok", "ok"),
        (
            2,
            "token:ops",
            "vm.delete",
            "Vm::\"db-1\"",
            "denied",
            "permission_denied",
        ),
        (3, "anonymous", "vm.list", "", "denied", "unauthenticated"),
    ] {
        update(
            &mut m,
            Msg::Audit(pb::AuditRecord {
                seq,
                time_ms: NOW_MS - 1000 + seq,
                node_id: 1,
                principal: principal.into(),
                peer: "127.0.0.1:40000".into(),
                method: String::new(),
                action: action.into(),
                target: target.into(),
                result: result.into(),
                code: code.into(),
            }),
        );
    }
    update(&mut m, key('7'));
    check("audit", &m);
    assert!(render(&m, 200, 50)
        .lines()
        .next()
        .is_some_and(|l| l.contains("as token:ops (operator, team=web)")));
}

#[test]
fn a_mixed_release_cluster_is_shown_as_such() {
    let mut m = model();
    if let Some(s) = m.status.as_mut() {
        s.members[2].version = "0.2.0".into();
    }
    let overview = render(&m, 200, 50);
    assert!(
        overview.contains("releases: MIXED (0.1.0, 0.2.0)"),
        "{overview}"
    );
    update(&mut m, key('5'));
    let raft = render(&m, 200, 50);
    assert!(raft.contains("VERSION") && raft.contains("0.2.0"), "{raft}");
}
