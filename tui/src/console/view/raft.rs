//! The Raft view: members with matched index, lag and last contact; the
//! log's term, commit, snapshot and purge indexes; leadership changes.

use super::theme::Theme;
use super::widgets::{ago, block, draw_table, member_role, TableSpec};
use crate::console::model::Model;
use blixard_shared::proto::v1 as pb;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row};
use ratatui::Frame;

/// Rows of the leadership changes pane, borders included.
const HISTORY_ROWS: u16 = 8;

/// Draws the member table and the leadership history in `area`.
pub fn draw(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let [members, history] =
        Layout::vertical([Constraint::Min(5), Constraint::Length(HISTORY_ROWS)]).areas(area);
    let Some(s) = &model.status else {
        frame.render_widget(
            Paragraph::new(Line::styled("no status yet", t.dim())).block(block(" raft ".into(), t)),
            area,
        );
        return;
    };
    draw_members(frame, members, model, s, t);
    draw_history(frame, history, model, t);
}

/// The members, with the log's indexes in the title.
fn draw_members(frame: &mut Frame, area: Rect, model: &Model, s: &pb::ClusterStatus, t: &Theme) {
    let selected = model
        .member_selected
        .and_then(|id| s.members.iter().position(|m| m.node_id == id));
    let rows: Vec<Row> = s.members.iter().map(|m| member_row(m, t)).collect();
    draw_table(
        frame,
        area,
        TableSpec {
            title: format!(
                " raft: term {}  last log {}  commit {}  applied {}  snapshot {}  purged {} ",
                s.term,
                s.last_log_index,
                s.commit_index,
                s.applied_index,
                s.snapshot_index,
                s.purged_index
            ),
            header: vec![
                "ID", "ADDRESS", "ROLE", "VOTER", "MATCHED", "LAG", "CONTACT", "VERSION",
            ],
            rows,
            widths: vec![
                Constraint::Length(4),
                Constraint::Length(22),
                Constraint::Length(9),
                Constraint::Length(6),
                Constraint::Length(9),
                Constraint::Length(7),
                Constraint::Length(8),
                Constraint::Min(8),
            ],
            selected,
        },
        t,
    );
}

/// One member's row.
fn member_row(m: &pb::Member, t: &Theme) -> Row<'static> {
    let role = member_role(m);
    Row::new(vec![
        Cell::from(m.node_id.to_string()),
        Cell::from(m.address.clone()),
        Cell::from(role).style(t.state(role)),
        Cell::from(if m.voter { "yes" } else { "no" }),
        Cell::from(m.matched_index.to_string()),
        Cell::from(m.lag.to_string()),
        Cell::from(if m.last_contact_ms == 0 {
            "-".into()
        } else {
            format!("{}ms", m.last_contact_ms)
        }),
        Cell::from(if m.version.is_empty() {
            "-".to_string()
        } else {
            m.version.clone()
        }),
    ])
}

/// The newest leadership changes that fit, newest first.
fn draw_history(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let lines: Vec<Line> = model
        .leader_history
        .iter()
        .rev()
        .take(area.height.saturating_sub(2) as usize)
        .map(|(at, leader, term)| {
            Line::raw(format!(
                "{:>10} ago  node {leader} leads term {term}",
                ago(model.now_ms, *at)
            ))
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(block(" leadership changes ".into(), t)),
        area,
    );
}
