//! A simulated network for in-process clusters: nodes listen on made-up
//! addresses, connections are in-memory byte pipes, and the test cuts and
//! heals links, one way or both. A cut link refuses new connections and
//! resets the ones open across it (as a partition does once TCP keepalive
//! gives up, without the wait), so Raft sees its peers vanish and return.
//! The daemon reaches it through [`crate::transport::Transport::Sim`].

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc;

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
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
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

    /// Heals every link (hosts that are down stay down).
    pub fn heal(&self) {
        let mut s = self.state();
        s.cut.clear();
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
        let client = SimStream::new(self.clone(), from, to, near);
        let server = SimStream::new(self.clone(), to, from, far);
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

/// One end of a simulated connection.
pub struct SimStream {
    net: SimNet,
    local: SocketAddr,
    remote: SocketAddr,
    pipe: DuplexStream,
    /// The cut generation last checked, and whether the link was whole then.
    checked: u64,
    broken: bool,
}

impl SimStream {
    fn new(net: SimNet, local: SocketAddr, remote: SocketAddr, pipe: DuplexStream) -> Self {
        Self {
            net,
            local,
            remote,
            pipe,
            checked: u64::MAX,
            broken: false,
        }
    }

    /// Err once either direction of this connection has been cut.
    fn check(&mut self) -> io::Result<()> {
        let now = self.net.generation.load(Ordering::SeqCst);
        if now != self.checked {
            self.checked = now;
            self.broken = self.broken
                || !self.net.reachable(self.local, self.remote)
                || !self.net.reachable(self.remote, self.local);
        }
        if self.broken {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!("sim net: link {} - {} cut", self.local, self.remote),
            ));
        }
        Ok(())
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.pipe).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.pipe).poll_write(cx, data)
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
