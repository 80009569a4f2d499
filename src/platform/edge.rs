//! The middleware every request meets first, doing in one layer what the edge needs around every
//! answer:
//!
//! - its id, accepted from `X-Request-Id` or made, answered in the same header, current for its
//!   work (a task-local: database calls, jobs it enqueues, log lines) and on its `request` span;
//! - its deadline (`server.request_deadline_ms`) for a request without a body: every backend call
//!   made for it takes what is left of it (see [`deadline`]). A request with a body is left to each
//!   call's own bound, since a slow upload is the client's time, not a backend's;
//! - its count and latency per route, method and status ([`telemetry::record_request`]);
//! - `Strict-Transport-Security` on every answer when the server speaks HTTPS.
//!
//! It is one `Service` with a named future: no boxing, no dynamic dispatch, nothing allocated
//! for a request beyond its id (one allocation, shared by the header and every copy).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use actix_web::Error;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{self, HeaderValue};
use futures_util::future::{Either, Ready, ready as ready_ok};
use tokio::task::futures::TaskLocalFuture;
use tracing::Instrument;
use tracing::Span;
use tracing::instrument::Instrumented;

use crate::platform::deadline;
use crate::platform::request_id::{self, RequestId};
use crate::platform::telemetry;

/// `max-age` of a year: a browser that saw it never tries plain HTTP on this host for that long.
static HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000");

/// The middleware factory: `App::new().wrap(Edge::new(https, deadline))`, outermost.
#[derive(Debug, Clone, Copy)]
pub struct Edge {
    https: bool,
    deadline: Duration,
    /// A path prefix whose requests are counted under one route without asking the router.
    prefix_route: Option<(&'static str, &'static str)>,
}

impl Edge {
    /// `https`: the server speaks TLS (HSTS is sent); `deadline`: `server.request_deadline_ms`.
    pub fn new(https: bool, deadline: Duration) -> Self {
        Self {
            https,
            deadline,
            prefix_route: None,
        }
    }

    /// Requests whose path starts with `prefix` are counted under `route`, unless their handler
    /// finds no route there ([`telemetry::Unmatched`]): for a hot route that a scope's own service
    /// answers, so that no pattern matched for the router to name (and finding the label
    /// costs no walk of the routes).
    pub fn with_prefix_route(self, prefix: &'static str, route: &'static str) -> Self {
        Self {
            prefix_route: Some((prefix, route)),
            ..self
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Edge
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = EdgeService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready_ok(Ok(EdgeService {
            service,
            edge: *self,
        }))
    }
}

pub struct EdgeService<S> {
    service: S,
    edge: Edge,
}

/// The inner service's future, with the deadline when the request has one.
type Clocked<F> = Either<TaskLocalFuture<tokio::time::Instant, F>, F>;

impl<S, B> Service<ServiceRequest> for EdgeService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = EdgeFuture<S::Future>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let id = RequestId::accept_or_new(req.headers().get(&request_id::HEADER_NAME));
        let header = Some(id.header_value());
        let method = telemetry::method_label(req.method());
        let route = self
            .edge
            .prefix_route
            .and_then(|(prefix, route)| req.path().starts_with(prefix).then_some(route));
        let span = tracing::info_span!("request", request_id = %id, method, path = req.path());
        let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
            || req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_some_and(|length| length.as_bytes() != b"0");
        // The inner layers' `call` only routes and builds the answer's future (nothing there logs
        // or reads the id or the deadline); the work runs when it is polled, inside the scopes.
        let inner = self.service.call(req);
        let clocked: Clocked<S::Future> = if has_body {
            Either::Right(inner)
        } else {
            let until = tokio::time::Instant::from_std(started) + self.edge.deadline;
            Either::Left(deadline::scoped(until, inner))
        };
        EdgeFuture {
            inner: request_id::scoped(id, clocked).instrument(span.clone()),
            started,
            header,
            method,
            route,
            span,
            https: self.edge.https,
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of a request, finished by the edge once the inner service has it.
    pub struct EdgeFuture<F: Future> {
        #[pin]
        inner: Instrumented<TaskLocalFuture<RequestId, Clocked<F>>>,
        started: Instant,
        header: Option<HeaderValue>,
        method: &'static str,
        route: Option<&'static str>,
        span: Span,
        https: bool,
    }
}

impl<F, B> Future for EdgeFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    type Output = Result<ServiceResponse<B>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        let elapsed = this.started.elapsed();
        telemetry::record_request(&response, this.method, *this.route, elapsed, this.span);
        let headers = response.headers_mut();
        if let Some(value) = this.header.take() {
            headers.insert(request_id::HEADER_NAME.clone(), value);
        }
        if *this.https && !headers.contains_key(header::STRICT_TRANSPORT_SECURITY) {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, HSTS.clone());
        }
        Poll::Ready(Ok(response))
    }
}
