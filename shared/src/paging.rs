//! Reading every page of a list call. `ListVms` and `ListNodes` return at
//! most [`MAX_PAGE_SIZE`](crate::limits::MAX_PAGE_SIZE) items a call; the
//! CLI, the console and tools that need the whole list go through
//! [`read_all_pages`] instead of writing the page-token loop again.

use crate::limits::{MAX_LIST_PAGES, MAX_NODES, MAX_VMS};
use crate::proto::v1 as pb;
use std::future::Future;

/// One page of a paged list answer.
pub trait ListPage {
    /// What the list holds.
    type Item;
    /// Most items the whole list can hold (the cluster's own bound), so a
    /// server that never stops paging is noticed.
    const MAX_ITEMS: usize;
    /// The items, the token of the next page (empty on the last) and the
    /// revision the page was read at.
    fn into_parts(self) -> (Vec<Self::Item>, String, u64);
}

impl ListPage for pb::ListVmsResponse {
    type Item = pb::Vm;
    const MAX_ITEMS: usize = MAX_VMS;
    fn into_parts(self) -> (Vec<pb::Vm>, String, u64) {
        (self.vms, self.next_page_token, self.revision)
    }
}

impl ListPage for pb::ListNodesResponse {
    type Item = pb::Node;
    const MAX_ITEMS: usize = MAX_NODES;
    fn into_parts(self) -> (Vec<pb::Node>, String, u64) {
        (self.nodes, self.next_page_token, self.revision)
    }
}

/// The bookkeeping of reading a list page by page: which token to ask for
/// next, the items so far, the oldest revision seen, and the bounds. For
/// callers whose fetch borrows state (a `&mut BlixardClient`); others use
/// [`read_all_pages`].
///
/// At most [`MAX_LIST_PAGES`] pages or the list's own item bound are read;
/// past either, or when the server hands back the token it was given,
/// [`Pager::push`] fails with `OutOfRange` rather than loop without end.
pub struct Pager<P: ListPage> {
    items: Vec<P::Item>,
    revision: u64,
    next: Option<String>,
    pages: usize,
}

impl<P: ListPage> Default for Pager<P> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            revision: u64::MAX,
            next: Some(String::new()),
            pages: 0,
        }
    }
}

impl<P: ListPage> Pager<P> {
    /// The token of the page to fetch next (empty for the first), or `None`
    /// once the last page is in.
    pub fn next_token(&self) -> Option<String> {
        self.next.clone()
    }

    /// Takes in the page fetched with [`Pager::next_token`].
    pub fn push(&mut self, page: P) -> Result<(), tonic::Status> {
        let (items, next, revision) = page.into_parts();
        let asked = self.next.take().unwrap_or_default();
        self.pages += 1;
        self.items.extend(items);
        self.revision = self.revision.min(revision);
        if next.is_empty() {
            return Ok(());
        }
        if next == asked || self.items.len() > P::MAX_ITEMS || self.pages >= MAX_LIST_PAGES {
            return Err(tonic::Status::out_of_range(format!(
                "list: the server kept paging past {} items or {MAX_LIST_PAGES} pages",
                P::MAX_ITEMS
            )));
        }
        self.next = Some(next);
        Ok(())
    }

    /// Every item, and the oldest revision any page was read at (resume a
    /// watch from there and nothing is missed).
    pub fn finish(self) -> (Vec<P::Item>, u64) {
        (self.items, self.revision)
    }
}

/// Every item of a paged list and the oldest revision a page was read at;
/// `fetch` gets the page token to ask for (empty for the first page).
/// Bounded as [`Pager`] is.
pub async fn read_all_pages<P, E, F, Fut>(mut fetch: F) -> Result<(Vec<P::Item>, u64), E>
where
    P: ListPage,
    E: From<tonic::Status>,
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<P, E>>,
{
    let mut pager = Pager::default();
    while let Some(token) = pager.next_token() {
        pager.push(fetch(token).await?)?;
    }
    Ok(pager.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(names: &[&str], next: &str, revision: u64) -> pb::ListVmsResponse {
        pb::ListVmsResponse {
            vms: names
                .iter()
                .map(|n| pb::Vm {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            next_page_token: next.into(),
            revision,
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
            .block_on(f)
    }

    #[test]
    fn follows_tokens_to_the_last_page_and_keeps_the_oldest_revision() {
        let (vms, revision) = block_on(read_all_pages(|token: String| async move {
            Ok::<_, tonic::Status>(match token.as_str() {
                "" => page(&["a", "b"], "b", 9),
                "b" => page(&["c"], "c", 7),
                _ => page(&[], "", 8),
            })
        }))
        .expect("three pages");
        let names: Vec<_> = vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(revision, 7);
    }

    #[test]
    fn a_server_that_repeats_its_token_is_an_error_not_a_loop() {
        let err = block_on(read_all_pages(|_token: String| async move {
            Ok::<_, tonic::Status>(page(&["a"], "same", 1))
        }))
        .expect_err("a repeated token ends the read");
        assert_eq!(err.code(), tonic::Code::OutOfRange);
    }
}
