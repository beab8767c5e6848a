//! The VM view: a sortable, filterable, virtualised table of VMs and a
//! detail pane for the selected one (spec, placement, process, reason, the
//! last console lines when its log is open, history).

use super::theme::Theme;
use super::widgets::{block, draw_table, human_secs, TableSpec};
use crate::console::layout;
use crate::console::model::{restarts, Model, DEFAULT_IMAGE};
use blixard_shared::proto::v1 as pb;
use blixard_shared::words::vm_state_word;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Wrap};
use ratatui::Frame;

/// Narrowest and widest the name column gets (before its padding cell).
const NAME_COLUMN: (u16, u16) = (12, 40);
/// The selected VM's newest console lines shown in its detail pane.
const DETAIL_CONSOLE_LINES: usize = 3;
/// The selected VM's newest events shown in its detail pane.
const DETAIL_HISTORY: usize = 8;

/// Draws the VM table and the detail pane in `area`.
pub fn draw(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let areas = layout::vm_areas(area);
    draw_table_pane(frame, areas.list, model, t);
    draw_detail(frame, areas.detail, model, t);
}

/// The table, with only the rows that can be seen built.
fn draw_table_pane(frame: &mut Frame, list: Rect, model: &Model, t: &Theme) {
    let vms = model.visible_vms();
    let selected_idx = model
        .vm_selected
        .as_ref()
        .and_then(|s| vms.iter().position(|v| &v.name == s));
    // Only build the rows that can be seen: the table is virtualised so
    // 10,000 VMs cost what a screenful costs.
    let visible_rows = layout::table_rows(list);
    let start = layout::vm_first_row(selected_idx, list);
    let rows: Vec<Row> = vms
        .iter()
        .skip(start)
        .take(visible_rows.max(1))
        .map(|vm| vm_row(model, vm, t))
        .collect();
    let name_width = vms
        .iter()
        .map(|v| v.name.len())
        .max()
        .unwrap_or(4)
        .clamp(usize::from(NAME_COLUMN.0), usize::from(NAME_COLUMN.1)) as u16
        + 1;
    draw_table(
        frame,
        list,
        TableSpec {
            title: table_title(model, vms.len()),
            header: vec![
                "NAME", "STATE", "NODE", "VCPU", "MEM MIB", "UPTIME", "RESTARTS", "PRIO",
            ],
            rows,
            widths: vec![
                Constraint::Length(name_width),
                Constraint::Length(10),
                Constraint::Length(5),
                Constraint::Length(5),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(9),
                Constraint::Length(5),
            ],
            selected: selected_idx.map(|i| i.saturating_sub(start)),
        },
        t,
    );
}

/// " vms (N) sort:name↑ node:1 /filter ".
fn table_title(model: &Model, count: usize) -> String {
    let mut title = format!(
        " vms ({count}) sort:{}{} ",
        model.vm_sort.title().to_lowercase(),
        if model.vm_sort_desc { "↓" } else { "↑" }
    );
    if let Some(n) = model.vm_node_filter {
        title.push_str(&format!("node:{n} "));
    }
    if !model.vm_filter.is_empty() {
        title.push_str(&format!("/{} ", model.vm_filter));
    }
    title
}

/// One VM's row.
fn vm_row(model: &Model, vm: &pb::Vm, t: &Theme) -> Row<'static> {
    let spec = vm.spec.clone().unwrap_or_default();
    let word = vm_state_word(vm.state);
    Row::new(vec![
        Cell::from(vm.name.clone()),
        Cell::from(word).style(t.state(word)),
        Cell::from(if vm.node_id == 0 {
            "-".into()
        } else {
            vm.node_id.to_string()
        }),
        Cell::from(spec.vcpus.to_string()),
        Cell::from(spec.memory_mib.to_string()),
        Cell::from(match model.uptime_s(vm) {
            0 => "-".to_string(),
            s => human_secs(s),
        }),
        Cell::from(restarts(vm).to_string()),
        Cell::from(spec.priority.to_string()),
    ])
}

/// The selected VM's detail pane.
fn draw_detail(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let Some(vm) = model.vm_selected.as_ref().and_then(|n| model.vms.get(n)) else {
        frame.render_widget(
            Paragraph::new(Line::styled("no VM selected", t.dim()))
                .block(block(" detail ".into(), t)),
            area,
        );
        return;
    };
    let mut lines = summary_lines(model, vm, t);
    lines.extend(console_lines(model, vm, t));
    lines.extend(history_lines(model, vm, t));
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block(format!(" {} ", vm.name), t)),
        area,
    );
}

/// State, placement, spec, policy, process and reason.
fn summary_lines<'a>(model: &Model, vm: &pb::Vm, t: &Theme) -> Vec<Line<'a>> {
    let spec = vm.spec.clone().unwrap_or_default();
    let desired = match pb::DesiredState::try_from(vm.desired_state) {
        Ok(pb::DesiredState::Stopped) => "stopped",
        _ => "running",
    };
    let word = vm_state_word(vm.state);
    let mut lines = vec![
        Line::from(vec![
            Span::raw("state:     "),
            Span::styled(word, t.state(word)),
            Span::raw(format!(" (desired {desired})")),
        ]),
        Line::raw(format!("placement: {}", placement(model, vm))),
        Line::raw(format!(
            "spec:      {} vCPU, {} MiB, {}",
            spec.vcpus,
            spec.memory_mib,
            boot(&spec)
        )),
        Line::raw(format!(
            "policy:    restart {}  priority {}{}",
            match pb::RestartPolicy::try_from(spec.restart_policy) {
                Ok(pb::RestartPolicy::OnFailure) => "on-failure",
                Ok(pb::RestartPolicy::Never) => "never",
                _ => "always",
            },
            spec.priority,
            if spec.preemptible {
                " (preemptible)"
            } else {
                ""
            }
        )),
        Line::raw(format!(
            "process:   pid {}  restarts {}",
            vm.observed.map_or(0, |o| o.pid),
            restarts(vm)
        )),
    ];
    lines.extend(rules_lines(&spec));
    if !vm.reason.is_empty() {
        lines.push(Line::raw(format!("reason:    {}", vm.reason)));
    }
    lines
}

/// The VM's placement rules: constraints, group, pin and strategy (only
/// the ones it has).
fn rules_lines<'a>(spec: &pb::VmSpec) -> Vec<Line<'a>> {
    let mut lines = Vec::new();
    if !spec.constraints.is_empty() {
        lines.push(Line::raw(format!(
            "rules:     {}",
            spec.constraints.join("; ")
        )));
    }
    if !spec.group.is_empty() {
        let max = match spec.max_per_node {
            0 => "no limit per node".to_string(),
            n => format!("at most {n} per node"),
        };
        let spread = if spec.spread_by.is_empty() {
            String::new()
        } else {
            format!(", spread by {}", spec.spread_by)
        };
        lines.push(Line::raw(format!(
            "group:     {} ({max}{spread})",
            spec.group
        )));
    }
    if spec.node_id != 0 {
        lines.push(Line::raw(format!("pinned:    node {}", spec.node_id)));
    }
    if !spec.strategy.is_empty() {
        lines.push(Line::raw(format!("strategy:  {}", spec.strategy)));
    }
    lines
}

/// What the VM boots: a runner, a kernel or an image.
fn boot(spec: &pb::VmSpec) -> String {
    if !spec.runner.is_empty() {
        format!("runner {}", spec.runner)
    } else if !spec.kernel.is_empty() {
        format!("kernel {}", spec.kernel)
    } else {
        format!(
            "image {}",
            if spec.image.is_empty() {
                DEFAULT_IMAGE
            } else {
                &spec.image
            }
        )
    }
}

/// Where the VM is placed, or why it is not.
fn placement(model: &Model, vm: &pb::Vm) -> String {
    if vm.node_id == 0 {
        if vm.placement.is_empty() {
            format!("not placed: {}", vm.reason)
        } else {
            vm.placement.clone()
        }
    } else {
        let node = model
            .nodes
            .get(&vm.node_id)
            .map_or(String::new(), |n| format!(" ({})", n.address));
        format!("node {}{node}, epoch {}", vm.node_id, vm.epoch)
    }
}

/// The VM's newest console lines, when its log is open.
fn console_lines<'a>(model: &Model, vm: &pb::Vm, t: &Theme) -> Vec<Line<'a>> {
    let logs = &model.logs;
    if logs.vm.as_deref() != Some(vm.name.as_str()) || logs.lines.is_empty() {
        return vec![];
    }
    let n = logs.lines.len();
    std::iter::once(Line::styled("console:", t.title()))
        .chain(
            logs.lines
                .range(n.saturating_sub(DETAIL_CONSOLE_LINES)..)
                .map(|l| Line::raw(format!("  {l}"))),
        )
        .collect()
}

/// The VM's newest events.
fn history_lines<'a>(model: &Model, vm: &pb::Vm, t: &Theme) -> Vec<Line<'a>> {
    let subject = format!("vm/{}", vm.name);
    let history: Vec<&pb::Event> = model
        .events
        .iter()
        .filter(|e| e.subject == subject)
        .collect();
    let mut lines = vec![Line::styled("history:", t.title())];
    for e in history.iter().rev().take(DETAIL_HISTORY).rev() {
        lines.push(Line::from(vec![
            Span::styled(format!("{:>7} ", e.revision), t.dim()),
            Span::raw(e.kind.trim_start_matches("vm.").to_string()),
        ]));
    }
    lines
}
