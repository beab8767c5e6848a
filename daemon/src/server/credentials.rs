//! The credentials phase of a node's start, before it serves anything:
//! `--init` creates the cluster CA and the bootstrap admin token; a first
//! `--join` gets this node's certificate with a join token; a restart
//! re-issues the node's certificate for its current addresses. Only
//! `--insecure` skips it, and says so loudly.

use super::StartError;
use crate::config::Config;
use crate::security::join;
use crate::security::pki::{ClusterCa, TlsFiles, TlsMaterial};
use crate::security::secrets;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The bootstrap admin token's file under the data dir (0600).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

fn pki_err(e: impl std::fmt::Display) -> StartError {
    StartError::Credentials(e.to_string())
}

/// What the node serves with; `None` under `--insecure`.
pub(super) async fn prepare(
    config: &Config,
    listen: SocketAddr,
) -> Result<Option<TlsMaterial>, StartError> {
    if config.insecure {
        tracing::warn!("--insecure: plaintext gRPC and no credentials; anyone who reaches this port owns the cluster");
        return Ok(None);
    }
    let files = TlsFiles::new(&config.data_dir);
    if !files.has_ca() {
        if config.init {
            create_cluster(&config.data_dir)?;
        } else if let Some(seed) = &config.join {
            join_with_token(config, &files, seed, listen).await?;
        } else {
            return Err(StartError::Credentials(format!(
                "no cluster CA under {}: start with --init (a new cluster), --join ADDR --join-token T --ca-fingerprint F, or --insecure",
                files.path("").display()
            )));
        }
    }
    let tls = files
        .refresh_node_cert(config.node_id, &cert_hosts(config, listen))
        .map_err(pki_err)?;
    Ok(Some(tls))
}

/// `--init` (or a restore) on a data dir without a CA: the CA, and the
/// admin token file. Returns the CA's fingerprint.
pub(crate) fn create_cluster(data_dir: &Path) -> Result<String, StartError> {
    let files = TlsFiles::new(data_dir);
    let ca = ClusterCa::generate().map_err(pki_err)?;
    let fingerprint = ca.fingerprint().map_err(pki_err)?;
    files.write_ca(&ca).map_err(pki_err)?;
    write_admin_token(data_dir)?;
    tracing::info!(ca_fingerprint = %fingerprint, "created the cluster CA");
    // Printed as well as logged: the operator needs it to join nodes.
    println!("cluster CA fingerprint: {fingerprint}");
    println!("admin token: {}", admin_token_path(data_dir).display());
    Ok(fingerprint)
}

async fn join_with_token(
    config: &Config,
    files: &TlsFiles,
    seed: &str,
    listen: SocketAddr,
) -> Result<(), StartError> {
    let (Some(token), Some(fingerprint)) = (&config.join_token, &config.ca_fingerprint) else {
        return Err(StartError::Credentials(
            "--join on a new data dir needs --join-token (from `blixard cluster join-token create`) and --ca-fingerprint (from `blixard cluster status`)".into(),
        ));
    };
    join::obtain_certificate(
        files,
        seed,
        token.expose(),
        fingerprint,
        config.node_id,
        &cert_hosts(config, listen),
    )
    .await
    .map_err(pki_err)
}

/// Path of the bootstrap admin token.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_TOKEN_FILE)
}

/// Writes a new admin secret (0600) unless one is there.
fn write_admin_token(data_dir: &Path) -> Result<(), StartError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = admin_token_path(data_dir);
    if path.exists() {
        return Ok(());
    }
    let secret = secrets::new_client_token().map_err(pki_err)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| pki_err(format!("{}: {e}", path.display())))?;
    file.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| pki_err(format!("{}: {e}", path.display())))
}

/// The bootstrap admin secret's hash, if the file is there.
pub(crate) fn admin_token_hash(data_dir: &Path) -> Result<String, StartError> {
    let path = admin_token_path(data_dir);
    let secret =
        std::fs::read_to_string(&path).map_err(|e| pki_err(format!("{}: {e}", path.display())))?;
    Ok(secrets::hash_token(secret.trim()))
}

/// The names this node's certificate carries: the advertised host, the
/// listen IP (unless it is a wildcard), loopback, and `tls_hosts`.
fn cert_hosts(config: &Config, listen: SocketAddr) -> Vec<String> {
    let mut hosts = Vec::new();
    if let Some(advertise) = &config.advertise {
        let host = advertise
            .rsplit_once(':')
            .map_or(advertise.as_str(), |(h, _)| h);
        hosts.push(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        );
    }
    if !listen.ip().is_unspecified() {
        hosts.push(listen.ip().to_string());
    }
    hosts.extend(["127.0.0.1".to_string(), "localhost".to_string()]);
    hosts.extend(config.tls_hosts.iter().cloned());
    hosts.dedup();
    hosts
}
