//! A minimal QMP (QEMU Machine Protocol) client: one command per
//! connection over the instance's unix socket, with a deadline on every step.

use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Longest time one QMP exchange may take.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest QMP line we read (QEMU's replies here are small).
const MAX_LINE_BYTES: usize = 64 * 1024;

/// A failed QMP exchange.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be reached or broke.
    #[error("qmp socket {path}: {source}")]
    Io {
        /// Socket path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// QEMU did not answer in time.
    #[error("qmp: no answer within {0:?}")]
    Timeout(Duration),
    /// QEMU answered with an error or something unexpected.
    #[error("qmp: {0}")]
    Protocol(String),
}

async fn read_reply(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
) -> Result<Value, QmpError> {
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .await
            .map_err(|source| QmpError::Io {
                path: String::new(),
                source,
            })?;
        if n == 0 {
            return Err(QmpError::Protocol("connection closed".into()));
        }
        if line.len() > MAX_LINE_BYTES {
            return Err(QmpError::Protocol("reply too long".into()));
        }
        let v: Value = serde_json::from_str(&line)
            .map_err(|e| QmpError::Protocol(format!("bad reply: {e}")))?;
        // Asynchronous events may arrive before the reply: skip them.
        if v.get("event").is_some() {
            continue;
        }
        if let Some(err) = v.get("error") {
            return Err(QmpError::Protocol(err.to_string()));
        }
        return Ok(v);
    }
}

/// Runs `command` (with `arguments`) on the QMP socket at `path`.
pub async fn execute(
    path: &Path,
    command: &str,
    arguments: Option<Value>,
) -> Result<Value, QmpError> {
    let exchange = async {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Io {
                path: path.display().to_string(),
                source,
            })?;
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut greeting = String::new();
        reader
            .read_line(&mut greeting)
            .await
            .map_err(|source| QmpError::Io {
                path: path.display().to_string(),
                source,
            })?;
        if !greeting.contains("\"QMP\"") {
            return Err(QmpError::Protocol(format!(
                "unexpected greeting {greeting:?}"
            )));
        }
        let send = |v: Value| format!("{v}\n");
        write
            .write_all(send(json!({"execute": "qmp_capabilities"})).as_bytes())
            .await
            .map_err(|source| QmpError::Io {
                path: path.display().to_string(),
                source,
            })?;
        read_reply(&mut reader).await?;
        let mut cmd = json!({ "execute": command });
        if let Some(args) = arguments {
            cmd["arguments"] = args;
        }
        write
            .write_all(send(cmd).as_bytes())
            .await
            .map_err(|source| QmpError::Io {
                path: path.display().to_string(),
                source,
            })?;
        let reply = read_reply(&mut reader).await?;
        Ok(reply.get("return").cloned().unwrap_or(Value::Null))
    };
    tokio::time::timeout(QMP_TIMEOUT, exchange)
        .await
        .map_err(|_| QmpError::Timeout(QMP_TIMEOUT))?
}
