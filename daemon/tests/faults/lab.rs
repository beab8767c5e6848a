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
/// Size of each node's data dir: a tmpfs of its own, so the nemesis can
/// fill one node's disk without touching the others.
const NODE_DISK: &str = "256m";
/// Where Debian's libfaketime lives (package `faketime`): LD_PRELOADed into
/// the daemons so the nemesis can step one node's wall clock.
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

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
    /// When its disk was last filled: a daemon that stops for good on the
    /// storage error (maybe only after the disk is freed) is expected to,
    /// and is started again as its service manager would.
    disk_filled_at: Option<Instant>,
}

impl Node {
    /// The node's gRPC endpoint, as clients dial it.
    pub fn endpoint(&self) -> String {
        format!("{}:{PORT}", self.ip)
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
    /// The fsync-delay shim, when it could be built (slow-disk faults).
    pub fsync_shim: Result<PathBuf, String>,
    /// libfaketime, when installed (clock-step faults).
    pub faketime: Result<PathBuf, String>,
    /// Join tokens for first starts, by node index.
    join_tokens: std::collections::BTreeMap<usize, (String, String)>,
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
            fsync_shim: build_fsync_shim(root),
            faketime: Path::new(FAKETIME_LIB)
                .exists()
                .then(|| PathBuf::from(FAKETIME_LIB))
                .ok_or_else(|| format!("{FAKETIME_LIB} is missing (Debian package faketime)")),
            join_tokens: std::collections::BTreeMap::new(),
        };
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{subnet}.254/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..n {
            let ns = format!("{tag}n{i}");
            let host_end = format!("{tag}h{i}");
            let addr = format!("{subnet}.{}", i + 1);
            ip(&["netns", "add", &ns])?;
            let dir = root.join(format!("n{}", i + 1));
            mount_disk(&dir)?;
            std::fs::write(lab.fsync_delay_file(i as u64 + 1), "0").map_err(|e| e.to_string())?;
            std::fs::write(lab.faketime_file(i as u64 + 1), "+0").map_err(|e| e.to_string())?;
            lab.nodes.push(Node {
                id: i as u64 + 1,
                ns: ns.clone(),
                ip: addr.clone(),
                dir,
                child: None,
                paused: false,
                disk_filled_at: None,
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

    /// The join token (and CA fingerprint) node `i` uses on its first start.
    pub fn set_join_token(&mut self, i: usize, token: (String, String)) {
        self.join_tokens.insert(i, token);
    }

    /// Starts node `i` (first start: node 0 initialises, the rest join it;
    /// later starts reuse the data dir) and waits until it serves.
    pub fn start(&mut self, i: usize) -> Result<(), String> {
        let join = self.nodes[0].ip.clone();
        let env = self.preload_env(self.nodes[i].id);
        let log_path = self.daemon_log(self.nodes[i].id);
        let node = &mut self.nodes[i];
        std::fs::create_dir_all(&node.dir).map_err(|e| e.to_string())?;
        let ready = node.dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| e.to_string())?;
        let err_log = log.try_clone().map_err(|e| e.to_string())?;
        // A short fencing lease, so faults of a few seconds fence VMs and
        // the longer ones get them re-placed (after lease + 4 s margin).
        let config = node.dir.join("blixardd.toml");
        // The VMs' runner lives in the lab's root, which the hosts allow.
        let toml = format!(
            "fence_lease_ms = {FENCE_LEASE_MS}\nallowed_runner_dirs = [{:?}]\n",
            self.root
        );
        std::fs::write(&config, toml).map_err(|e| e.to_string())?;
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
            if let Some((token, fingerprint)) = self.join_tokens.get(&i) {
                cmd.env("BLIXARD_JOIN_TOKEN", token);
                cmd.args(["--ca-fingerprint", fingerprint]);
            }
        }
        cmd.envs(env);
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

    /// The node's daemon log: beside its data dir, not on its own tmpfs,
    /// so a failed run keeps it.
    fn daemon_log(&self, id: u64) -> PathBuf {
        self.root.join(format!("n{id}.log"))
    }

    /// The node's slow-disk control file (milliseconds of delay per fsync).
    fn fsync_delay_file(&self, id: u64) -> PathBuf {
        self.root.join(format!("n{id}.fsync-delay"))
    }

    /// The node's libfaketime control file (an offset such as `+3600`).
    fn faketime_file(&self, id: u64) -> PathBuf {
        self.root.join(format!("n{id}.faketime"))
    }

    /// The environment that lets the nemesis slow a node's disk and step
    /// its wall clock (monotonic clocks stay true).
    fn preload_env(&self, id: u64) -> Vec<(String, String)> {
        let mut libs = Vec::new();
        let mut env = Vec::new();
        if let Ok(shim) = &self.fsync_shim {
            libs.push(shim.display().to_string());
            let file = self.fsync_delay_file(id).display().to_string();
            env.push(("BLIXARD_TEST_FSYNC_DELAY_FILE".to_string(), file));
        }
        if let Ok(lib) = &self.faketime {
            libs.push(lib.display().to_string());
            let file = self.faketime_file(id).display().to_string();
            env.push(("FAKETIME_TIMESTAMP_FILE".to_string(), file));
            env.push(("FAKETIME_CACHE_DURATION".to_string(), "1".to_string()));
            env.push(("FAKETIME_DONT_FAKE_MONOTONIC".to_string(), "1".to_string()));
            env.push(("DONT_FAKE_MONOTONIC".to_string(), "1".to_string()));
        }
        if !libs.is_empty() {
            env.push(("LD_PRELOAD".to_string(), libs.join(" ")));
        }
        env
    }

    /// A full disk: fills the node's data dir to the last page (the daemon
    /// may be writing meanwhile, so it allocates in shrinking steps until
    /// even a page does not fit).
    pub fn fill_disk(&mut self, i: usize) -> Result<(), String> {
        self.nodes[i].disk_filled_at = Some(Instant::now());
        let dir = &self.nodes[i].dir;
        let filler = std::fs::File::create(dir.join("filler")).map_err(|e| e.to_string())?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&filler);
        let mut offset: i64 = 0;
        for step in [64 << 20, 1 << 20, 4096] {
            loop {
                // SAFETY: fallocate(2) on a file we just created.
                if unsafe { libc::fallocate(fd, 0, offset, step) } == 0 {
                    offset += step;
                    continue;
                }
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::ENOSPC) {
                    return Err(format!("filling {}: {err}", dir.display()));
                }
                break;
            }
        }
        Ok(())
    }

    /// Frees the node's disk again; a daemon that stopped for good while
    /// its disk was full (a fatal storage error) is started again, as its
    /// service manager would.
    pub fn free_disk(&mut self, i: usize) -> Result<bool, String> {
        let _ = std::fs::remove_file(self.nodes[i].dir.join("filler"));
        self.restart_if_exited(i)
    }

    /// Delays every fsync of node `i` by `ms` (0: none).
    pub fn slow_disk(&mut self, i: usize, ms: u64) -> Result<(), String> {
        std::fs::write(self.fsync_delay_file(self.nodes[i].id), ms.to_string())
            .map_err(|e| e.to_string())
    }

    /// Steps node `i`'s wall clock by `offset` (`+3600`, `-600`; `+0` heals).
    pub fn step_clock(&mut self, i: usize, offset: &str) -> Result<(), String> {
        std::fs::write(self.faketime_file(self.nodes[i].id), offset).map_err(|e| e.to_string())
    }

    /// Starts again every daemon that stopped for good within three minutes
    /// of its disk filling up (as its service manager would); the nodes it
    /// started. Three, not one: the run asks for this only after waiting a
    /// minute for the cluster to converge, and a daemon whose disk filled
    /// at the end of the faults may exit only during that wait (seed
    /// 131840728: the fill began at 55 s, the exit came after the faults).
    pub fn revive_after_disk_faults(&mut self) -> Result<Vec<usize>, String> {
        let mut revived = Vec::new();
        for i in 0..self.nodes.len() {
            let recent = self.nodes[i]
                .disk_filled_at
                .is_some_and(|t| t.elapsed() < Duration::from_secs(180));
            if recent && self.restart_if_exited(i)? {
                revived.push(i);
            }
        }
        Ok(revived)
    }

    /// Starts node `i` again if its daemon has exited; whether it had.
    pub fn restart_if_exited(&mut self, i: usize) -> Result<bool, String> {
        let exited = matches!(
            self.nodes[i].child.as_mut().map(|c| c.try_wait()),
            Some(Ok(Some(_)))
        );
        if exited {
            self.nodes[i].child = None;
            self.start(i)?;
        }
        Ok(exited)
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
            let log = std::fs::read_to_string(self.root.join(format!("n{}.log", node.id)))
                .unwrap_or_default();
            if log.contains("panicked at") {
                out.push(format!("node {} panicked (see n{}.log)", node.id, node.id));
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
            // Lazily: a VM process may still hold a file open in it.
            let _ = Command::new("umount").arg("-l").arg(&node.dir).status();
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Mounts a tmpfs of [`NODE_DISK`] at `dir`: the node's own disk.
fn mount_disk(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={NODE_DISK}"), "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("running mount: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mount tmpfs at {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Builds the slow-disk shim (`fsync_delay.c`, beside this file) with the
/// system's C compiler into `root`.
fn build_fsync_shim(root: &Path) -> Result<PathBuf, String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faults/fsync_delay.c");
    let out = root.join("fsync_delay.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(&source)
        .arg("-ldl")
        .output()
        .map_err(|e| format!("running cc: {e}"))?;
    if !built.status.success() {
        return Err(format!(
            "cc {}: {}",
            source.display(),
            String::from_utf8_lossy(&built.stderr).trim()
        ));
    }
    Ok(out)
}

/// Kills every VM process started under `root` (they outlive their daemons
/// by design, so the lab must clean them up itself).
pub fn kill_runners(root: &Path) {
    for p in super::placement::runners(root) {
        // SAFETY: kill(2) on a process that runs one of this lab's VMs.
        unsafe { libc::kill(p.pid, libc::SIGKILL) };
    }
}
