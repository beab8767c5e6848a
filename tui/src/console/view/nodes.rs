//! The nodes view: each host's state, capacity and use, zone, backend and
//! labels (or, while a drain is shown, its progress).

use super::theme::Theme;
use super::widgets::{bar, draw_table, filter_suffix, TableSpec};
use crate::console::layout::WIDE_COLUMNS;
use crate::console::model::{node_state_word, Model};
use blixard_shared::proto::v1 as pb;
use ratatui::layout::{Constraint, Rect};
use ratatui::widgets::{Cell, Row};
use ratatui::Frame;

/// Cells of the capacity gauges on wide terminals (none on narrow ones).
const GAUGE_WIDTH: usize = 8;

/// Draws the node table in `area`.
pub fn draw(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let nodes = model.visible_nodes();
    let selected = model
        .node_selected
        .and_then(|s| nodes.iter().position(|n| n.id == s));
    let wide = area.width >= WIDE_COLUMNS;
    let gauge = if wide { GAUGE_WIDTH } else { 0 };
    let rows: Vec<Row> = nodes.iter().map(|n| node_row(n, gauge, t)).collect();
    draw_table(
        frame,
        area,
        TableSpec {
            title: format!(
                " nodes ({}){} ",
                nodes.len(),
                filter_suffix(&model.node_filter)
            ),
            header: vec![
                "ID",
                "ADDRESS",
                "STATE",
                "VCPU",
                "MEMORY MIB",
                "VMS",
                "ZONE",
                "BACKEND",
                "LABELS",
            ],
            rows,
            widths: vec![
                Constraint::Length(4),
                Constraint::Length(if wide { 22 } else { 15 }),
                Constraint::Length(9),
                Constraint::Length(if wide { 16 } else { 6 }),
                Constraint::Length(if wide { 22 } else { 11 }),
                Constraint::Length(4),
                Constraint::Length(6),
                Constraint::Length(8),
                Constraint::Min(6),
            ],
            selected,
        },
        t,
    );
}

/// One node's row; `gauge` cells of bar before each use figure (0: none).
fn node_row(n: &pb::Node, gauge: usize, t: &Theme) -> Row<'static> {
    let cap = n.capacity.unwrap_or_default();
    let used = n.allocated.unwrap_or_default();
    let word = node_state_word(n);
    let meter = |u: u64, c: u64| {
        if gauge == 0 {
            format!("{u}/{c}")
        } else {
            format!("{} {u}/{c}", bar(u, c, gauge))
        }
    };
    let mut labels: Vec<_> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    Row::new(vec![
        Cell::from(n.id.to_string()),
        Cell::from(n.address.clone()),
        Cell::from(word).style(t.state(word)),
        Cell::from(meter(u64::from(used.vcpus), u64::from(cap.vcpus))),
        Cell::from(meter(used.memory_mib, cap.memory_mib)),
        Cell::from(n.vms.len().to_string()),
        Cell::from(n.zone.clone()),
        Cell::from(n.backend.clone()),
        Cell::from(match &n.drain {
            Some(d) => drain_cell(d),
            None => labels.join(","),
        }),
    ])
}

/// A drain's progress where the labels go: "drain running: 2 moved, 1
/// left, 0 failed".
fn drain_cell(d: &pb::DrainStatus) -> String {
    let state = if d.outcome.is_empty() {
        "running"
    } else {
        d.outcome.as_str()
    };
    format!(
        "drain {state}: {} moved, {} left, {} failed",
        d.moved,
        d.left,
        d.failed.len()
    )
}
