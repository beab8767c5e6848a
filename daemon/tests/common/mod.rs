//! In-process test clusters: real `blixardd` nodes (the daemon library)
//! on 127.0.0.1 with OS-chosen ports and temp data dirs, talking real gRPC.

#![allow(dead_code)]

use blixard_daemon::config::Config;
use blixard_daemon::server::{start, NodeHandle};
use blixard_shared::auth::Secret;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::cluster_service_client::ClusterServiceClient;
use blixard_shared::proto::v1::vm_service_client::VmServiceClient;
use blixard_shared::{ApiChannel, Credentials};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Polls `f` every 50 ms until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One node of a test cluster.
pub struct TestNode {
    pub id: u64,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub handle: Option<NodeHandle>,
}

/// A cluster of in-process nodes. Secured like a real one (node 1 creates
/// the CA and the admin token, the others join with join tokens) unless a
/// tweak sets `insecure`; its clients use node 1's CA and admin token.
pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    tweak: fn(&mut Config),
    _tmp: tempfile::TempDir,
}

/// The cluster CA and the admin token of a secured test cluster, read from
/// node 1's data dir; plaintext for an `--insecure` one.
pub fn admin_credentials(node1_dir: &std::path::Path) -> Credentials {
    let ca = node1_dir.join("tls/ca.pem");
    if !ca.exists() {
        return Credentials::insecure();
    }
    let token = std::fs::read_to_string(node1_dir.join("admin.token")).expect("admin token");
    Credentials::from_ca_file(&ca)
        .expect("ca")
        .token(&Secret::new(token.trim()))
        .expect("token")
}

fn no_tweak(_: &mut Config) {}

/// A channel to the node at `address` with `credentials` (a node that is
/// not part of a `TestCluster`: a restored one, say).
pub fn channel_to(credentials: &Credentials, address: &str) -> ApiChannel {
    let endpoint = credentials
        .endpoint(address)
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(20));
    credentials.wrap(endpoint.connect_lazy())
}

impl TestCluster {
    /// Starts `n` nodes: node 1 bootstraps, the others join it; returns
    /// once all are voters with registered node records.
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, no_tweak).await
    }

    /// Like [`TestCluster::start`] with a config tweak applied to every node.
    pub async fn start_with(n: usize, tweak: fn(&mut Config)) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut cluster = Self {
            nodes: Vec::new(),
            tweak,
            _tmp: tmp,
        };
        for _ in 0..n {
            cluster.add_node().await;
        }
        cluster.wait_for_voters(n).await;
        cluster
    }

    fn config(&self, id: u64, dir: PathBuf, addr: SocketAddr) -> Config {
        let mut c = Config::for_node(id, &dir, addr);
        c.fence_watchdog = Some(env!("CARGO_BIN_EXE_blixard-fence").into());
        // Tests write their runner scripts into the cluster's temp dir.
        c.allowed_runner_dirs = vec![self._tmp.path().to_path_buf()];
        (self.tweak)(&mut c);
        c
    }

    /// Starts one more node (the first bootstraps, the others join node 1).
    pub async fn add_node(&mut self) -> usize {
        self.add_node_with(|_| {}).await
    }

    /// Like [`TestCluster::add_node`] with `tweak` applied to this node's
    /// config (a joining node without a join token gets a fresh one).
    pub async fn add_node_with(&mut self, tweak: impl FnOnce(&mut Config)) -> usize {
        self.try_add_node_with(tweak).await.expect("node starts")
    }

    /// Like [`TestCluster::add_node_with`], returning the start error.
    pub async fn try_add_node_with(
        &mut self,
        tweak: impl FnOnce(&mut Config),
    ) -> Result<usize, blixard_daemon::server::StartError> {
        let id = self.nodes.len() as u64 + 1;
        let dir = self._tmp.path().join(format!("node-{id}"));
        let mut config = self.config(id, dir.clone(), "127.0.0.1:0".parse().expect("addr"));
        if id == 1 {
            config.init = true;
        } else {
            config.join = Some(self.nodes[0].addr.to_string());
        }
        tweak(&mut config);
        if id > 1 && !config.insecure && config.join_token.is_none() {
            let (token, fingerprint) = self.join_token().await;
            config.join_token = Some(Secret::new(token));
            config.ca_fingerprint = Some(fingerprint);
        }
        let handle = start(config).await?;
        let addr = handle.address;
        self.nodes.push(TestNode {
            id,
            dir,
            addr,
            handle: Some(handle),
        });
        Ok(self.nodes.len() - 1)
    }

    /// A new join token and the CA fingerprint, from node 1 as admin.
    /// (Through the cluster client, which follows the leader and retries
    /// while a membership change settles.)
    pub async fn join_token(&self) -> (String, String) {
        let resp = self
            .client()
            .call(|ch| async move {
                ClusterServiceClient::new(ch)
                    .create_join_token(pb::CreateJoinTokenRequest { ttl_seconds: 600 })
                    .await
            })
            .await
            .expect("join token");
        (resp.token, resp.ca_fingerprint)
    }

    /// Creates a client token (through node 1, as admin) and returns
    /// credentials that present it, with its secret.
    pub async fn token(&self, name: &str, role: &str, labels: &[&str]) -> (Credentials, String) {
        let resp = pb::token_service_client::TokenServiceClient::new(self.channel(0))
            .create_token(pb::CreateTokenRequest {
                name: name.into(),
                role: role.into(),
                ttl_seconds: 0,
                labels: labels.iter().map(|l| l.to_string()).collect(),
            })
            .await
            .expect("token")
            .into_inner();
        let credentials = Credentials::from_ca_file(&self.nodes[0].dir.join("tls/ca.pem"))
            .expect("ca")
            .token(&Secret::new(resp.secret.clone()))
            .expect("secret");
        (credentials, resp.secret)
    }

    /// The admin credentials of this cluster (see [`admin_credentials`]).
    pub fn credentials(&self) -> Credentials {
        admin_credentials(&self.nodes[0].dir)
    }

    /// Waits until the leader counts `n` voters and every node is registered.
    pub async fn wait_for_voters(&self, n: usize) {
        eventually(Duration::from_secs(60), "cluster to form", || async {
            let s = self.status_from_any().await?;
            let voters = s.members.iter().filter(|m| m.voter).count();
            let registered = s
                .members
                .iter()
                .filter(|m| m.health == pb::NodeHealth::Alive as i32)
                .count();
            (s.leader_id != 0 && voters == n && registered >= n).then_some(())
        })
        .await;
    }

    /// A channel to node `i` (index into `nodes`) with `credentials`.
    pub fn channel_with(&self, i: usize, credentials: &Credentials) -> ApiChannel {
        channel_to(credentials, &self.nodes[i].addr.to_string())
    }

    /// Credentials that present node `j`'s own certificate (daemon-to-daemon
    /// calls), with no token.
    pub fn node_credentials(&self, j: usize) -> Credentials {
        let dir = &self.nodes[j].dir;
        let read = |f: &str| std::fs::read_to_string(dir.join("tls").join(f)).expect("tls file");
        Credentials::with_tls(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(read("ca.pem")))
                .identity(tonic::transport::Identity::from_pem(
                    read("node.pem"),
                    read("node.key"),
                )),
        )
    }

    /// An admin channel to node `i` (index into `nodes`).
    pub fn channel(&self, i: usize) -> ApiChannel {
        self.channel_with(i, &self.credentials())
    }

    /// A VM client bound to node `i` only.
    pub fn vm_client(&self, i: usize) -> VmServiceClient<ApiChannel> {
        VmServiceClient::new(self.channel(i))
    }

    /// A cluster client over the endpoints of the running nodes.
    pub fn client(&self) -> blixard_shared::BlixardClient {
        let eps: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.handle.is_some())
            .map(|n| n.addr.to_string())
            .collect();
        blixard_shared::BlixardClient::new(eps)
            .expect("client")
            .with_credentials(self.credentials())
    }

    /// A local-read status from the first running node that answers.
    pub async fn status_from_any(&self) -> Option<pb::ClusterStatus> {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.handle.is_none() {
                continue;
            }
            let req = pb::GetStatusRequest {
                consistency: pb::Consistency::Linearizable as i32,
            };
            if let Ok(s) = ClusterServiceClient::new(self.channel(i))
                .get_status(req)
                .await
            {
                return Some(s.into_inner());
            }
        }
        None
    }

    /// Index of the current leader among running nodes, once there is one.
    pub async fn leader(&self) -> usize {
        eventually(Duration::from_secs(30), "a leader", || async {
            let s = self.status_from_any().await?;
            self.nodes
                .iter()
                .position(|n| n.id == s.leader_id && n.handle.is_some())
        })
        .await
    }

    /// Index of some running follower.
    pub async fn follower(&self) -> usize {
        let leader = self.leader().await;
        self.nodes
            .iter()
            .enumerate()
            .position(|(i, n)| i != leader && n.handle.is_some())
            .expect("a running follower")
    }

    /// Stops node `i` (its data dir stays).
    pub async fn stop(&mut self, i: usize) {
        if let Some(h) = self.nodes[i].handle.take() {
            h.shutdown().await;
        }
    }

    /// Restarts node `i` on its data dir and address, without --init or --join.
    pub async fn restart(&mut self, i: usize) {
        let n = &self.nodes[i];
        let config = self.config(n.id, n.dir.clone(), n.addr);
        let handle = eventually(
            Duration::from_secs(10),
            "restart to bind its old port",
            || {
                let config = config.clone();
                async move { start(config).await.ok() }
            },
        )
        .await;
        self.nodes[i].handle = Some(handle);
    }

    /// Stops every node, then kills the VM processes they left (VMs outlive
    /// their daemons by design; a test must not). The fence watchdogs are
    /// left to end on their own: once the temp dir is gone they fail closed,
    /// kill whatever is left in the nodes' VM cgroups, remove those cgroups
    /// and exit.
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
        let needle = self._tmp.path().display().to_string();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == std::process::id() as i32 {
                continue;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains(&needle) && !cmdline.contains("blixard-fence") {
                // SAFETY: kill(2) with plain integers.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Writes an executable shell script `name` with `body` into `dir` (VM
/// runners of the process backend).
pub fn write_script(dir: &std::path::Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// A valid create request.
pub fn create_req(name: &str) -> pb::CreateVmRequest {
    pb::CreateVmRequest {
        name: name.to_string(),
        spec: Some(pb::VmSpec {
            vcpus: 1,
            memory_mib: 64,
            ..Default::default()
        }),
        stopped: false,
    }
}

/// VM `name` as node `node` answers it at `consistency` (`None` on any
/// error, for polling).
pub async fn get_vm(
    cluster: &TestCluster,
    node: usize,
    name: &str,
    consistency: pb::Consistency,
) -> Option<pb::Vm> {
    cluster
        .vm_client(node)
        .get_vm(pb::GetVmRequest {
            name: name.into(),
            consistency: consistency as i32,
        })
        .await
        .ok()?
        .into_inner()
        .vm
}

/// Names of the VMs node `i` holds, read locally (no leader involved).
pub async fn local_vm_names(cluster: &TestCluster, i: usize) -> Option<Vec<String>> {
    let client = cluster.vm_client(i);
    let (vms, _) = blixard_shared::paging::read_all_pages(|page_token| {
        let mut client = client.clone();
        async move {
            client
                .list_vms(pb::ListVmsRequest {
                    consistency: pb::Consistency::Local as i32,
                    page_size: 1000,
                    page_token,
                    ..Default::default()
                })
                .await
                .map(tonic::Response::into_inner)
        }
    })
    .await
    .ok()?;
    Some(vms.into_iter().map(|v| v.name).collect())
}
