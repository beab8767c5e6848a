//! The console's update function, message by message: filtering, sorting,
//! selection kept across updates, reconnect bookkeeping, commands,
//! confirmation, read-only mode, completion and bounded buffers.

mod fixture;

use blixard_shared::proto::v1 as pb;
use blixard_tui::console::model::{Input, View, VmSort, MAX_LOG_LINES};
use blixard_tui::console::msg::{Action, Cmd, Link, Msg};
use blixard_tui::console::update::{complete, update};
use fixture::*;
use ratatui::crossterm::event::KeyCode;

fn names(m: &blixard_tui::console::model::Model) -> Vec<String> {
    m.visible_vms().iter().map(|v| v.name.clone()).collect()
}

#[test]
fn filtering_narrows_the_vm_list_as_you_type() {
    let mut m = model();
    update(&mut m, key('2'));
    assert_eq!(m.view, View::Vms);
    update(&mut m, key('/'));
    for c in "web".chars() {
        update(&mut m, key(c));
    }
    assert_eq!(names(&m), ["web-1", "web-2"]);
    update(&mut m, code(KeyCode::Enter));
    assert_eq!(m.input, Input::Normal);
    assert_eq!(m.vm_filter, "web");
    assert!(m
        .vm_selected
        .as_deref()
        .is_some_and(|s| s.starts_with("web")));
    // A state word filters too.
    update(&mut m, key('/'));
    for _ in 0..3 {
        update(&mut m, code(KeyCode::Backspace));
    }
    for c in "failed".chars() {
        update(&mut m, key(c));
    }
    assert_eq!(names(&m), ["cache"]);
    // Esc clears the filter.
    update(&mut m, code(KeyCode::Esc));
    assert_eq!(names(&m).len(), 6);
}

#[test]
fn sorting_cycles_columns_and_reverses() {
    let mut m = model();
    update(&mut m, key('2'));
    assert_eq!(
        names(&m),
        ["batch", "cache", "db-1", "old", "web-1", "web-2"]
    );
    update(&mut m, key('o'));
    assert_eq!(m.vm_sort, VmSort::State);
    assert_eq!(
        names(&m)[0],
        "cache",
        "failed sorts before pending and running"
    );
    update(&mut m, key('o'));
    update(&mut m, key('o'));
    assert_eq!(m.vm_sort, VmSort::Memory);
    update(&mut m, key('O'));
    assert_eq!(names(&m)[0], "db-1", "largest memory first when reversed");
}

#[test]
fn selection_stays_on_the_same_vm_while_the_list_changes() {
    let mut m = model();
    update(&mut m, key('2'));
    update(&mut m, key('j'));
    update(&mut m, key('j'));
    assert_eq!(m.vm_selected.as_deref(), Some("db-1"));
    // New rows above it and a change to it do not move the selection.
    update(
        &mut m,
        Msg::VmChanged(vm("aaa", 1, pb::VmState::Running, 128, 1, 0)),
    );
    update(
        &mut m,
        Msg::VmChanged(vm("db-1", 1, pb::VmState::Stopped, 1024, 0, 0)),
    );
    assert_eq!(m.vm_selected.as_deref(), Some("db-1"));
    assert_eq!(m.vms["db-1"].state, pb::VmState::Stopped as i32);
    // When it goes away, the selection moves to an existing row.
    update(&mut m, Msg::VmGone("db-1".into()));
    assert!(m
        .vm_selected
        .as_ref()
        .is_some_and(|s| m.vms.contains_key(s)));
}

#[test]
fn reconnect_bookkeeping() {
    let mut m = model();
    assert_eq!(
        m.revision, 40,
        "the load revision is newer than the fixture events"
    );
    update(
        &mut m,
        Msg::Link(Link::Reconnecting {
            endpoint: "127.0.0.1:7002".into(),
            since_ms: NOW_MS,
            reason: "stream closed".into(),
        }),
    );
    assert!(matches!(m.link, Link::Reconnecting { .. }));
    // Events keep the highest revision; a reload replaces the picture.
    update(
        &mut m,
        Msg::Event(event(55, "vm.created", "vm/new", "vm new created")),
    );
    assert_eq!(m.revision, 55);
    update(
        &mut m,
        Msg::Loaded {
            nodes: vec![],
            vms: vec![vm("only", 1, pb::VmState::Running, 128, 5, 0)],
            revision: 60,
        },
    );
    assert_eq!(m.revision, 60);
    assert_eq!(m.vms.len(), 1);
    update(
        &mut m,
        Msg::Link(Link::Live {
            endpoint: "127.0.0.1:7002".into(),
        }),
    );
    // A leader change is remembered.
    let before = m.leader_history.len();
    update(&mut m, Msg::Status(status(2, 4)));
    assert_eq!(m.leader_history.len(), before + 1);
    assert_eq!(m.leader_id(), Some(2));
    update(&mut m, Msg::Status(status(2, 4)));
    assert_eq!(
        m.leader_history.len(),
        before + 1,
        "same leader and term: no new entry"
    );
}

#[test]
fn destructive_commands_ask_first() {
    let mut m = model();
    update(&mut m, key(':'));
    let cmds = typed(&mut m, "vm stop web-1");
    assert!(cmds.is_empty());
    assert_eq!(m.input, Input::Confirm(Action::StopVm("web-1".into())));
    assert_eq!(
        update(&mut m, key('y')),
        vec![Cmd::Run(Action::StopVm("web-1".into()))]
    );
    // Anything else cancels.
    update(&mut m, key(':'));
    typed(&mut m, "vm delete web-1");
    assert!(update(&mut m, key('n')).is_empty());
    assert_eq!(m.input, Input::Normal);
    // Starting needs no confirmation.
    update(&mut m, key(':'));
    assert_eq!(
        typed(&mut m, "vm start old"),
        vec![Cmd::Run(Action::StartVm("old".into()))]
    );
    // Unknown names are refused with a message.
    update(&mut m, key(':'));
    assert!(typed(&mut m, "vm stop nope").is_empty());
    assert!(m.status_line.as_ref().is_some_and(|(_, err, _)| *err));
}

#[test]
fn create_through_the_command_bar_and_the_form() {
    let mut m = model();
    update(&mut m, key(':'));
    let cmds = typed(&mut m, "vm create api-1 2 256");
    assert_eq!(
        cmds,
        vec![Cmd::Run(Action::CreateVm {
            name: "api-1".into(),
            vcpus: 2,
            memory_mib: 256,
            image: String::new()
        })]
    );
    // Invalid input is caught before it is sent.
    update(&mut m, key(':'));
    assert!(typed(&mut m, "vm create Bad_Name").is_empty());
    assert!(m
        .status_line
        .as_ref()
        .is_some_and(|(t, err, _)| *err && t.contains("name")));
    // The form.
    update(&mut m, key('2'));
    update(&mut m, key('c'));
    assert!(matches!(m.input, Input::Form(_)));
    for c in "form-vm".chars() {
        update(&mut m, key(c));
    }
    let cmds = update(&mut m, code(KeyCode::Enter));
    assert_eq!(
        cmds,
        vec![Cmd::Run(Action::CreateVm {
            name: "form-vm".into(),
            vcpus: 1,
            memory_mib: 128,
            image: String::new()
        })]
    );
}

#[test]
fn read_only_removes_every_action() {
    let mut m = model();
    m.read_only = true;
    update(&mut m, key(':'));
    assert!(typed(&mut m, "vm stop web-1").is_empty());
    assert_eq!(m.input, Input::Normal);
    update(&mut m, key('2'));
    assert!(update(&mut m, key('x')).is_empty());
    assert!(update(&mut m, key('c')).is_empty());
    assert_eq!(m.input, Input::Normal);
    // Watching still works.
    assert_eq!(
        update(&mut m, key('l')),
        vec![Cmd::OpenLogs(m.vm_selected.clone().unwrap_or_default())]
    );
}

#[test]
fn the_command_bar_completes() {
    let m = model();
    assert_eq!(complete(&m, "no"), Some("node".into()));
    assert_eq!(complete(&m, "vm sto"), Some("vm stop".into()));
    assert_eq!(complete(&m, "logs d"), Some("logs db-1".into()));
    assert_eq!(complete(&m, "vm stop web"), Some("vm stop web-".into()));
    assert_eq!(complete(&m, "zzz"), None);
}

#[test]
fn drilling_into_a_node_lists_its_vms_and_esc_goes_back() {
    let mut m = model();
    update(&mut m, key('1'));
    assert_eq!(m.node_selected, Some(1));
    update(&mut m, code(KeyCode::Enter));
    assert_eq!(m.view, View::Vms);
    assert_eq!(names(&m), ["db-1", "web-1"]);
    update(&mut m, code(KeyCode::Esc));
    assert_eq!(m.view, View::Nodes);
    assert!(m.vm_node_filter.is_none());
}

#[test]
fn logs_are_bounded_and_follow_or_hold_still() {
    let mut m = model();
    update(&mut m, key(':'));
    assert_eq!(
        typed(&mut m, "logs web-1"),
        vec![Cmd::OpenLogs("web-1".into())]
    );
    assert_eq!(m.view, View::Logs);
    let chunk: String = (0..1000).map(|i| format!("line {i}\n")).collect();
    for _ in 0..101 {
        update(
            &mut m,
            Msg::LogData {
                vm: "web-1".into(),
                data: chunk.clone().into_bytes(),
            },
        );
    }
    assert_eq!(m.logs.lines.len(), MAX_LOG_LINES);
    // Escape sequences from the guest are removed.
    update(
        &mut m,
        Msg::LogData {
            vm: "web-1".into(),
            data: b"\x1b[2J\x1b[0mhello\n".to_vec(),
        },
    );
    assert_eq!(m.logs.lines.back().map(String::as_str), Some("hello"));
    // Scrolling up stops following; new lines do not move the view.
    update(&mut m, key('k'));
    assert!(!m.logs.follow);
    let scroll = m.logs.scroll;
    update(
        &mut m,
        Msg::LogData {
            vm: "web-1".into(),
            data: b"more\n".to_vec(),
        },
    );
    assert_eq!(m.logs.scroll, scroll + 1);
    // Data for another VM is ignored.
    update(
        &mut m,
        Msg::LogData {
            vm: "other".into(),
            data: b"x\n".to_vec(),
        },
    );
    assert_eq!(m.logs.lines.back().map(String::as_str), Some("more"));
    assert_eq!(update(&mut m, code(KeyCode::Esc)), vec![Cmd::CloseLogs]);
}

#[test]
fn clicking_a_row_selects_it_and_the_wheel_scrolls() {
    use ratatui::crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    let mut m = model();
    update(
        &mut m,
        Msg::Resize {
            width: 200,
            height: 50,
        },
    );
    update(&mut m, key('2'));
    let click = |row| {
        Msg::Mouse(MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column: 5,
            row,
            modifiers: ratatui::crossterm::event::KeyModifiers::NONE,
        })
    };
    // Header (2 lines), table border, column header: the third VM row is row 6.
    update(&mut m, click(6));
    assert_eq!(m.vm_selected.as_deref(), Some("db-1"));
    // Clicks outside the rows change nothing.
    update(&mut m, click(3));
    assert_eq!(m.vm_selected.as_deref(), Some("db-1"));
    update(
        &mut m,
        Msg::Mouse(MouseEvent {
            kind: MouseEventKind::ScrollDown,
            column: 5,
            row: 10,
            modifiers: ratatui::crossterm::event::KeyModifiers::NONE,
        }),
    );
    assert_eq!(
        m.vm_selected.as_deref(),
        Some("web-2"),
        "three rows down, clamped at the end"
    );
}
