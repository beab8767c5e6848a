//! The console's own log (what `tracing` records in this process), through
//! tui-logger.

use super::theme::Theme;
use super::widgets::block;
use ratatui::layout::Rect;
use ratatui::Frame;

/// Timestamp format of the console's own log lines.
const TIMESTAMP: &str = "%H:%M:%S";

/// Draws the console's own log in `area`.
pub fn draw(frame: &mut Frame, area: Rect, t: &Theme) {
    let widget = tui_logger::TuiLoggerWidget::default()
        .block(block(" console log ".into(), t))
        .output_separator(' ')
        .output_timestamp(Some(TIMESTAMP.into()))
        .output_target(false)
        .output_file(false)
        .output_line(false);
    frame.render_widget(widget, area);
}
