//! The overview: cluster health and Raft summary, VMs by state, and the
//! most recent events.

use super::theme::Theme;
use super::widgets::{block, event_line, member_role};
use crate::console::model::Model;
use blixard_shared::proto::v1 as pb;
use blixard_shared::words::vm_state_word;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Color;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;
use std::collections::BTreeMap;

/// Rows of the top panes (cluster and VM counts), borders included.
const TOP_ROWS: u16 = 9;
/// Raft members listed in the cluster pane.
const MEMBERS_SHOWN: usize = 4;

/// Draws the overview in `area`.
pub fn draw(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let [top, bottom] =
        Layout::vertical([Constraint::Length(TOP_ROWS), Constraint::Min(3)]).areas(area);
    let [cluster, counts] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(top);
    draw_cluster(frame, cluster, model, t);
    draw_counts(frame, counts, model, t);
    draw_recent_events(frame, bottom, model, t);
}

/// Health, leader, indexes and the first members.
fn draw_cluster(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let lines = match &model.status {
        Some(s) => cluster_lines(s, t),
        None => vec![Line::styled("waiting for the first status ...", t.dim())],
    };
    frame.render_widget(
        Paragraph::new(lines).block(block(" cluster ".into(), t)),
        area,
    );
}

/// The cluster pane's lines for status `s`.
fn cluster_lines<'a>(s: &pb::ClusterStatus, t: &Theme) -> Vec<Line<'a>> {
    let voters = s.members.iter().filter(|m| m.voter).count();
    let alive = s
        .members
        .iter()
        .filter(|m| m.voter && m.health == pb::NodeHealth::Alive as i32)
        .count();
    let healthy = s.leader_id != 0 && alive * 2 > voters;
    let health = if healthy { "healthy" } else { "degraded" };
    let mut lines = vec![
        Line::from(vec![
            Span::raw("health:  "),
            Span::styled(
                health,
                if healthy {
                    t.fg(Color::Green)
                } else {
                    t.fg(Color::Red)
                },
            ),
            Span::raw(format!("  ({alive}/{voters} voters alive)")),
        ]),
        Line::raw(format!(
            "leader:  node {}   term {}",
            if s.leader_id == 0 {
                "-".into()
            } else {
                s.leader_id.to_string()
            },
            s.term
        )),
        Line::raw(format!(
            "commit:  {}   applied: {}",
            s.commit_index, s.applied_index
        )),
    ];
    let releases = blixard_shared::words::releases(s.members.iter().map(|m| m.version.as_str()));
    if releases.len() > 1 {
        lines.push(Line::styled(
            format!("releases: MIXED ({})", releases.join(", ")),
            t.fg(Color::Yellow),
        ));
    }
    for m in s.members.iter().take(MEMBERS_SHOWN) {
        let role = member_role(m);
        lines.push(Line::from(vec![
            Span::raw(format!(" {:>2} {:<16} ", m.node_id, m.address)),
            Span::styled(format!("{role:<8}"), t.state(role)),
            Span::raw(format!(" lag {}", m.lag)),
        ]));
    }
    lines
}

/// How many VMs are in each state.
fn draw_counts(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for vm in model.vms.values() {
        *by_state.entry(vm_state_word(vm.state)).or_default() += 1;
    }
    let lines: Vec<Line> = if by_state.is_empty() {
        vec![Line::styled("no VMs", t.dim())]
    } else {
        by_state
            .iter()
            .map(|(k, v)| {
                Line::from(vec![
                    Span::styled(format!("{k:<10}"), t.state(k)),
                    Span::raw(format!("{v:>7}")),
                ])
            })
            .collect()
    };
    frame.render_widget(
        Paragraph::new(lines).block(block(" vms by state ".into(), t)),
        area,
    );
}

/// As many of the newest events as fit, oldest first.
fn draw_recent_events(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let rows = area.height.saturating_sub(2) as usize;
    let events: Vec<Line> = model
        .events
        .iter()
        .rev()
        .take(rows)
        .rev()
        .map(|e| event_line(e, t))
        .collect();
    frame.render_widget(
        Paragraph::new(events).block(block(" recent events ".into(), t)),
        area,
    );
}
