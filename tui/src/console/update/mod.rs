//! The console's update function: applies one message to the model and
//! says what the outside world should do. Pure: no I/O, no clock.
//!
//! Messages from the network land here; keys go to [`input`], the command
//! bar to [`command`], and both turn into [`effect::Effect`]s that read-only
//! mode vets against the tables in [`super::keys`].

mod command;
mod effect;
mod input;

pub use command::{complete, run_command};

use super::layout;
use super::model::*;
use super::msg::{Cmd, Msg};
use blixard_shared::proto::v1 as pb;
use ratatui::crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::Rect;

/// Rows one notch of the mouse wheel moves the selection.
const WHEEL_ROWS: isize = 3;

/// Applies `msg` to `model`.
pub fn update(model: &mut Model, msg: Msg) -> Vec<Cmd> {
    match msg {
        Msg::Key(key) => return input::on_key(model, key),
        Msg::Mouse(m) => on_mouse(model, m),
        Msg::Resize { width, height } => model.size = (width, height),
        Msg::Tick { now_ms } => {
            on_tick(model, now_ms);
            return ask_access(model, false);
        }
        Msg::Loaded {
            nodes,
            vms,
            revision,
        } => {
            model.nodes = nodes.into_iter().map(|n| (n.id, n)).collect();
            model.vms = vms.into_iter().map(|v| (v.name.clone(), v)).collect();
            model.revision = revision;
            keep_selection(model);
            return ask_access(model, true);
        }
        Msg::Event(e) => on_event(model, e),
        Msg::VmChanged(vm) => {
            model.vms.insert(vm.name.clone(), vm);
            keep_selection(model);
        }
        Msg::VmGone(name) => {
            model.vms.remove(&name);
            keep_selection(model);
        }
        Msg::NodeChanged(node) => {
            model.nodes.insert(node.id, node);
            keep_selection(model);
        }
        Msg::NodeGone(id) => {
            model.nodes.remove(&id);
            keep_selection(model);
        }
        Msg::Status(s) => on_status(model, s),
        Msg::Link(link) => model.link = link,
        Msg::LogData { vm, data } => {
            if model.logs.vm.as_deref() == Some(vm.as_str()) {
                model.logs.push(&data);
            }
        }
        Msg::LogEnded { vm, reason } => {
            if model.logs.vm.as_deref() == Some(vm.as_str()) {
                model.logs.ended = Some(reason);
            }
        }
        Msg::Access(report) => model.access.take(report),
        Msg::Audit(record) => {
            model.audit_note = None;
            if model.audit.len() == MAX_AUDIT_ROWS {
                model.audit.pop_front();
            }
            model.audit.push_back(record);
        }
        Msg::AuditUnavailable(why) => model.audit_note = Some(why),
        Msg::ActionDone(result) => match result {
            Ok(text) => model.say(text, false),
            Err(text) => model.say(text, true),
        },
    }
    vec![]
}

/// Asks the daemon what the console may do, when the last answer is old
/// (or `now`: new lists to ask about).
fn ask_access(model: &mut Model, now: bool) -> Vec<Cmd> {
    let due =
        model.now_ms.saturating_sub(model.access.asked_at_ms) >= super::access::ACCESS_REFRESH_MS;
    if !(now || due) || model.now_ms == 0 {
        return vec![];
    }
    model.access.asked_at_ms = model.now_ms;
    vec![Cmd::CheckAccess(super::access::questions(model))]
}

/// Advances the clock and lets an old status line go.
fn on_tick(model: &mut Model, now_ms: u64) {
    model.now_ms = now_ms;
    if model
        .status_line
        .as_ref()
        .is_some_and(|(_, _, at)| now_ms.saturating_sub(*at) > STATUS_LINE_MS)
    {
        model.status_line = None;
    }
}

/// Remembers a watch event (the records it names arrive separately).
fn on_event(model: &mut Model, e: pb::Event) {
    model.revision = model.revision.max(e.revision);
    if model.events.len() == MAX_EVENTS {
        model.events.pop_front();
    }
    model.events.push_back(e);
}

/// Takes a fresh status, noting a change of leader or term.
fn on_status(model: &mut Model, s: pb::ClusterStatus) {
    let changed = model
        .status
        .as_ref()
        .is_none_or(|old| old.leader_id != s.leader_id || old.term != s.term);
    if changed && s.leader_id != 0 {
        if model.leader_history.len() == MAX_LEADER_HISTORY {
            model.leader_history.pop_front();
        }
        model
            .leader_history
            .push_back((model.now_ms, s.leader_id, s.term));
    }
    model.status = Some(s);
}

/// The wheel moves the selection; a left click selects the row under it.
fn on_mouse(model: &mut Model, m: MouseEvent) {
    match m.kind {
        MouseEventKind::ScrollDown => move_selection(model, WHEEL_ROWS),
        MouseEventKind::ScrollUp => move_selection(model, -WHEEL_ROWS),
        MouseEventKind::Down(MouseButton::Left) => click(model, m.column, m.row),
        _ => {}
    }
}

/// Keeps selections on existing items (by identity), or on the first row.
fn keep_selection(model: &mut Model) {
    // Cheap when the selection is still there (the common case on every
    // watch event); the sorted list is only built when it must move.
    let vm_ok = model
        .vm_selected
        .as_ref()
        .is_some_and(|s| model.vms.get(s).is_some_and(|vm| model.vm_visible(vm)));
    if !vm_ok {
        model.vm_selected = model.visible_vms().first().map(|v| v.name.clone());
    }
    let ids: Vec<u64> = model.visible_nodes().iter().map(|n| n.id).collect();
    if model.node_selected.is_none_or(|s| !ids.contains(&s)) {
        model.node_selected = ids.first().copied();
    }
    let members = member_ids(model);
    if model.member_selected.is_none_or(|s| !members.contains(&s)) {
        model.member_selected = members.first().copied();
    }
}

/// The Raft members' ids, in status order.
fn member_ids(model: &Model) -> Vec<u64> {
    model
        .status
        .as_ref()
        .map(|s| s.members.iter().map(|m| m.node_id).collect())
        .unwrap_or_default()
}

/// The item `delta` rows from `current` (or from the first), clamped.
fn step<T: Clone + PartialEq>(items: &[T], current: Option<&T>, delta: isize) -> Option<T> {
    if items.is_empty() {
        return None;
    }
    let pos = current
        .and_then(|c| items.iter().position(|i| i == c))
        .unwrap_or(0) as isize;
    let last = items.len() as isize - 1;
    let next = (pos + delta).clamp(0, last) as usize;
    items.get(next).cloned()
}

/// Moves the current view's selection (or scrolls it) by `delta` rows.
fn move_selection(model: &mut Model, delta: isize) {
    match model.view {
        View::Vms => {
            let names: Vec<String> = model.visible_vms().iter().map(|v| v.name.clone()).collect();
            model.vm_selected = step(&names, model.vm_selected.as_ref(), delta);
        }
        View::Nodes => {
            let ids: Vec<u64> = model.visible_nodes().iter().map(|n| n.id).collect();
            model.node_selected = step(&ids, model.node_selected.as_ref(), delta);
        }
        View::Raft => {
            let ids = member_ids(model);
            model.member_selected = step(&ids, model.member_selected.as_ref(), delta);
        }
        View::Logs => {
            let max = model.logs.lines.len();
            let scroll = model.logs.scroll as isize - delta;
            model.logs.scroll = scroll.clamp(0, max as isize) as usize;
            model.logs.follow = model.logs.scroll == 0;
        }
        View::Events => {
            let max = model.visible_events().len();
            let scroll = model.events_scroll as isize - delta;
            model.events_scroll = scroll.clamp(0, max as isize) as usize;
        }
        View::Audit => {
            let max = model.visible_audit().len();
            let scroll = model.audit_scroll as isize - delta;
            model.audit_scroll = scroll.clamp(0, max as isize) as usize;
        }
        View::Overview | View::Console => {}
    }
}

/// Selects the table row under a click (VM and node tables).
fn click(model: &mut Model, column: u16, row: u16) {
    let screen = layout::screen(Rect::new(0, 0, model.size.0, model.size.1));
    match model.view {
        View::Vms => {
            let list = layout::vm_areas(screen.body).list;
            let names: Vec<String> = model.visible_vms().iter().map(|v| v.name.clone()).collect();
            let selected = model
                .vm_selected
                .as_ref()
                .and_then(|s| names.iter().position(|n| n == s));
            let first = layout::vm_first_row(selected, list);
            if let Some(name) =
                layout::table_row_at(list, first, column, row).and_then(|i| names.get(i))
            {
                model.vm_selected = Some(name.clone());
            }
        }
        View::Nodes => {
            if let Some(node) = layout::table_row_at(screen.body, 0, column, row)
                .and_then(|i| model.visible_nodes().get(i).map(|n| n.id))
            {
                model.node_selected = Some(node);
            }
        }
        _ => {}
    }
}

/// Switches to `view`, remembering the current one for Esc.
fn go(model: &mut Model, view: View) {
    if model.view != view {
        model.previous.push(model.view);
        if model.previous.len() > MAX_VIEW_HISTORY {
            model.previous.remove(0);
        }
        model.view = view;
    }
    keep_selection(model);
}

/// Returns to the previous view (dropping a node filter on the VM view, and
/// closing the log stream when leaving the logs).
fn back(model: &mut Model) -> Vec<Cmd> {
    if model.view == View::Vms && model.vm_node_filter.is_some() {
        model.vm_node_filter = None;
    }
    match model.previous.pop() {
        Some(v) => {
            let leaving_logs = model.view == View::Logs;
            model.view = v;
            keep_selection(model);
            if leaving_logs {
                return vec![Cmd::CloseLogs];
            }
            vec![]
        }
        None => vec![],
    }
}

/// Opens VM `name`'s logs on a fresh pane.
fn open_logs(model: &mut Model, name: String) -> Vec<Cmd> {
    model.logs = LogPane {
        vm: Some(name.clone()),
        follow: true,
        ..Default::default()
    };
    go(model, View::Logs);
    vec![Cmd::OpenLogs(name)]
}

/// Switches to `view`; for the logs view, opens the selected VM's logs
/// when there is one.
fn show(model: &mut Model, view: View) -> Vec<Cmd> {
    if view == View::Logs {
        if let Some(name) = model.vm_selected.clone() {
            return open_logs(model, name);
        }
    }
    go(model, view);
    vec![]
}

/// Scrolls the logs to the previous line containing the search term.
fn jump_to_match(model: &mut Model) {
    let term = model.logs.search.clone();
    if term.is_empty() {
        return;
    }
    let lines = &model.logs.lines;
    let from_bottom = model.logs.scroll;
    let found =
        ((from_bottom + 1)..=lines.len()).find(|back| lines[lines.len() - back].contains(&term));
    match found {
        Some(back) => {
            model.logs.scroll = back;
            model.logs.follow = false;
        }
        None => model.say(format!("{term:?} not found above"), true),
    }
}
