//! The keyboard: shortcuts through the key table in normal mode, and the
//! input line (`:` command, `/` filter or search), the confirmation dialog
//! and the create form in their modes.

use super::super::keys::{self, KeyAction};
use super::super::model::*;
use super::super::msg::{Action, Cmd};
use super::command::{complete, run_command, validate_create};
use super::effect::{self, apply, request, Effect};
use super::keep_selection;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Handles a key in whatever mode the keyboard is in.
pub(super) fn on_key(model: &mut Model, key: KeyEvent) -> Vec<Cmd> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        model.quit = true;
        return vec![Cmd::Quit];
    }
    match std::mem::take(&mut model.input) {
        Input::Normal => normal_key(model, key),
        Input::Command(text) => {
            line_key(model, key, text, Input::Command, |m, t| run_command(m, &t))
        }
        Input::Filter(text) => filter_key(model, key, text),
        Input::Search(text) => line_key(model, key, text, Input::Search, |m, t| {
            m.logs.search = t;
            vec![]
        }),
        Input::Confirm(action) => confirm_key(model, key, action),
        Input::Form(form) => form_key(model, key, form),
    }
}

/// A shortcut: any key closes the help; otherwise the key table says what
/// the key does on this view.
fn normal_key(model: &mut Model, key: KeyEvent) -> Vec<Cmd> {
    if model.show_help {
        model.show_help = false;
        return vec![];
    }
    let Some((binding, action)) = keys::lookup(model.view, key.code) else {
        return vec![];
    };
    match key_effect(model, action) {
        Some(effect) => apply(model, effect, binding.changes_cluster),
        None => vec![],
    }
}

/// What `action` means on the model as it is; `None` when it needs a
/// selection and there is none (then the key does nothing).
fn key_effect(model: &Model, action: KeyAction) -> Option<Effect> {
    Some(match action {
        KeyAction::Quit => Effect::Quit,
        KeyAction::CommandBar => Effect::CommandBar,
        KeyAction::Help => Effect::Help,
        KeyAction::Back => Effect::Back,
        KeyAction::Filter => Effect::Filter,
        KeyAction::Search => Effect::Search,
        KeyAction::Go(view) => Effect::Show(view),
        KeyAction::Move(delta) => Effect::Move(delta),
        KeyAction::SelectedLogs => Effect::Logs(model.vm_selected.clone()?),
        KeyAction::NodeVms => Effect::NodeVms(model.node_selected?),
        KeyAction::NextSort => Effect::NextSort,
        KeyAction::ReverseSort => Effect::ReverseSort,
        KeyAction::CreateForm => Effect::CreateForm,
        KeyAction::Vm(verb) => Effect::Run(verb.action(model.vm_selected.clone()?)),
        KeyAction::Node(verb) => Effect::Run(verb.action(model.node_selected?)),
        KeyAction::TransferLeader => {
            let target = model
                .member_selected
                .filter(|m| Some(*m) != model.leader_id());
            Effect::Run(Action::TransferLeader(target))
        }
        KeyAction::Follow => Effect::Follow,
        KeyAction::NextMatch => Effect::NextMatch,
    })
}

/// The confirmation dialog: y, Y or Enter runs the action, any other key
/// cancels it.
fn confirm_key(model: &mut Model, key: KeyEvent, action: Action) -> Vec<Cmd> {
    match key.code {
        KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => effect::run(model, action),
        _ => {
            model.say("cancelled", false);
            vec![]
        }
    }
}

/// Edits the `/` filter, which applies as it is typed (Esc clears it).
fn filter_key(model: &mut Model, key: KeyEvent, text: String) -> Vec<Cmd> {
    let cmds = line_key(model, key, text, Input::Filter, |_, _| vec![]);
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

/// The filter of the list on screen.
pub(super) fn current_filter(model: &Model) -> &str {
    match model.view {
        View::Nodes => &model.node_filter,
        View::Events => &model.events_filter,
        View::Audit => &model.audit_filter,
        _ => &model.vm_filter,
    }
}

/// Sets the filter of the list on screen.
fn set_filter(model: &mut Model, text: String) {
    match model.view {
        View::Nodes => model.node_filter = text,
        View::Events => model.events_filter = text,
        View::Audit => model.audit_filter = text,
        _ => model.vm_filter = text,
    }
}

/// Edits a one-line input; Enter runs `done`, Esc cancels, Tab completes a
/// command.
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
        KeyCode::Char(c) if text.len() < MAX_INPUT_LEN => text.push(c),
        _ => {}
    }
    model.input = wrap(text);
    vec![]
}

/// The create form: Tab and arrows move between fields, Enter validates
/// and creates, Esc cancels.
fn form_key(model: &mut Model, key: KeyEvent, mut form: CreateForm) -> Vec<Cmd> {
    let fields = form.fields.len();
    match key.code {
        KeyCode::Esc => return vec![],
        KeyCode::Tab | KeyCode::Down => form.focus = (form.focus + 1) % fields,
        KeyCode::BackTab | KeyCode::Up => form.focus = (form.focus + fields - 1) % fields,
        KeyCode::Backspace => {
            form.fields[form.focus].pop();
        }
        KeyCode::Char(c) if form.fields[form.focus].len() < MAX_FORM_FIELD_LEN => {
            form.fields[form.focus].push(c)
        }
        KeyCode::Enter => match form_action(&form) {
            Ok(action) => return request(model, action),
            Err(e) => form.error = Some(e),
        },
        _ => {}
    }
    model.input = Input::Form(form);
    vec![]
}

/// The create action the form's fields describe, or why they do not.
fn form_action(form: &CreateForm) -> Result<Action, String> {
    let vcpus = form.fields[CreateForm::VCPUS].trim().parse::<u32>();
    let mem = form.fields[CreateForm::MEMORY_MIB].trim().parse::<u64>();
    let (Ok(vcpus), Ok(memory_mib)) = (vcpus, mem) else {
        return Err("vCPUs and memory must be whole numbers".into());
    };
    let image = form.fields[CreateForm::IMAGE].trim();
    let action = Action::CreateVm {
        name: form.fields[CreateForm::NAME].trim().to_string(),
        vcpus,
        memory_mib,
        image: if image == DEFAULT_IMAGE {
            String::new()
        } else {
            image.to_string()
        },
    };
    validate_create(&action)?;
    Ok(action)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::keys::{COMMANDS, KEYS};
    use crate::console::msg::Msg;
    use crate::console::update::update;
    use blixard_shared::proto::v1 as pb;

    fn model(read_only: bool) -> Model {
        let mut m = Model::new("127.0.0.1:7001", read_only);
        let vm = pb::Vm {
            name: "web-1".into(),
            node_id: 1,
            state: pb::VmState::Running as i32,
            ..Default::default()
        };
        let node = pb::Node {
            id: 1,
            ..Default::default()
        };
        update(
            &mut m,
            Msg::Loaded {
                nodes: vec![node],
                vms: vec![vm],
                revision: 1,
            },
        );
        update(
            &mut m,
            Msg::Status(pb::ClusterStatus {
                leader_id: 1,
                members: vec![
                    pb::Member {
                        node_id: 1,
                        ..Default::default()
                    },
                    pb::Member {
                        node_id: 2,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
        );
        m
    }

    /// Whether anything reached for the cluster: a command to run, or a
    /// dialog or form that leads to one.
    fn reached(m: &Model, cmds: &[Cmd]) -> bool {
        cmds.iter().any(|c| matches!(c, Cmd::Run(_)))
            || matches!(m.input, Input::Confirm(_) | Input::Form(_))
    }

    #[test]
    fn read_only_refuses_every_key_and_command_that_changes_the_cluster() {
        for view in View::ALL {
            for binding in KEYS {
                for (code, _) in binding.keys {
                    let mut m = model(true);
                    m.view = view;
                    keep_selection(&mut m);
                    let cmds = on_key(&mut m, KeyEvent::from(*code));
                    assert!(!reached(&m, &cmds), "{code:?} on {view:?}");
                }
            }
        }
        for command in COMMANDS {
            for arg in ["", " web-1", " 1", " web-1 1 128"] {
                let mut m = model(true);
                let cmds = run_command(&mut m, &format!("{}{arg}", command.word));
                assert!(!reached(&m, &cmds), "{}{arg}", command.word);
            }
        }
    }

    #[test]
    fn the_same_keys_act_when_not_read_only() {
        let mut m = model(false);
        m.view = View::Raft;
        keep_selection(&mut m);
        assert_eq!(m.member_selected, Some(1));
        let cmds = on_key(&mut m, KeyEvent::from(KeyCode::Char('t')));
        assert!(reached(&m, &cmds), "transfer asks for confirmation");
        let mut m = model(false);
        m.view = View::Nodes;
        let cmds = on_key(&mut m, KeyEvent::from(KeyCode::Char('u')));
        assert_eq!(cmds, vec![Cmd::Run(Action::Uncordon(1))]);
    }

    #[test]
    fn what_the_policies_deny_is_refused_and_greyed_and_the_rest_acts() {
        use crate::console::access::{greyed, AccessReport};
        let mut m = model(false);
        let cmds = update(&mut m, Msg::Tick { now_ms: 10_000 });
        let Some(Cmd::CheckAccess(keys)) = cmds.first() else {
            panic!("the console asks what it may do: {cmds:?}");
        };
        let answers = keys
            .iter()
            .map(|k| (k.clone(), k.action != "vm.stop"))
            .collect();
        update(
            &mut m,
            Msg::Access(AccessReport {
                principal: "token:ops".into(),
                role: "operator".into(),
                labels: vec![],
                answers,
            }),
        );
        m.view = View::Vms;
        keep_selection(&mut m);
        let stop = KEYS
            .iter()
            .find(|b| b.help == "stop")
            .expect("the stop key");
        assert!(greyed(&m, stop), "stop is greyed out");
        let start = KEYS
            .iter()
            .find(|b| b.help == "start")
            .expect("the start key");
        assert!(!greyed(&m, start));
        let cmds = on_key(&mut m, KeyEvent::from(KeyCode::Char('x')));
        assert!(!reached(&m, &cmds), "the denied stop is not sent");
        let said = m
            .status_line
            .clone()
            .map(|(text, _, _)| text)
            .unwrap_or_default();
        assert!(said.contains("token:ops may not stop vm web-1"), "{said}");
        let cmds = on_key(&mut m, KeyEvent::from(KeyCode::Char('r')));
        assert!(reached(&m, &cmds), "restart is allowed");
    }
}
