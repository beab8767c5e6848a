//! TLS settings of the node's server and of its calls to other nodes,
//! from its [`TlsMaterial`]. rustls with the `ring` provider (tonic's
//! `tls-ring`): it builds with a C compiler alone, where `aws-lc-rs` needs
//! cmake and adds minutes to a clean build on a 2-core host, and we need
//! none of aws-lc's extras (FIPS, post-quantum key exchange).

use super::pki::TlsMaterial;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Longest a TLS handshake may take before the connection is dropped, so a
/// caller that opens connections and never finishes them holds nothing.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The server side: this node's certificate, and the cluster CA to verify
/// the certificates nodes present. Clients present none (they send a
/// token), so a client certificate is optional at the handshake; the gate
/// decides per method whether one was needed.
/// The chain includes the CA certificate, so a joining node can find the CA
/// in the handshake and pin it by fingerprint (`security::join`).
pub fn server_config(tls: &TlsMaterial) -> ServerTlsConfig {
    let chain = format!("{}{}", tls.node.cert_pem, tls.ca_pem);
    ServerTlsConfig::new()
        .identity(Identity::from_pem(chain, &tls.node.key_pem))
        .client_ca_root(Certificate::from_pem(&tls.ca_pem))
        .client_auth_optional(true)
        .timeout(HANDSHAKE_TIMEOUT)
}

/// The client side of calls to other nodes: trust only the cluster CA,
/// and prove this node's identity with its certificate.
pub fn peer_client_config(tls: &TlsMaterial) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&tls.ca_pem))
        .identity(Identity::from_pem(&tls.node.cert_pem, &tls.node.key_pem))
        .timeout(HANDSHAKE_TIMEOUT)
}
