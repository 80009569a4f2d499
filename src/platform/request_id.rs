//! One id per request, accepted from `X-Request-Id` or made here, and carried wherever the work the
//! request started goes: into its log lines (the `request` span), into database work on the
//! blocking pool, into the jobs it enqueued and the logs of those jobs, and back in the answer's
//! `X-Request-Id` header.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;

use actix_web::http::header::{HeaderName, HeaderValue};
use tokio::task::futures::TaskLocalFuture;

/// The header a request id arrives in and is answered in.
pub const HEADER: &str = "x-request-id";

/// [`HEADER`], named once: looking a header up by a `&str` name parses the name (and copies a
/// non-standard one) on every call.
pub static HEADER_NAME: HeaderName = HeaderName::from_static(HEADER);

/// Longest id accepted from a client; a longer or odd one is replaced by a fresh id.
const MAX_LEN: usize = 128;

/// Kept as the header value it is answered in: cloning one shares its bytes, so a request's id
/// costs one allocation however many places carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The client's id when it is usable (1 to 128 characters of letters, digits and `-_.:`),
    /// else a new one.
    pub fn accept_or_new(header: Option<&HeaderValue>) -> Self {
        match header {
            Some(value) if usable(value.as_bytes()) => Self(value.clone()),
            _ => Self::new(),
        }
    }

    /// An id read back (from a job), if it is safe to log and to send back.
    pub fn parse(text: &str) -> Option<Self> {
        usable(text.as_bytes())
            .then(|| HeaderValue::from_str(text).ok().map(Self))
            .flatten()
    }

    /// 64 random bits as 16 hex digits.
    pub fn new() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bits = rand::random::<u64>();
        let mut digits = [0u8; 16];
        for (i, digit) in digits.iter_mut().enumerate() {
            *digit = HEX[((bits >> (60 - 4 * i)) & 0xf) as usize];
        }
        // Hex digits are always a valid header value.
        Self(HeaderValue::from_bytes(&digits).unwrap_or_else(|_| HeaderValue::from_static("0")))
    }

    pub fn as_str(&self) -> &str {
        // Only visible ASCII gets in (`usable`, hex digits).
        self.0.to_str().unwrap_or_default()
    }

    /// The value of the answer's `X-Request-Id`.
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

/// 1 to 128 letters, digits and `-_.:`.
fn usable(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
        assert_eq!(made.header_value().as_bytes(), made.as_str().as_bytes());
        assert_eq!(made.to_string(), made.as_str());
        assert_ne!(RequestId::new(), RequestId::new());
        // Every digit of the random bits is written (none fixed, none lost).
        let ids: Vec<RequestId> = (0..64).map(|_| RequestId::new()).collect();
        for at in 0..16 {
            let digits: std::collections::HashSet<u8> =
                ids.iter().map(|id| id.as_str().as_bytes()[at]).collect();
            assert!(digits.len() > 1, "digit {at} never changes");
        }
        assert_eq!(RequestId::parse("job-7").unwrap().as_str(), "job-7");
        assert!(RequestId::parse("two words").is_none());
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
