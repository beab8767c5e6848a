//! How a client proves itself to a cluster and checks that it talks to
//! the right one: the cluster CA it trusts (TLS) and the token it sends on
//! every call. No CA means plaintext, which only an `--insecure` cluster
//! accepts; callers warn about it ([`Credentials::is_insecure`]).

use crate::auth::{Secret, AUTHORIZATION_HEADER, BEARER_PREFIX};
use std::path::Path;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// A channel that sends the client's token on every call.
pub type ApiChannel = InterceptedService<Channel, Credentials>;

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Largest CA or token file read.
const MAX_CREDENTIAL_FILE_BYTES: u64 = 64 * 1024;

/// Why credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {reason}")]
    Read {
        /// Which setting (`--ca-cert`, `--token-file`).
        what: &'static str,
        /// The file.
        path: String,
        /// Cause.
        reason: String,
    },
    /// The CA file holds no certificate.
    #[error("--ca-cert {0}: no PEM certificate in it")]
    NotACertificate(String),
    /// The token cannot travel in a header.
    #[error("the token has characters that cannot be sent (it should be one line, `blxt_…`)")]
    BadToken,
}

/// The CA and token a client uses (see the module doc).
#[derive(Clone, Default)]
pub struct Credentials {
    tls: Option<ClientTlsConfig>,
    token: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Reads a small credential file.
fn read_small(what: &'static str, path: &Path) -> Result<String, CredentialsError> {
    let err = |reason: String| CredentialsError::Read {
        what,
        path: path.display().to_string(),
        reason,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| err(e.to_string()))?
        .len();
    if len > MAX_CREDENTIAL_FILE_BYTES {
        return Err(err(format!(
            "larger than {MAX_CREDENTIAL_FILE_BYTES} bytes"
        )));
    }
    std::fs::read_to_string(path).map_err(|e| err(e.to_string()))
}

impl Credentials {
    /// Plaintext and no token: for `--insecure` clusters only.
    pub fn insecure() -> Self {
        Self::default()
    }

    /// TLS trusting the CA in `ca_pem`.
    pub fn with_ca_pem(ca_pem: &str) -> Self {
        Self::with_tls(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .timeout(HANDSHAKE_TIMEOUT),
        )
    }

    /// TLS as configured (a daemon adds its node certificate this way).
    pub fn with_tls(tls: ClientTlsConfig) -> Self {
        Self {
            tls: Some(tls),
            token: None,
        }
    }

    /// TLS trusting the CA in the PEM file `path` (`--ca-cert`).
    pub fn from_ca_file(path: &Path) -> Result<Self, CredentialsError> {
        let pem = read_small("--ca-cert", path)?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(CredentialsError::NotACertificate(
                path.display().to_string(),
            ));
        }
        Ok(Self::with_ca_pem(&pem))
    }

    /// These credentials, sending `token` on every call.
    pub fn token(mut self, token: &Secret) -> Result<Self, CredentialsError> {
        let value = format!("{BEARER_PREFIX}{}", token.expose().trim());
        let mut value: MetadataValue<Ascii> =
            value.parse().map_err(|_| CredentialsError::BadToken)?;
        value.set_sensitive(true);
        self.token = Some(value);
        Ok(self)
    }

    /// Reads the token in the file `path` (`--token-file`).
    pub fn read_token_file(path: &Path) -> Result<Secret, CredentialsError> {
        Ok(Secret::new(read_small("--token-file", path)?.trim()))
    }

    /// Whether calls go out in plaintext (no CA was given).
    pub fn is_insecure(&self) -> bool {
        self.tls.is_none()
    }

    /// The TLS settings of channels, if any.
    pub fn tls(&self) -> Option<&ClientTlsConfig> {
        self.tls.as_ref()
    }

    /// `https` with TLS, `http` without.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// An endpoint for `address` (`host:port`, or a URI whose scheme is
    /// replaced: TLS or not is the credentials' decision, not the
    /// address's), with these credentials' TLS and no delay on writes.
    pub fn endpoint(&self, address: &str) -> Result<Endpoint, tonic::transport::Error> {
        let bare = address
            .strip_prefix("http://")
            .or_else(|| address.strip_prefix("https://"))
            .unwrap_or(address);
        let mut endpoint =
            Endpoint::from_shared(format!("{}://{bare}", self.scheme()))?.tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        Ok(endpoint)
    }

    /// `channel`, sending these credentials' token on every call.
    pub fn wrap(&self, channel: Channel) -> ApiChannel {
        InterceptedService::new(channel, self.clone())
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.token {
            req.metadata_mut()
                .insert(AUTHORIZATION_HEADER, token.clone());
        }
        crate::telemetry::inject_current(req.metadata_mut());
        Ok(req)
    }
}
