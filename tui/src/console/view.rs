//! Drawing: a pure function of the model onto a ratatui frame.

use super::model::*;
use super::msg::Link;
use super::update::link_word;
use blixard_shared::proto::v1 as pb;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

/// Styles, with or without colour.
struct Theme {
    color: bool,
}

impl Theme {
    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }
    fn title(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
    fn selected(&self) -> Style {
        if self.color {
            Style::default()
                .bg(Color::DarkGray)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::REVERSED)
        }
    }
    fn dim(&self) -> Style {
        self.fg(Color::DarkGray)
    }
    fn state(&self, word: &str) -> Style {
        match word {
            "running" | "ready" | "alive" | "leader" | "live" => self.fg(Color::Green),
            "failed" | "lost" | "down" | "reconnecting" => self.fg(Color::Red),
            "pending" | "scheduled" | "starting" | "stopping" | "suspect" | "cordoned"
            | "draining" | "connecting" => self.fg(Color::Yellow),
            _ => Style::default(),
        }
    }
}

/// The screen's parts: header, body, status line, footer.
pub fn screen_areas(area: Rect) -> [Rect; 4] {
    Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area)
}

/// The VM table and the detail pane inside the body: side by side on wide
/// terminals, stacked on narrow ones.
pub fn vm_areas(body: Rect) -> [Rect; 2] {
    if body.width >= 120 {
        Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)]).areas(body)
    } else {
        Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(body)
    }
}

/// The first VM row drawn, so the selected row stays visible.
pub fn vm_first_row(selected: Option<usize>, list: Rect) -> usize {
    let visible_rows = list.height.saturating_sub(3) as usize;
    match selected {
        Some(i) if i >= visible_rows => i + 1 - visible_rows,
        _ => 0,
    }
}

/// Draws the whole console.
pub fn view(frame: &mut Frame, model: &Model) {
    let theme = Theme { color: model.color };
    let [header, body, status, footer] = screen_areas(frame.area());
    draw_header(frame, header, model, &theme);
    match model.view {
        View::Overview => draw_overview(frame, body, model, &theme),
        View::Nodes => draw_nodes(frame, body, model, &theme),
        View::Vms => draw_vms(frame, body, model, &theme),
        View::Logs => draw_logs(frame, body, model, &theme),
        View::Events => draw_events(frame, body, model, &theme),
        View::Raft => draw_raft(frame, body, model, &theme),
        View::Console => draw_console(frame, body, &theme),
    }
    draw_status(frame, status, model, &theme);
    draw_footer(frame, footer, model, &theme);
    match &model.input {
        Input::Confirm(action) => draw_confirm(frame, &action.describe(), &theme),
        Input::Form(form) => draw_form(frame, form, &theme),
        _ => {}
    }
    if model.show_help {
        draw_help(frame, model, &theme);
    }
}

fn ago(now_ms: u64, since_ms: u64) -> String {
    let s = now_ms.saturating_sub(since_ms) / 1000;
    human_secs(s)
}

/// "42s", "3m12s", "5h03m", "2d04h".
pub fn human_secs(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

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
    let word = link_word(&model.link);
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
        if model.read_only {
            Span::styled("  read-only", t.fg(Color::Yellow))
        } else {
            Span::raw("")
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

fn block<'a>(title: String, t: &Theme) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .title(Span::styled(title, t.title()))
}

fn bar(used: u64, total: u64, width: usize) -> String {
    if total == 0 {
        return format!("{:width$}", "n/a");
    }
    let frac = (used as f64 / total as f64).clamp(0.0, 1.0);
    let filled = (frac * width as f64).round() as usize;
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

fn draw_overview(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let [top, bottom] = Layout::vertical([Constraint::Length(9), Constraint::Min(3)]).areas(area);
    let [cluster, counts] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(top);
    let mut lines = Vec::new();
    match &model.status {
        Some(s) => {
            let voters = s.members.iter().filter(|m| m.voter).count();
            let alive = s
                .members
                .iter()
                .filter(|m| m.voter && m.health == pb::NodeHealth::Alive as i32)
                .count();
            let healthy = s.leader_id != 0 && alive * 2 > voters;
            let health = if healthy { "healthy" } else { "degraded" };
            lines.push(Line::from(vec![
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
            ]));
            lines.push(Line::raw(format!(
                "leader:  node {}   term {}",
                if s.leader_id == 0 {
                    "-".into()
                } else {
                    s.leader_id.to_string()
                },
                s.term
            )));
            lines.push(Line::raw(format!(
                "commit:  {}   applied: {}",
                s.commit_index, s.applied_index
            )));
            for m in s.members.iter().take(4) {
                let role = member_role(m);
                lines.push(Line::from(vec![
                    Span::raw(format!(" {:>2} {:<16} ", m.node_id, m.address)),
                    Span::styled(format!("{role:<8}"), t.state(role)),
                    Span::raw(format!(" lag {}", m.lag)),
                ]));
            }
        }
        None => lines.push(Line::styled("waiting for the first status ...", t.dim())),
    }
    frame.render_widget(
        Paragraph::new(lines).block(block(" cluster ".into(), t)),
        cluster,
    );

    let mut by_state: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for vm in model.vms.values() {
        *by_state.entry(state_word(vm.state)).or_default() += 1;
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
        counts,
    );

    let rows = bottom.height.saturating_sub(2) as usize;
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
        bottom,
    );
}

fn member_role(m: &pb::Member) -> &'static str {
    match pb::MemberRole::try_from(m.role) {
        Ok(pb::MemberRole::Leader) => "leader",
        Ok(pb::MemberRole::Follower) => "follower",
        Ok(pb::MemberRole::Learner) => "learner",
        _ => "unknown",
    }
}

fn event_line<'a>(e: &pb::Event, t: &Theme) -> Line<'a> {
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
struct TableSpec {
    title: String,
    header: Vec<&'static str>,
    rows: Vec<Row<'static>>,
    widths: Vec<Constraint>,
    selected: Option<usize>,
}

/// Renders a table with its selected row highlighted.
fn draw_table(frame: &mut Frame, area: Rect, spec: TableSpec, t: &Theme) {
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

fn draw_nodes(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let nodes = model.visible_nodes();
    let selected = model
        .node_selected
        .and_then(|s| nodes.iter().position(|n| n.id == s));
    let wide = area.width >= 120;
    let gauge = if wide { 8 } else { 0 };
    let rows: Vec<Row> = nodes
        .iter()
        .map(|n| {
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
            let labels: Vec<String> = {
                let mut l: Vec<_> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                l.sort();
                l
            };
            Row::new(vec![
                Cell::from(n.id.to_string()),
                Cell::from(n.address.clone()),
                Cell::from(word).style(t.state(word)),
                Cell::from(meter(u64::from(used.vcpus), u64::from(cap.vcpus))),
                Cell::from(meter(used.memory_mib, cap.memory_mib)),
                Cell::from(n.vms.len().to_string()),
                Cell::from(n.zone.clone()),
                Cell::from(n.backend.clone()),
                Cell::from(labels.join(",")),
            ])
        })
        .collect();
    let filter = if model.node_filter.is_empty() {
        String::new()
    } else {
        format!(" /{}", model.node_filter)
    };
    draw_table(
        frame,
        area,
        TableSpec {
            title: format!(" nodes ({}){filter} ", nodes.len()),
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

fn draw_vms(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let [list, detail] = vm_areas(area);
    let vms = model.visible_vms();
    let selected_idx = model
        .vm_selected
        .as_ref()
        .and_then(|s| vms.iter().position(|v| &v.name == s));
    // Only build the rows that can be seen: the table is virtualised so
    // 10,000 VMs cost what a screenful costs.
    let visible_rows = list.height.saturating_sub(3) as usize;
    let start = vm_first_row(selected_idx, list);
    let rows: Vec<Row> = vms
        .iter()
        .skip(start)
        .take(visible_rows.max(1))
        .map(|vm| {
            let spec = vm.spec.clone().unwrap_or_default();
            let word = state_word(vm.state);
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
        })
        .collect();
    let name_width = vms
        .iter()
        .map(|v| v.name.len())
        .max()
        .unwrap_or(4)
        .clamp(12, 40) as u16
        + 1;
    let mut title = format!(
        " vms ({}) sort:{}{} ",
        vms.len(),
        model.vm_sort.title().to_lowercase(),
        if model.vm_sort_desc { "↓" } else { "↑" }
    );
    if let Some(n) = model.vm_node_filter {
        title.push_str(&format!("node:{n} "));
    }
    if !model.vm_filter.is_empty() {
        title.push_str(&format!("/{} ", model.vm_filter));
    }
    draw_table(
        frame,
        list,
        TableSpec {
            title,
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
            selected: selected_idx.map(|i| i - start),
        },
        t,
    );
    draw_vm_detail(frame, detail, model, t);
}

fn draw_vm_detail(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let Some(vm) = model.vm_selected.as_ref().and_then(|n| model.vms.get(n)) else {
        frame.render_widget(
            Paragraph::new(Line::styled("no VM selected", t.dim()))
                .block(block(" detail ".into(), t)),
            area,
        );
        return;
    };
    let spec = vm.spec.clone().unwrap_or_default();
    let desired = match pb::DesiredState::try_from(vm.desired_state) {
        Ok(pb::DesiredState::Stopped) => "stopped",
        _ => "running",
    };
    let boot = if !spec.runner.is_empty() {
        format!("runner {}", spec.runner)
    } else if !spec.kernel.is_empty() {
        format!("kernel {}", spec.kernel)
    } else {
        format!(
            "image {}",
            if spec.image.is_empty() {
                "default"
            } else {
                &spec.image
            }
        )
    };
    let placement = if vm.node_id == 0 {
        format!("not placed: {}", vm.reason)
    } else {
        let node = model
            .nodes
            .get(&vm.node_id)
            .map_or(String::new(), |n| format!(" ({})", n.address));
        format!("node {}{node}, epoch {}", vm.node_id, vm.epoch)
    };
    let mut lines = vec![
        Line::from(vec![
            Span::raw("state:     "),
            Span::styled(state_word(vm.state), t.state(state_word(vm.state))),
            Span::raw(format!(" (desired {desired})")),
        ]),
        Line::raw(format!("placement: {placement}")),
        Line::raw(format!(
            "spec:      {} vCPU, {} MiB, {boot}",
            spec.vcpus, spec.memory_mib
        )),
        Line::raw(format!(
            "policy:    restart {}  priority {}",
            match pb::RestartPolicy::try_from(spec.restart_policy) {
                Ok(pb::RestartPolicy::OnFailure) => "on-failure",
                Ok(pb::RestartPolicy::Never) => "never",
                _ => "always",
            },
            spec.priority
        )),
        Line::raw(format!(
            "process:   pid {}  restarts {}",
            vm.observed.map_or(0, |o| o.pid),
            restarts(vm)
        )),
    ];
    if !vm.reason.is_empty() {
        lines.push(Line::raw(format!("reason:    {}", vm.reason)));
    }
    if model.logs.vm.as_deref() == Some(vm.name.as_str()) && !model.logs.lines.is_empty() {
        lines.push(Line::styled("console:", t.title()));
        let n = model.logs.lines.len();
        for l in model.logs.lines.range(n.saturating_sub(3)..) {
            lines.push(Line::raw(format!("  {l}")));
        }
    }
    lines.push(Line::styled("history:", t.title()));
    let subject = format!("vm/{}", vm.name);
    let history: Vec<&pb::Event> = model
        .events
        .iter()
        .filter(|e| e.subject == subject)
        .collect();
    for e in history.iter().rev().take(8).rev() {
        lines.push(Line::from(vec![
            Span::styled(format!("{:>7} ", e.revision), t.dim()),
            Span::raw(e.kind.trim_start_matches("vm.").to_string()),
        ]));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block(format!(" {} ", vm.name), t)),
        area,
    );
}

fn draw_logs(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
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

fn highlight<'a>(line: &str, term: &str, t: &Theme) -> Line<'a> {
    if term.is_empty() || !line.contains(term) {
        return Line::raw(line.to_string());
    }
    let mut spans = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find(term) {
        spans.push(Span::raw(rest[..i].to_string()));
        spans.push(Span::styled(
            term.to_string(),
            if t.color {
                Style::default().bg(Color::Yellow).fg(Color::Black)
            } else {
                Style::default().add_modifier(Modifier::REVERSED)
            },
        ));
        rest = &rest[i + term.len()..];
    }
    spans.push(Span::raw(rest.to_string()));
    Line::from(spans)
}

fn draw_events(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let events = model.visible_events();
    let height = area.height.saturating_sub(2) as usize;
    let end = events.len().saturating_sub(model.events_scroll);
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = events[start..end]
        .iter()
        .map(|e| event_line(e, t))
        .collect();
    let filter = if model.events_filter.is_empty() {
        String::new()
    } else {
        format!(" /{}", model.events_filter)
    };
    frame.render_widget(
        Paragraph::new(lines).block(block(format!(" events ({}){filter} ", events.len()), t)),
        area,
    );
}

fn draw_raft(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let [members, history] =
        Layout::vertical([Constraint::Min(5), Constraint::Length(8)]).areas(area);
    let Some(s) = &model.status else {
        frame.render_widget(
            Paragraph::new(Line::styled("no status yet", t.dim())).block(block(" raft ".into(), t)),
            area,
        );
        return;
    };
    let selected = model
        .member_selected
        .and_then(|id| s.members.iter().position(|m| m.node_id == id));
    let rows: Vec<Row> = s
        .members
        .iter()
        .map(|m| {
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
            ])
        })
        .collect();
    draw_table(
        frame,
        members,
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
                "ID", "ADDRESS", "ROLE", "VOTER", "MATCHED", "LAG", "CONTACT",
            ],
            rows,
            widths: vec![
                Constraint::Length(4),
                Constraint::Length(22),
                Constraint::Length(9),
                Constraint::Length(6),
                Constraint::Length(9),
                Constraint::Length(7),
                Constraint::Min(8),
            ],
            selected,
        },
        t,
    );
    let lines: Vec<Line> = model
        .leader_history
        .iter()
        .rev()
        .take(history.height.saturating_sub(2) as usize)
        .map(|(at, leader, term)| {
            Line::raw(format!(
                "{:>10} ago  node {leader} leads term {term}",
                ago(model.now_ms, *at)
            ))
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(block(" leadership changes ".into(), t)),
        history,
    );
}

fn draw_console(frame: &mut Frame, area: Rect, t: &Theme) {
    let widget = tui_logger::TuiLoggerWidget::default()
        .block(block(" console log ".into(), t))
        .output_separator(' ')
        .output_timestamp(Some("%H:%M:%S".into()))
        .output_target(false)
        .output_file(false)
        .output_line(false);
    frame.render_widget(widget, area);
}

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

/// The keys that work on `view`, for the footer and help.
pub fn view_keys(view: View, read_only: bool) -> Vec<(&'static str, &'static str)> {
    let mut keys: Vec<(&str, &str)> = match view {
        View::Vms => vec![
            ("enter/l", "logs"),
            ("o/O", "sort"),
            ("c", "create"),
            ("u", "start"),
            ("x", "stop"),
            ("r", "restart"),
            ("d/D", "delete/force"),
        ],
        View::Nodes => vec![("enter", "vms"), ("c", "cordon"), ("u", "uncordon")],
        View::Raft => vec![("t", "transfer leader")],
        View::Logs => vec![("f", "follow"), ("/", "search"), ("n", "next match")],
        _ => vec![],
    };
    if read_only {
        keys.retain(|(_, what)| {
            matches!(
                *what,
                "logs" | "sort" | "vms" | "follow" | "search" | "next match"
            )
        });
    }
    keys
}

fn draw_footer(frame: &mut Frame, area: Rect, model: &Model, t: &Theme) {
    let mut spans = Vec::new();
    for (i, v) in View::ALL.iter().enumerate() {
        let style = if *v == model.view {
            t.selected()
        } else {
            t.dim()
        };
        spans.push(Span::styled(format!("{i}:{} ", v.name()), style));
    }
    spans.push(Span::raw("│ "));
    for (k, what) in view_keys(model.view, model.read_only) {
        spans.push(Span::styled(k.to_string(), t.title()));
        spans.push(Span::raw(format!(" {what} ")));
    }
    spans.push(Span::styled(": / ? esc q", t.dim()));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn draw_confirm(frame: &mut Frame, text: &str, t: &Theme) {
    let area = centered(frame.area(), (text.len() as u16 + 8).max(40), 5);
    frame.render_widget(Clear, area);
    let lines = vec![
        Line::raw(format!(" {text}?")),
        Line::raw(""),
        Line::styled(" y/enter: yes    any other key: no", t.dim()),
    ];
    frame.render_widget(
        Paragraph::new(lines).block(block(" confirm ".into(), t)),
        area,
    );
}

fn draw_form(frame: &mut Frame, form: &CreateForm, t: &Theme) {
    let area = centered(frame.area(), 50, 10);
    frame.render_widget(Clear, area);
    let labels = ["name", "vCPUs", "memory MiB", "image"];
    let mut lines: Vec<Line> = labels
        .iter()
        .enumerate()
        .map(|(i, label)| {
            let focus = i == form.focus;
            Line::from(vec![
                Span::styled(
                    format!(" {label:<11}"),
                    if focus { t.title() } else { Style::default() },
                ),
                Span::styled(
                    format!("{}{}", form.fields[i], if focus { "█" } else { "" }),
                    if focus {
                        t.selected()
                    } else {
                        Style::default()
                    },
                ),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    if let Some(err) = &form.error {
        lines.push(Line::styled(format!(" {err}"), t.fg(Color::Red)));
    }
    lines.push(Line::styled(
        " tab: next field  enter: create  esc: cancel",
        t.dim(),
    ));
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block(" create vm ".into(), t)),
        area,
    );
}

fn draw_help(frame: &mut Frame, model: &Model, t: &Theme) {
    let area = centered(frame.area(), 64, 22);
    frame.render_widget(Clear, area);
    let mut lines = vec![
        Line::styled(" everywhere", t.title()),
        Line::raw("   0-6        switch view      :  command (tab completes)"),
        Line::raw("   j/k ↑/↓    move             /  filter this list"),
        Line::raw("   g/G        first/last       ?  this help"),
        Line::raw("   esc        back             q  quit"),
        Line::raw(""),
        Line::styled(format!(" {} view", model.view.name()), t.title()),
    ];
    for (k, what) in view_keys(model.view, model.read_only) {
        lines.push(Line::raw(format!("   {k:<10} {what}")));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(" commands", t.title()));
    lines.push(Line::raw(
        "   :vms :nodes :events :raft :console :logs NAME",
    ));
    if !model.read_only {
        lines.push(Line::raw(
            "   :vm create NAME [VCPUS] [MIB] [IMAGE]   :vm stop NAME",
        ));
        lines.push(Line::raw(
            "   :vm start|restart|delete NAME   :node cordon|uncordon ID",
        ));
        lines.push(Line::raw("   :transfer [ID]"));
    }
    frame.render_widget(
        Paragraph::new(lines).block(block(" help (any key closes) ".into(), t)),
        area,
    );
}
