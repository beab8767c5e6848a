//! `blixardd restore`: checks a backup file (or rebuilds the state at a
//! revision or time from an archive), then seeds a new one-node cluster in
//! an empty data dir, the way `etcdutl snapshot restore` does.

use super::replay::{fleet_at, fleet_of, Target};
use super::seed::{seed, Plan, Seeded};
use super::RestoreError;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Arguments of `blixardd restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// A backup file written by `blixard cluster backup`.
    #[arg(
        long,
        required_unless_present = "from_dir",
        conflicts_with = "from_dir"
    )]
    pub from: Option<PathBuf>,
    /// A node's `backup_dir` (its archive), for a point-in-time restore.
    #[arg(long)]
    pub from_dir: Option<PathBuf>,
    /// With --from-dir: the state right after this revision was applied.
    #[arg(long, requires = "from_dir", conflicts_with = "to_time")]
    pub to_revision: Option<u64>,
    /// With --from-dir: the state at this time (RFC 3339 UTC, e.g.
    /// 2026-12-01T04:09:16Z, or ms since the epoch). Default: the newest.
    #[arg(long, requires = "from_dir")]
    pub to_time: Option<String>,
    /// The new node's data dir (must not hold a node's state yet).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The new node's id.
    #[arg(long)]
    pub node_id: u64,
    /// Where the others will reach the new node (default: its address in
    /// the backup; required with --from-dir).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Seed a plaintext cluster (no CA, no admin token).
    #[arg(long)]
    pub insecure: bool,
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// The seeded node.
    pub seeded: Seeded,
    /// The revision of the state restored (before the new admin token).
    pub source_revision: u64,
}

/// Runs a restore. Every check on the source (checksum, length, the
/// archive's continuity) happens before anything is written.
pub async fn run(args: RestoreArgs) -> Result<Restored, RestoreError> {
    let (fleet, revision, members) = match (&args.from, &args.from_dir) {
        (Some(file), _) => {
            let file = file.clone();
            let (header, fleet) = tokio::task::spawn_blocking(move || fleet_of(&file))
                .await
                .map_err(|e| RestoreError::Invalid(format!("reading the backup: {e}")))??;
            (fleet, header.revision, header.members)
        }
        (None, Some(dir)) => {
            let target = match (args.to_revision, &args.to_time) {
                (Some(r), _) => Target::Revision(r),
                (None, Some(t)) => Target::Time(blixard_shared::time::parse_utc_ms(t).ok_or_else(
                    || {
                        RestoreError::Invalid(format!(
                            "--to-time: {t:?} is neither RFC 3339 UTC (2026-12-01T04:09:16Z) nor ms since the epoch"
                        ))
                    },
                )?),
                (None, None) => Target::Latest,
            };
            let dir = dir.clone();
            let rebuilt = tokio::task::spawn_blocking(move || fleet_at(&dir, target))
                .await
                .map_err(|e| RestoreError::Invalid(format!("reading the archive: {e}")))??;
            tracing::info!(
                revision = rebuilt.revision,
                base_revision = rebuilt.base_revision,
                replayed = rebuilt.replayed,
                "rebuilt the state from the archive"
            );
            (rebuilt.fleet, rebuilt.revision, BTreeMap::new())
        }
        (None, None) => {
            return Err(RestoreError::Invalid(
                "--from or --from-dir: say what to restore from".into(),
            ))
        }
    };
    let plan = Plan {
        data_dir: args.data_dir,
        node_id: args.node_id,
        advertise: args.advertise,
        insecure: args.insecure,
    };
    let seeded = seed(&plan, fleet, revision, &members).await?;
    Ok(Restored {
        seeded,
        source_revision: revision,
    })
}
