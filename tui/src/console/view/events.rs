//! The events view: the cluster's event stream, filtered, newest at the
//! bottom, scrollable.

use super::theme::Theme;
use super::widgets::{block, event_line, filter_suffix};
use crate::console::model::Model;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// Draws the events that fit in `area`, scrolled as the model says.
pub fn draw(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let events = model.visible_events();
    let height = area.height.saturating_sub(2) as usize;
    let end = events.len().saturating_sub(model.events_scroll);
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = events[start..end]
        .iter()
        .map(|e| event_line(e, t))
        .collect();
    let title = format!(
        " events ({}){} ",
        events.len(),
        filter_suffix(&model.events_filter)
    );
    frame.render_widget(Paragraph::new(lines).block(block(title, t)), area);
}
