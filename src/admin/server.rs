//! The admin HTTP endpoint: `/healthz` (alive), `/readyz` (valid config, not draining, and the
//! Envoy beside it serving when its admin address is known), `/metrics` (Prometheus text).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::metrics::Metrics;
use super::Health;
use crate::usage::UsageHub;

/// What the admin endpoint reports on.
#[derive(Clone, Debug)]
pub struct AdminState {
    pub health: Health,
    pub metrics: Arc<Metrics>,
    pub usage: Option<UsageHub>,
    /// Envoy's admin address, when readiness includes Envoy's (`run`, `serve --envoy-admin`).
    pub envoy_admin: Option<std::net::SocketAddr>,
}

fn text(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", http::HeaderValue::from_static(content_type));
    r
}

async fn answer(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n", "text/plain"),
        "/readyz" if state.health.is_draining() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n", "text/plain")
        }
        "/readyz" if !state.health.is_ready() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no valid config loaded\n",
            "text/plain",
        ),
        "/readyz" => match state.envoy_admin {
            None => text(StatusCode::OK, "ready\n", "text/plain"),
            // Asked at each probe: Envoy may have died (and be restarting) since the last one.
            Some(addr) => match crate::envoy::admin::ready(addr).await {
                Ok(()) => text(StatusCode::OK, "ready\n", "text/plain"),
                Err(e) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("Envoy is not ready: {e}\n"),
                    "text/plain",
                ),
            },
        },
        "/metrics" => {
            if let Some(hub) = &state.usage {
                state.metrics.usage_records_dropped.set(hub.dropped());
            }
            state
                .metrics
                .trace_spans_dropped
                .set(crate::otlp::dropped());
            text(
                StatusCode::OK,
                state.metrics.encode(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /healthz, /readyz, /metrics\n",
            "text/plain",
        ),
    }
}

/// Serves the admin endpoint on `listener` until the task is dropped.
pub async fn serve_admin(listener: TcpListener, state: AdminState) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, &req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
