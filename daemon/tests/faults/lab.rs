//! A cluster of real `blixardd` processes, each in its own network
//! namespace on a private bridge, so the nemesis can crash, pause and cut
//! them off from each other like separate hosts. Clients and watchers run in
//! the test's own namespace and reach every node over the bridge.
//!
//! A partition is a set of blackhole routes inside the namespaces: packets
//! between the two sides are dropped, connections hang as on a real network
//! failure, and every node stays reachable from the clients.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The gRPC port every node listens on inside its namespace.
const PORT: u16 = 7000;
/// Fencing lease of every daemon in the lab, ms.
const FENCE_LEASE_MS: u64 = 2000;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why this machine cannot run the lab (not root, no `ip`, no namespaces),
/// or `None` when it can.
pub fn unsupported() -> Option<String> {
    let probe = format!("bxprobe{}", std::process::id() % 100_000);
    match ip(&["netns", "add", &probe]) {
        Ok(()) => {
            let _ = ip(&["netns", "del", &probe]);
            None
        }
        Err(e) => Some(format!("network namespaces are not usable here ({e})")),
    }
}

/// One node: its namespace, address and process.
pub struct Node {
    pub id: u64,
    pub ns: String,
    pub ip: String,
    pub dir: PathBuf,
    child: Option<Child>,
    pub paused: bool,
}

impl Node {
    /// The node's gRPC endpoint, as clients dial it.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{PORT}", self.ip)
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }
}

/// The whole lab; dropping it kills every process and removes the network.
pub struct Lab {
    tag: String,
    bridge: String,
    blixardd: PathBuf,
    pub root: PathBuf,
    pub nodes: Vec<Node>,
    cuts: BTreeSet<(usize, usize)>,
}

impl Lab {
    /// Builds the network for `n` nodes under `root` (nothing runs yet).
    pub fn new(n: usize, root: &Path, blixardd: &Path) -> Result<Self, String> {
        // Short, unique names: interface names are limited to 15 bytes.
        let salt = (std::process::id() as u64) << 16
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as u64)
                .unwrap_or(0);
        let tag = format!("bx{:04x}", salt % 0xffff);
        let subnet = format!("10.{}.{}", 100 + (salt >> 8) % 100, salt % 250);
        let bridge = format!("{tag}br");
        let mut lab = Self {
            tag: tag.clone(),
            bridge: bridge.clone(),
            blixardd: blixardd.to_path_buf(),
            root: root.to_path_buf(),
            nodes: Vec::new(),
            cuts: BTreeSet::new(),
        };
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{subnet}.254/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..n {
            let ns = format!("{tag}n{i}");
            let host_end = format!("{tag}h{i}");
            let addr = format!("{subnet}.{}", i + 1);
            ip(&["netns", "add", &ns])?;
            lab.nodes.push(Node {
                id: i as u64 + 1,
                ns: ns.clone(),
                ip: addr.clone(),
                dir: root.join(format!("n{}", i + 1)),
                child: None,
                paused: false,
            });
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &host_end, "master", &bridge, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    /// Starts node `i` (first start: node 0 initialises, the rest join it;
    /// later starts reuse the data dir) and waits until it serves.
    pub fn start(&mut self, i: usize) -> Result<(), String> {
        let join = self.nodes[0].ip.clone();
        let node = &mut self.nodes[i];
        std::fs::create_dir_all(&node.dir).map_err(|e| e.to_string())?;
        let ready = node.dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("daemon.log"))
            .map_err(|e| e.to_string())?;
        let err_log = log.try_clone().map_err(|e| e.to_string())?;
        // A short fencing lease, so faults of a few seconds fence VMs and
        // the longer ones get them re-placed (after lease + 4 s margin).
        let config = node.dir.join("blixardd.toml");
        std::fs::write(&config, format!("fence_lease_ms = {FENCE_LEASE_MS}\n"))
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node.ns])
            .arg(&self.blixardd)
            .args(["--node-id", &node.id.to_string()])
            .args(["--listen", &format!("{}:{PORT}", node.ip)])
            .arg("--data-dir")
            .arg(&node.dir)
            .arg("--ready-file")
            .arg(&ready)
            .args(["--backend", "process", "--log", "info"])
            .arg("--config")
            .arg(&config);
        if i == 0 {
            cmd.arg("--init");
        } else {
            cmd.args(["--join", &format!("{join}:{PORT}")]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|e| format!("spawning node {}: {e}", node.id))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("node {} exited ({status}) while starting", node.id));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("node {} not ready after 30 s", node.id));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// `kill -9` (a crash: no shutdown, VMs are left running).
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.nodes[i].paused = false;
    }

    /// SIGSTOP: the process freezes with its sockets open.
    pub fn pause(&mut self, i: usize) {
        if let Some(pid) = self.nodes[i].pid() {
            // SAFETY: kill(2) with a pid this lab spawned and still owns.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            self.nodes[i].paused = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self, i: usize) {
        if let Some(pid) = self.nodes[i].pid() {
            // SAFETY: as in `pause`.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
        self.nodes[i].paused = false;
    }

    /// Cuts every link between a node of `side` and a node outside it.
    pub fn isolate(&mut self, side: &[usize]) -> Result<(), String> {
        let n = self.nodes.len();
        for &a in side {
            for b in (0..n).filter(|b| !side.contains(b)) {
                self.cut(a, b)?;
            }
        }
        Ok(())
    }

    /// Drops traffic between `a` and `b`, both ways.
    pub fn cut(&mut self, a: usize, b: usize) -> Result<(), String> {
        let key = (a.min(b), a.max(b));
        if !self.cuts.insert(key) {
            return Ok(());
        }
        self.blackhole("add", a, b)
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> Result<(), String> {
        for (a, b) in std::mem::take(&mut self.cuts) {
            self.blackhole("del", a, b)?;
        }
        Ok(())
    }

    /// Adds (`op` "add") or deletes ("del") the blackhole routes between
    /// `a` and `b`, both ways.
    fn blackhole(&self, op: &str, a: usize, b: usize) -> Result<(), String> {
        for (from, to) in [(a, b), (b, a)] {
            let target = format!("{}/32", self.nodes[to].ip);
            ip(&[
                "-n",
                &self.nodes[from].ns,
                "route",
                op,
                "blackhole",
                &target,
            ])?;
        }
        Ok(())
    }

    /// Nodes whose process ended without the nemesis killing it, and any
    /// daemon log that records a panic.
    pub fn unexpected_exits(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for node in &mut self.nodes {
            if let Some(Ok(Some(status))) = node.child.as_mut().map(|c| c.try_wait()) {
                out.push(format!("node {} exited: {status}", node.id));
            }
            let log = std::fs::read_to_string(node.dir.join("daemon.log")).unwrap_or_default();
            if log.contains("panicked at") {
                out.push(format!("node {} panicked (see its daemon.log)", node.id));
            }
        }
        out
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.resume(i);
            self.kill9(i);
        }
        kill_runners(&self.root);
        for node in &self.nodes {
            let _ = ip(&["netns", "del", &node.ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Kills every VM process started under `root` (they outlive their daemons
/// by design, so the lab must clean them up itself).
pub fn kill_runners(root: &Path) {
    for p in super::placement::runners(root) {
        // SAFETY: kill(2) on a process that runs one of this lab's VMs.
        unsafe { libc::kill(p.pid, libc::SIGKILL) };
    }
}
