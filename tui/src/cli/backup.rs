//! `blixard cluster backup FILE`: streams the leader's backup into
//! `FILE.partial`, checks it by the same rules `blixardd restore` applies
//! (length and checksum), and only then renames it to FILE, so FILE is
//! either a whole, valid backup or untouched.

use super::output::print_json;
use super::CliError;
use blixard_shared::limits::MAX_SNAPSHOT_BYTES;
use blixard_shared::BlixardClient;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// JSON view of `cluster backup --json`.
#[derive(Debug, Serialize)]
pub struct BackupView {
    /// The file written.
    pub file: String,
    /// The revision the backup was taken at.
    pub revision: u64,
    /// Its size.
    pub bytes: u64,
}

/// The temporary name the stream is written under.
fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Runs `cluster backup FILE`.
pub async fn run(client: &mut BlixardClient, file: &Path, json: bool) -> Result<(), CliError> {
    let partial = partial_path(file);
    let result = write_checked(client, file, &partial).await;
    if result.is_err() {
        // Leave no half file behind; FILE itself was never touched.
        let _ = std::fs::remove_file(&partial);
    }
    let view = result?;
    if json {
        print_json(&view);
    } else {
        println!(
            "backup of revision {} written to {} ({} bytes)",
            view.revision, view.file, view.bytes
        );
    }
    Ok(())
}

async fn write_checked(
    client: &mut BlixardClient,
    file: &Path,
    partial: &Path,
) -> Result<BackupView, CliError> {
    let io = |what: &str, path: &Path, e: std::io::Error| {
        CliError::other(format!("{what} {}: {e}", path.display()))
    };
    let mut stream = client.backup().await?;
    let mut out = std::fs::File::create(partial).map_err(|e| io("cannot create", partial, e))?;
    let mut bytes: Vec<u8> = Vec::new();
    let mut revision = 0;
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| CliError::other(format!("the backup stream broke: {}", s.message())))?
    {
        revision = chunk.revision;
        if bytes.len() as u64 + chunk.data.len() as u64 > MAX_SNAPSHOT_BYTES {
            return Err(CliError::other(format!(
                "the backup is larger than {MAX_SNAPSHOT_BYTES} bytes, the most a restore accepts"
            )));
        }
        out.write_all(&chunk.data)
            .map_err(|e| io("cannot write", partial, e))?;
        bytes.extend_from_slice(&chunk.data);
    }
    blixard_shared::backup::decode(&bytes).map_err(|e| {
        CliError::other(format!(
            "the backup received does not check out ({e}); nothing was written to {}",
            file.display()
        ))
    })?;
    out.sync_all().map_err(|e| io("cannot sync", partial, e))?;
    drop(out);
    std::fs::rename(partial, file).map_err(|e| io("cannot rename to", file, e))?;
    tracing::info!(file = %file.display(), revision, bytes = bytes.len(), "backup written");
    Ok(BackupView {
        file: file.display().to_string(),
        revision,
        bytes: bytes.len() as u64,
    })
}
