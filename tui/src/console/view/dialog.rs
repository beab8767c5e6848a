//! The boxes drawn over a view: the confirmation of a destructive action
//! and the VM create form.

use super::theme::Theme;
use super::widgets::{block, centered};
use crate::console::model::CreateForm;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

/// Narrowest the confirmation box gets.
const CONFIRM_MIN_WIDTH: u16 = 40;
/// Columns of the confirmation box beyond its question.
const CONFIRM_PADDING: u16 = 8;
/// Rows of the confirmation box, borders included.
const CONFIRM_ROWS: u16 = 5;
/// Size of the create form (columns, rows), borders included.
const FORM_SIZE: (u16, u16) = (50, 10);
/// Columns of the form's labels, before the values.
const FORM_LABEL_WIDTH: usize = 11;

/// Asks whether to go ahead with `text` (an action's description).
pub fn draw_confirm(frame: &mut Frame, text: &str, t: &Theme) {
    let width = u16::try_from(text.len())
        .unwrap_or(u16::MAX)
        .saturating_add(CONFIRM_PADDING)
        .max(CONFIRM_MIN_WIDTH);
    let area = centered(frame.area(), width, CONFIRM_ROWS);
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

/// The VM create form, its focused field marked, and its last error.
pub fn draw_form(frame: &mut Frame, form: &CreateForm, t: &Theme) {
    let area = centered(frame.area(), FORM_SIZE.0, FORM_SIZE.1);
    frame.render_widget(Clear, area);
    let mut lines: Vec<Line> = CreateForm::LABELS
        .iter()
        .zip(&form.fields)
        .enumerate()
        .map(|(i, (label, value))| {
            let focus = i == form.focus;
            Line::from(vec![
                Span::styled(
                    format!(" {label:<FORM_LABEL_WIDTH$}"),
                    if focus { t.title() } else { Style::default() },
                ),
                Span::styled(
                    format!("{value}{}", if focus { "█" } else { "" }),
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
