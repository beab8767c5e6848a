//! The backup file: a checksummed copy of the replicated state at one
//! revision, what `blixard cluster backup` writes, `blixardd restore
//! --from` reads, and a node with `backup_dir` keeps as its periodic
//! snapshots. Shared so the CLI can check a file it just wrote with the
//! same rules the daemon restores by.
//!
//! Layout, all of it covered by the closing checksum:
//!
//! ```text
//! BLIXARD-BACKUP 1\n
//! {header as one JSON line}\n
//! body: exactly header.body_bytes bytes (the state, JSON)
//! \nsha256 <64 hex digits of everything above>\n
//! ```
//!
//! A truncated file misses bytes the header promises; a damaged one fails
//! the checksum; both are refused with the reason before anything is
//! written anywhere.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// First line of every backup file; the number is the format's version.
pub const MAGIC: &[u8] = b"BLIXARD-BACKUP 1\n";
/// What precedes the checksum at the end.
const TRAILER_TAG: &[u8] = b"\nsha256 ";
/// Length of the trailer: tag, 64 hex digits, newline.
const TRAILER_LEN: usize = TRAILER_TAG.len() + 64 + 1;
/// Longest header line accepted (the member list is bounded by the voter
/// limit; this is generous).
const MAX_HEADER_BYTES: usize = 64 << 10;

/// What a backup says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Header {
    /// The revision (Raft log index) the state is at.
    pub revision: u64,
    /// The Raft term the cluster was in when it was taken.
    pub term: u64,
    /// When it was taken (the taking node's clock, ms since the epoch).
    pub taken_at_ms: u64,
    /// The node that took it (the leader, for `cluster backup`).
    pub taken_by: u64,
    /// The Raft members then, by id, with their addresses.
    pub members: BTreeMap<u64, String>,
    /// Length of the body.
    pub body_bytes: u64,
}

/// Why a file is not a usable backup.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackupError {
    /// It does not start like a backup file.
    #[error("not a Blixard backup file (it does not start with {:?})", String::from_utf8_lossy(MAGIC).trim_end())]
    NotABackup,
    /// The header line is missing or unreadable.
    #[error("the header is damaged: {0}")]
    Header(String),
    /// Fewer (or more) bytes than the header promises.
    #[error("the file is truncated or has extra bytes: the header promises {expected} bytes of state and a checksum, the file holds {found} bytes after the header")]
    Length {
        /// Bytes the header promises after itself.
        expected: u64,
        /// Bytes there are.
        found: u64,
    },
    /// The closing checksum is missing or does not match.
    #[error("the checksum does not match: the file is damaged (expected {expected}, computed {computed})")]
    Checksum {
        /// What the file says.
        expected: String,
        /// What its bytes give.
        computed: String,
    },
}

/// A backup file's parts, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// What the file says about itself.
    pub header: Header,
    /// The state, as the daemon encodes its snapshots.
    pub body: Vec<u8>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The whole file for `header` (whose `body_bytes` is set here) and `body`.
pub fn encode(mut header: Header, body: &[u8]) -> Vec<u8> {
    header.body_bytes = body.len() as u64;
    // A header of numbers, ids and addresses always encodes.
    let line = serde_json::to_vec(&header).unwrap_or_default();
    let mut out = Vec::with_capacity(MAGIC.len() + line.len() + 1 + body.len() + TRAILER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&line);
    out.push(b'\n');
    out.extend_from_slice(body);
    let digest = hex(&Sha256::digest(&out));
    out.extend_from_slice(TRAILER_TAG);
    out.extend_from_slice(digest.as_bytes());
    out.push(b'\n');
    out
}

/// Checks a whole file and splits it into header and body.
pub fn decode(file: &[u8]) -> Result<Backup, BackupError> {
    let rest = file.strip_prefix(MAGIC).ok_or(BackupError::NotABackup)?;
    let window = &rest[..rest.len().min(MAX_HEADER_BYTES)];
    let end = window
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| BackupError::Header("no header line".into()))?;
    let header: Header =
        serde_json::from_slice(&rest[..end]).map_err(|e| BackupError::Header(e.to_string()))?;
    let after = &rest[end + 1..];
    let expected = header.body_bytes.saturating_add(TRAILER_LEN as u64);
    if after.len() as u64 != expected {
        return Err(BackupError::Length {
            expected,
            found: after.len() as u64,
        });
    }
    let body_len = after.len() - TRAILER_LEN;
    let (body, trailer) = after.split_at(body_len);
    let covered = &file[..file.len() - TRAILER_LEN];
    let computed = hex(&Sha256::digest(covered));
    let expected = trailer
        .strip_prefix(TRAILER_TAG)
        .and_then(|t| t.strip_suffix(b"\n"))
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .unwrap_or_default();
    if expected != computed {
        return Err(BackupError::Checksum { expected, computed });
    }
    Ok(Backup {
        header,
        body: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let header = Header {
            revision: 42,
            term: 3,
            taken_at_ms: 1_700_000_000_000,
            taken_by: 1,
            members: BTreeMap::from([(1, "127.0.0.1:7000".into())]),
            body_bytes: 0,
        };
        encode(header, br#"{"fleet":{}}"#)
    }

    #[test]
    fn a_file_reads_back_as_written() {
        let b = decode(&sample()).unwrap();
        assert_eq!(b.header.revision, 42);
        assert_eq!(b.header.body_bytes, 12);
        assert_eq!(b.body, br#"{"fleet":{}}"#);
    }

    #[test]
    fn every_truncation_is_refused() {
        let file = sample();
        for len in 0..file.len() {
            assert!(decode(&file[..len]).is_err(), "{len} bytes accepted");
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let file = sample();
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x20;
            assert!(decode(&bad).is_err(), "byte {i} flipped accepted");
        }
    }

    #[test]
    fn the_reasons_say_what_is_wrong() {
        let file = sample();
        assert_eq!(decode(b"hello"), Err(BackupError::NotABackup));
        let cut = decode(&file[..file.len() - 10]).unwrap_err();
        assert!(cut.to_string().contains("truncated"), "{cut}");
        let mut bad = file.clone();
        let at = file.len() - TRAILER_LEN - 3;
        bad[at] ^= 1;
        let damaged = decode(&bad).unwrap_err();
        assert!(damaged.to_string().contains("damaged"), "{damaged}");
    }
}
