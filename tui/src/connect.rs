//! How the `blixard` CLI and the `blixard-tui` console prove themselves to a
//! secured cluster, in one place so both take the same flags and say the
//! same things: `--ca-cert` (the cluster CA to trust, so calls use TLS),
//! `--token-file` or `BLIXARD_TOKEN` (the bearer token sent on every call).
//!
//! Without a CA the client talks plaintext, which only a cluster started
//! with `--insecure` accepts; it then warns once on stderr, never sends a
//! token (a secret must not cross the network in the clear), and adds a
//! hint to failures that look like a plaintext client meeting a TLS server.

use blixard_shared::auth::Secret;
use blixard_shared::credentials::{ApiChannel, Credentials, CredentialsError};
use clap::Args;
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

/// Environment variable naming the cluster CA certificate (`--ca-cert`).
pub const CA_CERT_ENV: &str = "BLIXARD_CA_CERT";
/// Environment variable holding the token itself (the secret); a
/// `--token-file` wins over it.
pub const TOKEN_ENV: &str = "BLIXARD_TOKEN";
/// The one line printed (once per process) when calls go out in plaintext.
pub const INSECURE_WARNING: &str = "warning: no --ca-cert (BLIXARD_CA_CERT): talking plaintext, which only a cluster started with --insecure accepts";
/// Appended to a failure that looks like plaintext meeting TLS.
pub const INSECURE_HINT: &str = "(is the cluster secured? pass --ca-cert FILE and a token)";

/// Guards [`INSECURE_WARNING`], so a process that builds credentials
/// several times (the console, `dev`) warns once.
static WARNED: Once = Once::new();

/// The connection flags the CLI (global on every command) and the console
/// share, so the two never disagree on how a cluster is reached.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnectArgs {
    /// Cluster CA certificate (PEM) to trust; calls then use TLS. Without it they go in plaintext, which only a cluster started with --insecure accepts.
    #[arg(long, env = CA_CERT_ENV, value_name = "FILE", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// File holding the bearer token sent on every call (wins over the BLIXARD_TOKEN environment variable, which holds the token itself).
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
}

impl ConnectArgs {
    /// The credentials these flags and `BLIXARD_TOKEN` describe; warns
    /// once on stderr when they are plaintext.
    pub fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let env_token = std::env::var(TOKEN_ENV).ok();
        let credentials = self.credentials_with(env_token.as_deref())?;
        if credentials.is_insecure() {
            warn_insecure_once();
        }
        Ok(credentials)
    }

    /// [`ConnectArgs::credentials`] with the environment's token passed in
    /// (testable without touching the process environment) and no warning.
    pub fn credentials_with(
        &self,
        env_token: Option<&str>,
    ) -> Result<Credentials, CredentialsError> {
        let token = match &self.token_file {
            Some(path) => {
                let secret = Credentials::read_token_file(path)?;
                if secret.expose().is_empty() {
                    return Err(CredentialsError::Read {
                        what: "--token-file",
                        path: path.display().to_string(),
                        reason: "the file is empty".into(),
                    });
                }
                Some(secret)
            }
            None => env_token
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(Secret::new),
        };
        let Some(ca) = &self.ca_cert else {
            if token.is_some() {
                // An --insecure cluster asks for no token, and a secure one
                // would not accept plaintext: sending it would only leak it.
                tracing::debug!("no --ca-cert: the token is not sent over plaintext");
            }
            return Ok(Credentials::insecure());
        };
        let credentials = Credentials::from_ca_file(ca)?;
        match token {
            Some(t) => credentials.token(&t),
            None => Ok(credentials),
        }
    }
}

/// Prints [`INSECURE_WARNING`] on stderr unless this process already has.
pub fn warn_insecure_once() {
    WARNED.call_once(|| eprintln!("{INSECURE_WARNING}"));
}

/// Whether `status` was made on this side from a failed connection or a
/// broken protocol exchange (not sent by a server), and not because
/// nothing listens there: what a plaintext client sees when the server
/// speaks TLS.
pub fn transport_failure(status: &tonic::Status) -> bool {
    use std::error::Error;
    use std::io::ErrorKind;
    if !matches!(
        status.code(),
        // `Cancelled`: hyper's "operation was canceled" when the server
        // drops the connection before answering (a TLS server meeting
        // plaintext does, depending on timing).
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Cancelled
    ) {
        return false;
    }
    // Statuses a server sends carry no source; ones made from a local
    // transport error do.
    let mut source = status.source();
    if source.is_none() {
        return false;
    }
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
            ) {
                return false;
            }
        }
        source = err.source();
    }
    true
}

/// `status`'s message, with [`INSECURE_HINT`] when `credentials` are
/// plaintext and the failure looks like plaintext meeting TLS (for the
/// console's reconnecting reasons).
pub fn explain(status: &tonic::Status, credentials: &Credentials) -> String {
    if credentials.is_insecure() && transport_failure(status) {
        format!("{} {INSECURE_HINT}", status.message())
    } else {
        status.message().to_string()
    }
}

/// A lazily connected channel to `endpoint` (`host:port`, or a URI whose
/// scheme is replaced by the credentials' own) that uses `credentials`:
/// TLS when they have a CA, their token on every call.
pub fn lazy_channel(
    endpoint: &str,
    credentials: &Credentials,
    connect_timeout: Duration,
) -> Result<ApiChannel, tonic::transport::Error> {
    let ep = credentials
        .endpoint(endpoint)?
        .connect_timeout(connect_timeout);
    Ok(credentials.wrap(ep.connect_lazy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate is enough: nothing here connects.
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END CERTIFICATE-----\n";

    fn args(ca: Option<PathBuf>, token_file: Option<PathBuf>) -> ConnectArgs {
        ConnectArgs {
            ca_cert: ca,
            token_file,
        }
    }

    #[test]
    fn no_ca_means_plaintext_without_a_token() {
        let c = args(None, None).credentials_with(Some("blxt_x")).unwrap();
        assert!(c.is_insecure());
        assert_eq!(c.scheme(), "http");
    }

    #[test]
    fn a_ca_means_tls() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, CA_PEM).unwrap();
        let c = args(Some(ca), None).credentials_with(None).unwrap();
        assert!(!c.is_insecure());
        assert_eq!(c.scheme(), "https");
    }

    #[test]
    fn unreadable_files_name_the_flag_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = args(Some(missing.clone()), None)
            .credentials_with(None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--ca-cert") && e.contains("nope.pem"), "{e}");

        let not_pem = dir.path().join("junk.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let e = args(Some(not_pem), None)
            .credentials_with(None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no PEM certificate"), "{e}");

        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, CA_PEM).unwrap();
        let e = args(Some(ca.clone()), Some(dir.path().join("gone.token")))
            .credentials_with(None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--token-file") && e.contains("gone.token"),
            "{e}"
        );

        let empty = dir.path().join("empty.token");
        std::fs::write(&empty, "\n").unwrap();
        let e = args(Some(ca), Some(empty))
            .credentials_with(None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn the_token_file_wins_over_the_environment_and_is_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, CA_PEM).unwrap();
        let file = dir.path().join("t");
        std::fs::write(&file, "blxt_from_file\n").unwrap();
        let c = args(Some(ca.clone()), Some(file))
            .credentials_with(Some("blxt_from_env"))
            .unwrap();
        assert!(!format!("{c:?}").contains("blxt_from_file"));
        // A token that cannot travel in a header is refused, from either source.
        let e = args(Some(ca), None).credentials_with(Some("blxt_\u{7}bell"));
        assert!(e.is_err());
    }

    #[test]
    fn only_local_transport_failures_get_the_hint() {
        let insecure = Credentials::insecure();
        // A server's own answer: no source, no hint.
        let s = tonic::Status::unavailable("no leader");
        assert!(!transport_failure(&s));
        assert_eq!(explain(&s, &insecure), "no leader");
        // A broken exchange made locally: hint.
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert!(transport_failure(&broken), "{broken:?}");
        assert!(explain(&broken, &insecure).ends_with(INSECURE_HINT));
        // Nothing listening: no hint.
        let refused = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        )));
        assert!(!transport_failure(&refused));
        // Unauthenticated is an answer, whatever its source.
        assert!(!transport_failure(&tonic::Status::unauthenticated("x")));
    }
}
