//! A simulated network for in-process clusters: nodes listen on made-up
//! addresses, connections are in-memory byte pipes, and the test cuts and
//! heals links, one way or both. A cut link refuses new connections and
//! resets the ones open across it (as a partition does once TCP keepalive
//! gives up, without the wait), so Raft sees its peers vanish and return.
//! The daemon reaches it through [`crate::transport::Transport::Sim`].

use super::rng::SimRng;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

/// Bytes one direction of a connection buffers before the writer waits.
const PIPE_BYTES: usize = 256 * 1024;
/// Connections one listener holds before `connect` waits for an accept.
const ACCEPT_QUEUE: usize = 64;

#[derive(Default)]
struct NetState {
    listeners: HashMap<SocketAddr, mpsc::Sender<SimStream>>,
    /// Directed links that carry nothing: (from, to).
    cut: HashSet<(SocketAddr, SocketAddr)>,
    /// Hosts whose machine is off: nothing reaches them, nothing leaves.
    down: HashSet<SocketAddr>,
    /// Bumped on every cut, so streams notice without taking the lock on
    /// every read while nothing changes.
    generation: u64,
    next_client_port: u16,
    /// Delay every write waits before its bytes can be read: a base, plus
    /// up to `jitter` drawn per write.
    base_delay: Duration,
    jitter: Duration,
    /// Extra delay on directed links: (from, to).
    slow: HashMap<(SocketAddr, SocketAddr), Duration>,
    /// Directed links that lose a write with this chance (percent); a lost
    /// write resets its connection, as TCP gives up on a segment.
    lossy: HashMap<(SocketAddr, SocketAddr), u64>,
    /// Draws delays and losses (seeded by [`SimNet::seeded`]).
    rng: Option<SimRng>,
}

/// The network every node and client of one simulation shares.
#[derive(Clone, Default)]
pub struct SimNet {
    state: Arc<Mutex<NetState>>,
    generation: Arc<AtomicU64>,
}

impl std::fmt::Debug for SimNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNet").finish_non_exhaustive()
    }
}

impl SimNet {
    /// An empty network that delivers every write at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty network whose writes arrive after `base_delay` plus up to
    /// `jitter`, drawn from `seed` (per connection, bytes stay in order;
    /// between connections they may overtake each other).
    pub fn seeded(seed: u64, base_delay: Duration, jitter: Duration) -> Self {
        let net = Self::default();
        {
            let mut s = net.state();
            s.base_delay = base_delay;
            s.jitter = jitter;
            s.rng = Some(SimRng::new(seed));
        }
        net
    }

    /// Adds `extra` delay to everything `from` sends to `to` (zero: none).
    pub fn slow_one_way(&self, from: SocketAddr, to: SocketAddr, extra: Duration) {
        let mut s = self.state();
        if extra.is_zero() {
            s.slow.remove(&(from, to));
        } else {
            s.slow.insert((from, to), extra);
        }
    }

    /// Makes `from` lose a write to `to` with `percent` chance (0: none),
    /// which resets that connection.
    pub fn lossy_one_way(&self, from: SocketAddr, to: SocketAddr, percent: u64) {
        let mut s = self.state();
        if percent == 0 {
            s.lossy.remove(&(from, to));
        } else {
            s.lossy.insert((from, to), percent.min(100));
        }
    }

    /// What becomes of a write `from` makes to `to` now: when it may be
    /// read, or `None` when it is lost.
    fn send(&self, from: SocketAddr, to: SocketAddr) -> Option<Duration> {
        let mut s = self.state();
        let loss = s.lossy.get(&(from, to)).copied().unwrap_or(0);
        let extra = s.slow.get(&(from, to)).copied().unwrap_or_default();
        let (base, jitter) = (s.base_delay, s.jitter);
        let Some(rng) = s.rng.as_mut() else {
            return Some(base + extra);
        };
        if loss > 0 && rng.chance(loss) {
            return None;
        }
        let spread = u64::try_from(jitter.as_micros()).unwrap_or(u64::MAX);
        Some(base + extra + Duration::from_micros(rng.below(spread.saturating_add(1))))
    }

    fn state(&self) -> MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Listens on `address`; the stream yields each accepted connection.
    pub fn bind(&self, address: SocketAddr) -> io::Result<SimIncoming> {
        let mut s = self.state();
        if s.listeners.get(&address).is_some_and(|l| !l.is_closed()) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("sim net: {address} is taken"),
            ));
        }
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        s.listeners.insert(address, tx);
        Ok(SimIncoming { rx })
    }

    /// Whether `from` can send to `to` now.
    pub fn reachable(&self, from: SocketAddr, to: SocketAddr) -> bool {
        let s = self.state();
        !s.cut.contains(&(from, to)) && !s.down.contains(&from) && !s.down.contains(&to)
    }

    /// Takes host `address` off the network (its machine lost power or
    /// froze) or puts it back; its open connections reset either way.
    pub fn set_down(&self, address: SocketAddr, down: bool) {
        let mut s = self.state();
        if down {
            s.down.insert(address);
        } else {
            s.down.remove(&address);
        }
        s.generation += 1;
        self.generation.store(s.generation, Ordering::SeqCst);
    }

    /// Stops everything `from` sends to `to` (a one-way partition).
    pub fn cut_one_way(&self, from: SocketAddr, to: SocketAddr) {
        let mut s = self.state();
        s.cut.insert((from, to));
        s.generation += 1;
        self.generation.store(s.generation, Ordering::SeqCst);
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&self, a: SocketAddr, b: SocketAddr) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Splits `side` from every address in `rest`, both ways.
    pub fn partition(&self, side: &[SocketAddr], rest: &[SocketAddr]) {
        for a in side {
            for b in rest {
                self.cut(*a, *b);
            }
        }
    }

    /// Heals every link: no cuts, no slow or lossy links (hosts that are
    /// down stay down).
    pub fn heal(&self) {
        let mut s = self.state();
        s.cut.clear();
        s.slow.clear();
        s.lossy.clear();
        s.generation += 1;
        self.generation.store(s.generation, Ordering::SeqCst);
    }

    /// A client address of its own, for a connector that is no node.
    pub fn client_address(&self) -> SocketAddr {
        let mut s = self.state();
        s.next_client_port = s.next_client_port.wrapping_add(1);
        SocketAddr::from(([10, 255, 255, 254], 20_000 + s.next_client_port))
    }

    /// Opens a connection from `from` to the listener at `to`.
    pub async fn connect(&self, from: SocketAddr, to: SocketAddr) -> io::Result<SimStream> {
        let listener = {
            let s = self.state();
            if s.cut.contains(&(from, to))
                || s.cut.contains(&(to, from))
                || s.down.contains(&from)
                || s.down.contains(&to)
            {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("sim net: {from} cannot reach {to}"),
                ));
            }
            s.listeners.get(&to).cloned().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("sim net: nothing listens on {to}"),
                )
            })?
        };
        let (near, far) = tokio::io::duplex(PIPE_BYTES);
        let (there, back) = (Arrivals::default(), Arrivals::default());
        let reset = Arc::new(AtomicBool::new(false));
        let client = SimStream::new(
            self.clone(),
            (from, to),
            near,
            (there.clone(), back.clone()),
            reset.clone(),
        );
        let server = SimStream::new(self.clone(), (to, from), far, (back, there), reset);
        listener.send(server).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("sim net: the listener on {to} is gone"),
            )
        })?;
        Ok(client)
    }

    /// A tonic connector for channels opened by `from`.
    pub fn connector(&self, from: SocketAddr) -> SimConnector {
        SimConnector {
            net: self.clone(),
            from,
        }
    }
}

/// The connections accepted on one simulated address.
pub struct SimIncoming {
    rx: mpsc::Receiver<SimStream>,
}

impl futures_util::Stream for SimIncoming {
    type Item = io::Result<SimStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|s| s.map(Ok))
    }
}

/// When the bytes written into one direction of a connection may be read:
/// (time, how many), in write order. Shared by the writing and the reading
/// end.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<VecDeque<(Instant, usize)>>>);

impl Arrivals {
    fn lock(&self) -> MutexGuard<'_, VecDeque<(Instant, usize)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One end of a simulated connection.
pub struct SimStream {
    net: SimNet,
    local: SocketAddr,
    remote: SocketAddr,
    pipe: DuplexStream,
    /// What this end wrote and when it arrives; what it may read and when.
    outgoing: Arrivals,
    incoming: Arrivals,
    /// Bytes that have arrived and not been read yet.
    arrived: usize,
    /// Wakes the reader when the next write arrives.
    wait: Option<Pin<Box<Sleep>>>,
    /// Latest arrival scheduled by this end: bytes stay in order.
    last_arrival: Option<Instant>,
    /// Set by either end when a write was lost: the connection is reset.
    reset: Arc<AtomicBool>,
    /// The cut generation last checked, and whether the link was whole then.
    checked: u64,
    broken: bool,
    scratch: Vec<u8>,
}

impl SimStream {
    fn new(
        net: SimNet,
        (local, remote): (SocketAddr, SocketAddr),
        pipe: DuplexStream,
        (outgoing, incoming): (Arrivals, Arrivals),
        reset: Arc<AtomicBool>,
    ) -> Self {
        Self {
            net,
            local,
            remote,
            pipe,
            outgoing,
            incoming,
            arrived: 0,
            wait: None,
            last_arrival: None,
            reset,
            checked: u64::MAX,
            broken: false,
            scratch: Vec::new(),
        }
    }

    /// Err once either direction of this connection has been cut or a
    /// write on it was lost.
    fn check(&mut self) -> io::Result<()> {
        let now = self.net.generation.load(Ordering::SeqCst);
        if now != self.checked {
            self.checked = now;
            self.broken = self.broken
                || !self.net.reachable(self.local, self.remote)
                || !self.net.reachable(self.remote, self.local);
        }
        if self.broken || self.reset.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("sim net: link {} - {} cut", self.local, self.remote),
            ));
        }
        Ok(())
    }

    /// Counts the bytes whose time has come; `Pending` (with a timer set)
    /// while written bytes are still on their way.
    fn poll_arrived(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.arrived > 0 {
                return Poll::Ready(());
            }
            let next = self.incoming.lock().front().copied();
            let Some((at, len)) = next else {
                // Nothing on its way: wait on the pipe itself, which wakes
                // the reader when the other end writes.
                return Poll::Ready(());
            };
            if at <= Instant::now() {
                self.incoming.lock().pop_front();
                self.arrived += len;
                continue;
            }
            let wait = self
                .wait
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            wait.as_mut().reset(at);
            ready!(wait.as_mut().poll(cx));
        }
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        ready!(self.poll_arrived(cx));
        if self.arrived == 0 {
            // Nothing is on its way, so the pipe is empty: the read waits
            // for the next write (or sees the end of the stream).
            return Pin::new(&mut self.pipe).poll_read(cx, buf);
        }
        let limit = self.arrived.min(buf.remaining());
        let this = &mut *self;
        this.scratch.resize(limit, 0);
        let mut part = ReadBuf::new(&mut this.scratch[..limit]);
        ready!(Pin::new(&mut this.pipe).poll_read(cx, &mut part))?;
        let n = part.filled().len();
        buf.put_slice(part.filled());
        this.arrived -= n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        let n = ready!(Pin::new(&mut self.pipe).poll_write(cx, data))?;
        match self.net.send(self.local, self.remote) {
            Some(delay) => {
                let at =
                    (Instant::now() + delay).max(self.last_arrival.unwrap_or_else(Instant::now));
                self.last_arrival = Some(at);
                self.outgoing.lock().push_back((at, n));
                Poll::Ready(Ok(n))
            }
            None => {
                // Lost: the connection resets at both ends; closing the
                // pipe wakes a reader waiting on the other end.
                self.reset.store(true, Ordering::SeqCst);
                let _ = Pin::new(&mut self.pipe).poll_shutdown(cx);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    format!(
                        "sim net: a write from {} to {} was lost",
                        self.local, self.remote
                    ),
                )))
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.pipe).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.pipe).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for SimStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: Some(self.local),
            remote_addr: Some(self.remote),
        }
    }
}

/// Opens simulated connections for a tonic channel.
#[derive(Clone)]
pub struct SimConnector {
    net: SimNet,
    from: SocketAddr,
}

impl tower_service::Service<tonic::transport::Uri> for SimConnector {
    type Response = hyper_util::rt::TokioIo<SimStream>;
    type Error = io::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = io::Result<Self::Response>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::transport::Uri) -> Self::Future {
        let net = self.net.clone();
        let from = self.from;
        Box::pin(async move {
            let authority = uri.authority().map(|a| a.as_str().to_string());
            let to: SocketAddr = authority
                .as_deref()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("sim net: {uri} names no ip:port"),
                    )
                })?;
            net.connect(from, to)
                .await
                .map(hyper_util::rt::TokioIo::new)
        })
    }
}
