//! Running the console in a real terminal: raw mode and the alternate
//! screen (restored on quit, error and panic), input on its own thread,
//! and the loop that feeds messages to `update` and draws.

use super::model::Model;
use super::msg::{Cmd, Msg};
use super::net::{Net, MSG_BUFFER};
use super::update::update;
use super::view::view;
use ratatui::crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event};
use ratatui::crossterm::execute;
use std::time::Duration;
use tokio::sync::mpsc;

/// Messages applied per frame at most, so a burst of events cannot starve input.
const MAX_MSGS_PER_FRAME: usize = 2048;
/// Clock tick.
const TICK: Duration = Duration::from_millis(250);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the console against `endpoints` until the operator quits.
pub async fn run(endpoints: Vec<String>, read_only: bool) -> std::io::Result<()> {
    if endpoints.is_empty() {
        return Err(std::io::Error::other(
            "no endpoint given: pass --endpoint HOST:PORT",
        ));
    }
    let (tx, mut rx) = mpsc::channel(MSG_BUFFER);
    let mut net = Net::start(endpoints.clone(), tx.clone());
    let mut model = Model::new(&endpoints[0], read_only);
    model.color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    model.now_ms = now_ms();

    // ratatui::init installs a panic hook that restores the terminal first.
    let mut terminal = ratatui::init();
    let _ = execute!(std::io::stdout(), EnableMouseCapture);
    if let Ok(size) = terminal.size() {
        model.size = (size.width, size.height);
    }

    let input_tx = tx.clone();
    std::thread::spawn(move || loop {
        match event::poll(Duration::from_millis(200)) {
            Ok(true) => {
                let msg = match event::read() {
                    Ok(Event::Key(k)) if k.kind == event::KeyEventKind::Press => Msg::Key(k),
                    Ok(Event::Mouse(m)) => Msg::Mouse(m),
                    Ok(Event::Resize(width, height)) => Msg::Resize { width, height },
                    Ok(_) => continue,
                    Err(_) => return,
                };
                if input_tx.blocking_send(msg).is_err() {
                    return;
                }
            }
            Ok(false) => {
                if input_tx.is_closed() {
                    return;
                }
            }
            Err(_) => return,
        }
    });
    let tick_tx = tx.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(TICK).await;
            if tick_tx.send(Msg::Tick { now_ms: now_ms() }).await.is_err() {
                return;
            }
        }
    });
    drop(tx);

    let result = loop {
        if let Err(e) = terminal.draw(|f| view(f, &model)) {
            break Err(e);
        }
        let Some(first) = rx.recv().await else {
            break Ok(());
        };
        let mut msgs = vec![first];
        while msgs.len() < MAX_MSGS_PER_FRAME {
            match rx.try_recv() {
                Ok(m) => msgs.push(m),
                Err(_) => break,
            }
        }
        for msg in msgs {
            for cmd in update(&mut model, msg) {
                match cmd {
                    Cmd::Run(action) => net.run(action),
                    Cmd::OpenLogs(vm) => net.open_logs(vm),
                    Cmd::CloseLogs => net.close_logs(),
                    Cmd::Quit => {}
                }
            }
        }
        if model.quit {
            break Ok(());
        }
    };
    let _ = execute!(std::io::stdout(), DisableMouseCapture);
    ratatui::restore();
    result
}
