//! A joining node's side of `--join ADDR --join-token T --ca-fingerprint F`:
//! learn the cluster CA from the seed's TLS handshake and accept it only if
//! its SHA-256 is the fingerprint the operator gave (so a machine in the
//! middle cannot pose as the cluster), then prove the join token over a
//! connection verified against that CA and store what comes back.

use super::pki::{self, ClusterCa, PkiError, TlsFiles};
use blixard_shared::proto::v1::cluster_service_client::ClusterServiceClient;
use blixard_shared::proto::v1::IssueCertificateRequest;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// Longest the CA fetch or the token's redemption may take.
const JOIN_CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest a joining node keeps trying while the cluster cannot answer
/// (no leader yet, seed restarting) before its start fails.
const JOIN_DEADLINE: Duration = Duration::from_secs(90);
/// First and longest pause between tries.
const RETRY_PAUSE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(3));

/// Why the node could not get its certificate.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The seed could not be reached or its handshake failed.
    #[error("cannot reach {seed}: {reason}")]
    Unreachable {
        /// The `--join` address.
        seed: String,
        /// Cause.
        reason: String,
    },
    /// The seed's CA is not the one the operator named.
    #[error("{seed} presented no CA certificate with fingerprint {expected}: refusing to join (check --ca-fingerprint against `blixard cluster status` on a member)")]
    WrongCa {
        /// The `--join` address.
        seed: String,
        /// `--ca-fingerprint`.
        expected: String,
    },
    /// The cluster refused the token or the request.
    #[error("the cluster refused to admit this node: {}", .0.message())]
    Refused(tonic::Status),
    /// Local files.
    #[error(transparent)]
    Pki(#[from] PkiError),
}

impl JoinError {
    /// Whether trying again may succeed: the seed was unreachable or the
    /// cluster could not answer yet. A refusal of the token or of the CA
    /// is final.
    fn is_transient(&self) -> bool {
        match self {
            JoinError::Unreachable { .. } => true,
            JoinError::Refused(s) => matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Aborted
            ),
            _ => false,
        }
    }
}

/// Gets this node its certificate through `seed` and stores the TLS files,
/// trying again (paced, up to [`JOIN_DEADLINE`]) while the cluster cannot
/// answer. A retried redemption whose first answer was lost is answered as
/// the first (the state allows it for the same node).
pub async fn obtain_certificate(
    files: &TlsFiles,
    seed: &str,
    token: &str,
    fingerprint: &str,
    node_id: u64,
    hosts: &[String],
) -> Result<(), JoinError> {
    let deadline = tokio::time::Instant::now() + JOIN_DEADLINE;
    let mut pause = RETRY_PAUSE.0;
    loop {
        match try_obtain(files, seed, token, fingerprint, node_id, hosts).await {
            Err(e) if e.is_transient() && tokio::time::Instant::now() + pause < deadline => {
                tracing::info!(%seed, error = %e, "cannot get a certificate yet; retrying");
                tokio::time::sleep(blixard_shared::backoff::jittered(pause)).await;
                pause = (pause * 2).min(RETRY_PAUSE.1);
            }
            other => return other,
        }
    }
}

async fn try_obtain(
    files: &TlsFiles,
    seed: &str,
    token: &str,
    fingerprint: &str,
    node_id: u64,
    hosts: &[String],
) -> Result<(), JoinError> {
    let ca_pem = fetch_pinned_ca(seed, fingerprint).await?;
    let key = files.node_key()?;
    let channel = Endpoint::from_shared(format!("https://{seed}"))
        .map_err(|e| unreachable(seed, e))?
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem)))
        .map_err(|e| unreachable(seed, e))?
        .connect_timeout(JOIN_CALL_TIMEOUT)
        .timeout(JOIN_CALL_TIMEOUT)
        .connect()
        .await
        .map_err(|e| unreachable(seed, e))?;
    let req = IssueCertificateRequest {
        node_id,
        join_token: token.to_string(),
        public_key_pem: key.public_key_pem(),
        hosts: hosts.to_vec(),
    };
    let resp = ClusterServiceClient::new(channel)
        .issue_certificate(req)
        .await
        .map_err(JoinError::Refused)?
        .into_inner();
    if !pki::same_fingerprint(
        &pki::fingerprint_of_pem(&resp.ca_certificate_pem)?,
        fingerprint,
    ) {
        return Err(JoinError::WrongCa {
            seed: seed.to_string(),
            expected: fingerprint.to_string(),
        });
    }
    files.write_ca(&ClusterCa {
        cert_pem: resp.ca_certificate_pem,
        key_pem: resp.ca_key_pem,
    })?;
    files.write_node_cert(&resp.certificate_pem)?;
    tracing::info!(node_id, %seed, "received this node's certificate");
    Ok(())
}

fn unreachable(seed: &str, e: impl std::fmt::Display) -> JoinError {
    JoinError::Unreachable {
        seed: seed.to_string(),
        reason: e.to_string(),
    }
}

/// The PEM of the certificate in `seed`'s TLS chain whose fingerprint is
/// `fingerprint`. Nothing of the handshake is trusted but that match.
async fn fetch_pinned_ca(seed: &str, fingerprint: &str) -> Result<String, JoinError> {
    let chain = tokio::time::timeout(JOIN_CALL_TIMEOUT, handshake_chain(seed))
        .await
        .map_err(|_| unreachable(seed, "TLS handshake timed out"))??;
    let der = chain
        .into_iter()
        .find(|der| pki::same_fingerprint(&pki::fingerprint_of_der(der), fingerprint))
        .ok_or_else(|| JoinError::WrongCa {
            seed: seed.to_string(),
            expected: fingerprint.to_string(),
        })?;
    Ok(to_pem(&der))
}

/// PEM text of a DER certificate.
fn to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// The certificates `seed` presents in a TLS handshake, unverified.
async fn handshake_chain(seed: &str) -> Result<Vec<Vec<u8>>, JoinError> {
    let tcp = tokio::net::TcpStream::connect(seed)
        .await
        .map_err(|e| unreachable(seed, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| unreachable(seed, e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(RecordOnly(provider)))
        .with_no_client_auth();
    let host = seed.rsplit_once(':').map(|(h, _)| h).unwrap_or(seed);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| unreachable(seed, e))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| unreachable(seed, e))?;
    let chain = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|certs| certs.iter().map(|c| c.to_vec()).collect())
        .unwrap_or_default();
    Ok(chain)
}

/// A verifier that accepts any chain: used only to read the chain, whose
/// one trusted certificate is then picked by fingerprint. Signatures are
/// still checked, so the peer holds the key of the certificate it shows.
#[derive(Debug)]
struct RecordOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for RecordOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
