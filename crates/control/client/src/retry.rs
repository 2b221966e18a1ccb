//! Retrying requests the API server refused with 429 (its priority lanes' queue was full, see
//! `strata_apiserver::flowcontrol`), as client-go does: wait for the response's `Retry-After`
//! (1 s when it has none, at most [`MAX_WAIT`]), then send the request again, up to
//! [`MAX_RETRIES`] times; the last 429 is returned to the caller. A layer on kube's client
//! stack, so every strata component (scheduler, controllers, node agent) gets it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;

/// client-go's `maxRetries` for 429 and `Retry-After`.
pub const MAX_RETRIES: u32 = 10;
/// The longest `Retry-After` honoured.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Adds [`TooManyRequests`] to a client stack.
#[derive(Clone, Copy, Debug, Default)]
pub struct TooManyRequestsLayer;

impl<S> tower::Layer<S> for TooManyRequestsLayer {
    type Service = TooManyRequests<S>;
    fn layer(&self, inner: S) -> TooManyRequests<S> {
        TooManyRequests { inner: Arc::new(tokio::sync::Mutex::new(inner)) }
    }
}

/// The retrying service. The inner stack is shared by the calls in flight (kube's stack is a
/// boxed, non-cloneable service); it is locked only to send a request, not while waiting for
/// the response.
pub struct TooManyRequests<S> {
    inner: Arc<tokio::sync::Mutex<S>>,
}

/// How long a 429 asks to wait.
fn retry_after<B>(resp: &Response<B>) -> Duration {
    let secs = resp.headers().get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(1);
    Duration::from_secs(secs.max(1)).min(MAX_WAIT)
}

impl<S, B> tower::Service<Request<Body>> for TooManyRequests<S>
where
    S: tower::Service<Request<Body>, Response = Response<B>, Error = BoxError> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is awaited per attempt, under the lock.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            // kube's request bodies are whole buffers: keep one to send again.
            let bytes = body.collect().await.map_err(|e| Box::new(e) as BoxError)?.to_bytes();
            let mut attempt = 0;
            loop {
                let mut req = Request::new(Body::from(bytes.clone()));
                *req.method_mut() = parts.method.clone();
                *req.uri_mut() = parts.uri.clone();
                *req.version_mut() = parts.version;
                *req.headers_mut() = parts.headers.clone();
                *req.extensions_mut() = parts.extensions.clone();
                let fut = {
                    let mut svc = inner.lock().await;
                    std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
                    svc.call(req)
                };
                let resp = fut.await?;
                if resp.status() != StatusCode::TOO_MANY_REQUESTS || attempt >= MAX_RETRIES {
                    return Ok(resp);
                }
                attempt += 1;
                let wait = retry_after(&resp);
                tracing::debug!(method = %parts.method, uri = %parts.uri, attempt, ?wait, "429 from the API server: retrying");
                drop(resp);
                tokio::time::sleep(wait).await;
            }
        })
    }
}
