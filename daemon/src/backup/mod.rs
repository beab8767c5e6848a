//! Backups and restore: a consistent copy of the replicated state taken on
//! the leader (`take`), the archive of snapshots and committed entries a
//! node with `backup_dir` keeps for point-in-time restore (`archive`),
//! rebuilding the state at a revision or time from such an archive
//! (`replay`), and seeding a new one-node cluster from either (`seed`).
//! The file format is `blixard_shared::backup`, so the CLI checks what it
//! wrote by the same rules.

pub mod archive;
pub mod replay;
pub mod restore;
pub mod seed;
pub mod take;

/// Why a restore could not be done; nothing was written when one is
/// returned before seeding began.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The backup file is unusable.
    #[error("{path}: {source}")]
    Backup {
        /// The file.
        path: String,
        /// What is wrong with it.
        source: blixard_shared::backup::BackupError,
    },
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// Where.
        path: String,
        /// What happened.
        message: String,
    },
    /// The archive cannot give the state asked for.
    #[error("{0}")]
    Archive(String),
    /// The restore's arguments do not fit the backup or the data dir.
    #[error("{0}")]
    Invalid(String),
}

impl RestoreError {
    fn io(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        Self::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}
