//! One id per request, accepted from `X-Request-Id` or made here, and carried wherever the work the
//! request started goes: into its log lines (the `request` span), into database work on the
//! blocking pool, into the jobs it enqueued and the logs of those jobs, and back in the answer's
//! `X-Request-Id` header.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use actix_web::http::header::{HeaderName, HeaderValue};
use tokio::task::futures::TaskLocalFuture;

/// The header a request id arrives in and is answered in.
pub const HEADER: &str = "x-request-id";

/// [`HEADER`], named once: looking a header up by a `&str` name parses the name (and copies a
/// non-standard one) on every call.
pub static HEADER_NAME: HeaderName = HeaderName::from_static(HEADER);

/// Longest id accepted from a client; a longer or odd one is replaced by a fresh id.
const MAX_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The client's id when it is usable (1 to 128 characters of letters, digits and `-_.:`),
    /// else a new one.
    pub fn accept_or_new(header: Option<&HeaderValue>) -> Self {
        header
            .and_then(|value| value.to_str().ok())
            .and_then(Self::parse)
            .unwrap_or_default()
    }

    /// A client-supplied id, if it is safe to log and to send back.
    pub fn parse(text: &str) -> Option<Self> {
        let usable = !text.is_empty()
            && text.len() <= MAX_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        usable.then(|| Self(text.into()))
    }

    /// 64 random bits as 16 hex digits.
    pub fn new() -> Self {
        Self(format!("{:016x}", rand::random::<u64>()).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&self.0).ok()
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

tokio::task_local! {
    static TASK: RequestId;
}

thread_local! {
    /// The id of the work a blocking-pool thread is doing right now (see [`in_blocking`]).
    static BLOCKING: RefCell<Option<RequestId>> = const { RefCell::new(None) };
}

/// The id of the request (or job) whose work is running here, if any.
pub fn current() -> Option<RequestId> {
    TASK.try_with(Clone::clone)
        .ok()
        .or_else(|| BLOCKING.with(|slot| slot.borrow().clone()))
}

/// Runs `work` as part of the request or job `id`.
pub async fn scope<F: Future>(id: RequestId, work: F) -> F::Output {
    scoped(id, work).await
}

/// `work` as part of `id`, as a future of a type that can be named (for the edge middleware).
pub fn scoped<F: Future>(id: RequestId, work: F) -> TaskLocalFuture<RequestId, F> {
    TASK.scope(id, work)
}

/// Runs blocking `work` (on another thread) as part of `id`, so that [`current`] finds it there.
pub fn in_blocking<T>(id: Option<RequestId>, work: impl FnOnce() -> T) -> T {
    struct Restore(Option<RequestId>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            BLOCKING.with(|slot| *slot.borrow_mut() = previous);
        }
    }
    let previous = BLOCKING.with(|slot| slot.replace(id));
    let _restore = Restore(previous);
    work()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_client_id_is_kept_and_anything_else_replaced() {
        let kept = RequestId::accept_or_new(Some(&HeaderValue::from_static("req-42.a:b_c")));
        assert_eq!(kept.as_str(), "req-42.a:b_c");
        for bad in ["", "has space", "quote\"", "x".repeat(129).as_str()] {
            assert!(RequestId::parse(bad).is_none(), "{bad:?}");
        }
        let made = RequestId::accept_or_new(Some(&HeaderValue::from_static("no spaces please")));
        assert_eq!(made.as_str().len(), 16);
        assert!(made.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(RequestId::new(), RequestId::new());
    }

    #[tokio::test]
    async fn the_id_follows_the_task_and_blocking_work_and_nothing_else() {
        assert_eq!(current(), None);
        let id = RequestId::parse("abc").unwrap();
        let seen = scope(id.clone(), async {
            let here = current();
            let carried = current();
            let there = tokio::task::spawn_blocking(move || in_blocking(carried, current))
                .await
                .unwrap();
            (here, there)
        })
        .await;
        assert_eq!(seen, (Some(id.clone()), Some(id)));
        assert_eq!(current(), None);
        assert_eq!(in_blocking(None, current), None);
    }
}
