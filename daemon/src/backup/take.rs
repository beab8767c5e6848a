//! `ClusterService.Backup` on the leader: the fleet at one applied
//! revision, after a read index confirms leadership, encoded off the async
//! threads while the cluster keeps serving (apply waits only for the copy
//! of the fleet's record handles).

use crate::core::Core;
use blixard_shared::backup::{encode, Header};
use std::collections::BTreeMap;
use tonic::Status;

/// The whole backup file, taken on this node, which must lead.
pub async fn take(core: &Core) -> Result<(u64, Vec<u8>), Status> {
    core.read_index_local().await?;
    let metrics = core.raft_metrics();
    let members: BTreeMap<u64, String> = metrics
        .membership_config
        .membership()
        .nodes()
        .map(|(id, node)| (*id, node.addr.clone()))
        .collect();
    let fleet = core.view.read().clone();
    let revision = fleet.revision;
    let header = Header {
        revision,
        term: metrics.current_term,
        taken_at_ms: blixard_shared::time::now_ms(),
        taken_by: core.id,
        members,
        body_bytes: 0,
    };
    let file = tokio::task::spawn_blocking(move || {
        crate::raft::state_machine::encode_fleet(fleet).map(|body| encode(header, &body))
    })
    .await
    .map_err(|e| Status::internal(format!("encoding the backup: {e}")))?
    .map_err(|e| Status::internal(format!("encoding the backup: {e}")))?;
    tracing::info!(revision, bytes = file.len(), "backup taken");
    Ok((revision, file))
}
