//! The `:` command bar: running a command through the command table, and
//! Tab completion of command words, VM names and node ids.

use super::super::keys::{self, Arg, CommandAction, CommandWord, COMMANDS};
use super::super::model::*;
use super::super::msg::{Action, Cmd};
use super::effect::{apply, Effect};
use blixard_shared::proto::v1 as pb;

/// Why a command does nothing.
enum Refusal {
    /// This, on the status line.
    Say(String),
    /// No such command (or not with these arguments).
    Unknown,
}

/// Runs a `:` command.
pub fn run_command(model: &mut Model, text: &str) -> Vec<Cmd> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() {
        return vec![];
    }
    let parsed = match keys::find_command(&words) {
        Some((command, args)) => {
            command_effect(model, command, args).map(|e| (e, command.changes_cluster))
        }
        None => Err(unknown_verb(model, &words)),
    };
    match parsed {
        Ok((effect, changes_cluster)) => apply(model, effect, changes_cluster),
        Err(Refusal::Say(text)) => {
            model.say(text, true);
            vec![]
        }
        Err(Refusal::Unknown) => {
            model.say(
                format!("unknown command {text:?} (? lists the keys, Tab completes)"),
                true,
            );
            vec![]
        }
    }
}

/// What `command` with `args` asks for, checked against the model.
fn command_effect(model: &Model, command: &CommandWord, args: &[&str]) -> Result<Effect, Refusal> {
    match (command.action, args) {
        (CommandAction::Show(View::Vms), []) => Ok(Effect::AllVms),
        (CommandAction::Show(view), []) => Ok(Effect::Show(view)),
        (CommandAction::Logs, []) => Ok(Effect::Show(View::Logs)),
        (CommandAction::Logs, [name]) => Ok(Effect::Logs(existing_vm(model, name)?)),
        (CommandAction::CreateVm, []) => Ok(Effect::CreateForm),
        (CommandAction::CreateVm, [name, rest @ ..]) => create_effect(command, name, rest),
        (CommandAction::Vm(verb), [name]) => {
            Ok(Effect::Run(verb.action(existing_vm(model, name)?)))
        }
        (CommandAction::Node(verb), [id]) => {
            Ok(Effect::Run(verb.action(existing_node(model, id)?)))
        }
        (CommandAction::TransferLeader, []) => Ok(Effect::Run(Action::TransferLeader(None))),
        (CommandAction::TransferLeader, [id]) => match id.parse::<u64>() {
            Ok(id) => Ok(Effect::Run(Action::TransferLeader(Some(id)))),
            Err(_) => Err(Refusal::Say(format!("usage: {}", command.usage))),
        },
        (CommandAction::Help, []) => Ok(Effect::Help),
        (CommandAction::Quit, []) => Ok(Effect::Quit),
        _ => Err(Refusal::Unknown),
    }
}

/// The name of an existing VM, or why not.
fn existing_vm(model: &Model, name: &str) -> Result<String, Refusal> {
    if model.vms.contains_key(name) {
        Ok(name.to_string())
    } else {
        Err(Refusal::Say(format!("no vm named {name:?}")))
    }
}

/// The id of an existing node, or why not.
fn existing_node(model: &Model, id: &str) -> Result<u64, Refusal> {
    match id.parse::<u64>() {
        Ok(id) if model.nodes.contains_key(&id) => Ok(id),
        _ => Err(Refusal::Say(format!("no node {id}"))),
    }
}

/// `vm create NAME [VCPUS] [MEMORY_MIB] [IMAGE]`, validated as the server
/// would.
fn create_effect(command: &CommandWord, name: &str, rest: &[&str]) -> Result<Effect, Refusal> {
    let vcpus = rest.first().map_or(Ok(DEFAULT_VCPUS), |v| v.parse::<u32>());
    let mem = rest
        .get(1)
        .map_or(Ok(DEFAULT_MEMORY_MIB), |v| v.parse::<u64>());
    let image = rest.get(2).map_or("", |v| v).to_string();
    let (Ok(vcpus), Ok(memory_mib)) = (vcpus, mem) else {
        return Err(Refusal::Say(format!("usage: {}", command.usage)));
    };
    let action = Action::CreateVm {
        name: name.to_string(),
        vcpus,
        memory_mib,
        image,
    };
    validate_create(&action).map_err(Refusal::Say)?;
    Ok(Effect::Run(action))
}

/// A `vm` or `node` command with a verb the table does not have: says
/// what is wrong with it, in the order the arguments are read.
fn unknown_verb(model: &Model, words: &[&str]) -> Refusal {
    match words {
        ["vm", verb, name] => match existing_vm(model, name) {
            Ok(_) => Refusal::Say(format!(
                "unknown vm command {verb:?}: use start, stop, restart or delete"
            )),
            Err(refusal) => refusal,
        },
        ["node", verb, id] => match existing_node(model, id) {
            Ok(_) => Refusal::Say(format!(
                "unknown node command {verb:?}: use cordon or uncordon"
            )),
            Err(refusal) => refusal,
        },
        _ => Refusal::Unknown,
    }
}

/// Checks a create as the server would, so a bad one is caught before it is
/// sent (the image word "default" stands for the default image).
pub(super) fn validate_create(action: &Action) -> Result<(), String> {
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
            image: if image == DEFAULT_IMAGE {
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

/// Completes a partial command: a command word, or a VM name / node id as
/// its argument. `None` when there is nothing to add.
pub fn complete(model: &Model, text: &str) -> Option<String> {
    let candidates: Vec<String> = match text.rsplit_once(' ') {
        Some((head, arg)) => arg_candidates(model, head)
            .into_iter()
            .filter(|p| p.starts_with(arg))
            .map(|p| format!("{head} {p}"))
            .collect(),
        None => COMMANDS
            .iter()
            .map(|c| c.word.split(' ').next().unwrap_or(c.word).to_string())
            .filter(|c| c.starts_with(text))
            .collect(),
    };
    let first = candidates.first()?;
    // The longest common prefix of all candidates.
    let mut prefix = first.clone();
    for c in candidates.iter().skip(1) {
        while !c.starts_with(&prefix) {
            prefix.pop();
        }
    }
    (prefix.len() > text.len()).then_some(prefix)
}

/// What can follow `head`: the VM names or node ids its command takes, or
/// the second words of the commands it starts.
fn arg_candidates(model: &Model, head: &str) -> Vec<String> {
    match keys::command_named(head).map(|c| c.arg) {
        Some(Arg::VmName) => model.vms.keys().cloned().collect(),
        Some(Arg::NodeId) => model.nodes.keys().map(|i| i.to_string()).collect(),
        Some(Arg::Nothing) | None => {
            let head = format!("{head} ");
            COMMANDS
                .iter()
                .filter_map(|c| c.word.strip_prefix(&head).map(str::to_string))
                .collect()
        }
    }
}
