//! The audit view: who did what, newest at the bottom, filtered and
//! scrollable like the events view; or why the trail cannot be shown.

use super::theme::Theme;
use super::widgets::{block, filter_suffix};
use crate::console::model::Model;
use blixard_shared::proto::v1 as pb;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// One record as a line: seq, time of day (UTC), result, principal,
/// action, target, then node, code and peer (what matters most first, for
/// narrow terminals).
fn line<'a>(r: &pb::AuditRecord, t: &Theme) -> Line<'a> {
    let result_style = match r.result.as_str() {
        "ok" => t.fg(Color::Green),
        "denied" => t.fg(Color::Red),
        _ => t.fg(Color::Yellow),
    };
    let stamp = blixard_shared::time::rfc3339_ms(r.time_ms);
    let time_of_day = stamp.get(11..19).unwrap_or(&stamp).to_string();
    Line::from(vec![
        Span::styled(format!("{:>6} {time_of_day} ", r.seq), t.dim()),
        Span::styled(format!("{:<7}", r.result), result_style),
        Span::raw(format!(
            "{:<18} {:<14} {:<20} n{} {} {}",
            r.principal, r.action, r.target, r.node_id, r.code, r.peer
        )),
    ])
}

/// Draws the records that fit in `area`, scrolled as the model says.
pub fn draw(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    if let Some(why) = &model.audit_note {
        let text = Paragraph::new(Line::from(Span::styled(why.clone(), t.dim())));
        frame.render_widget(text.block(block(" audit ".to_string(), t)), area);
        return;
    }
    let records = model.visible_audit();
    let height = area.height.saturating_sub(2) as usize;
    let end = records.len().saturating_sub(model.audit_scroll);
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = records[start..end].iter().map(|r| line(r, t)).collect();
    let title = format!(
        " audit ({}){} ",
        records.len(),
        filter_suffix(&model.audit_filter)
    );
    frame.render_widget(Paragraph::new(lines).block(block(title, t)), area);
}
