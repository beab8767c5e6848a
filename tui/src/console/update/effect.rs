//! What a key or a `:` command asks for once its target is known, and the
//! one place that applies it. Read-only mode is enforced here, from the
//! `changes_cluster` flag of the key or command table entry that asked.

use super::super::model::{CreateForm, Input, Model, View};
use super::super::msg::{Action, Cmd};
use super::{back, go, jump_to_match, move_selection, open_logs, show};

/// Status line shown when read-only mode refuses something.
const READ_ONLY: &str = "read-only console: actions are disabled";

/// A request with its target resolved (the selected VM, the node named).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Effect {
    /// Leave the console.
    Quit,
    /// Open the `:` command bar.
    CommandBar,
    /// Show the help.
    Help,
    /// Go back to the previous view.
    Back,
    /// Edit the current list's filter.
    Filter,
    /// Edit the logs' search.
    Search,
    /// Switch to a view (for the logs view: the selected VM's logs).
    Show(View),
    /// Show every VM (dropping a node filter).
    AllVms,
    /// Move the selection by this many rows.
    Move(isize),
    /// Open this VM's logs.
    Logs(String),
    /// List this node's VMs.
    NodeVms(u64),
    /// Sort the VM table by its next column.
    NextSort,
    /// Reverse the VM table's sort.
    ReverseSort,
    /// Open the create form.
    CreateForm,
    /// Run an action on the cluster (after confirmation if destructive).
    Run(Action),
    /// Toggle following the logs.
    Follow,
    /// Jump to the previous search match.
    NextMatch,
}

/// Applies `effect`, unless read-only mode refuses it because the entry
/// that asked for it changes the cluster.
pub(super) fn apply(model: &mut Model, effect: Effect, changes_cluster: bool) -> Vec<Cmd> {
    if changes_cluster && model.read_only {
        model.say(READ_ONLY, true);
        return vec![];
    }
    match effect {
        Effect::Quit => {
            model.quit = true;
            return vec![Cmd::Quit];
        }
        Effect::CommandBar => model.input = Input::Command(String::new()),
        Effect::Help => model.show_help = true,
        Effect::Back => return back(model),
        Effect::Filter => model.input = Input::Filter(super::input::current_filter(model).into()),
        Effect::Search => model.input = Input::Search(model.logs.search.clone()),
        Effect::Show(view) => return show(model, view),
        Effect::AllVms => {
            model.vm_node_filter = None;
            go(model, View::Vms);
        }
        Effect::Move(delta) => move_selection(model, delta),
        Effect::Logs(name) => return open_logs(model, name),
        Effect::NodeVms(id) => {
            model.vm_node_filter = Some(id);
            go(model, View::Vms);
        }
        Effect::NextSort => model.vm_sort = model.vm_sort.next(),
        Effect::ReverseSort => model.vm_sort_desc = !model.vm_sort_desc,
        Effect::CreateForm => model.input = Input::Form(CreateForm::default()),
        Effect::Run(action) => return request(model, action),
        Effect::Follow => {
            model.logs.follow = !model.logs.follow;
            if model.logs.follow {
                model.logs.scroll = 0;
            }
        }
        Effect::NextMatch => jump_to_match(model),
    }
    vec![]
}

/// Asks for confirmation when `action` is destructive, else runs it.
pub(super) fn request(model: &mut Model, action: Action) -> Vec<Cmd> {
    // Every action changes the cluster: a last guard should a table entry
    // ever be marked wrongly.
    if model.read_only {
        model.say(READ_ONLY, true);
        return vec![];
    }
    let key = action.access_key();
    if model.access.denies(&key) {
        let who = model.access.principal.as_deref().unwrap_or("this token");
        model.say(
            format!(
                "{who} may not {}: the cluster's policies do not allow {} (ask an admin)",
                action.describe(),
                key.action
            ),
            true,
        );
        return vec![];
    }
    if action.destructive() {
        model.input = Input::Confirm(action);
        vec![]
    } else {
        run(model, action)
    }
}

/// Runs `action` now, saying so on the status line.
pub(super) fn run(model: &mut Model, action: Action) -> Vec<Cmd> {
    model.say(format!("{} ...", action.describe()), false);
    vec![Cmd::Run(action)]
}
