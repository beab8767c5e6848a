//! The console's update function: applies one message to the model and
//! says what the outside world should do. Pure: no I/O, no clock.

use super::model::*;
use super::msg::{Action, Cmd, Link, Msg};
use blixard_shared::proto::v1 as pb;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEventKind};
use ratatui::layout::{Position, Rect};

/// Applies `msg` to `model`.
pub fn update(model: &mut Model, msg: Msg) -> Vec<Cmd> {
    match msg {
        Msg::Tick { now_ms } => {
            model.now_ms = now_ms;
            if model
                .status_line
                .as_ref()
                .is_some_and(|(_, _, at)| now_ms.saturating_sub(*at) > STATUS_LINE_MS)
            {
                model.status_line = None;
            }
            vec![]
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
            vec![]
        }
        Msg::Event(e) => {
            model.revision = model.revision.max(e.revision);
            if model.events.len() == MAX_EVENTS {
                model.events.pop_front();
            }
            model.events.push_back(e);
            vec![]
        }
        Msg::VmChanged(vm) => {
            model.vms.insert(vm.name.clone(), vm);
            keep_selection(model);
            vec![]
        }
        Msg::VmGone(name) => {
            model.vms.remove(&name);
            keep_selection(model);
            vec![]
        }
        Msg::NodeChanged(node) => {
            model.nodes.insert(node.id, node);
            keep_selection(model);
            vec![]
        }
        Msg::NodeGone(id) => {
            model.nodes.remove(&id);
            keep_selection(model);
            vec![]
        }
        Msg::Status(s) => {
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
            vec![]
        }
        Msg::Link(link) => {
            model.link = link;
            vec![]
        }
        Msg::LogData { vm, data } => {
            if model.logs.vm.as_deref() == Some(vm.as_str()) {
                model.logs.push(&data);
            }
            vec![]
        }
        Msg::LogEnded { vm, reason } => {
            if model.logs.vm.as_deref() == Some(vm.as_str()) {
                model.logs.ended = Some(reason);
            }
            vec![]
        }
        Msg::ActionDone(result) => {
            match result {
                Ok(text) => model.say(text, false),
                Err(text) => model.say(text, true),
            }
            vec![]
        }
        Msg::Resize { width, height } => {
            model.size = (width, height);
            vec![]
        }
        Msg::Mouse(m) => {
            match m.kind {
                MouseEventKind::ScrollDown => move_selection(model, 3),
                MouseEventKind::ScrollUp => move_selection(model, -3),
                MouseEventKind::Down(MouseButton::Left) => click(model, m.column, m.row),
                _ => {}
            }
            vec![]
        }
        Msg::Key(key) => on_key(model, key),
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
    let members: Vec<u64> = model
        .status
        .as_ref()
        .map(|s| s.members.iter().map(|m| m.node_id).collect())
        .unwrap_or_default();
    if model.member_selected.is_none_or(|s| !members.contains(&s)) {
        model.member_selected = members.first().copied();
    }
}

fn step<T: Clone + PartialEq>(items: &[T], current: Option<&T>, delta: isize) -> Option<T> {
    if items.is_empty() {
        return None;
    }
    let pos = current
        .and_then(|c| items.iter().position(|i| i == c))
        .unwrap_or(0) as isize;
    let last = items.len() as isize - 1;
    let next = (pos + delta).clamp(0, last) as usize;
    Some(items[next].clone())
}

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
            let ids: Vec<u64> = model
                .status
                .as_ref()
                .map(|s| s.members.iter().map(|m| m.node_id).collect())
                .unwrap_or_default();
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
        View::Overview | View::Console => {}
    }
}

/// Selects the table row under a click (VM and node tables).
fn click(model: &mut Model, column: u16, row: u16) {
    let [_, body, _, _] = super::view::screen_areas(Rect::new(0, 0, model.size.0, model.size.1));
    let (list, first) = match model.view {
        View::Vms => {
            let [list, _] = super::view::vm_areas(body);
            let names: Vec<String> = model.visible_vms().iter().map(|v| v.name.clone()).collect();
            let selected = model
                .vm_selected
                .as_ref()
                .and_then(|s| names.iter().position(|n| n == s));
            (list, super::view::vm_first_row(selected, list))
        }
        View::Nodes => (body, 0),
        _ => return,
    };
    // Rows start under the top border and the header row.
    let inside = list.contains(Position::new(column, row))
        && row >= list.y + 2
        && row + 1 < list.y + list.height;
    if !inside {
        return;
    }
    let index = first + usize::from(row - list.y - 2);
    match model.view {
        View::Vms => {
            if let Some(vm) = model.visible_vms().get(index) {
                model.vm_selected = Some(vm.name.clone());
            }
        }
        View::Nodes => {
            if let Some(node) = model.visible_nodes().get(index) {
                model.node_selected = Some(node.id);
            }
        }
        _ => {}
    }
}

fn go(model: &mut Model, view: View) {
    if model.view != view {
        model.previous.push(model.view);
        if model.previous.len() > 32 {
            model.previous.remove(0);
        }
        model.view = view;
    }
    keep_selection(model);
}

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

fn open_logs(model: &mut Model, name: String) -> Vec<Cmd> {
    model.logs = LogPane {
        vm: Some(name.clone()),
        follow: true,
        ..Default::default()
    };
    go(model, View::Logs);
    vec![Cmd::OpenLogs(name)]
}

/// Asks for confirmation when needed, else runs.
fn request(model: &mut Model, action: Action) -> Vec<Cmd> {
    if model.read_only {
        model.say("read-only console: actions are disabled", true);
        return vec![];
    }
    if action.destructive() {
        model.input = Input::Confirm(action);
        vec![]
    } else {
        model.say(format!("{} ...", action.describe()), false);
        vec![Cmd::Run(action)]
    }
}

fn on_key(model: &mut Model, key: KeyEvent) -> Vec<Cmd> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        model.quit = true;
        return vec![Cmd::Quit];
    }
    match std::mem::take(&mut model.input) {
        Input::Normal => normal_key(model, key),
        Input::Command(text) => {
            line_key(model, key, text, Input::Command, |m, t| run_command(m, &t))
        }
        Input::Filter(text) => {
            let cmds = line_key(model, key, text, Input::Filter, |_, _| vec![]);
            // Filters apply as you type.
            let live = match &model.input {
                Input::Filter(t) => t.clone(),
                _ => current_filter(model).to_string(),
            };
            if key.code == KeyCode::Esc {
                set_filter(model, String::new());
            } else {
                set_filter(model, live);
            }
            keep_selection(model);
            cmds
        }
        Input::Search(text) => line_key(model, key, text, Input::Search, |m, t| {
            m.logs.search = t;
            vec![]
        }),
        Input::Confirm(action) => match key.code {
            KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => {
                model.say(format!("{} ...", action.describe()), false);
                vec![Cmd::Run(action)]
            }
            _ => {
                model.say("cancelled", false);
                vec![]
            }
        },
        Input::Form(form) => form_key(model, key, form),
    }
}

fn current_filter(model: &Model) -> &str {
    match model.view {
        View::Nodes => &model.node_filter,
        View::Events => &model.events_filter,
        _ => &model.vm_filter,
    }
}

fn set_filter(model: &mut Model, text: String) {
    match model.view {
        View::Nodes => model.node_filter = text,
        View::Events => model.events_filter = text,
        _ => model.vm_filter = text,
    }
}

/// Edits a one-line input; Enter runs `done`, Esc cancels.
fn line_key(
    model: &mut Model,
    key: KeyEvent,
    mut text: String,
    wrap: fn(String) -> Input,
    done: impl FnOnce(&mut Model, String) -> Vec<Cmd>,
) -> Vec<Cmd> {
    match key.code {
        KeyCode::Enter => return done(model, text),
        KeyCode::Esc => return vec![],
        KeyCode::Backspace => {
            text.pop();
        }
        KeyCode::Tab => {
            if let Input::Command(_) = wrap(String::new()) {
                if let Some(done) = complete(model, &text) {
                    text = done;
                }
            }
        }
        KeyCode::Char(c) if text.len() < 256 => text.push(c),
        _ => {}
    }
    model.input = wrap(text);
    vec![]
}

/// Words the command bar knows.
const COMMANDS: &[&str] = &[
    "overview",
    "nodes",
    "vms",
    "logs",
    "events",
    "raft",
    "console",
    "vm create",
    "vm start",
    "vm stop",
    "vm restart",
    "vm delete",
    "node cordon",
    "node uncordon",
    "transfer",
    "help",
    "quit",
];

/// Completes a partial command: a command word, or a VM name / node id as
/// its argument.
pub fn complete(model: &Model, text: &str) -> Option<String> {
    let candidates: Vec<String> = if let Some((head, arg)) = text.rsplit_once(' ') {
        let pool: Vec<String> = match head {
            "logs" | "vm start" | "vm stop" | "vm restart" | "vm delete" => {
                model.vms.keys().cloned().collect()
            }
            "node cordon" | "node uncordon" | "transfer" => {
                model.nodes.keys().map(|i| i.to_string()).collect()
            }
            _ => COMMANDS
                .iter()
                .filter_map(|c| c.strip_prefix(&format!("{head} ")).map(str::to_string))
                .collect(),
        };
        pool.into_iter()
            .filter(|p| p.starts_with(arg))
            .map(|p| format!("{head} {p}"))
            .collect()
    } else {
        COMMANDS
            .iter()
            .map(|c| c.split(' ').next().unwrap_or(c).to_string())
            .filter(|c| c.starts_with(text))
            .collect()
    };
    let first = candidates.first()?;
    // The longest common prefix of all candidates.
    let mut prefix = first.clone();
    for c in &candidates[1..] {
        while !c.starts_with(&prefix) {
            prefix.pop();
        }
    }
    (prefix.len() > text.len()).then_some(prefix)
}

/// Runs a `:` command.
pub fn run_command(model: &mut Model, text: &str) -> Vec<Cmd> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let view = |v: &str| View::ALL.into_iter().find(|x: &View| x.name() == v);
    match words.as_slice() {
        [] => vec![],
        ["q"] | ["quit"] => {
            model.quit = true;
            vec![Cmd::Quit]
        }
        ["help"] => {
            model.show_help = true;
            vec![]
        }
        ["logs", name] => {
            if model.vms.contains_key(*name) {
                open_logs(model, name.to_string())
            } else {
                model.say(format!("no vm named {name:?}"), true);
                vec![]
            }
        }
        [v] if view(v).is_some() => {
            if let Some(v) = view(v) {
                if v == View::Logs {
                    if let Some(name) = model.vm_selected.clone() {
                        return open_logs(model, name);
                    }
                }
                if v == View::Vms {
                    model.vm_node_filter = None;
                }
                go(model, v);
            }
            vec![]
        }
        ["vm", "create", name, rest @ ..] => {
            let vcpus = rest.first().map_or(Ok(1), |v| v.parse::<u32>());
            let mem = rest.get(1).map_or(Ok(128), |v| v.parse::<u64>());
            let image = rest.get(2).map_or("", |v| v).to_string();
            match (vcpus, mem) {
                (Ok(vcpus), Ok(memory_mib)) => {
                    let action = Action::CreateVm {
                        name: name.to_string(),
                        vcpus,
                        memory_mib,
                        image,
                    };
                    match validate_create(&action) {
                        Ok(()) => request(model, action),
                        Err(e) => {
                            model.say(e, true);
                            vec![]
                        }
                    }
                }
                _ => {
                    model.say("usage: vm create NAME [VCPUS] [MEMORY_MIB] [IMAGE]", true);
                    vec![]
                }
            }
        }
        ["vm", "create"] => {
            if model.read_only {
                model.say("read-only console: actions are disabled", true);
            } else {
                model.input = Input::Form(CreateForm::default());
            }
            vec![]
        }
        ["vm", verb, name] => {
            if !model.vms.contains_key(*name) {
                model.say(format!("no vm named {name:?}"), true);
                return vec![];
            }
            let name = name.to_string();
            let action = match *verb {
                "start" => Action::StartVm(name),
                "stop" => Action::StopVm(name),
                "restart" => Action::RestartVm(name),
                "delete" => Action::DeleteVm { name, force: false },
                other => {
                    model.say(
                        format!("unknown vm command {other:?}: use start, stop, restart or delete"),
                        true,
                    );
                    return vec![];
                }
            };
            request(model, action)
        }
        ["node", verb, id] => match id.parse::<u64>() {
            Ok(id) if model.nodes.contains_key(&id) => match *verb {
                "cordon" => request(model, Action::Cordon(id)),
                "uncordon" => request(model, Action::Uncordon(id)),
                other => {
                    model.say(
                        format!("unknown node command {other:?}: use cordon or uncordon"),
                        true,
                    );
                    vec![]
                }
            },
            _ => {
                model.say(format!("no node {id}"), true);
                vec![]
            }
        },
        ["transfer"] => request(model, Action::TransferLeader(None)),
        ["transfer", id] => match id.parse::<u64>() {
            Ok(id) => request(model, Action::TransferLeader(Some(id))),
            Err(_) => {
                model.say("usage: transfer [NODE_ID]", true);
                vec![]
            }
        },
        _ => {
            model.say(
                format!("unknown command {text:?} (? lists the keys, Tab completes)"),
                true,
            );
            vec![]
        }
    }
}

fn validate_create(action: &Action) -> Result<(), String> {
    let Action::CreateVm {
        name,
        vcpus,
        memory_mib,
        image,
    } = action
    else {
        return Ok(());
    };
    let req = pb::CreateVmRequest {
        name: name.clone(),
        spec: Some(pb::VmSpec {
            vcpus: *vcpus,
            memory_mib: *memory_mib,
            image: if image == "default" {
                String::new()
            } else {
                image.clone()
            },
            ..Default::default()
        }),
        stopped: false,
    };
    blixard_shared::validate::create_vm(&req).map_err(|e| e.to_string())
}

fn form_key(model: &mut Model, key: KeyEvent, mut form: CreateForm) -> Vec<Cmd> {
    match key.code {
        KeyCode::Esc => return vec![],
        KeyCode::Tab | KeyCode::Down => form.focus = (form.focus + 1) % form.fields.len(),
        KeyCode::BackTab | KeyCode::Up => {
            form.focus = (form.focus + form.fields.len() - 1) % form.fields.len()
        }
        KeyCode::Backspace => {
            form.fields[form.focus].pop();
        }
        KeyCode::Char(c) if form.fields[form.focus].len() < 64 => form.fields[form.focus].push(c),
        KeyCode::Enter => {
            let vcpus = form.fields[1].trim().parse::<u32>();
            let mem = form.fields[2].trim().parse::<u64>();
            let (Ok(vcpus), Ok(memory_mib)) = (vcpus, mem) else {
                form.error = Some("vCPUs and memory must be whole numbers".into());
                model.input = Input::Form(form);
                return vec![];
            };
            let image = form.fields[3].trim();
            let action = Action::CreateVm {
                name: form.fields[0].trim().to_string(),
                vcpus,
                memory_mib,
                image: if image == "default" {
                    String::new()
                } else {
                    image.to_string()
                },
            };
            if let Err(e) = validate_create(&action) {
                form.error = Some(e);
                model.input = Input::Form(form);
                return vec![];
            }
            return request(model, action);
        }
        _ => {}
    }
    model.input = Input::Form(form);
    vec![]
}

fn normal_key(model: &mut Model, key: KeyEvent) -> Vec<Cmd> {
    if model.show_help {
        model.show_help = false;
        return vec![];
    }
    match key.code {
        KeyCode::Char('q') => {
            model.quit = true;
            return vec![Cmd::Quit];
        }
        KeyCode::Char(':') => model.input = Input::Command(String::new()),
        KeyCode::Char('?') => model.show_help = true,
        KeyCode::Esc => return back(model),
        KeyCode::Char('/') => {
            model.input = if model.view == View::Logs {
                Input::Search(model.logs.search.clone())
            } else {
                Input::Filter(current_filter(model).to_string())
            }
        }
        KeyCode::Char(c @ '0'..='6') => {
            let v = View::ALL[(c as u8 - b'0') as usize];
            if v == View::Logs {
                if let Some(name) = model.vm_selected.clone() {
                    return open_logs(model, name);
                }
            }
            go(model, v);
        }
        KeyCode::Down | KeyCode::Char('j') => move_selection(model, 1),
        KeyCode::Up | KeyCode::Char('k') => move_selection(model, -1),
        KeyCode::PageDown => move_selection(model, 20),
        KeyCode::PageUp => move_selection(model, -20),
        KeyCode::Home | KeyCode::Char('g') => move_selection(model, -1_000_000),
        KeyCode::End | KeyCode::Char('G') => move_selection(model, 1_000_000),
        _ => return view_key(model, key),
    }
    vec![]
}

/// Keys that mean something on one view only.
fn view_key(model: &mut Model, key: KeyEvent) -> Vec<Cmd> {
    let KeyCode::Char(c) = key.code else {
        if key.code == KeyCode::Enter {
            return enter(model);
        }
        return vec![];
    };
    match (model.view, c) {
        (View::Vms, 'c') => {
            if model.read_only {
                model.say("read-only console: actions are disabled", true);
            } else {
                model.input = Input::Form(CreateForm::default());
            }
            vec![]
        }
        (View::Vms, 'o') => {
            model.vm_sort = model.vm_sort.next();
            vec![]
        }
        (View::Vms, 'O') => {
            model.vm_sort_desc = !model.vm_sort_desc;
            vec![]
        }
        (View::Vms, 'l') => match model.vm_selected.clone() {
            Some(name) => open_logs(model, name),
            None => vec![],
        },
        (View::Vms, verb @ ('u' | 'x' | 'r' | 'd' | 'D')) => {
            let Some(name) = model.vm_selected.clone() else {
                return vec![];
            };
            let action = match verb {
                'u' => Action::StartVm(name),
                'x' => Action::StopVm(name),
                'r' => Action::RestartVm(name),
                'd' => Action::DeleteVm { name, force: false },
                _ => Action::DeleteVm { name, force: true },
            };
            request(model, action)
        }
        (View::Nodes, verb @ ('c' | 'u')) => {
            let Some(id) = model.node_selected else {
                return vec![];
            };
            request(
                model,
                if verb == 'c' {
                    Action::Cordon(id)
                } else {
                    Action::Uncordon(id)
                },
            )
        }
        (View::Raft, 't') => {
            let target = model
                .member_selected
                .filter(|m| Some(*m) != model.leader_id());
            request(model, Action::TransferLeader(target))
        }
        (View::Logs, 'f') => {
            model.logs.follow = !model.logs.follow;
            if model.logs.follow {
                model.logs.scroll = 0;
            }
            vec![]
        }
        (View::Logs, 'n') => {
            jump_to_match(model);
            vec![]
        }
        _ => vec![],
    }
}

fn enter(model: &mut Model) -> Vec<Cmd> {
    match model.view {
        View::Nodes => {
            if let Some(id) = model.node_selected {
                model.vm_node_filter = Some(id);
                go(model, View::Vms);
            }
            vec![]
        }
        View::Vms => match model.vm_selected.clone() {
            Some(name) => open_logs(model, name),
            None => vec![],
        },
        _ => vec![],
    }
}

/// Scrolls the logs to the previous line containing the search term.
fn jump_to_match(model: &mut Model) {
    let term = model.logs.search.clone();
    if term.is_empty() {
        return;
    }
    let n = model.logs.lines.len();
    let from_bottom = model.logs.scroll;
    for back in (from_bottom + 1)..=n {
        if model.logs.lines[n - back].contains(&term) {
            model.logs.scroll = back;
            model.logs.follow = false;
            return;
        }
    }
    model.say(format!("{term:?} not found above"), true);
}

/// The link word for the header.
pub fn link_word(link: &Link) -> &'static str {
    match link {
        Link::Connecting { .. } => "connecting",
        Link::Live { .. } => "live",
        Link::Reconnecting { .. } => "reconnecting",
    }
}
