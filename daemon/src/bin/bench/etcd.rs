//! etcd beside Blixard: three members on 127.0.0.1, called over plain gRPC
//! with messages declared here (no etcd protos needed).
//!
//! When the Blixard side runs secured, etcd runs with TLS too, set up as
//! close to Blixard's as etcd allows, so the two compare like for like:
//! clients use TLS trusting the cluster CA but present no certificate
//! (Blixard's clients prove themselves with a token; etcd's here do not
//! authenticate at all, etcd auth being off), and members talk to each
//! other over mutual TLS (`--peer-client-cert-auth`), as Blixard's do. The
//! CA and certificates come from Blixard's own PKI (ECDSA P-256, server and
//! client use), so both systems do the same handshakes and signatures.

use super::cluster::{Member, Security};
use super::write_bench::free_port;
use blixard_daemon::security::pki::ClusterCa;
use color_eyre::eyre::{bail, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// Members per etcd cluster, as many as Blixard's.
const MEMBERS: usize = 3;
/// How long etcd may take to elect a leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {}
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
}
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(uint64, tag = "4")]
    pub leader: u64,
}

/// One unary etcd call over `ch`.
pub(crate) async fn grpc_unary<Req, Resp>(
    ch: Channel,
    path: &'static str,
    req: Req,
) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(req), path, codec)
        .await
        .map(|r| r.into_inner())
}

/// A lazily connected channel to the etcd member at `addr`: TLS trusting
/// the etcd CA when `tls` is given, plaintext otherwise (no token: etcd
/// runs without auth).
pub(crate) fn channel(addr: &str, tls: Option<&ClientTlsConfig>) -> Result<Channel> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint =
        tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))?.tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.clone())?;
    }
    Ok(endpoint.connect_lazy())
}

/// The CA and each member's certificate and key, as files under `dir`.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
}

impl Pki {
    /// A new CA and a certificate for 127.0.0.1 for each member. `dir` is
    /// under the run's temp dir (0700), so the keys need no tighter mode.
    fn generate(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ca = ClusterCa::generate()?;
        std::fs::write(dir.join("ca.pem"), &ca.cert_pem)?;
        for i in 0..MEMBERS {
            let key = rcgen::KeyPair::generate()?;
            let cert = ca.issue_node_cert(i as u64 + 1, &key, &["127.0.0.1".into()])?;
            std::fs::write(dir.join(format!("e{i}.pem")), cert)?;
            std::fs::write(dir.join(format!("e{i}.key")), key.serialize_pem())?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            ca_pem: ca.cert_pem,
        })
    }

    /// Member `i`'s TLS flags: its certificate for clients (no client
    /// certificates asked) and for peers (mutual TLS with the CA).
    fn member_args(&self, i: usize) -> Vec<String> {
        let file = |name: String| self.dir.join(name).display().to_string();
        let (cert, key) = (file(format!("e{i}.pem")), file(format!("e{i}.key")));
        vec![
            "--cert-file".into(),
            cert.clone(),
            "--key-file".into(),
            key.clone(),
            "--peer-cert-file".into(),
            cert,
            "--peer-key-file".into(),
            key,
            "--peer-trusted-ca-file".into(),
            file("ca.pem".into()),
            "--peer-client-cert-auth".into(),
        ]
    }

    /// What etcd's clients use: TLS trusting the CA.
    fn client_tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem))
    }
}

/// A running etcd cluster.
pub(crate) struct Etcd {
    /// Its members, in order.
    pub(crate) members: Vec<Member>,
    /// Client TLS (secured) or none (plaintext).
    pub(crate) tls: Option<ClientTlsConfig>,
}

impl Etcd {
    /// Every member's client address.
    pub(crate) fn addrs(&self) -> Vec<String> {
        self.members.iter().map(|m| m.addr.clone()).collect()
    }

    /// The member that leads, by asking each member's status. Fails early
    /// when a member has exited, quoting its log: a wrong flag or
    /// certificate shows there instead of as a leader that never comes.
    pub(crate) async fn leader(&mut self) -> Result<String> {
        let end = Instant::now() + LEADER_TIMEOUT;
        loop {
            for m in &mut self.members {
                if let Some(status) = m.exited()? {
                    return Err(m.exit_error(status));
                }
            }
            for m in &self.members {
                if let Ok(s) = grpc_unary::<_, StatusResponse>(
                    channel(&m.addr, self.tls.as_ref())?,
                    "/etcdserverpb.Maintenance/Status",
                    StatusRequest {},
                )
                .await
                {
                    if s.leader != 0 && s.header.as_ref().is_some_and(|h| h.member_id == s.leader) {
                        return Ok(m.addr.clone());
                    }
                }
            }
            if Instant::now() > end {
                bail!("etcd elected no leader within {LEADER_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Starts a 3-member etcd cluster under `root` (data dirs `root/eN`, logs
/// `root/eN.log`) on free local ports, with TLS when `security` is
/// secured (see the module doc). Members start together; [`Etcd::leader`]
/// waits for them to elect one.
pub(crate) fn start(etcd: &Path, root: &Path, security: Security) -> Result<Etcd> {
    std::fs::create_dir_all(root)?;
    let pki = match security {
        Security::Secured => Some(Pki::generate(&root.join("pki"))?),
        Security::Insecure => None,
    };
    let scheme = if pki.is_some() { "https" } else { "http" };
    let ports: Vec<(u16, u16)> = (0..MEMBERS)
        .map(|_| Ok((free_port()?, free_port()?)))
        .collect::<Result<_>>()?;
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}={scheme}://127.0.0.1:{peer}"))
        .collect();
    let mut members = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let dir = root.join(format!("e{i}"));
        let client_url = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = format!("{scheme}://127.0.0.1:{peer}");
        let mut cmd = vec![
            etcd.display().to_string(),
            "--name".into(),
            format!("e{i}"),
            "--data-dir".into(),
            dir.display().to_string(),
            "--listen-client-urls".into(),
            client_url.clone(),
            "--advertise-client-urls".into(),
            client_url,
            "--listen-peer-urls".into(),
            peer_url.clone(),
            "--initial-advertise-peer-urls".into(),
            peer_url,
            "--initial-cluster".into(),
            initial.join(","),
            "--initial-cluster-state".into(),
            "new".into(),
            "--log-level".into(),
            "error".into(),
        ];
        if let Some(pki) = &pki {
            cmd.extend(pki.member_args(i));
        }
        let mut m = Member::new(format!("127.0.0.1:{client}"), dir, cmd);
        m.spawn()?;
        members.push(m);
    }
    Ok(Etcd {
        members,
        tls: pki.as_ref().map(Pki::client_tls),
    })
}
