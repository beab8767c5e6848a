//! The console's styles, in one place, with and without colour (`NO_COLOR`).

use ratatui::style::{Color, Modifier, Style};

/// Styles, with or without colour.
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    /// Draw with colours; without, emphasis uses bold and reverse only.
    pub color: bool,
}

impl Theme {
    /// Text in colour `c` (plain without colour).
    pub fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    /// Titles, headers and keys.
    pub fn title(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    /// The selected row, the current view's tab and the focused field.
    pub fn selected(&self) -> Style {
        if self.color {
            Style::default()
                .bg(Color::DarkGray)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::REVERSED)
        }
    }

    /// Something the operator must not overlook (the INSECURE marker):
    /// bold red, or bold reversed without colour.
    pub fn alarm(&self) -> Style {
        if self.color {
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        }
    }

    /// Secondary text.
    pub fn dim(&self) -> Style {
        self.fg(Color::DarkGray)
    }

    /// A search match in the logs.
    pub fn highlight(&self) -> Style {
        if self.color {
            Style::default().bg(Color::Yellow).fg(Color::Black)
        } else {
            Style::default().add_modifier(Modifier::REVERSED)
        }
    }

    /// A state word: green when well, red when broken, yellow in between.
    pub fn state(&self, word: &str) -> Style {
        match word {
            "running" | "ready" | "alive" | "leader" | "live" => self.fg(Color::Green),
            "failed" | "lost" | "down" | "reconnecting" => self.fg(Color::Red),
            "pending" | "scheduled" | "starting" | "stopping" | "suspect" | "cordoned"
            | "draining" | "connecting" => self.fg(Color::Yellow),
            _ => Style::default(),
        }
    }
}
