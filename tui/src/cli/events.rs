//! `blixard events watch`: the cluster's event stream, printed as it
//! happens. The stream is long-lived, so it does its own retrying: when a
//! member goes away it reopens on the next one, after the last event it
//! printed, so nothing is shown twice or skipped.

use super::exit::ExitCode;
use super::output::print_json;
use super::CliError;
use blixard_shared::proto::v1 as pb;
use blixard_shared::proto::v1::watch_service_client::WatchServiceClient;
use blixard_shared::BlixardClient;
use serde::Serialize;
use std::time::Duration;
use tokio_stream::StreamExt;

/// Most consecutive failed attempts to (re)open the stream before giving up.
const WATCH_MAX_FAILURES: u32 = 20;
/// Pause before reopening the stream on the next member.
const WATCH_RETRY_DELAY: Duration = Duration::from_millis(200);
/// `from_revision` that asks for events from now on (or, with
/// `from_oldest`, from the oldest event still held).
const FROM_NOW: u64 = 0;
/// Width of the right-aligned revision column of a human event line.
const REVISION_WIDTH: usize = 8;
/// Width of the kind column of a human event line.
const KIND_WIDTH: usize = 22;
/// Width of the subject column of a human event line.
const SUBJECT_WIDTH: usize = 16;

/// JSON view of an event (one line of `events watch --json` per event).
#[derive(Debug, Serialize)]
pub struct EventView {
    /// The Raft log index that produced it.
    pub revision: u64,
    /// When it happened (ms since the Unix epoch).
    pub time_ms: u64,
    /// Dotted kind, e.g. "vm.created".
    pub kind: String,
    /// What it is about, e.g. "vm/web-1".
    pub subject: String,
    /// Human-readable description.
    pub message: String,
}

impl From<&pb::Event> for EventView {
    fn from(e: &pb::Event) -> Self {
        Self {
            revision: e.revision,
            time_ms: e.time_ms,
            kind: e.kind.clone(),
            subject: e.subject.clone(),
            message: e.message.clone(),
        }
    }
}

/// The human line for an event: revision, kind, subject, message.
fn event_line(event: &pb::Event) -> String {
    format!(
        "{:>REVISION_WIDTH$}  {:<KIND_WIDTH$} {:<SUBJECT_WIDTH$} {}",
        event.revision, event.kind, event.subject, event.message
    )
}

/// How one opened stream ended.
enum StreamEnd {
    /// `--count` events have been printed: the command is done.
    CountReached,
    /// The stream ended or broke in a way worth resuming elsewhere.
    Broke,
}

/// A watch in progress: where it is, and how it has gone, across the
/// streams it opens one after another.
struct Watch {
    client: BlixardClient,
    /// Revision to resume after (the last event printed).
    last: u64,
    /// Whether the next stream starts from the oldest event held.
    from_oldest: bool,
    /// Events printed so far.
    seen: u64,
    /// Stop after this many events.
    count: Option<u64>,
    /// Consecutive failures to open or keep a stream.
    failures: u32,
    json: bool,
}

/// Runs `events watch` until `count` events are printed, the stream fails
/// for good, or the process is stopped.
pub async fn watch(
    client: BlixardClient,
    from: Option<u64>,
    oldest: bool,
    count: Option<u64>,
    json: bool,
) -> Result<(), CliError> {
    let mut watch = Watch {
        client: client.with_request_timeout(None),
        last: from.unwrap_or(FROM_NOW),
        from_oldest: oldest,
        seen: 0,
        count,
        failures: 0,
        json,
    };
    loop {
        let Some(stream) = watch.open().await? else {
            continue;
        };
        if let StreamEnd::CountReached = watch.follow(stream).await? {
            return Ok(());
        }
        watch.failures += 1;
        if watch.failures > WATCH_MAX_FAILURES {
            return Err(CliError::new(
                ExitCode::Unavailable,
                "unavailable: the watch stream kept breaking",
            ));
        }
        watch.client.rotate();
        tokio::time::sleep(WATCH_RETRY_DELAY).await;
    }
}

impl Watch {
    /// Opens the stream on the current member; `None` when that member is
    /// unavailable and the next one should be tried (already rotated to).
    async fn open(&mut self) -> Result<Option<tonic::Streaming<pb::WatchResponse>>, CliError> {
        let channel = self.client.current_channel()?;
        let opened = WatchServiceClient::new(channel)
            .watch(pb::WatchRequest {
                from_revision: self.last,
                from_oldest: self.from_oldest,
            })
            .await;
        match opened {
            Ok(s) => Ok(Some(s.into_inner())),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                self.failures += 1;
                if self.failures > WATCH_MAX_FAILURES {
                    return Err(status.into());
                }
                tracing::warn!(endpoint = self.client.current_endpoint(), error = %status.message(), "watch unavailable; trying the next member");
                self.client.rotate();
                tokio::time::sleep(WATCH_RETRY_DELAY).await;
                Ok(None)
            }
            Err(status) => Err(status.into()),
        }
    }

    /// Prints events from `stream` until `--count` is reached or the stream
    /// ends; errors other than a broken connection end the command.
    async fn follow(
        &mut self,
        mut stream: tonic::Streaming<pb::WatchResponse>,
    ) -> Result<StreamEnd, CliError> {
        while let Some(item) = stream.next().await {
            match item {
                Ok(resp) => {
                    self.failures = 0;
                    let Some(event) = resp.event else { continue };
                    self.last = event.revision;
                    self.from_oldest = false;
                    if self.json {
                        print_json(&EventView::from(&event));
                    } else {
                        println!("{}", event_line(&event));
                    }
                    self.seen += 1;
                    if self.count.is_some_and(|c| self.seen >= c) {
                        return Ok(StreamEnd::CountReached);
                    }
                }
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        || status.code() == tonic::Code::Unknown =>
                {
                    tracing::warn!(error = %status.message(), "watch stream broke; resuming");
                    return Ok(StreamEnd::Broke);
                }
                Err(status) => return Err(status.into()),
            }
        }
        Ok(StreamEnd::Broke)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_keep_their_columns() {
        let event = pb::Event {
            revision: 42,
            time_ms: 0,
            kind: "vm.created".into(),
            subject: "vm/web-1".into(),
            message: "created".into(),
        };
        assert_eq!(
            event_line(&event),
            format!(
                "{:>8}  {:<22} {:<16} {}",
                42, "vm.created", "vm/web-1", "created"
            )
        );
    }
}
