//! Bounds on what a request may make the server hold, before any route reads its body
//! (docs/security.md#request-bodies):
//!
//! * a request `Content-Encoding` (other than `identity`) is refused with `415`: no route takes
//!   a compressed body (Atlassian sends lifecycle callbacks as plain JSON), and a decoder would
//!   let a small body expand to gigabytes before the 1 MiB limit is reached;
//! * a body not complete within [`Config::body_timeout`](crate::config::Config::body_timeout)
//!   (10 s) is dropped: the route's read fails, the client gets `408` and the connection is
//!   closed, so a client that announces a large body and stalls holds nothing for long.
//!
//! The head of a request has its own limit: actix-web's `client_request_timeout` (5 s).
//! A vendor's own actix-web app that mounts [`super::configure`] wraps it in [`RequestLimits`].

use std::cell::Cell;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::HttpMessage;
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::error::PayloadError;
use actix_web::http::{ConnectionType, StatusCode, header};
use actix_web::web::Bytes;
use futures::Stream;

use crate::error::json_error;

/// The middleware; `body_timeout` is how long a request body may take to arrive.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    pub body_timeout: Duration,
}

impl<S, B> Transform<S, ServiceRequest> for RequestLimits
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: actix_web::body::MessageBody + 'static,
{
    type Response = ServiceResponse<actix_web::body::EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = RequestLimitsMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestLimitsMiddleware {
            service: Rc::new(service),
            body_timeout: self.body_timeout,
        }))
    }
}

pub struct RequestLimitsMiddleware<S> {
    service: Rc<S>,
    body_timeout: Duration,
}

type LocalBoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T>>>;

/// True when the request declares a body encoding other than `identity`.
pub fn is_encoded(headers: &header::HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|coding| coding.trim_ascii())
        .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case(b"identity"))
}

impl<S, B> Service<ServiceRequest> for RequestLimitsMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: actix_web::body::MessageBody + 'static,
{
    type Response = ServiceResponse<actix_web::body::EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        if is_encoded(req.headers()) {
            let mut res = json_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "request bodies must not be compressed (Content-Encoding is not accepted)",
            );
            // The body was not read: do not try to find the next request after it.
            res.head_mut().set_connection_type(ConnectionType::Close);
            return Box::pin(ready(Ok(req.into_response(res).map_into_right_body())));
        }
        // Requests without a body (every GET of the request path) pay nothing.
        let timed_out = match req.take_payload() {
            Payload::None => None,
            payload => {
                let flag = Rc::new(Cell::new(false));
                let timed: actix_http::BoxedPayloadStream = Box::pin(TimedPayload {
                    inner: payload,
                    deadline: Box::pin(tokio::time::sleep(self.body_timeout)),
                    timed_out: flag.clone(),
                });
                req.set_payload(Payload::from(timed));
                Some(flag)
            }
        };
        let fut = self.service.call(req);
        Box::pin(async move {
            let res = fut.await?;
            if !timed_out.is_some_and(|f| f.get()) {
                return Ok(res.map_into_left_body());
            }
            tracing::info!("request body not complete in time: dropped");
            let mut timeout = json_error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            );
            timeout
                .head_mut()
                .set_connection_type(ConnectionType::Close);
            let (req, _) = res.into_parts();
            Ok(ServiceResponse::new(req, timeout).map_into_right_body())
        })
    }
}

/// A request body that ends in an error once its deadline has passed.
struct TimedPayload {
    inner: Payload,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Rc<Cell<bool>>,
}

impl Stream for TimedPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.timed_out.get() {
            return Poll::Ready(None);
        }
        // The deadline first: a body trickling in a byte at a time is always "ready".
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.timed_out.set(true);
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request body not complete in time",
            )))));
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderMap, HeaderValue};

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::CONTENT_ENCODING, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn encodings_other_than_identity_are_refused() {
        assert!(!is_encoded(&headers(&[])));
        assert!(!is_encoded(&headers(&["identity"])));
        assert!(!is_encoded(&headers(&[" Identity "])));
        assert!(is_encoded(&headers(&["gzip"])));
        assert!(is_encoded(&headers(&["identity, br"])));
        assert!(is_encoded(&headers(&["identity", "deflate"])));
        assert!(is_encoded(&headers(&["x-anything"])));
    }
}
