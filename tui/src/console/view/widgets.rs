//! Pieces more than one screen draws: bordered blocks, tables with a
//! selected row, gauges, event lines, durations and centred dialogs.

use super::theme::Theme;
use blixard_shared::proto::v1 as pb;
pub use blixard_shared::time::human_secs;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Row, Table, TableState};
use ratatui::Frame;

/// A bordered block with a title.
pub fn block<'a>(title: String, t: &Theme) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .title(Span::styled(title, t.title()))
}

/// A text gauge `width` cells wide ("n/a" when `total` is 0).
pub fn bar(used: u64, total: u64, width: usize) -> String {
    if total == 0 {
        return format!("{:width$}", "n/a");
    }
    let frac = (used as f64 / total as f64).clamp(0.0, 1.0);
    let filled = ((frac * width as f64).round() as usize).min(width);
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

/// How long ago `since_ms` was, in words.
pub fn ago(now_ms: u64, since_ms: u64) -> String {
    human_secs(now_ms.saturating_sub(since_ms) / 1000)
}

/// The one word for a Raft member's role.
pub fn member_role(m: &pb::Member) -> &'static str {
    match pb::MemberRole::try_from(m.role) {
        Ok(pb::MemberRole::Leader) => "leader",
        Ok(pb::MemberRole::Follower) => "follower",
        Ok(pb::MemberRole::Learner) => "learner",
        _ => "unknown",
    }
}

/// One cluster event: revision, kind (red when something broke), subject
/// and message.
pub fn event_line<'a>(e: &pb::Event, t: &Theme) -> Line<'a> {
    let kind_style =
        if e.kind.ends_with("failed") || e.kind.ends_with("down") || e.kind.ends_with("lost") {
            t.fg(Color::Red)
        } else {
            t.fg(Color::Blue)
        };
    Line::from(vec![
        Span::styled(format!("{:>8} ", e.revision), t.dim()),
        Span::styled(format!("{:<20} ", e.kind), kind_style),
        Span::raw(format!("{:<14} {}", e.subject, e.message)),
    ])
}

/// A table to draw: title, column headers, rows, widths, selected row.
pub struct TableSpec {
    /// Block title.
    pub title: String,
    /// Column headers.
    pub header: Vec<&'static str>,
    /// The rows to draw.
    pub rows: Vec<Row<'static>>,
    /// Column widths.
    pub widths: Vec<Constraint>,
    /// Index (into `rows`) of the highlighted row.
    pub selected: Option<usize>,
}

/// Renders a table with its selected row highlighted.
pub fn draw_table(frame: &mut Frame, area: Rect, spec: TableSpec, t: &Theme) {
    let header = Row::new(
        spec.header
            .into_iter()
            .map(|h| Cell::from(h).style(t.title())),
    );
    let table = Table::new(spec.rows, spec.widths)
        .header(header)
        .block(block(spec.title, t))
        .row_highlight_style(t.selected());
    let mut state = TableState::default().with_selected(spec.selected);
    frame.render_stateful_widget(table, area, &mut state);
}

/// A `width` x `height` box in the middle of `area` (clipped to it).
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// " /text" after a title when a filter is set, else nothing.
pub fn filter_suffix(filter: &str) -> String {
    if filter.is_empty() {
        String::new()
    } else {
        format!(" /{filter}")
    }
}
