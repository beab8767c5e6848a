//! Drawing: a pure function of the model onto a ratatui frame. This module
//! draws the frame (header, status line, footer) and hands the body to the
//! current view's module; dialogs and the help go on top.

mod audit;
mod console;
mod dialog;
mod events;
mod help;
mod logs;
mod nodes;
mod overview;
mod raft;
mod theme;
mod vms;
mod widgets;

use super::keys::{self, Listed};
use super::layout;
use super::model::{Input, Model, View};
use super::msg::Link;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use theme::Theme;
use widgets::ago;

/// Draws the whole console.
pub fn view(frame: &mut Frame, model: &Model) {
    let t = Theme { color: model.color };
    let screen = layout::screen(frame.area());
    draw_header(frame, screen.header, model, &t);
    let body = screen.body;
    match model.view {
        View::Overview => overview::draw(frame, body, model, &t),
        View::Nodes => nodes::draw(frame, body, model, &t),
        View::Vms => vms::draw(frame, body, model, &t),
        View::Logs => logs::draw(frame, body, model, &t),
        View::Events => events::draw(frame, body, model, &t),
        View::Audit => audit::draw(frame, body, model, &t),
        View::Raft => raft::draw(frame, body, model, &t),
        View::Console => console::draw(frame, body, &t),
    }
    draw_status(frame, screen.status, model, &t);
    draw_footer(frame, screen.footer, model, &t);
    match &model.input {
        Input::Confirm(action) => dialog::draw_confirm(frame, &action.describe(), &t),
        Input::Form(form) => dialog::draw_form(frame, form, &t),
        _ => {}
    }
    if model.show_help {
        help::draw(frame, model, &t);
    }
}

/// Line 1: endpoint, link state, INSECURE, read-only; line 2: leader,
/// Raft indexes, revision and counts.
fn draw_header(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let (endpoint, link_extra) = match &model.link {
        Link::Connecting { endpoint } | Link::Live { endpoint } => {
            (endpoint.clone(), String::new())
        }
        Link::Reconnecting {
            endpoint,
            since_ms,
            reason,
        } => (
            endpoint.clone(),
            format!(" for {} ({reason})", ago(model.now_ms, *since_ms)),
        ),
    };
    let word = model.link.word();
    let leader = match &model.status {
        Some(s) if s.leader_id != 0 => format!("node {} ({})", s.leader_id, s.leader_address),
        Some(_) => "none".to_string(),
        None => "?".to_string(),
    };
    let (term, commit, applied) = model
        .status
        .as_ref()
        .map_or((0, 0, 0), |s| (s.term, s.commit_index, s.applied_index));
    let line1 = Line::from(vec![
        Span::styled(" blixard ", t.title()),
        Span::raw(format!(" {endpoint} ")),
        Span::styled(format!("[{word}{link_extra}]"), t.state(word)),
        if model.insecure {
            Span::styled("  INSECURE (plaintext, no token)", t.alarm())
        } else {
            Span::raw("")
        },
        if model.read_only {
            Span::styled("  read-only", t.fg(Color::Yellow))
        } else {
            Span::raw("")
        },
        match model.access.identity() {
            Some(who) => Span::raw(format!("  as {who}")),
            None => Span::raw(""),
        },
    ]);
    let line2 = Line::from(vec![
        Span::raw(" leader: "),
        Span::styled(leader, t.fg(Color::Green)),
        Span::raw(format!(
            "  term: {term}  commit: {commit}  applied: {applied}  rev: {}  nodes: {}  vms: {}",
            model.revision,
            model.nodes.len(),
            model.vms.len()
        )),
    ]);
    frame.render_widget(Paragraph::new(vec![line1, line2]), area);
}

/// The input line while typing, else the status line.
fn draw_status(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let line = match &model.input {
        Input::Command(text) => Line::from(vec![
            Span::styled(":", t.title()),
            Span::raw(text.clone()),
            Span::raw("█"),
        ]),
        Input::Filter(text) | Input::Search(text) => Line::from(vec![
            Span::styled("/", t.title()),
            Span::raw(text.clone()),
            Span::raw("█"),
        ]),
        _ => match &model.status_line {
            Some((text, true, _)) => Line::styled(format!(" {text}"), t.fg(Color::Red)),
            Some((text, false, _)) => Line::styled(format!(" {text}"), t.fg(Color::Green)),
            None => Line::raw(""),
        },
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The view tabs, the current view's keys, and the keys that work
/// everywhere, all from the key table.
fn draw_footer(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let mut spans = Vec::new();
    for v in View::ALL {
        let style = if v == model.view {
            t.selected()
        } else {
            t.dim()
        };
        let tab = match keys::view_switch_key(v) {
            Some(key) => format!("{key}:{} ", v.name()),
            None => format!("{} ", v.name()),
        };
        spans.push(Span::styled(tab, style));
    }
    spans.push(Span::raw("│ "));
    for b in keys::view_keys(model.view, model.read_only) {
        // What the policies deny on the selection is greyed out.
        if crate::console::access::greyed(model, b) {
            spans.push(Span::styled(format!("{} {} ", b.label, b.help), t.dim()));
            continue;
        }
        spans.push(Span::styled(b.label.to_string(), t.title()));
        spans.push(Span::raw(format!(" {} ", b.help)));
    }
    let everywhere: Vec<&str> = keys::global_keys(Listed::HelpAndFooter, model.read_only)
        .map(|b| b.label)
        .collect();
    spans.push(Span::styled(everywhere.join(" "), t.dim()));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}
