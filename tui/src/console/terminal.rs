//! Running the console in a real terminal: raw mode and the alternate
//! screen (restored on quit, error and panic), input on its own thread,
//! and the loop that feeds messages to `update` and draws.

use super::model::Model;
use super::msg::{Cmd, Msg};
use super::net::{Net, MSG_BUFFER};
use super::update::update;
use super::view::view;
use blixard_shared::time::now_ms;
use blixard_shared::Credentials;
use ratatui::crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, Event};
use ratatui::crossterm::execute;
use std::time::Duration;
use tokio::sync::mpsc;

/// Messages applied per frame at most, so a burst of events cannot starve input.
const MAX_MSGS_PER_FRAME: usize = 2048;
/// Clock tick.
const TICK: Duration = Duration::from_millis(250);
/// How long the input thread waits for a terminal event before checking
/// whether the console has gone.
const INPUT_POLL: Duration = Duration::from_millis(200);

/// Runs the console against `endpoints`, calling with `credentials`
/// (TLS and token; plaintext is marked INSECURE in the header), until the
/// operator quits.
pub async fn run(
    endpoints: Vec<String>,
    read_only: bool,
    credentials: Credentials,
) -> std::io::Result<()> {
    let Some(first) = endpoints.first() else {
        return Err(std::io::Error::other(
            "no endpoint given: pass --endpoint HOST:PORT",
        ));
    };
    let (tx, rx) = mpsc::channel(MSG_BUFFER);
    let mut model = Model::new(first, read_only);
    model.insecure = credentials.is_insecure();
    let net = Net::start(endpoints.clone(), credentials, tx.clone());
    model.color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    model.now_ms = now_ms();

    // ratatui::init installs a panic hook that restores the terminal first.
    let mut terminal = ratatui::init();
    let _ = execute!(std::io::stdout(), EnableMouseCapture);
    if let Ok(size) = terminal.size() {
        model.size = (size.width, size.height);
    }
    spawn_input(tx.clone());
    spawn_ticks(tx);

    let result = event_loop(&mut terminal, model, rx, net).await;
    let _ = execute!(std::io::stdout(), DisableMouseCapture);
    ratatui::restore();
    result
}

/// Reads the terminal on its own thread (crossterm blocks) and sends key
/// presses, mouse events and resizes, until the console goes away.
fn spawn_input(tx: mpsc::Sender<Msg>) {
    std::thread::spawn(move || loop {
        match event::poll(INPUT_POLL) {
            Ok(true) => {
                let msg = match event::read() {
                    Ok(Event::Key(k)) if k.kind == event::KeyEventKind::Press => Msg::Key(k),
                    Ok(Event::Mouse(m)) => Msg::Mouse(m),
                    Ok(Event::Resize(width, height)) => Msg::Resize { width, height },
                    Ok(_) => continue,
                    Err(_) => return,
                };
                if tx.blocking_send(msg).is_err() {
                    return;
                }
            }
            Ok(false) => {
                if tx.is_closed() {
                    return;
                }
            }
            Err(_) => return,
        }
    });
}

/// Sends the wall clock every [`TICK`], until the console goes away.
fn spawn_ticks(tx: mpsc::Sender<Msg>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(TICK).await;
            if tx.send(Msg::Tick { now_ms: now_ms() }).await.is_err() {
                return;
            }
        }
    });
}

/// Draws, then applies every waiting message (up to
/// [`MAX_MSGS_PER_FRAME`]) and carries out their commands, until the
/// operator quits or every sender is gone.
async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    mut model: Model,
    mut rx: mpsc::Receiver<Msg>,
    mut net: Net,
) -> std::io::Result<()> {
    loop {
        terminal.draw(|f| view(f, &model))?;
        let Some(first) = rx.recv().await else {
            return Ok(());
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
                    Cmd::CheckAccess(keys) => net.check_access(keys),
                    Cmd::Quit => {}
                }
            }
        }
        if model.quit {
            return Ok(());
        }
    }
}
