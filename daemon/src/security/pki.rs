//! The cluster's certificates: the CA that `--init` creates, and each
//! node's certificate, which names the node (`blixard://node/<id>`, so a
//! peer's id is read from the certificate it proves it holds) and the
//! addresses clients reach it at (so any TLS client can verify it).
//!
//! Every member keeps the CA key (`tls/ca.key`, 0600): any member can then
//! admit a joining node and re-issue its own certificate when its
//! addresses change, whoever leads. A member can already rewrite the
//! replicated state, so holding the key widens nothing a member could do;
//! `docs/security.md` says so and how to rotate.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Directory under the data dir that holds the node's TLS material.
pub const TLS_DIR: &str = "tls";
/// The CA certificate (public; operators hand it to clients).
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key (0600).
pub const CA_KEY_FILE: &str = "ca.key";
/// This node's certificate.
pub const NODE_CERT_FILE: &str = "node.pem";
/// This node's private key (0600); kept across certificate re-issues.
pub const NODE_KEY_FILE: &str = "node.key";

/// Common name of every Blixard cluster CA. The issuer is rebuilt from it
/// and the key (no parsing of the stored certificate is needed to sign).
const CA_COMMON_NAME: &str = "Blixard cluster CA";
/// How long a CA is valid: rotating it is a planned operation.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a node certificate is valid. A node re-issues its own at every
/// start, so this bounds only a node that runs that long without one.
const NODE_VALIDITY: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
/// Clock skew tolerated between the issuer and the verifiers.
const BACKDATE: Duration = Duration::from_secs(24 * 3600);
/// Scheme of the URI name that carries a node's id.
pub const NODE_URI_PREFIX: &str = "blixard://node/";

/// Why TLS material could not be created, read or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Certificate generation or parsing failed.
    #[error("certificate: {0}")]
    Cert(String),
}

fn cert_err(e: impl std::fmt::Display) -> PkiError {
    PkiError::Cert(e.to_string())
}

/// The cluster CA: its certificate and the key that signs node certificates.
pub struct ClusterCa {
    /// PEM of the CA certificate.
    pub cert_pem: String,
    /// PEM of the CA private key.
    pub key_pem: String,
}

/// A node's certificate and key, PEM-encoded, as tonic takes them.
#[derive(Clone)]
pub struct NodeIdentity {
    /// PEM of the node certificate.
    pub cert_pem: String,
    /// PEM of the node's private key.
    pub key_pem: String,
}

/// What a TLS node serves with and trusts.
#[derive(Clone)]
pub struct TlsMaterial {
    /// PEM of the cluster CA certificate.
    pub ca_pem: String,
    /// This node's identity.
    pub node: NodeIdentity,
    /// SHA-256 of the CA certificate's DER, `sha256:` and lowercase hex.
    pub ca_fingerprint: String,
}

fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + CA_VALIDITY).into();
    Ok(params)
}

impl ClusterCa {
    /// A new CA with an ECDSA P-256 key (rcgen's default; every TLS stack
    /// and grpcio verify it).
    pub fn generate() -> Result<Self, PkiError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = ca_params()?.self_signed(&key).map_err(cert_err)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate for node `node_id` over `node_key`, valid for
    /// client and server use, naming the node and `hosts` (IPs or DNS names).
    pub fn issue_node_cert(
        &self,
        node_id: u64,
        node_key: &impl rcgen::PublicKeyData,
        hosts: &[String],
    ) -> Result<String, PkiError> {
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(cert_err)?;
        let issuer = Issuer::new(ca_params()?, ca_key);
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("blixard node {node_id}"));
        params.distinguished_name = dn;
        params.subject_alt_names = san_list(node_id, hosts)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + NODE_VALIDITY).into();
        let cert = params.signed_by(node_key, &issuer).map_err(cert_err)?;
        Ok(cert.pem())
    }

    /// The CA's fingerprint (see [`fingerprint_of_pem`]).
    pub fn fingerprint(&self) -> Result<String, PkiError> {
        fingerprint_of_pem(&self.cert_pem)
    }
}

/// The node's URI name first, then each host once, as IP or DNS names.
fn san_list(node_id: u64, hosts: &[String]) -> Result<Vec<SanType>, PkiError> {
    let uri = format!("{NODE_URI_PREFIX}{node_id}");
    let mut sans = vec![SanType::URI(uri.try_into().map_err(cert_err)?)];
    for host in hosts {
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.clone().try_into().map_err(cert_err)?),
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

/// The SHA-256 of a certificate's DER, as `sha256:` and 64 hex digits:
/// what `--init` prints, `cluster status` shows and `--ca-fingerprint` pins.
pub fn fingerprint_of_der(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// [`fingerprint_of_der`] of the first certificate in `pem`.
pub fn fingerprint_of_pem(pem: &str) -> Result<String, PkiError> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(cert_err)?;
    Ok(fingerprint_of_der(&der))
}

/// Two fingerprints name the same certificate (case and an absent
/// `sha256:` prefix forgiven, so an operator may paste either form).
pub fn same_fingerprint(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let s = s.trim().to_ascii_lowercase();
        s.strip_prefix("sha256:").unwrap_or(&s).replace(':', "")
    };
    norm(a) == norm(b)
}

/// The node id in a peer certificate's `blixard://node/<id>` name, if the
/// certificate is one of ours (its chain was verified by rustls already).
pub fn node_id_of_cert(der: &[u8]) -> Option<u64> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut ids = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix(NODE_URI_PREFIX)?.parse::<u64>().ok(),
            _ => None,
        });
    let id = ids.next()?;
    // A certificate naming two nodes names none.
    ids.next().is_none().then_some(id)
}

/// The TLS files of the node whose data dir is `data_dir`.
pub struct TlsFiles {
    dir: PathBuf,
}

impl TlsFiles {
    /// The files under `data_dir/tls`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join(TLS_DIR),
        }
    }

    /// Path of one file of the set.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether this node holds a CA (it was initialized or has joined).
    pub fn has_ca(&self) -> bool {
        self.path(CA_CERT_FILE).exists() && self.path(CA_KEY_FILE).exists()
    }

    /// Reads the stored CA.
    pub fn read_ca(&self) -> Result<ClusterCa, PkiError> {
        Ok(ClusterCa {
            cert_pem: self.read(CA_CERT_FILE)?,
            key_pem: self.read(CA_KEY_FILE)?,
        })
    }

    /// Stores this node's certificate as a joining node received it.
    pub fn write_node_cert(&self, cert_pem: &str) -> Result<(), PkiError> {
        self.write(NODE_CERT_FILE, cert_pem, 0o644)
    }

    /// Stores `ca` (the key 0600).
    pub fn write_ca(&self, ca: &ClusterCa) -> Result<(), PkiError> {
        self.write(CA_CERT_FILE, &ca.cert_pem, 0o644)?;
        self.write(CA_KEY_FILE, &ca.key_pem, 0o600)
    }

    /// This node's key: the stored one, or a new one stored now (0600).
    pub fn node_key(&self) -> Result<KeyPair, PkiError> {
        let path = self.path(NODE_KEY_FILE);
        if path.exists() {
            return KeyPair::from_pem(&self.read(NODE_KEY_FILE)?).map_err(cert_err);
        }
        let key = KeyPair::generate().map_err(cert_err)?;
        self.write(NODE_KEY_FILE, &key.serialize_pem(), 0o600)?;
        Ok(key)
    }

    /// Issues (again) this node's certificate for its current names, stores
    /// it, and returns everything the node serves with.
    pub fn refresh_node_cert(
        &self,
        node_id: u64,
        hosts: &[String],
    ) -> Result<TlsMaterial, PkiError> {
        let ca = self.read_ca()?;
        let key = self.node_key()?;
        let cert_pem = ca.issue_node_cert(node_id, &key, hosts)?;
        self.write(NODE_CERT_FILE, &cert_pem, 0o644)?;
        Ok(TlsMaterial {
            ca_fingerprint: ca.fingerprint()?,
            ca_pem: ca.cert_pem,
            node: NodeIdentity {
                cert_pem,
                key_pem: key.serialize_pem(),
            },
        })
    }

    fn read(&self, name: &str) -> Result<String, PkiError> {
        let path = self.path(name);
        std::fs::read_to_string(&path).map_err(|source| PkiError::Io { path, source })
    }

    /// Writes `name` atomically (a temp file renamed over it) with `mode`,
    /// so a crash never leaves half a key, and a key is never readable by
    /// others even for a moment.
    fn write(&self, name: &str, text: &str, mode: u32) -> Result<(), PkiError> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PkiError::Io { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io(&self.dir))?;
        let path = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io(&tmp))?;
        file.write_all(text.as_bytes()).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_names_its_node_and_chains_to_the_ca() {
        let ca = ClusterCa::generate().unwrap();
        let key = KeyPair::generate().unwrap();
        let pem = ca
            .issue_node_cert(7, &key, &["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(node_id_of_cert(&der), Some(7));
        let ca_der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap();
        let anchor = webpki_anchor(&ca_der);
        let ee = rustls_webpki_check(&der, &anchor);
        assert!(ee, "the node certificate verifies against the CA");
    }

    fn webpki_anchor(ca_der: &CertificateDer<'_>) -> Vec<u8> {
        ca_der.to_vec()
    }

    /// Verifies with rustls' own verifier, as a server would.
    fn rustls_webpki_check(der: &CertificateDer<'_>, ca: &[u8]) -> bool {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.to_vec())).unwrap();
        let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let verifier = tokio_rustls::rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider,
        )
        .build()
        .unwrap();
        verifier
            .verify_client_cert(der, &[], tokio_rustls::rustls::pki_types::UnixTime::now())
            .is_ok()
    }

    #[test]
    fn fingerprints_compare_in_either_spelling() {
        let ca = ClusterCa::generate().unwrap();
        let f = ca.fingerprint().unwrap();
        assert!(f.starts_with("sha256:") && f.len() == 7 + 64);
        assert!(same_fingerprint(&f, &f[7..].to_ascii_uppercase()));
        let other = ClusterCa::generate().unwrap().fingerprint().unwrap();
        assert!(!same_fingerprint(&f, &other));
    }

    #[test]
    fn keys_are_private_and_survive_a_reissue() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::new(dir.path());
        files.write_ca(&ClusterCa::generate().unwrap()).unwrap();
        let a = files.refresh_node_cert(1, &["127.0.0.1".into()]).unwrap();
        let b = files.refresh_node_cert(1, &["10.0.0.1".into()]).unwrap();
        assert_eq!(a.node.key_pem, b.node.key_pem);
        for f in [CA_KEY_FILE, NODE_KEY_FILE] {
            let mode = std::fs::metadata(files.path(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }
}
