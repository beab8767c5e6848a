//! What happened during a run: every client operation with its invocation
//! and response times, what the nemesis did and when, what each watcher saw,
//! and what the host sampler found running.

use std::sync::Mutex;
use tokio::time::Instant;

/// A client's request against one VM (the register is the VM's desired
/// state, or its absence).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `CreateVm`, running or stopped.
    Create { running: bool },
    /// `StartVm`: desired state running.
    Start,
    /// `StopVm`: desired state stopped.
    Stop,
    /// `DeleteVm` with force.
    Delete,
    /// Linearizable `GetVm`.
    Read,
}

/// How a request ended, as far as the client could tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// `AlreadyExists` (create only): definitely no effect.
    Exists,
    /// `NotFound`: definitely no effect.
    NotFound,
    /// A read's answer: the desired state (`true`: running), or absent.
    Value(Option<bool>),
    /// Timed out, unavailable, connection lost: it may or may not have
    /// taken effect, now or later.
    Unknown(String),
}

/// One operation of the history.
#[derive(Clone, Debug)]
pub struct Op {
    pub client: usize,
    /// The node the request was sent to (index into the lab).
    pub node: usize,
    pub key: String,
    pub call: Call,
    pub outcome: Outcome,
    /// Microseconds since the start of the run.
    pub invoked_us: u64,
    /// `None` when the outcome is unknown: the operation may take effect
    /// any time after its invocation.
    pub returned_us: Option<u64>,
    /// Revision of the VM record the acknowledgement carried.
    pub revision: Option<u64>,
}

/// One event as a watcher received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenEvent {
    pub revision: u64,
    pub kind: String,
    pub subject: String,
}

/// Everything a watcher received, in order, with the resumptions it made.
#[derive(Clone, Debug, Default)]
pub struct WatcherLog {
    pub node: usize,
    pub events: Vec<SeenEvent>,
    /// Revisions after which the server declared events lost to it
    /// (`OutOfRange`/`ResourceExhausted`): a declared gap, not a silent one.
    pub declared_gaps: Vec<u64>,
    pub reconnects: u64,
}

/// The shared recorder.
pub struct History {
    start: Instant,
    ops: Mutex<Vec<Op>>,
    nemesis: Mutex<Vec<(u64, String)>>,
    /// What clients saw that no register history can express (two copies
    /// of one request answered differently).
    anomalies: Mutex<Vec<String>>,
}

impl History {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
            nemesis: Mutex::new(Vec::new()),
            anomalies: Mutex::new(Vec::new()),
        }
    }

    /// Microseconds since the run started.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    pub fn record(&self, op: Op) {
        self.ops.lock().expect("history lock").push(op);
    }

    pub fn nemesis(&self, what: String) {
        let at = self.now_us();
        eprintln!("[{:>8.3}s] nemesis: {what}", at as f64 / 1e6);
        self.nemesis.lock().expect("history lock").push((at, what));
    }

    pub fn anomaly(&self, what: String) {
        self.anomalies.lock().expect("history lock").push(what);
    }

    pub fn anomalies(&self) -> Vec<String> {
        self.anomalies.lock().expect("history lock").clone()
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().expect("history lock").clone()
    }
}
