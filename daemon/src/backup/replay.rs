//! Rebuilding the state at a revision or a time from an archive
//! (`backup_dir`): the newest snapshot at or before the target, then the
//! archived entries after it, applied by the same code that applies them
//! in the cluster, so the result is the state the cluster had.

use super::archive::{read_segment, segments, snapshots, Tail};
use super::RestoreError;
use crate::state::Fleet;
use std::path::Path;

/// What state to rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The state right after this revision was applied.
    Revision(u64),
    /// The state after the last entry stamped at or before this time (ms
    /// since the epoch; commands carry their proposer's clock).
    Time(u64),
    /// The newest state the archive holds.
    Latest,
}

/// A rebuilt state.
#[derive(Debug)]
pub struct Rebuilt {
    /// The fleet, at `revision`.
    pub fleet: Fleet,
    /// The revision it is at.
    pub revision: u64,
    /// The snapshot it started from.
    pub base_revision: u64,
    /// Entries applied after the snapshot.
    pub replayed: u64,
}

/// Reads a backup file and checks it.
pub fn read_backup(path: &Path) -> Result<blixard_shared::backup::Backup, RestoreError> {
    let bytes = std::fs::read(path).map_err(|e| RestoreError::io(path, e))?;
    blixard_shared::backup::decode(&bytes).map_err(|source| RestoreError::Backup {
        path: path.display().to_string(),
        source,
    })
}

/// The fleet a checked backup holds.
pub fn fleet_of(path: &Path) -> Result<(blixard_shared::backup::Header, Fleet), RestoreError> {
    let backup = read_backup(path)?;
    let fleet = crate::raft::state_machine::decode_fleet(&backup.body)
        .map_err(|e| RestoreError::io(path, format!("the state does not decode: {e}")))?;
    Ok((backup.header, fleet))
}

/// The state `target` names, from the archive in `dir`.
pub fn fleet_at(dir: &Path, target: Target) -> Result<Rebuilt, RestoreError> {
    let snaps = snapshots(dir).map_err(|e| RestoreError::io(dir, e))?;
    let Some(oldest) = snaps.first().map(|(r, _)| *r) else {
        return Err(RestoreError::Archive(format!(
            "{} holds no archive snapshot (is it a node's backup_dir?)",
            dir.display()
        )));
    };
    // The base: the newest snapshot at or before the target.
    let mut base = None;
    for (revision, path) in snaps.iter().rev() {
        let fits = match target {
            Target::Revision(r) => *revision <= r,
            Target::Latest => true,
            Target::Time(t) => {
                let (header, _) = fleet_of(path)?;
                header.taken_at_ms <= t
            }
        };
        if fits {
            base = Some(fleet_of(path)?);
            break;
        }
    }
    let Some((header, mut fleet)) = base else {
        return Err(RestoreError::Archive(match target {
            Target::Time(t) => format!(
                "the archive's oldest snapshot is later than {} (retention removed older ones)",
                blixard_shared::time::rfc3339_ms(t)
            ),
            _ => format!(
                "the archive's oldest snapshot is at revision {oldest}, after the one asked for (retention removed older ones)"
            ),
        }));
    };
    let base_revision = header.revision;
    if target == Target::Revision(base_revision) {
        return Ok(Rebuilt {
            fleet,
            revision: base_revision,
            base_revision,
            replayed: 0,
        });
    }
    let mut revision = base_revision;
    let mut replayed = 0u64;
    let segs = segments(dir).map_err(|e| RestoreError::io(dir, e))?;
    let start = segs
        .iter()
        .rposition(|(first, _)| *first <= base_revision + 1)
        .unwrap_or(0);
    let last_segment = segs.len().saturating_sub(1);
    'segments: for (n, (_, path)) in segs.iter().enumerate().skip(start) {
        let (entries, offset, tail) = read_segment(path).map_err(|e| RestoreError::io(path, e))?;
        for entry in entries {
            if entry.index <= revision {
                continue;
            }
            let done = match target {
                Target::Revision(r) => entry.index > r,
                Target::Time(t) => entry.time_ms > t,
                Target::Latest => false,
            };
            if done {
                break 'segments;
            }
            if entry.index != revision + 1 {
                return Err(RestoreError::Archive(format!(
                    "the archive has a gap: no entries from revision {} to {} (the node dropped them or was restored); restore to a revision before {} or from {} on",
                    revision + 1,
                    entry.index - 1,
                    revision + 1,
                    entry.index
                )));
            }
            match &entry.command {
                Some(cmd) => {
                    // A rejected command changes nothing, as in the cluster.
                    let _ = fleet.apply(entry.index, cmd);
                }
                None => fleet.apply_noop(entry.index),
            }
            revision = entry.index;
            replayed += 1;
        }
        match tail {
            Tail::Clean => {}
            Tail::Torn if n == last_segment => {}
            _ => {
                return Err(RestoreError::Archive(format!(
                    "{} is damaged at byte {offset}: refusing to restore past revision {revision}",
                    path.display()
                )))
            }
        }
    }
    if let Target::Revision(r) = target {
        if revision != r {
            return Err(RestoreError::Archive(format!(
                "the archive ends at revision {revision}; revision {r} is not in it"
            )));
        }
    }
    Ok(Rebuilt {
        fleet,
        revision,
        base_revision,
        replayed,
    })
}
