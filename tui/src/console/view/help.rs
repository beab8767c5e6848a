//! The `?` help, drawn from the key and command tables: the keys that work
//! everywhere (two to a line), the current view's keys, and the `:`
//! commands. Read-only mode leaves out whatever changes the cluster.

use super::theme::Theme;
use super::widgets::{block, centered};
use crate::console::keys::{self, Listed, COMMANDS};
use crate::console::model::Model;
use ratatui::text::Line;
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

/// Size of the help box (columns, rows), borders included.
const HELP_SIZE: (u16, u16) = (64, 24);
/// Columns of a key's label in the help.
const LABEL_WIDTH: usize = 10;
/// Columns of a description in the left half of the "everywhere" section.
const LEFT_HELP_WIDTH: usize = 16;
/// Columns of a key's label in the right half of the "everywhere" section.
const RIGHT_LABEL_WIDTH: usize = 2;
/// Commands that change the cluster listed per help line.
const ACTIONS_PER_LINE: usize = 2;

/// Draws the help over the current view.
pub fn draw(frame: &mut Frame, model: &Model, t: &Theme) {
    let area = centered(frame.area(), HELP_SIZE.0, HELP_SIZE.1);
    frame.render_widget(Clear, area);
    let mut lines = vec![Line::styled(" everywhere", t.title())];
    lines.extend(everywhere_lines(model.read_only));
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        format!(" {} view", model.view.name()),
        t.title(),
    ));
    for b in keys::view_keys(model.view, model.read_only) {
        lines.push(Line::raw(format!(
            "   {:<LABEL_WIDTH$} {}",
            b.label, b.help
        )));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(" commands", t.title()));
    lines.extend(command_lines(model.read_only));
    frame.render_widget(
        Paragraph::new(lines).block(block(" help (any key closes) ".into(), t)),
        area,
    );
}

/// The keys that work everywhere, two to a line in table order.
fn everywhere_lines<'a>(read_only: bool) -> Vec<Line<'a>> {
    let global: Vec<_> = keys::global_keys(Listed::Help, read_only).collect();
    global
        .chunks(2)
        .map(|pair| match pair {
            [l, r] => Line::raw(format!(
                "   {:<LABEL_WIDTH$} {:<LEFT_HELP_WIDTH$} {:<RIGHT_LABEL_WIDTH$} {}",
                l.label, l.help, r.label, r.help
            )),
            [l, ..] => Line::raw(format!("   {:<LABEL_WIDTH$} {}", l.label, l.help)),
            [] => Line::raw(""),
        })
        .collect()
}

/// The commands: those that change nothing on one line, then those that
/// change the cluster (unless read-only) two to a line.
fn command_lines<'a>(read_only: bool) -> Vec<Line<'a>> {
    let listed = |changes: bool| -> Vec<&'static str> {
        COMMANDS
            .iter()
            .filter(|c| c.changes_cluster == changes && c.offered(read_only) && !c.help.is_empty())
            .map(|c| c.help)
            .collect()
    };
    let reads = listed(false);
    let actions = listed(true);
    let mut lines = Vec::new();
    if !reads.is_empty() {
        lines.push(Line::raw(format!("   {}", reads.join(" "))));
    }
    for chunk in actions.chunks(ACTIONS_PER_LINE) {
        lines.push(Line::raw(format!("   {}", chunk.join("   "))));
    }
    lines
}
