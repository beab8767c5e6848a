//! `blixard audit list`: the cluster's audit trail (admin), every mutating
//! and every refused call with who made it. `--follow` keeps printing new
//! records as they are written, resuming on the next member after the
//! last one printed when a member goes away.

use super::exit::ExitCode;
use super::output::{print_json, print_table};
use super::CliError;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::audit_service_client::AuditServiceClient;
use blixard_shared::BlixardClient;
use serde::Serialize;
use std::time::Duration;
use tokio_stream::StreamExt;

/// Most consecutive failures to (re)open `--follow`'s stream.
const FOLLOW_MAX_FAILURES: u32 = 20;
/// Pause before reopening the stream on the next member.
const FOLLOW_RETRY_DELAY: Duration = Duration::from_millis(200);
/// Most pages `list` reads (at most 1000 records each: the whole ring).
const MAX_PAGES: usize = 1000;

/// JSON view of one record (each element of `audit list --json`; one
/// line each with `--follow`).
#[derive(Debug, Serialize)]
pub struct AuditView {
    /// Position in the trail.
    pub seq: u64,
    /// When the call was answered (ms since the Unix epoch).
    pub time_ms: u64,
    /// The node that answered it.
    pub node_id: u64,
    /// `token:NAME`, `node:ID` or `anonymous`.
    pub principal: String,
    /// The caller's address.
    pub peer: String,
    /// The gRPC method.
    pub method: String,
    /// The Cedar action.
    pub action: String,
    /// The resource acted on.
    pub target: String,
    /// ok, denied or failed.
    pub result: String,
    /// The gRPC code's name.
    pub code: String,
}

impl From<&pb::AuditRecord> for AuditView {
    fn from(r: &pb::AuditRecord) -> Self {
        Self {
            seq: r.seq,
            time_ms: r.time_ms,
            node_id: r.node_id,
            principal: r.principal.clone(),
            peer: r.peer.clone(),
            method: r.method.clone(),
            action: r.action.clone(),
            target: r.target.clone(),
            result: r.result.clone(),
            code: r.code.clone(),
        }
    }
}

/// The filter the flags give.
pub fn filter(
    since: Option<Duration>,
    principal: Option<String>,
    action: Option<String>,
) -> pb::AuditFilter {
    let now = blixard_shared::time::now_ms();
    pb::AuditFilter {
        since_ms: since.map_or(0, |d| now.saturating_sub(d.as_millis() as u64)),
        principal: principal.unwrap_or_default(),
        action: action.unwrap_or_default(),
    }
}

fn row(r: &pb::AuditRecord) -> Vec<String> {
    vec![
        r.seq.to_string(),
        blixard_shared::time::rfc3339_ms(r.time_ms),
        r.node_id.to_string(),
        r.principal.clone(),
        r.action.clone(),
        r.target.clone(),
        r.result.clone(),
        r.code.clone(),
        r.peer.clone(),
    ]
}

const HEADERS: [&str; 9] = [
    "SEQ",
    "TIME",
    "NODE",
    "PRINCIPAL",
    "ACTION",
    "TARGET",
    "RESULT",
    "CODE",
    "PEER",
];

/// Runs `audit list`: every matching record held, oldest first; then, with
/// `follow`, new ones as they come.
pub async fn list(
    client: BlixardClient,
    filter: pb::AuditFilter,
    follow: bool,
    json: bool,
) -> Result<(), CliError> {
    let mut client = client;
    let mut records = Vec::new();
    let mut after = 0;
    let mut summary = None;
    for _ in 0..MAX_PAGES {
        let req = pb::ListAuditRequest {
            filter: Some(filter.clone()),
            after_seq: after,
            page_size: 0,
        };
        let page = client
            .call(|ch| {
                let req = req.clone();
                async move { AuditServiceClient::new(ch).list_audit(req).await }
            })
            .await?;
        records.extend(page.records);
        summary = Some((page.dropped, page.capacity, page.last_seq));
        if page.next_after_seq == 0 {
            break;
        }
        after = page.next_after_seq;
    }
    let (dropped, capacity, last_seq) = summary.unwrap_or_default();
    if json && follow {
        records.iter().for_each(|r| print_json(&AuditView::from(r)));
    } else if json {
        let views: Vec<AuditView> = records.iter().map(AuditView::from).collect();
        print_json(&views);
    } else {
        let rows: Vec<Vec<String>> = records.iter().map(row).collect();
        print_table(&HEADERS, &rows);
        eprintln!(
            "{} records shown; the ring holds at most {capacity}; {dropped} dropped so far",
            rows.len()
        );
    }
    if follow {
        return follow_from(client, filter, last_seq, json).await;
    }
    Ok(())
}

/// Prints new records (after `last`) until the process is stopped.
async fn follow_from(
    client: BlixardClient,
    filter: pb::AuditFilter,
    mut last: u64,
    json: bool,
) -> Result<(), CliError> {
    let mut client = client.with_request_timeout(None);
    let mut failures = 0u32;
    loop {
        let channel = client.current_channel()?;
        let opened = AuditServiceClient::new(channel)
            .watch_audit(pb::WatchAuditRequest {
                filter: Some(filter.clone()),
                after_seq: last,
                // An empty trail: from its first record, so none written
                // between the list and the watch is missed.
                from_oldest: last == 0,
            })
            .await;
        match opened {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(resp) => {
                            failures = 0;
                            let Some(r) = resp.record else { continue };
                            last = r.seq;
                            if json {
                                print_json(&AuditView::from(&r));
                            } else {
                                println!("{}", row(&r).join("  "));
                            }
                        }
                        Err(s)
                            if matches!(
                                s.code(),
                                tonic::Code::Unavailable | tonic::Code::Unknown
                            ) =>
                        {
                            break
                        }
                        Err(s) => return Err(s.into()),
                    }
                }
            }
            Err(s) if s.code() == tonic::Code::Unavailable => {}
            Err(s) => return Err(s.into()),
        }
        failures += 1;
        if failures > FOLLOW_MAX_FAILURES {
            return Err(CliError::new(
                ExitCode::Unavailable,
                "unavailable: the audit stream kept breaking",
            ));
        }
        client.rotate();
        tokio::time::sleep(FOLLOW_RETRY_DELAY).await;
    }
}
