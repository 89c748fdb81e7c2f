//! The responses the fake upstreams build: complete JSON or bytes, and event streams sent event
//! by event (optionally ending in a reset). Shared by the fakes; the server only dispatches.

use bytes::Bytes;
use http::Response;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;

/// Response body type of the upstreams (a body error resets the stream: a fault to inject).
pub type Body = BoxBody<Bytes, std::io::Error>;

/// An event stream: each event sent on its own, `interval` apart.
pub fn sse_response(
    events: Vec<String>,
    interval: std::time::Duration,
    extra: &[(&str, String)],
) -> Response<Body> {
    sse_response_then(events, interval, None, extra)
}

/// An event stream that, after its events, fails with `error` (the connection is reset).
pub fn sse_response_then(
    events: Vec<String>,
    interval: std::time::Duration,
    error: Option<std::io::Error>,
    extra: &[(&str, String)],
) -> Response<Body> {
    use tokio_stream::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        for (i, e) in events.into_iter().enumerate() {
            if i > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            if tx.send(Ok(Bytes::from(e))).await.is_err() {
                return;
            }
        }
        if let Some(e) = error {
            let _ = tx.send(Err(e)).await;
        }
    });
    let stream =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| b.map(hyper::body::Frame::data));
    let mut builder = Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache");
    for (n, v) in extra {
        builder = builder.header(*n, v.as_str());
    }
    builder
        .body(http_body_util::StreamBody::new(stream).boxed())
        .unwrap_or_else(|_| empty())
}

/// A complete JSON response.
pub fn json_response(
    status: u16,
    body: &serde_json::Value,
    extra: &[(&str, String)],
) -> Response<Body> {
    bytes_response(
        status,
        "application/json",
        serde_json::to_vec(body).unwrap_or_default(),
        extra,
    )
}

/// A complete response with the given content type.
pub fn bytes_response(
    status: u16,
    content_type: &str,
    body: Vec<u8>,
    extra: &[(&str, String)],
) -> Response<Body> {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", content_type);
    for (n, v) in extra {
        builder = builder.header(*n, v.as_str());
    }
    builder
        .body(
            http_body_util::Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap_or_else(|_| empty())
}

fn empty() -> Response<Body> {
    Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    )
}
