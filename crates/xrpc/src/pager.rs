//! Cursor pagination: walk every page of a list call.

use std::marker::PhantomData;

use futures_util::Stream;
use serde::de::DeserializeOwned;

use crate::client::{XrpcClient, XrpcRequest};
use crate::error::Error;

/// A page of a paginated list output.
pub trait Page: DeserializeOwned {
    /// The cursor of the next page; `None` on the last one.
    fn cursor(&self) -> Option<&str>;
    /// Items on this page.
    fn n_items(&self) -> usize;
}

/// Walks a paginated list call page by page, passing each page's cursor to the next request.
///
/// It stops after a page without a cursor, an empty page, or a page that repeats the cursor it was
/// asked for (a server bug that would otherwise loop forever). A failed page leaves the pager where it
/// was: calling [`Pager::next_page`] again retries that page. [`Pager::cursor`] is the position to save
/// to resume later.
///
/// ```no_run
/// # async fn demo(client: butterfly_xrpc::XrpcClient) -> Result<(), butterfly_xrpc::Error> {
/// let mut pager = client.sync().list_repos_pager(Some(500));
/// while let Some(page) = pager.next_page().await? {
///     for repo in &page.repos {
///         println!("{} at {}", repo.did, repo.rev);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Pager<T> {
    client: XrpcClient,
    request: XrpcRequest,
    cursor: Option<String>,
    finished: bool,
    _page: PhantomData<fn() -> T>,
}

impl<T: Page> Pager<T> {
    /// A pager for `request` (without its `cursor` parameter), starting at `cursor`.
    pub fn new(client: &XrpcClient, request: XrpcRequest, cursor: Option<String>) -> Pager<T> {
        Pager {
            client: client.clone(),
            request,
            cursor,
            finished: false,
            _page: PhantomData,
        }
    }

    /// The next page, or `None` when the list is done.
    pub async fn next_page(&mut self) -> Result<Option<T>, Error> {
        if self.finished {
            return Ok(None);
        }
        let request = self
            .request
            .clone()
            .param_opt("cursor", self.cursor.as_deref());
        let page: T = self.client.send_json(&request).await?;
        match page.cursor() {
            Some(next) if page.n_items() > 0 && Some(next) != self.cursor.as_deref() => {
                self.cursor = Some(next.to_owned());
            }
            _ => self.finished = true,
        }
        Ok(Some(page))
    }

    /// The cursor the next page will be requested with (`None` before the first page, unless the pager
    /// was started at one).
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// Whether the last page has been returned.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The pages as a stream, which ends after the last page or after the first error.
    pub fn into_stream(self) -> impl Stream<Item = Result<T, Error>> + Send
    where
        T: Send,
    {
        futures_util::stream::unfold(Some(self), |pager| async move {
            let mut pager = pager?;
            match pager.next_page().await {
                Ok(Some(page)) => Some((Ok(page), Some(pager))),
                Ok(None) => None,
                Err(error) => Some((Err(error), None)),
            }
        })
    }
}
