//! Errors of the CLI and their exit codes, which are part of the CLI's
//! contract:
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

use blixard_shared::client::{code_name, ClientError};
use std::fmt;

/// A failed command: a one-line reason and an exit code.
#[derive(Debug)]
pub struct CliError {
    /// Exit code.
    pub code: u8,
    /// One-line reason.
    pub message: String,
}

impl CliError {
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }

    /// Any other failure (exit 1).
    pub fn other(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        self.code
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep it on one line whatever the server said.
        let one_line: String = self.message.replace(['\n', '\r'], " ");
        f.write_str(&one_line)
    }
}

/// Exit code for a gRPC status code.
pub fn exit_code_for(code: tonic::Code) -> u8 {
    use tonic::Code::*;
    match code {
        Ok => 0,
        InvalidArgument => 2,
        NotFound => 3,
        AlreadyExists | FailedPrecondition | Aborted => 4,
        Unavailable | DeadlineExceeded | Cancelled => 5,
        ResourceExhausted | OutOfRange => 6,
        _ => 1,
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        match &e {
            ClientError::Status(s) => Self {
                code: exit_code_for(s.code()),
                message: format!("{}: {}", code_name(s.code()), s.message()),
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

impl From<blixard_shared::validate::FieldError> for CliError {
    fn from(e: blixard_shared::validate::FieldError) -> Self {
        Self::usage(format!("invalid_argument: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        assert_eq!(exit_code_for(tonic::Code::NotFound), 3);
        assert_eq!(exit_code_for(tonic::Code::AlreadyExists), 4);
        assert_eq!(exit_code_for(tonic::Code::Unavailable), 5);
        assert_eq!(exit_code_for(tonic::Code::InvalidArgument), 2);
        let e = CliError::from(tonic::Status::not_found("vm \"x\"\nnot found"));
        assert_eq!(e.code, 3);
        assert!(!e.to_string().contains('\n'));
    }
}
