//! `blixard quota set|list|delete`: quotas per label. The daemon holds
//! creates and starts to them; `list` shows each quota beside what its
//! VMs use now.

use super::args::QuotaCmd;
use super::output::{print_json, print_table};
use super::CliError;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::quota_service_client::QuotaServiceClient;
use blixard_shared::BlixardClient;
use serde::Serialize;

/// JSON view of a quota's numbers (0: no limit).
#[derive(Debug, Serialize)]
pub struct LimitsView {
    /// vCPUs of the label's VMs meant to run.
    pub vcpus: u32,
    /// Their memory, MiB.
    pub memory_mib: u64,
    /// The label's VMs.
    pub vms: u32,
}

impl From<Option<&pb::QuotaLimits>> for LimitsView {
    fn from(l: Option<&pb::QuotaLimits>) -> Self {
        let l = l.copied().unwrap_or_default();
        Self {
            vcpus: l.vcpus,
            memory_mib: l.memory_mib,
            vms: l.vms,
        }
    }
}

/// JSON view of a quota (each element of `quota list --json`).
#[derive(Debug, Serialize)]
pub struct QuotaView {
    /// `key=value`.
    pub label: String,
    /// The limits.
    pub limits: LimitsView,
    /// What the label's VMs use now.
    pub used: LimitsView,
}

impl From<&pb::Quota> for QuotaView {
    fn from(q: &pb::Quota) -> Self {
        Self {
            label: q.label.clone(),
            limits: q.limits.as_ref().into(),
            used: q.used.as_ref().into(),
        }
    }
}

/// `used/limit`, or `used` when there is no limit.
fn cell<T: std::fmt::Display + PartialEq + Default>(used: T, limit: T) -> String {
    if limit == T::default() {
        format!("{used}/-")
    } else {
        format!("{used}/{limit}")
    }
}

fn row(q: &QuotaView) -> Vec<String> {
    vec![
        q.label.clone(),
        cell(q.used.vcpus, q.limits.vcpus),
        cell(q.used.memory_mib, q.limits.memory_mib),
        cell(q.used.vms, q.limits.vms),
    ]
}

const HEADERS: [&str; 4] = ["LABEL", "VCPUS", "MEMORY_MIB", "VMS"];

/// Runs one `quota` command.
pub async fn run(client: &mut BlixardClient, cmd: QuotaCmd, json: bool) -> Result<(), CliError> {
    match cmd {
        QuotaCmd::Set {
            label,
            vcpus,
            memory_mib,
            vms,
        } => {
            blixard_shared::validate::quota_label("LABEL", &label)?;
            if vcpus.is_none() && memory_mib.is_none() && vms.is_none() {
                return Err(CliError::usage(
                    "give at least one of --vcpus, --memory-mib and --vms",
                ));
            }
            let req = pb::SetQuotaRequest {
                label,
                limits: Some(pb::QuotaLimits {
                    vcpus: vcpus.unwrap_or(0),
                    memory_mib: memory_mib.unwrap_or(0),
                    vms: vms.unwrap_or(0),
                }),
            };
            let resp = client
                .call(|ch| {
                    let req = req.clone();
                    async move { QuotaServiceClient::new(ch).set_quota(req).await }
                })
                .await?;
            let quota = resp.quota.unwrap_or_default();
            let view = QuotaView::from(&quota);
            if json {
                print_json(&view);
            } else {
                print_table(&HEADERS, &[row(&view)]);
            }
            Ok(())
        }
        QuotaCmd::List => {
            let resp = client
                .call(|ch| async move {
                    QuotaServiceClient::new(ch)
                        .list_quotas(pb::ListQuotasRequest {})
                        .await
                })
                .await?;
            let views: Vec<QuotaView> = resp.quotas.iter().map(QuotaView::from).collect();
            if json {
                print_json(&views);
            } else {
                let rows: Vec<Vec<String>> = views.iter().map(row).collect();
                print_table(&HEADERS, &rows);
            }
            Ok(())
        }
        QuotaCmd::Delete { label } => {
            blixard_shared::validate::quota_label("LABEL", &label)?;
            let req = pb::DeleteQuotaRequest { label };
            client
                .call(|ch| {
                    let req = req.clone();
                    async move { QuotaServiceClient::new(ch).delete_quota(req).await }
                })
                .await?;
            if json {
                print_json(&serde_json::json!({}));
            }
            Ok(())
        }
    }
}
