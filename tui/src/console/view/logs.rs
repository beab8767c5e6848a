//! The logs view: a VM's serial console, following the newest output or
//! scrolled back, with the search term highlighted.

use super::theme::Theme;
use super::widgets::block;
use crate::console::model::Model;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// Draws the log pane in `area`.
pub fn draw(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let logs = &model.logs;
    let height = area.height.saturating_sub(2) as usize;
    let total = logs.lines.len();
    let end = total.saturating_sub(if logs.follow { 0 } else { logs.scroll });
    let start = end.saturating_sub(height);
    let mut lines: Vec<Line> = logs
        .lines
        .range(start..end)
        .map(|l| highlight(l, &logs.search, t))
        .collect();
    if logs.follow && !logs.partial.is_empty() && lines.len() < height.max(1) {
        lines.push(Line::raw(logs.partial.clone()));
    }
    let mut title = format!(
        " logs: {} ({} lines{}) ",
        logs.vm.as_deref().unwrap_or("-"),
        total,
        if logs.follow { ", following" } else { "" }
    );
    if let Some(reason) = &logs.ended {
        title.push_str(&format!("[ended: {reason}] "));
    }
    if !logs.search.is_empty() {
        title.push_str(&format!("/{} ", logs.search));
    }
    frame.render_widget(Paragraph::new(lines).block(block(title, t)), area);
}

/// `line` with every occurrence of `term` highlighted.
fn highlight<'a>(line: &str, term: &str, t: &Theme) -> Line<'a> {
    if term.is_empty() || !line.contains(term) {
        return Line::raw(line.to_string());
    }
    let mut spans = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find(term) {
        spans.push(Span::raw(rest[..i].to_string()));
        spans.push(Span::styled(term.to_string(), t.highlight()));
        rest = &rest[i + term.len()..];
    }
    spans.push(Span::raw(rest.to_string()));
    Line::from(spans)
}
