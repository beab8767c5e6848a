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
        let n = read_bounded_line(reader, &mut line)
            .await
            .map_err(|source| QmpError::Io {
                path: String::new(),
                source,
            })?;
        if n == 0 {
            return Err(QmpError::Protocol("connection closed".into()));
        }
        if !line.ends_with('\n') {
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

/// Reads one line of at most [`MAX_LINE_BYTES`] into `line`: a line that
/// long without its newline is cut there (the caller refuses it), so a
/// misbehaving peer cannot make the daemon buffer without bound.
async fn read_bounded_line<R>(reader: &mut R, line: &mut String) -> std::io::Result<usize>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let limit = u64::try_from(MAX_LINE_BYTES).unwrap_or(u64::MAX);
    reader.take(limit).read_line(line).await
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
        read_bounded_line(&mut reader, &mut greeting)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A peer that sends an endless line is refused once the line passes
    /// the bound, not buffered until memory runs out.
    #[tokio::test]
    async fn an_endless_line_is_refused_at_the_bound() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("qmp.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let peer = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let block = vec![b'a'; 64 * 1024];
            // Twice the bound, no newline, and the connection held open:
            // a reader that waits for the newline waits until its timeout.
            for _ in 0..2 {
                if conn.write_all(&block).await.is_err() {
                    return;
                }
            }
            std::future::pending::<()>().await;
        });
        let err = execute(&path, "query-status", None)
            .await
            .expect_err("refused");
        assert!(matches!(err, QmpError::Protocol(_)), "{err:?}");
        peer.abort();
    }
}
