//! Errors of the CLI and their exit codes, which are part of the CLI's
//! contract (README, "The CLI"; scripts branch on them):
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | any other failure |
//! | 2 | bad usage or invalid argument (fix the command) |
//! | 3 | not found |
//! | 4 | conflict: already exists, or not in a state that allows it |
//! | 5 | unavailable: no leader, unreachable, timed out (retry later) |
//! | 6 | a limit was reached (resource exhausted, out of range) |
//! | 7 | not allowed: missing, invalid or too weak credentials (unauthenticated, permission denied) |

use blixard_shared::client::{code_name, ClientError};
use blixard_shared::credentials::CredentialsError;
use blixard_tui::connect::{transport_failure, INSECURE_HINT};
use std::fmt;

/// The process exit codes of `blixard`, one per row of the table above, so
/// no code in the CLI spells a raw number. The discriminants are the
/// numbers scripts see: never renumber a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// 0: the command did what was asked.
    Success = 0,
    /// 1: any failure no other code describes.
    Failure = 1,
    /// 2: bad usage or an invalid argument; retrying the same command fails again.
    Usage = 2,
    /// 3: the VM or node named does not exist.
    NotFound = 3,
    /// 4: already exists, or not in a state that allows the command.
    Conflict = 4,
    /// 5: no leader, unreachable or timed out; retrying later may succeed.
    Unavailable = 5,
    /// 6: a limit was reached (resource exhausted, out of range).
    LimitReached = 6,
    /// 7: not allowed: no token, a wrong, expired or revoked one, or a role
    /// too weak for the command (also host paths outside the allowed dirs).
    NotAllowed = 7,
}

impl ExitCode {
    /// The exit code for a gRPC status code, so server answers map to the
    /// table above the same way for every command.
    pub fn from_grpc(code: tonic::Code) -> Self {
        use tonic::Code::*;
        match code {
            Ok => Self::Success,
            InvalidArgument => Self::Usage,
            NotFound => Self::NotFound,
            AlreadyExists | FailedPrecondition | Aborted => Self::Conflict,
            Unavailable | DeadlineExceeded | Cancelled => Self::Unavailable,
            ResourceExhausted | OutOfRange => Self::LimitReached,
            Unauthenticated | PermissionDenied => Self::NotAllowed,
            _ => Self::Failure,
        }
    }
}

impl From<ExitCode> for u8 {
    fn from(code: ExitCode) -> u8 {
        code as u8
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(u8::from(code))
    }
}

/// A failed command: a one-line reason and an exit code. Every command
/// returns it so `main` prints the reason and exits the same way for all.
#[derive(Debug)]
pub struct CliError {
    code: ExitCode,
    message: String,
    /// The failure was made on this side from a broken connection (see
    /// [`transport_failure`]), so [`CliError::with_insecure_hint`] may
    /// explain it.
    transport: bool,
}

impl CliError {
    /// A failure with the given exit code, for the cases the shorthands
    /// below do not cover.
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            transport: false,
        }
    }

    /// A usage error (exit 2): the command as typed cannot work.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ExitCode::Usage, message)
    }

    /// Any other failure (exit 1).
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ExitCode::Failure, message)
    }

    /// The process exit code `main` ends with.
    pub fn exit_code(&self) -> ExitCode {
        self.code
    }

    /// This error, with [`INSECURE_HINT`] added when the client talked
    /// plaintext (`insecure`) and the call broke in transport: what a
    /// plaintext client meeting a TLS server sees, which otherwise reads
    /// like an outage.
    pub fn with_insecure_hint(mut self, insecure: bool) -> Self {
        if insecure && self.transport {
            self.message = format!("{} {INSECURE_HINT}", self.message);
            self.transport = false;
        }
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep it on one line whatever the server said.
        let one_line: String = self.message.replace(['\n', '\r'], " ");
        f.write_str(&one_line)
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        match &e {
            ClientError::Status(s) => Self {
                transport: transport_failure(s),
                ..Self::new(
                    ExitCode::from_grpc(s.code()),
                    format!("{}: {}", code_name(s.code()), s.message()),
                )
            },
            ClientError::NoEndpoints | ClientError::BadEndpoint { .. } => {
                Self::usage(e.to_string())
            }
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        ClientError::Status(s).into()
    }
}

impl From<CredentialsError> for CliError {
    fn from(e: CredentialsError) -> Self {
        // A file that cannot be read or used: fix the command or the file.
        Self::usage(e.to_string())
    }
}

impl From<blixard_shared::validate::FieldError> for CliError {
    fn from(e: blixard_shared::validate::FieldError) -> Self {
        Self::usage(format!("invalid_argument: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(code: tonic::Code) -> u8 {
        ExitCode::from_grpc(code).into()
    }

    #[test]
    fn codes_are_stable() {
        assert_eq!(number(tonic::Code::NotFound), 3);
        assert_eq!(number(tonic::Code::AlreadyExists), 4);
        assert_eq!(number(tonic::Code::Unavailable), 5);
        assert_eq!(number(tonic::Code::InvalidArgument), 2);
        let e = CliError::from(tonic::Status::not_found("vm \"x\"\nnot found"));
        assert_eq!(u8::from(e.code), 3);
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn each_exit_code_is_the_number_the_readme_documents() {
        assert_eq!(u8::from(ExitCode::Success), 0);
        assert_eq!(u8::from(ExitCode::Failure), 1);
        assert_eq!(u8::from(ExitCode::Usage), 2);
        assert_eq!(u8::from(ExitCode::NotFound), 3);
        assert_eq!(u8::from(ExitCode::Conflict), 4);
        assert_eq!(u8::from(ExitCode::Unavailable), 5);
        assert_eq!(u8::from(ExitCode::LimitReached), 6);
        assert_eq!(u8::from(ExitCode::NotAllowed), 7);
    }

    #[test]
    fn every_grpc_code_maps_as_documented() {
        use tonic::Code::*;
        let table = [
            (Ok, 0),
            (Cancelled, 5),
            (Unknown, 1),
            (InvalidArgument, 2),
            (DeadlineExceeded, 5),
            (NotFound, 3),
            (AlreadyExists, 4),
            (PermissionDenied, 7),
            (ResourceExhausted, 6),
            (FailedPrecondition, 4),
            (Aborted, 4),
            (OutOfRange, 6),
            (Unimplemented, 1),
            (Internal, 1),
            (Unavailable, 5),
            (DataLoss, 1),
            (Unauthenticated, 7),
        ];
        for (code, want) in table {
            assert_eq!(number(code), want, "{code:?}");
        }
    }

    #[test]
    fn the_insecure_hint_is_added_to_transport_failures_only() {
        let broken = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        let e = CliError::from(broken).with_insecure_hint(true);
        assert!(e.to_string().ends_with(INSECURE_HINT), "{e}");
        let secure = CliError::from(tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        ))))
        .with_insecure_hint(false);
        assert!(!secure.to_string().contains(INSECURE_HINT));
        let answered =
            CliError::from(tonic::Status::unavailable("no leader")).with_insecure_hint(true);
        assert!(!answered.to_string().contains(INSECURE_HINT));
        let denied = CliError::from(tonic::Status::permission_denied("needs admin"));
        assert_eq!(denied.exit_code(), ExitCode::NotAllowed);
    }

    #[test]
    fn client_side_endpoint_errors_are_usage_errors() {
        let e = CliError::from(ClientError::NoEndpoints);
        assert_eq!(e.exit_code(), ExitCode::Usage);
    }
}
