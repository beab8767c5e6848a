//! Clusters of `blixardd` processes for the benchmarks, made the way an
//! operator makes them, so what is measured is what runs in production.
//!
//! Secured (the default, as `blixardd` is): node 1 starts with `--init`,
//! which creates the cluster CA and the bootstrap admin token in its data
//! dir; every other node joins with a one-time join token created through
//! the cluster with that admin token, and the CA fingerprint. Clients use
//! TLS trusting that CA and send the admin token on every call.
//! `--insecure`: every node runs with `--insecure` (plaintext, no tokens),
//! so a run can measure what security costs.
//!
//! Every member listens on a port fixed when it is created, so a member
//! killed and started again (failover, recovery) comes back at the address
//! the cluster knows it by.

use super::write_bench::free_port;
use blixard_shared::auth::Secret;
use blixard_shared::proto::v1 as pb;
use blixard_shared::{ApiChannel, BlixardClient, Credentials};
use color_eyre::eyre::{bail, eyre, Result, WrapErr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The environment variable `blixardd` reads `--join-token` from: the token
/// goes there, not on the command line, which every local user can read.
const JOIN_TOKEN_ENV: &str = "BLIXARD_JOIN_TOKEN";
/// Every `blixardd` setting can come from a `BLIXARD_*` variable; members
/// start without them so a variable left in the caller's shell (say
/// `BLIXARD_INSECURE=1`) cannot change what is measured.
const DAEMON_ENV_PREFIX: &str = "BLIXARD_";
/// Lifetime of the join tokens made here: each is used at once.
const JOIN_TOKEN_TTL: Duration = Duration::from_secs(600);
/// How long one member may take to write its ready file.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cluster may take to have every node as a voter.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of a member's log an error quotes.
const LOG_TAIL_BYTES: usize = 2048;
/// The config file every member starts with: the benchmarks drive one
/// admin token at thousands of requests a second, far past the per-token
/// rate a node allows by default (`limits::DEFAULT_TOKEN_REQUESTS_PER_SEC`),
/// so members allow the most they can; what is measured is the write path,
/// not the limiter.
const BENCH_CONFIG: &str = "token_requests_per_sec = 1000000\ntoken_request_burst = 10000000\n";

/// Whether a cluster runs secured (TLS and tokens) or `--insecure`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Security {
    /// TLS with the cluster CA, a bearer token on every call.
    Secured,
    /// `--insecure`: plaintext, no tokens.
    Insecure,
}

impl Security {
    /// From a mode's `--insecure` flag.
    pub(crate) fn from_insecure(insecure: bool) -> Self {
        if insecure {
            Self::Insecure
        } else {
            Self::Secured
        }
    }

    /// How a result table names it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Secured => "TLS",
            Self::Insecure => "plaintext",
        }
    }
}

/// One process of a benchmark cluster (`blixardd` or etcd) that can be
/// killed and started again on its data dir with the same command line.
/// Its output goes to a log file beside its data dir, quoted when it fails
/// to start. Dropping it kills the process.
pub(crate) struct Member {
    /// The address clients reach it at (`host:port`).
    pub(crate) addr: String,
    /// Its data dir.
    pub(crate) dir: PathBuf,
    cmd: Vec<String>,
    log: PathBuf,
    /// The ready file `blixardd` writes once serving (none for etcd).
    ready: Option<PathBuf>,
    /// Used by the first start only: a join token admits one node once,
    /// and a restarted node already holds its certificate.
    join_token: Option<Secret>,
    child: Option<Child>,
}

impl Member {
    /// A member that runs `cmd` (program first) with `dir` as its data dir;
    /// not started.
    pub(crate) fn new(addr: String, dir: PathBuf, cmd: Vec<String>) -> Self {
        let log = dir.with_extension("log");
        Self {
            addr,
            dir,
            cmd,
            log,
            ready: None,
            join_token: None,
            child: None,
        }
    }

    /// Starts the process (again, after [`Member::kill9`]).
    pub(crate) fn spawn(&mut self) -> Result<()> {
        let (program, args) = self
            .cmd
            .split_first()
            .ok_or_else(|| eyre!("empty command line"))?;
        if let Some(ready) = &self.ready {
            // A stale ready file would say the new process serves already.
            match std::fs::remove_file(ready) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).wrap_err_with(|| format!("removing {}", ready.display()))
                }
                _ => {}
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .wrap_err_with(|| format!("opening {}", self.log.display()))?;
        let mut cmd = Command::new(program);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with(DAEMON_ENV_PREFIX) {
                cmd.env_remove(key);
            }
        }
        if let Some(token) = self.join_token.take() {
            cmd.env(JOIN_TOKEN_ENV, token.expose());
        }
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .wrap_err_with(|| format!("starting {program}"))?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the process with SIGKILL (a crash) and reaps it.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The running process's id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The ready file, for members that write one.
    pub(crate) fn ready_file(&self) -> Option<&Path> {
        self.ready.as_deref()
    }

    /// How the process ended, if it has (`None` while it runs or when it
    /// was never started).
    pub(crate) fn exited(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(c) => Ok(c.try_wait()?),
            None => Ok(None),
        }
    }

    /// An error saying the member exited (`status`), with the end of its log.
    pub(crate) fn exit_error(&self, status: ExitStatus) -> color_eyre::Report {
        eyre!(
            "{} ({}) exited while starting: {status}; its log ends with:\n{}",
            self.cmd.first().map_or("member", String::as_str),
            self.addr,
            self.log_tail()
        )
    }

    /// The last lines of the member's log.
    fn log_tail(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(LOG_TAIL_BYTES);
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    /// Waits for the ready file, failing when the process exits first.
    async fn wait_ready(&mut self) -> Result<()> {
        let ready = self
            .ready
            .clone()
            .ok_or_else(|| eyre!("{} writes no ready file", self.addr))?;
        let end = Instant::now() + READY_TIMEOUT;
        loop {
            if ready.exists() {
                return Ok(());
            }
            if let Some(status) = self.exited()? {
                return Err(self.exit_error(status));
            }
            if Instant::now() > end {
                bail!(
                    "{} did not appear within {READY_TIMEOUT:?}; the log ends with:\n{}",
                    ready.display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A running Blixard cluster and what a client needs to use it.
pub(crate) struct Cluster {
    /// Node 1 first.
    pub(crate) members: Vec<Member>,
    /// The admin's credentials (secured) or none (insecure).
    pub(crate) creds: Credentials,
}

impl Cluster {
    /// Every member's address, node 1 first.
    pub(crate) fn addrs(&self) -> Vec<String> {
        self.members.iter().map(|m| m.addr.clone()).collect()
    }

    /// A client over every member, with the cluster's credentials.
    pub(crate) fn client(&self) -> Result<BlixardClient> {
        Ok(BlixardClient::new(self.addrs())?.with_credentials(self.creds.clone()))
    }
}

/// The `blixardd` binary beside this one (same build profile).
pub(crate) fn blixardd_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .ok_or_else(|| eyre!("no exe dir"))?
        .join("blixardd");
    if !bin.exists() {
        bail!(
            "{} is missing: build it with the same profile (cargo build --release --bins)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A lazily connected channel to the member at `addr` (`host:port`) with
/// `creds`: TLS and the token on every call when secured, plaintext
/// otherwise. It reconnects by itself after the member restarts.
pub(crate) fn channel(addr: &str, creds: &Credentials) -> Result<ApiChannel> {
    Ok(creds.wrap(creds.endpoint(addr)?.connect_lazy()))
}

/// TLS with the CA and the bootstrap admin token that `--init` wrote in
/// `data_dir` (node 1's).
pub(crate) fn admin_credentials(data_dir: &Path) -> Result<Credentials> {
    let ca = data_dir
        .join(blixard_daemon::security::pki::TLS_DIR)
        .join(blixard_daemon::security::pki::CA_CERT_FILE);
    let token = Credentials::read_token_file(
        &blixard_daemon::server::credentials::admin_token_path(data_dir),
    )?;
    Ok(Credentials::from_ca_file(&ca)?.token(&token)?)
}

/// How a node starts.
enum Start {
    /// Bootstrap the cluster (`--init`).
    Init,
    /// Join through the member at `seed`; secured: with a join token and
    /// the CA fingerprint.
    Join {
        seed: String,
        proof: Option<(Secret, String)>,
    },
}

/// Node `id` of a cluster under `root`, not started: its data dir is
/// `root/nID`, its log `root/nID.log`.
fn node(
    bin: &Path,
    root: &Path,
    id: u64,
    security: Security,
    extra_args: &[String],
    start: Start,
) -> Result<Member> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let dir = root.join(format!("n{id}"));
    std::fs::create_dir_all(&dir)?;
    let ready = dir.join("ready.json");
    let config = root.join(format!("n{id}.toml"));
    std::fs::write(&config, BENCH_CONFIG)?;
    let mut cmd: Vec<String> = vec![
        bin.display().to_string(),
        "--node-id".into(),
        id.to_string(),
        "--listen".into(),
        addr.clone(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--ready-file".into(),
        ready.display().to_string(),
        "--backend".into(),
        "process".into(),
        "--log".into(),
        "warn".into(),
        "--config".into(),
        config.display().to_string(),
    ];
    cmd.extend(extra_args.iter().cloned());
    if security == Security::Insecure {
        cmd.push("--insecure".into());
    }
    let mut join_token = None;
    match start {
        // On a restart the node knows its cluster and ignores both flags.
        Start::Init => cmd.push("--init".into()),
        Start::Join { seed, proof } => {
            cmd.push("--join".into());
            cmd.push(seed);
            if let Some((token, fingerprint)) = proof {
                cmd.push("--ca-fingerprint".into());
                cmd.push(fingerprint);
                join_token = Some(token);
            }
        }
    }
    let mut member = Member::new(addr, dir, cmd);
    member.ready = Some(ready);
    member.join_token = join_token;
    Ok(member)
}

/// A one-time join token and the CA fingerprint, created through the
/// members at `addrs` with the admin's `creds` (the client follows the
/// leader).
async fn join_proof(addrs: &[String], creds: &Credentials) -> Result<(Secret, String)> {
    let resp = BlixardClient::new(addrs)?
        .with_credentials(creds.clone())
        .create_join_token(JOIN_TOKEN_TTL)
        .await
        .wrap_err("creating a join token")?;
    Ok((Secret::new(resp.token), resp.ca_fingerprint))
}

/// Starts a cluster of `nodes` `blixardd` processes under `root` (process
/// backend, fsync as always), each with `extra_args` too, and returns once
/// every node is a voter. Node 1 bootstraps; the others join it one after
/// another (secured: each with its own join token, which needs the cluster
/// serving first).
pub(crate) async fn start(
    root: &Path,
    nodes: u64,
    security: Security,
    extra_args: &[String],
) -> Result<Cluster> {
    let bin = blixardd_bin()?;
    std::fs::create_dir_all(root)?;
    let mut first = node(&bin, root, 1, security, extra_args, Start::Init)?;
    first.spawn()?;
    first.wait_ready().await?;
    // The ready file is written after `--init` has registered the admin
    // token, so the credentials are usable at once.
    let creds = match security {
        Security::Secured => admin_credentials(&first.dir)?,
        Security::Insecure => Credentials::insecure(),
    };
    let seed = first.addr.clone();
    let mut members = vec![first];
    for id in 2..=nodes {
        let proof = match security {
            Security::Secured => {
                let addrs: Vec<String> = members.iter().map(|m| m.addr.clone()).collect();
                Some(join_proof(&addrs, &creds).await?)
            }
            Security::Insecure => None,
        };
        let start = Start::Join {
            seed: seed.clone(),
            proof,
        };
        let mut m = node(&bin, root, id, security, extra_args, start)?;
        m.spawn()?;
        // Pushed before waiting, so a failure still kills it (drop).
        members.push(m);
        if let Some(m) = members.last_mut() {
            m.wait_ready().await?;
        }
    }
    let mut cluster = Cluster { members, creds };
    wait_for_voters(&mut cluster, nodes).await?;
    Ok(cluster)
}

/// Waits until the cluster reports a leader and `want` voters, failing
/// early when a member exits.
async fn wait_for_voters(cluster: &mut Cluster, want: u64) -> Result<()> {
    let end = Instant::now() + FORM_TIMEOUT;
    loop {
        for m in &mut cluster.members {
            if let Some(status) = m.exited()? {
                return Err(m.exit_error(status));
            }
        }
        let mut client = cluster.client()?;
        let last = match client.status(pb::Consistency::Linearizable).await {
            Ok(s) => {
                let voters = s.members.iter().filter(|m| m.voter).count() as u64;
                if s.leader_id != 0 && voters == want {
                    return Ok(());
                }
                format!("{voters} of {want} voters")
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() > end {
            bail!("the blixard cluster did not form within {FORM_TIMEOUT:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
