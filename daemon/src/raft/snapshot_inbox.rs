//! Where a snapshot from the leader is received: a temp file under
//! `DATA/snapshot-incoming/`, never memory, so a sender streaming more than
//! the cap (`max_snapshot_bytes`) makes the node hold one chunk at a time,
//! not the snapshot. The chunk that would pass the cap ends the transfer;
//! the file is deleted whenever the transfer does not complete (an error,
//! the cap, a stall, the sender going away: dropping an [`Incoming`]
//! deletes its file). Only a transfer received whole, and so under the cap,
//! is read back into memory to be installed: openraft's snapshot data is
//! `Vec<u8>` here, and the state machine decodes the fleet from it.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The inbox's folder under the data dir.
pub const INCOMING_DIR: &str = "snapshot-incoming";

/// Why a transfer was not received.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The transfer would pass the cap.
    #[error("snapshot_bytes: the snapshot is larger than this node accepts ({cap} bytes); transfer refused")]
    TooLarge {
        /// The cap in bytes.
        cap: u64,
    },
    /// No chunk came within the chunk timeout.
    #[error("snapshot_chunk_timeout: no snapshot chunk for {0:?}; transfer ended")]
    Stalled(Duration),
    /// The file could not be written or read.
    #[error("snapshot file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// A blocking file operation did not finish (the runtime is stopping).
    #[error("snapshot file {path}: the write did not finish: {message}")]
    Interrupted {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

impl From<ReceiveError> for tonic::Status {
    fn from(e: ReceiveError) -> Self {
        match e {
            ReceiveError::TooLarge { .. } => tonic::Status::resource_exhausted(e.to_string()),
            ReceiveError::Stalled(_) => tonic::Status::deadline_exceeded(e.to_string()),
            ReceiveError::Io { .. } | ReceiveError::Interrupted { .. } => {
                tonic::Status::internal(e.to_string())
            }
        }
    }
}

/// The inbox folder of a node whose data dir is `data_dir`.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join(INCOMING_DIR)
}

/// Empties the inbox, creating it if needed: files a crash left behind
/// (a transfer cut short by `kill -9`) are never resumed.
pub fn clear(data_dir: &Path) -> io::Result<()> {
    let dir = dir(data_dir);
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(&dir)
}

/// One transfer being received. Dropping it deletes its file.
pub struct Incoming {
    /// Written from the blocking pool, one chunk at a time (the chunk moves
    /// there: no copy of it is made, unlike `tokio::fs::File`'s buffer).
    file: Arc<std::fs::File>,
    path: tempfile::TempPath,
    bytes: u64,
    cap: u64,
}

impl Incoming {
    /// A new, empty transfer in the inbox of `data_dir`, refused past `cap`
    /// bytes.
    pub fn create(data_dir: &Path, cap: u64) -> Result<Self, ReceiveError> {
        let dir = dir(data_dir);
        let io_err = |source| ReceiveError::Io {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io_err)?;
        let (file, path) = tempfile::Builder::new()
            .prefix("snapshot-")
            .tempfile_in(&dir)
            .map_err(io_err)?
            .into_parts();
        Ok(Self {
            file: Arc::new(file),
            path,
            bytes: 0,
            cap,
        })
    }

    /// Bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends `data`, unless it would take the transfer past the cap.
    pub async fn append(&mut self, data: Vec<u8>) -> Result<(), ReceiveError> {
        let total = self.bytes.saturating_add(data.len() as u64);
        if total > self.cap {
            return Err(ReceiveError::TooLarge { cap: self.cap });
        }
        let file = self.file.clone();
        self.blocking(move || (&*file).write_all(&data)).await?;
        self.bytes = total;
        Ok(())
    }

    /// The whole transfer, read back into memory (at most the cap), and
    /// its file deleted.
    pub async fn into_bytes(self) -> Result<Vec<u8>, ReceiveError> {
        let (file, expected) = (self.file.clone(), self.bytes);
        let data = self
            .blocking(move || {
                let mut file = &*file;
                io::Seek::rewind(&mut file)?;
                let mut data = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
                file.read_to_end(&mut data)?;
                Ok(data)
            })
            .await?;
        if data.len() as u64 != expected {
            return Err(ReceiveError::Io {
                path: self.path.to_path_buf(),
                source: io::Error::other(format!(
                    "read back {} bytes of {expected} received",
                    data.len()
                )),
            });
        }
        Ok(data)
    }

    /// Runs a file operation on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> Result<T, ReceiveError> {
        match crate::sim::blocking::run(op).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(ReceiveError::Io {
                path: self.path.to_path_buf(),
                source,
            }),
            Err(e) => Err(ReceiveError::Interrupted {
                path: self.path.to_path_buf(),
                message: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(data_dir: &Path) -> usize {
        std::fs::read_dir(dir(data_dir)).map_or(0, |d| d.count())
    }

    #[tokio::test]
    async fn a_transfer_under_the_cap_comes_back_whole_and_leaves_no_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut incoming = Incoming::create(tmp.path(), 10).unwrap();
        incoming.append(b"hello".to_vec()).await.unwrap();
        incoming.append(b"world".to_vec()).await.unwrap();
        assert_eq!(incoming.bytes(), 10);
        assert_eq!(files(tmp.path()), 1);
        assert_eq!(incoming.into_bytes().await.unwrap(), b"helloworld");
        assert_eq!(files(tmp.path()), 0);
    }

    #[tokio::test]
    async fn the_chunk_past_the_cap_is_refused_and_dropping_deletes_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let mut incoming = Incoming::create(tmp.path(), 8).unwrap();
        incoming.append(b"12345".to_vec()).await.unwrap();
        let err = incoming.append(b"6789".to_vec()).await.unwrap_err();
        assert!(matches!(err, ReceiveError::TooLarge { cap: 8 }), "{err}");
        assert_eq!(incoming.bytes(), 5, "the refused chunk was not written");
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.message().contains("snapshot_bytes"));
        drop(incoming);
        assert_eq!(files(tmp.path()), 0);
    }

    #[tokio::test]
    async fn clear_removes_what_a_crash_left() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir(tmp.path())).unwrap();
        std::fs::write(dir(tmp.path()).join("snapshot-left"), b"x").unwrap();
        clear(tmp.path()).unwrap();
        assert_eq!(files(tmp.path()), 0);
        assert!(dir(tmp.path()).is_dir());
    }
}
