//! The HTTP(S) server under both upstreams: accept, TLS (capturing SNI), HTTP/1.1 or h2,
//! read the whole request, record it, answer.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::fireworks::{self, FireworksOptions};
use super::record::{Recorded, Recorder};
use super::responses::Body;
use super::testupstream::{self, TestOptions};
use super::tls::TestCa;

/// Which upstream to run.
#[derive(Debug, Clone)]
pub enum UpstreamKind {
    /// The basic guide's test upstream: plain HTTP.
    Test(TestOptions),
    /// The fake Fireworks: HTTPS with a fresh test CA.
    Fireworks(FireworksOptions),
}

/// A running upstream; stops when dropped.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub recorder: Recorder,
    /// The CA to trust, for HTTPS upstreams.
    pub ca_pem: Option<String>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` (port 0 for any) and serves `kind` on it.
pub async fn spawn(kind: UpstreamKind, addr: SocketAddr) -> std::io::Result<Upstream> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let recorder = Recorder::default();
    let tls = match &kind {
        UpstreamKind::Test(_) => None,
        UpstreamKind::Fireworks(options) => Some(
            TestCa::generate(&[options.host.as_str(), "localhost"])
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        ),
    };
    let ca_pem = tls.as_ref().map(|t| t.ca_pem.clone());
    let acceptor = tls.map(|t| TlsAcceptor::from(t.server_config));
    let kind = Arc::new(kind);
    let rec = recorder.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (kind, rec, acceptor) = (kind.clone(), rec.clone(), acceptor.clone());
            tokio::spawn(async move {
                match acceptor {
                    None => serve_conn(TokioIo::new(tcp), None, kind, rec).await,
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(tls) => {
                            let sni = tls.get_ref().1.server_name().map(str::to_string);
                            serve_conn(TokioIo::new(tls), sni, kind, rec).await
                        }
                        Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                    },
                }
            });
        }
    });
    Ok(Upstream {
        addr,
        recorder,
        ca_pem,
        task,
    })
}

async fn serve_conn<I>(io: I, sni: Option<String>, kind: Arc<UpstreamKind>, rec: Recorder)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (sni, kind, rec) = (sni.clone(), kind.clone(), rec.clone());
        // No response: the connection is closed unanswered (a fault to inject).
        async move {
            handle(req, sni, &kind, &rec)
                .await
                .ok_or_else(|| std::io::Error::other("closing the connection unanswered"))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Providers take more headers than hyper's default 100 (Envoy and the gateway add some).
    builder.http1().max_headers(256);
    if let Err(e) = builder.serve_connection(io, service).await {
        tracing::debug!(error = %e, "upstream connection ended");
    }
}

async fn handle(
    req: Request<Incoming>,
    sni: Option<String>,
    kind: &UpstreamKind,
    rec: &Recorder,
) -> Option<Response<Body>> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    // HTTP/1.1 carries the authority in Host; h2 in the URI.
    if let Some(authority) = parts.uri.authority() {
        if !headers.iter().any(|(n, _)| n == "host") {
            headers.push(("host".into(), authority.to_string()));
        }
    }
    let recorded = Recorded {
        sni,
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_string(), |pq| pq.to_string()),
        headers,
        body,
    };
    rec.push(recorded.clone());
    match kind {
        UpstreamKind::Test(options) => Some(testupstream::handle(&recorded, options)),
        UpstreamKind::Fireworks(options) => fireworks::handle(&recorded, options).await,
    }
}
