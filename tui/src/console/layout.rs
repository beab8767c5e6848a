//! Where things are on the screen: the geometry both the drawing (`view`)
//! and the mouse (`update`, mapping a click to a table row) must agree on.

use ratatui::layout::{Constraint, Layout, Position, Rect};

/// Rows of the header (link and cluster summary).
pub const HEADER_ROWS: u16 = 2;
/// Fewest rows the body (the current view) gets.
pub const MIN_BODY_ROWS: u16 = 3;
/// Rows of the status line.
pub const STATUS_ROWS: u16 = 1;
/// Rows of the footer (views and keys).
pub const FOOTER_ROWS: u16 = 1;
/// Terminals at least this wide get side-by-side panes and wider columns.
pub const WIDE_COLUMNS: u16 = 120;
/// Rows of a bordered table above its first data row: the top border and
/// the column header.
pub const TABLE_ROWS_ABOVE: u16 = 2;
/// Rows of a bordered table below its last data row: the bottom border.
pub const TABLE_ROWS_BELOW: u16 = 1;

/// The screen's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Screen {
    /// Link and cluster summary.
    pub header: Rect,
    /// The current view.
    pub body: Rect,
    /// Status line or input line.
    pub status: Rect,
    /// Views and keys.
    pub footer: Rect,
}

/// Cuts the terminal into header, body, status line and footer.
pub fn screen(area: Rect) -> Screen {
    let [header, body, status, footer] = Layout::vertical([
        Constraint::Length(HEADER_ROWS),
        Constraint::Min(MIN_BODY_ROWS),
        Constraint::Length(STATUS_ROWS),
        Constraint::Length(FOOTER_ROWS),
    ])
    .areas(area);
    Screen {
        header,
        body,
        status,
        footer,
    }
}

/// The VM view's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmAreas {
    /// The VM table.
    pub list: Rect,
    /// The selected VM's detail pane.
    pub detail: Rect,
}

/// The VM table and the detail pane inside the body: side by side on wide
/// terminals, stacked on narrow ones.
pub fn vm_areas(body: Rect) -> VmAreas {
    let [list, detail] = if body.width >= WIDE_COLUMNS {
        Layout::horizontal([Constraint::Percentage(62), Constraint::Percentage(38)]).areas(body)
    } else {
        Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(body)
    };
    VmAreas { list, detail }
}

/// Data rows a bordered table with a header row shows in `area`.
pub fn table_rows(area: Rect) -> usize {
    area.height
        .saturating_sub(TABLE_ROWS_ABOVE + TABLE_ROWS_BELOW) as usize
}

/// The first VM row drawn, so the selected row stays visible.
pub fn vm_first_row(selected: Option<usize>, list: Rect) -> usize {
    let visible_rows = table_rows(list);
    match selected {
        Some(i) if i >= visible_rows => i + 1 - visible_rows,
        _ => 0,
    }
}

/// The index of the data row at (`column`, `row`) of a bordered table
/// drawn in `area` from row `first` on, if the point is on a data row.
pub fn table_row_at(area: Rect, first: usize, column: u16, row: u16) -> Option<usize> {
    let inside = area.contains(Position::new(column, row))
        && row >= area.y + TABLE_ROWS_ABOVE
        && row + TABLE_ROWS_BELOW < area.y + area.height;
    inside.then(|| first + usize::from(row - area.y - TABLE_ROWS_ABOVE))
}
