//! The console's keys and `:` command words, each described once: what the
//! screen calls it, what it does, where it works and whether it changes the
//! cluster. `update` dispatches through these tables, the footer and the `?`
//! help are drawn from them, and read-only mode refuses (and hides) every
//! entry that changes the cluster, as k9s's key actions do.
//!
//! Table order is screen order: a view's keys appear in the footer and the
//! help in the order they are listed here; the keys that work everywhere
//! fill the help's two columns in reading order (left, right, next line).

use super::model::View;
use super::msg::Action;
use ratatui::crossterm::event::KeyCode;
use ratatui::crossterm::event::KeyCode::Char;
use KeyAction as A;

/// Rows PgUp and PgDn move the selection (or scroll the logs and events).
pub const PAGE_ROWS: isize = 20;
/// A move long enough to reach either end of any list (`g`/`G`, Home/End).
pub const TO_THE_END: isize = 1_000_000;

/// What a key or command does to one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmVerb {
    /// Start it.
    Start,
    /// Stop it.
    Stop,
    /// Restart it.
    Restart,
    /// Delete it (refused by the cluster while it runs).
    Delete,
    /// Delete it even if it runs.
    ForceDelete,
    /// Move it to the node the scheduler picks (stopped, then started).
    Migrate,
}

impl VmVerb {
    /// The cluster action on the VM called `name`.
    pub fn action(self, name: String) -> Action {
        match self {
            VmVerb::Start => Action::StartVm(name),
            VmVerb::Stop => Action::StopVm(name),
            VmVerb::Restart => Action::RestartVm(name),
            VmVerb::Delete => Action::DeleteVm { name, force: false },
            VmVerb::ForceDelete => Action::DeleteVm { name, force: true },
            VmVerb::Migrate => Action::MigrateVm(name),
        }
    }
}

/// What a key or command does to one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeVerb {
    /// Stop placing VMs on it.
    Cordon,
    /// Place VMs on it again (ends a drain).
    Uncordon,
    /// Cordon it and move its VMs away.
    Drain,
}

impl NodeVerb {
    /// The cluster action on node `id`.
    pub fn action(self, id: u64) -> Action {
        match self {
            NodeVerb::Cordon => Action::Cordon(id),
            NodeVerb::Uncordon => Action::Uncordon(id),
            NodeVerb::Drain => Action::Drain(id),
        }
    }
}

/// What a key asks for; `update` applies it to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    /// Leave the console.
    Quit,
    /// Open the `:` command bar.
    CommandBar,
    /// Show the `?` help.
    Help,
    /// Go back to the previous view (closing the logs when leaving them).
    Back,
    /// Edit the current list's `/` filter.
    Filter,
    /// Edit the logs' `/` search.
    Search,
    /// Switch to a view (for the logs view: the selected VM's logs).
    Go(View),
    /// Move the selection (or scroll) by this many rows; negative is up.
    Move(isize),
    /// Open the selected VM's logs.
    SelectedLogs,
    /// List the selected node's VMs.
    NodeVms,
    /// Sort the VM table by its next column.
    NextSort,
    /// Reverse the VM table's sort.
    ReverseSort,
    /// Open the VM create form.
    CreateForm,
    /// Act on the selected VM.
    Vm(VmVerb),
    /// Act on the selected node.
    Node(NodeVerb),
    /// Transfer leadership to the selected member (the best other voter
    /// when the leader itself is selected).
    TransferLeader,
    /// Toggle following the newest log output.
    Follow,
    /// Scroll the logs up to the previous line with the search term.
    NextMatch,
}

/// Where a key works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// On every view: the help's "everywhere" section.
    Everywhere,
    /// On these views only: their footer and the help's view section. A
    /// view's key wins over a key of the same name that works everywhere.
    Views(&'static [View]),
}

impl Scope {
    /// Whether a key of this scope works on `view`.
    pub fn includes(self, view: View) -> bool {
        match self {
            Scope::Everywhere => true,
            Scope::Views(views) => views.contains(&view),
        }
    }
}

/// Where a key is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// Nowhere: it works, but nothing advertises it.
    Hidden,
    /// In the `?` help only.
    Help,
    /// In the `?` help and the footer.
    HelpAndFooter,
}

/// One entry of the key table: one line of the help, one hint of the footer.
#[derive(Debug, Clone, Copy)]
pub struct KeyBinding {
    /// The keys as the screen names them ("enter/l", "d/D").
    pub label: &'static str,
    /// What they do, as the footer and the help say it.
    pub help: &'static str,
    /// Each key and what it asks for.
    pub keys: &'static [(KeyCode, KeyAction)],
    /// Where the keys work.
    pub scope: Scope,
    /// Whether it changes the cluster: read-only mode refuses and hides it.
    pub changes_cluster: bool,
    /// Where the screen lists it.
    pub listed: Listed,
}

impl KeyBinding {
    /// Whether it is offered in this mode (read-only hides what changes the
    /// cluster).
    pub fn offered(&self, read_only: bool) -> bool {
        !(read_only && self.changes_cluster)
    }
}

/// A key that works everywhere and changes nothing.
const fn everywhere(
    label: &'static str,
    help: &'static str,
    keys: &'static [(KeyCode, KeyAction)],
    listed: Listed,
) -> KeyBinding {
    KeyBinding {
        label,
        help,
        keys,
        scope: Scope::Everywhere,
        changes_cluster: false,
        listed,
    }
}

/// A key of some views, listed in the footer and the help.
const fn on(
    views: &'static [View],
    label: &'static str,
    help: &'static str,
    keys: &'static [(KeyCode, KeyAction)],
    changes_cluster: bool,
) -> KeyBinding {
    KeyBinding {
        label,
        help,
        keys,
        scope: Scope::Views(views),
        changes_cluster,
        listed: Listed::HelpAndFooter,
    }
}

/// Every key of the console's normal mode (Ctrl-C, which quits from any
/// mode, and the keys of the input line, dialogs and form are handled where
/// those are).
pub const KEYS: &[KeyBinding] = &[
    everywhere(
        "0-7",
        "switch view",
        &[
            (Char('0'), A::Go(View::Overview)),
            (Char('1'), A::Go(View::Nodes)),
            (Char('2'), A::Go(View::Vms)),
            (Char('3'), A::Go(View::Logs)),
            (Char('4'), A::Go(View::Events)),
            (Char('5'), A::Go(View::Raft)),
            (Char('6'), A::Go(View::Console)),
            (Char('7'), A::Go(View::Audit)),
        ],
        Listed::Help,
    ),
    everywhere(
        ":",
        "command (tab completes)",
        &[(Char(':'), A::CommandBar)],
        Listed::HelpAndFooter,
    ),
    everywhere(
        "j/k ↑/↓",
        "move",
        &[
            (Char('j'), A::Move(1)),
            (KeyCode::Down, A::Move(1)),
            (Char('k'), A::Move(-1)),
            (KeyCode::Up, A::Move(-1)),
        ],
        Listed::Help,
    ),
    everywhere(
        "/",
        "filter this list",
        &[(Char('/'), A::Filter)],
        Listed::HelpAndFooter,
    ),
    everywhere(
        "g/G",
        "first/last",
        &[
            (Char('g'), A::Move(-TO_THE_END)),
            (KeyCode::Home, A::Move(-TO_THE_END)),
            (Char('G'), A::Move(TO_THE_END)),
            (KeyCode::End, A::Move(TO_THE_END)),
        ],
        Listed::Help,
    ),
    everywhere(
        "?",
        "this help",
        &[(Char('?'), A::Help)],
        Listed::HelpAndFooter,
    ),
    everywhere(
        "esc",
        "back",
        &[(KeyCode::Esc, A::Back)],
        Listed::HelpAndFooter,
    ),
    everywhere("q", "quit", &[(Char('q'), A::Quit)], Listed::HelpAndFooter),
    everywhere(
        "pgup/pgdn",
        "page",
        &[
            (KeyCode::PageDown, A::Move(PAGE_ROWS)),
            (KeyCode::PageUp, A::Move(-PAGE_ROWS)),
        ],
        Listed::Hidden,
    ),
    on(
        &[View::Vms],
        "enter/l",
        "logs",
        &[
            (KeyCode::Enter, A::SelectedLogs),
            (Char('l'), A::SelectedLogs),
        ],
        false,
    ),
    on(
        &[View::Vms],
        "o/O",
        "sort",
        &[(Char('o'), A::NextSort), (Char('O'), A::ReverseSort)],
        false,
    ),
    on(
        &[View::Vms],
        "c",
        "create",
        &[(Char('c'), A::CreateForm)],
        true,
    ),
    on(
        &[View::Vms],
        "u",
        "start",
        &[(Char('u'), A::Vm(VmVerb::Start))],
        true,
    ),
    on(
        &[View::Vms],
        "x",
        "stop",
        &[(Char('x'), A::Vm(VmVerb::Stop))],
        true,
    ),
    on(
        &[View::Vms],
        "r",
        "restart",
        &[(Char('r'), A::Vm(VmVerb::Restart))],
        true,
    ),
    on(
        &[View::Vms],
        "d/D",
        "delete/force",
        &[
            (Char('d'), A::Vm(VmVerb::Delete)),
            (Char('D'), A::Vm(VmVerb::ForceDelete)),
        ],
        true,
    ),
    on(
        &[View::Vms],
        "m",
        "migrate",
        &[(Char('m'), A::Vm(VmVerb::Migrate))],
        true,
    ),
    on(
        &[View::Nodes],
        "enter",
        "vms",
        &[(KeyCode::Enter, A::NodeVms)],
        false,
    ),
    on(
        &[View::Nodes],
        "c",
        "cordon",
        &[(Char('c'), A::Node(NodeVerb::Cordon))],
        true,
    ),
    on(
        &[View::Nodes],
        "u",
        "uncordon",
        &[(Char('u'), A::Node(NodeVerb::Uncordon))],
        true,
    ),
    on(
        &[View::Nodes],
        "r",
        "drain",
        &[(Char('r'), A::Node(NodeVerb::Drain))],
        true,
    ),
    on(
        &[View::Raft],
        "t",
        "transfer leader",
        &[(Char('t'), A::TransferLeader)],
        true,
    ),
    on(
        &[View::Logs],
        "f",
        "follow",
        &[(Char('f'), A::Follow)],
        false,
    ),
    on(
        &[View::Logs],
        "/",
        "search",
        &[(Char('/'), A::Search)],
        false,
    ),
    on(
        &[View::Logs],
        "n",
        "next match",
        &[(Char('n'), A::NextMatch)],
        false,
    ),
];

/// The binding and action of `code` on `view`: a key of the view first,
/// then one that works everywhere. Modifiers are not looked at (a shifted
/// letter arrives as its capital).
pub fn lookup(view: View, code: KeyCode) -> Option<(&'static KeyBinding, KeyAction)> {
    let find = |global: bool| {
        KEYS.iter()
            .filter(|b| (b.scope == Scope::Everywhere) == global && b.scope.includes(view))
            .find_map(|b| {
                b.keys
                    .iter()
                    .find(|(k, _)| *k == code)
                    .map(|(_, action)| (b, *action))
            })
    };
    find(false).or_else(|| find(true))
}

/// The keys of `view` (not those that work everywhere) offered in this
/// mode, in screen order: the footer's hints and the help's view section.
pub fn view_keys(view: View, read_only: bool) -> impl Iterator<Item = &'static KeyBinding> {
    KEYS.iter().filter(move |b| {
        b.scope != Scope::Everywhere
            && b.scope.includes(view)
            && b.listed != Listed::Hidden
            && b.offered(read_only)
    })
}

/// The keys that work everywhere and are listed `where` (or more widely),
/// offered in this mode, in table order.
pub fn global_keys(listed: Listed, read_only: bool) -> impl Iterator<Item = &'static KeyBinding> {
    KEYS.iter().filter(move |b| {
        b.scope == Scope::Everywhere
            && b.offered(read_only)
            && match listed {
                Listed::Hidden => true,
                Listed::Help => b.listed != Listed::Hidden,
                Listed::HelpAndFooter => b.listed == Listed::HelpAndFooter,
            }
    })
}

/// The key that switches to `view`, as the footer's view tabs show it.
pub fn view_switch_key(view: View) -> Option<char> {
    KEYS.iter()
        .filter(|b| b.scope == Scope::Everywhere)
        .flat_map(|b| b.keys.iter())
        .find_map(|(k, a)| match (k, a) {
            (Char(c), A::Go(v)) if *v == view => Some(*c),
            _ => None,
        })
}

/// What a command word does; `update` applies it to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandAction {
    /// Switch to a view (`:vms` also drops a node filter).
    Show(View),
    /// Open the logs of the VM named, or of the selected VM.
    Logs,
    /// Create a VM from the arguments, or open the form without any.
    CreateVm,
    /// Act on the VM named.
    Vm(VmVerb),
    /// Act on the node named.
    Node(NodeVerb),
    /// Transfer leadership (to the node named, or the best other voter).
    TransferLeader,
    /// Show the `?` help.
    Help,
    /// Leave the console.
    Quit,
}

/// What a command word's argument is, for Tab completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// Nothing to complete.
    Nothing,
    /// A VM's name.
    VmName,
    /// A node's id.
    NodeId,
}

/// One entry of the command table.
#[derive(Debug, Clone, Copy)]
pub struct CommandWord {
    /// What the operator types (one or two words); Tab completes it.
    pub word: &'static str,
    /// Other spellings that run it (not completed, not listed).
    pub aliases: &'static [&'static str],
    /// Its synopsis, as a `usage:` error quotes it.
    pub usage: &'static str,
    /// How the `?` help lists it; empty when another entry's text covers it
    /// or it is not listed.
    pub help: &'static str,
    /// What its argument completes to.
    pub arg: Arg,
    /// What it does.
    pub action: CommandAction,
    /// Whether it changes the cluster: read-only mode refuses and hides it.
    pub changes_cluster: bool,
}

impl CommandWord {
    /// Whether it is offered in this mode (read-only hides what changes the
    /// cluster).
    pub fn offered(&self, read_only: bool) -> bool {
        !(read_only && self.changes_cluster)
    }
}

/// A command that switches to `view`.
const fn show(view: View, help: &'static str) -> CommandWord {
    CommandWord {
        word: view.name(),
        aliases: &[],
        usage: view.name(),
        help,
        arg: Arg::Nothing,
        action: CommandAction::Show(view),
        changes_cluster: false,
    }
}

/// A command on one VM, named by its argument.
const fn vm(
    word: &'static str,
    usage: &'static str,
    help: &'static str,
    verb: VmVerb,
) -> CommandWord {
    CommandWord {
        word,
        aliases: &[],
        usage,
        help,
        arg: Arg::VmName,
        action: CommandAction::Vm(verb),
        changes_cluster: true,
    }
}

/// A command on one node, named by its argument.
const fn node(
    word: &'static str,
    usage: &'static str,
    help: &'static str,
    verb: NodeVerb,
) -> CommandWord {
    CommandWord {
        word,
        aliases: &[],
        usage,
        help,
        arg: Arg::NodeId,
        action: CommandAction::Node(verb),
        changes_cluster: true,
    }
}

/// Every `:` command. The help lists the entries that change nothing on one
/// line and the others two to a line, in this order.
pub const COMMANDS: &[CommandWord] = &[
    show(View::Vms, ":vms"),
    show(View::Nodes, ":nodes"),
    show(View::Events, ":events"),
    show(View::Raft, ":raft"),
    show(View::Console, ":console"),
    show(View::Audit, ":audit"),
    CommandWord {
        word: "logs",
        aliases: &[],
        usage: "logs [NAME]",
        help: ":logs NAME",
        arg: Arg::VmName,
        action: CommandAction::Logs,
        changes_cluster: false,
    },
    show(View::Overview, ""),
    CommandWord {
        word: "vm create",
        aliases: &[],
        usage: "vm create NAME [VCPUS] [MEMORY_MIB] [IMAGE]",
        help: ":vm create NAME [VCPUS] [MIB] [IMAGE]",
        arg: Arg::Nothing,
        action: CommandAction::CreateVm,
        changes_cluster: true,
    },
    vm("vm stop", "vm stop NAME", ":vm stop NAME", VmVerb::Stop),
    vm(
        "vm start",
        "vm start NAME",
        ":vm start|restart|delete|migrate NAME",
        VmVerb::Start,
    ),
    vm("vm restart", "vm restart NAME", "", VmVerb::Restart),
    vm("vm delete", "vm delete NAME", "", VmVerb::Delete),
    vm("vm migrate", "vm migrate NAME", "", VmVerb::Migrate),
    node(
        "node cordon",
        "node cordon NODE_ID",
        ":node cordon|uncordon|drain ID",
        NodeVerb::Cordon,
    ),
    node(
        "node uncordon",
        "node uncordon NODE_ID",
        "",
        NodeVerb::Uncordon,
    ),
    node("node drain", "node drain NODE_ID", "", NodeVerb::Drain),
    CommandWord {
        word: "transfer",
        aliases: &[],
        usage: "transfer [NODE_ID]",
        help: ":transfer [ID]",
        arg: Arg::NodeId,
        action: CommandAction::TransferLeader,
        changes_cluster: true,
    },
    CommandWord {
        word: "help",
        aliases: &[],
        usage: "help",
        help: "",
        arg: Arg::Nothing,
        action: CommandAction::Help,
        changes_cluster: false,
    },
    CommandWord {
        word: "quit",
        aliases: &["q"],
        usage: "quit",
        help: "",
        arg: Arg::Nothing,
        action: CommandAction::Quit,
        changes_cluster: false,
    },
];

/// The command `words` start with (by its word or an alias; the longest
/// match), and the words after it: its arguments.
pub fn find_command<'w, 'a>(words: &'w [&'a str]) -> Option<(&'static CommandWord, &'w [&'a str])> {
    COMMANDS
        .iter()
        .flat_map(|c| {
            std::iter::once(c.word)
                .chain(c.aliases.iter().copied())
                .map(move |w| (c, w))
        })
        .filter_map(|(c, spelling)| {
            let n = spelling.split(' ').count();
            let matches =
                words.len() >= n && words.iter().zip(spelling.split(' ')).all(|(a, b)| *a == b);
            matches.then_some((c, n))
        })
        .max_by_key(|(_, n)| *n)
        .map(|(c, n)| (c, &words[n..]))
}

/// The command whose word is exactly `word` (aliases excluded).
pub fn command_named(word: &str) -> Option<&'static CommandWord> {
    COMMANDS.iter().find(|c| c.word == word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn no_key_means_two_things_on_one_view() {
        for view in View::ALL {
            let mut seen = HashSet::new();
            for b in KEYS.iter().filter(|b| b.scope.includes(view)) {
                for (k, _) in b.keys {
                    let scoped = b.scope != Scope::Everywhere;
                    assert!(
                        seen.insert((format!("{k:?}"), scoped)),
                        "{k:?} is bound twice on {view:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_view_key_wins_over_a_global_one() {
        assert_eq!(
            lookup(View::Logs, Char('/')).map(|(_, a)| a),
            Some(A::Search)
        );
        assert_eq!(
            lookup(View::Vms, Char('/')).map(|(_, a)| a),
            Some(A::Filter)
        );
        assert_eq!(lookup(View::Raft, Char('c')).map(|(_, a)| a), None);
    }

    #[test]
    fn every_view_has_a_switch_key_in_footer_order() {
        for (i, view) in View::ALL.into_iter().enumerate() {
            assert_eq!(view_switch_key(view), char::from_digit(i as u32, 10));
        }
    }

    #[test]
    fn commands_are_found_by_the_longest_word_and_aliases() {
        let (c, args) = find_command(&["vm", "create", "a", "2"])
            .map(|(c, a)| (c.word, a.to_vec()))
            .unwrap_or_default();
        assert_eq!((c, args), ("vm create", vec!["a", "2"]));
        assert_eq!(find_command(&["q"]).map(|(c, _)| c.word), Some("quit"));
        assert!(find_command(&["vm", "frob", "a"]).is_none());
        assert!(find_command(&[]).is_none());
    }
}
