//! The exporter: spans, already encoded, go through a bounded queue to a thread of their own
//! that batches them into `ExportTraceServiceRequest`s and sends them over OTLP/gRPC. The
//! request path's cost is one push under a lock; batching, the HTTP/2 writes and waiting on the
//! collector happen off the processor's runtime. A full queue, a failed export or spans the
//! collector rejects are dropped and counted (`ai_extproc_trace_spans_dropped`), never block a
//! request. TLS (an `https://` collector) and gzip are tonic's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf as _, BufMut as _, Bytes};
use http::uri::PathAndQuery;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::Notify;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic::Status;

use super::wire::{self, Value};

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The spans waiting for export. A producer takes the lock to push and wakes the exporter only
/// when a batch is full (a wake-up per span, a syscall into another thread, cost more than
/// the rest of the export); otherwise the exporter looks every `OTEL_BSP_SCHEDULE_DELAY`.
#[derive(Debug, Default)]
struct Queue {
    state: Mutex<Pending>,
    wake: Notify,
    /// Most spans, and most bytes of spans, waiting (a collector that stops answering costs
    /// at most this much memory).
    cap: usize,
    cap_bytes: usize,
    batch: usize,
    /// Spans dropped: the queue was full, the export failed, or the collector rejected them.
    dropped: AtomicU64,
}

/// Most bytes of spans waiting for export.
const QUEUE_BYTES: usize = 64 << 20;

#[derive(Debug, Default)]
struct Pending {
    spans: Vec<Vec<u8>>,
    bytes: usize,
    /// Callers waiting for everything queued before them to be exported.
    flushes: Vec<std::sync::mpsc::Sender<()>>,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where finished spans go: the exporter's queue (or a test's).
#[derive(Debug, Clone)]
pub struct Sink(Arc<Queue>);

impl Sink {
    /// Queues an encoded span; when the queue is full the span is dropped and counted.
    pub fn send(&self, span: Vec<u8>) {
        let q = &self.0;
        let mut pending = q.lock();
        if pending.spans.len() >= q.cap || pending.bytes + span.len() > q.cap_bytes {
            drop(pending);
            q.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.bytes += span.len();
        pending.spans.push(span);
        let full = pending.spans.len() == q.batch;
        drop(pending);
        if full {
            q.wake.notify_one();
        }
    }

    /// Spans dropped since start (queue full, the collector failing, unreachable, or
    /// rejecting them).
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    /// A sink whose spans a test reads (at most 64 of them, 1 MiB).
    #[cfg(test)]
    pub fn for_test() -> (Sink, Received) {
        let q = Arc::new(Queue {
            cap: 64,
            cap_bytes: 1 << 20,
            batch: 64,
            ..Queue::default()
        });
        (Sink(q.clone()), Received(q))
    }
}

/// The spans a test sink got.
#[cfg(test)]
pub struct Received(Arc<Queue>);

#[cfg(test)]
impl Received {
    pub fn spans(&mut self) -> Vec<Vec<u8>> {
        let mut pending = self.0.lock();
        pending.bytes = 0;
        std::mem::take(&mut pending.spans)
    }
}

/// How and where spans are exported (OpenTelemetry's standard environment variables). Its
/// `Debug` leaves header values out: they may carry the collector's key.
pub struct Settings {
    endpoint: String,
    /// TLS to an `https://` collector: the CA it trusts (the system's roots unless
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE` names one) and the client's own certificate, if any.
    tls: Option<ClientTlsConfig>,
    /// `OTEL_EXPORTER_OTLP_COMPRESSION=gzip`: exports are sent gzip-compressed.
    gzip: bool,
    headers: MetadataMap,
    timeout: Duration,
    delay: Duration,
    queue: usize,
    batch: usize,
    /// The encoded `Resource` (service.name and `OTEL_RESOURCE_ATTRIBUTES`).
    resource: Vec<u8>,
}

impl Settings {
    /// `endpoint` (`http://host:port`, or `https://` for TLS), the rest from
    /// `OTEL_EXPORTER_OTLP_{,TRACES_}HEADERS`, `..._TIMEOUT` (ms), `..._COMPRESSION`,
    /// `..._CERTIFICATE`, `..._CLIENT_KEY` and `..._CLIENT_CERTIFICATE`,
    /// `OTEL_BSP_SCHEDULE_DELAY` (ms), `OTEL_BSP_MAX_QUEUE_SIZE`,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`; a value that cannot be honoured is an error naming
    /// its variable.
    pub fn from_env(endpoint: &str, get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let pick = |traces: &str, generic: &str| {
            get(traces)
                .map(|v| (traces.to_string(), v))
                .or_else(|| get(generic).map(|v| (generic.to_string(), v)))
        };
        let tls = if endpoint.starts_with("https://") {
            Some(tls(&pick)?)
        } else if endpoint.starts_with("http://") {
            None
        } else {
            return Err(format!(
                "--otlp-endpoint {endpoint:?}: an http:// or https:// URL (the collector's \
                 OTLP/gRPC port, 4317 by default)"
            ));
        };
        let gzip = match pick(
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ) {
            None => false,
            Some((name, v)) => match v.trim() {
                "" | "none" => false,
                "gzip" => true,
                _ => {
                    return Err(format!(
                        "{name}={v:?}: \"gzip\" or \"none\" (the compressions OTLP defines)"
                    ))
                }
            },
        };
        if let Some((name, v)) = pick(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ) {
            if v.trim() != "grpc" {
                return Err(format!(
                    "{name}={v:?}: spans are exported over OTLP/gRPC only (\"grpc\"; a \
                     collector's gRPC port, 4317 by default)"
                ));
            }
        }
        let number = |name: &str, default: u64| -> Result<u64, String> {
            match get(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{name}={v:?}: not a whole number")),
            }
        };
        let timeout = match pick(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ) {
            Some((name, _)) => number(&name, 10_000)?,
            None => 10_000,
        };
        let queue = number("OTEL_BSP_MAX_QUEUE_SIZE", 2048)?.max(1) as usize;
        let batch = (number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?.max(1) as usize).min(queue);
        let mut headers = MetadataMap::new();
        if let Some((name, list)) = pick(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ) {
            for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("{name}: {pair:?} is not key=value"))?;
                let k = percent_decode(k.trim());
                let v = percent_decode(v.trim());
                let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("{name}: {k:?} is not a header name"))?;
                let value = MetadataValue::try_from(v.as_str())
                    .map_err(|_| format!("{name}: the value of {k:?} is not a header value"))?;
                headers.insert(key, value);
            }
        }
        Ok(Self {
            endpoint: endpoint.to_string(),
            tls,
            gzip,
            headers,
            timeout: Duration::from_millis(timeout),
            delay: Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 5000)?),
            queue,
            batch,
            resource: resource(),
        })
    }
}

impl std::fmt::Debug for Settings {
    /// Header names only: their values may be the collector's key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&str> = self
            .headers
            .keys()
            .map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => k.as_str(),
                tonic::metadata::KeyRef::Binary(k) => k.as_str(),
            })
            .collect();
        f.debug_struct("Settings")
            .field("endpoint", &self.endpoint)
            .field("tls", &self.tls.is_some())
            .field("gzip", &self.gzip)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .field("delay", &self.delay)
            .field("queue", &self.queue)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
impl Settings {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The TLS settings of an `https://` collector, from `pick` (the `_TRACES_` variable, else the
/// generic one): files that cannot be read, or hold no PEM certificate or key, are errors naming
/// their variable, at start rather than at the first export.
fn tls(pick: &impl Fn(&str, &str) -> Option<(String, String)>) -> Result<ClientTlsConfig, String> {
    let pem = |(name, path): (String, String), key: bool| -> Result<Vec<u8>, String> {
        let bytes = std::fs::read(&path).map_err(|e| format!("{name}={path:?}: {e}"))?;
        let found = if key {
            PrivateKeyDer::from_pem_slice(&bytes).is_ok()
        } else {
            CertificateDer::pem_slice_iter(&bytes).any(|c| c.is_ok())
        };
        if !found {
            let what = if key { "private key" } else { "certificate" };
            return Err(format!("{name}={path:?}: no PEM {what} in it"));
        }
        Ok(bytes)
    };
    let mut cfg = ClientTlsConfig::new();
    cfg = match pick(
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    ) {
        Some(file) => cfg.ca_certificate(Certificate::from_pem(pem(file, false)?)),
        None => cfg.with_native_roots(),
    };
    let key = pick(
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    );
    let cert = pick(
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    );
    match (key, cert) {
        (Some(key), Some(cert)) => {
            Ok(cfg.identity(Identity::from_pem(pem(cert, false)?, pem(key, true)?)))
        }
        (None, None) => Ok(cfg),
        (Some((name, _)), None) | (None, Some((name, _))) => Err(format!(
            "{name}: a client key and a client certificate go together \
             (OTEL_EXPORTER_OTLP_CLIENT_KEY and OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE)"
        )),
    }
}

/// `%XX` escapes decoded (W3C baggage format, which the OTLP header variables use).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|c| hex(*c)),
            b.get(i + 2).and_then(|c| hex(*c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The encoded `Resource`: `service.name` = ai-extproc and what the SDK's detectors read
/// (`OTEL_RESOURCE_ATTRIBUTES`; Phoenix takes its project from `openinference.project.name`).
fn resource() -> Vec<u8> {
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("ai-extproc")
        .build();
    let mut buf = Vec::new();
    for (k, v) in resource.iter() {
        let text;
        let value = match v {
            opentelemetry::Value::String(s) => Value::Str(s.as_str()),
            opentelemetry::Value::I64(i) => Value::Int(*i),
            opentelemetry::Value::F64(d) => Value::Double(*d),
            opentelemetry::Value::Bool(b) => Value::Bool(*b),
            other => {
                text = other.to_string();
                Value::Str(&text)
            }
        };
        wire::key_value(&mut buf, 1, k.as_str(), value);
    }
    buf
}

/// The encoded `InstrumentationScope`.
fn scope() -> Vec<u8> {
    let mut buf = Vec::new();
    wire::bytes_field(&mut buf, 1, b"ai-extproc");
    wire::bytes_field(&mut buf, 2, env!("CARGO_PKG_VERSION").as_bytes());
    buf
}

/// Flushes the queue when dropped (the process is stopping).
pub struct ExportGuard {
    sink: Sink,
    wait: Duration,
}

impl Drop for ExportGuard {
    fn drop(&mut self) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.sink.0.lock().flushes.push(tx);
        self.sink.0.wake.notify_one();
        let _ = rx.recv_timeout(self.wait);
    }
}

/// Starts the export thread; spans sent to the returned sink reach the collector.
pub fn start(settings: Settings) -> Result<(Sink, ExportGuard), String> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(settings.endpoint.clone())
        .map_err(|e| format!("--otlp-endpoint {:?}: {e}", settings.endpoint))?
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout);
    if let Some(tls) = &settings.tls {
        endpoint = endpoint.tls_config(tls.clone()).map_err(|e| {
            format!(
                "--otlp-endpoint {:?}: TLS: {e} (the system's CA certificates are used \
                     unless OTEL_EXPORTER_OTLP_CERTIFICATE names a CA file)",
                settings.endpoint
            )
        })?;
    }
    let queue = Arc::new(Queue {
        cap: settings.queue,
        cap_bytes: QUEUE_BYTES,
        batch: settings.batch,
        ..Queue::default()
    });
    let wait = settings.timeout + Duration::from_secs(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("the trace exporter's runtime: {e}"))?;
    let exporter = queue.clone();
    std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || runtime.block_on(run(exporter, endpoint, settings)))
        .map_err(|e| format!("the trace exporter's thread: {e}"))?;
    let sink = Sink(queue);
    Ok((sink.clone(), ExportGuard { sink, wait }))
}

async fn run(queue: Arc<Queue>, endpoint: tonic::transport::Endpoint, s: Settings) {
    // Lazy: the collector may come up after the processor; each export tries again.
    let mut grpc = tonic::client::Grpc::new(endpoint.connect_lazy());
    if s.gzip {
        grpc = grpc.send_compressed(CompressionEncoding::Gzip);
    }
    let scope = scope();
    let mut failing = false;
    let mut rejecting = false;
    loop {
        let _ = tokio::time::timeout(s.delay, queue.wake.notified()).await;
        let (spans, flushes) = {
            let mut pending = queue.lock();
            pending.bytes = 0;
            (
                std::mem::take(&mut pending.spans),
                std::mem::take(&mut pending.flushes),
            )
        };
        for batch in spans.chunks(s.batch) {
            let body = Bytes::from(wire::export_request(&s.resource, &scope, batch));
            let mut request = tonic::Request::new(body);
            *request.metadata_mut() = s.headers.clone();
            let sent = match grpc.ready().await {
                Ok(()) => grpc
                    .unary(request, PathAndQuery::from_static(EXPORT), Raw)
                    .await
                    .map(tonic::Response::into_inner),
                Err(e) => Err(Status::unavailable(e.to_string())),
            };
            match sent {
                Ok(answer) => {
                    failing = false;
                    // A partial success: the collector took the batch but not all of it.
                    let partial = answer.partial_success.unwrap_or_default();
                    let rejected = u64::try_from(partial.rejected_spans).unwrap_or(0);
                    queue.dropped.fetch_add(rejected, Ordering::Relaxed);
                    let warns = rejected > 0 || !partial.error_message.is_empty();
                    if warns && !rejecting {
                        tracing::warn!(endpoint = %s.endpoint, rejected, message = %partial.error_message, "the collector rejected spans");
                    }
                    rejecting = warns;
                }
                Err(status) => {
                    queue
                        .dropped
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    // One warning per run of failures, not one per batch.
                    if !failing {
                        tracing::warn!(endpoint = %s.endpoint, error = %status.message(), "exporting spans failed; dropping them until the collector answers");
                    }
                    failing = true;
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// The collector's answer, `ExportTraceServiceResponse`: only its partial success matters.
#[derive(Clone, PartialEq, prost::Message)]
struct ExportAnswer {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<PartialSuccess>,
}

/// `ExportTracePartialSuccess`: how many spans of the batch the collector rejected, and why.
#[derive(Clone, PartialEq, prost::Message)]
struct PartialSuccess {
    #[prost(int64, tag = "1")]
    rejected_spans: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// The gRPC codec of already encoded messages: the request is sent as is; of the answer only
/// the partial success is read.
#[derive(Debug, Clone, Copy)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = ExportAnswer;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = ExportAnswer;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ExportAnswer>, Status> {
        use prost::Message as _;
        // An answer we cannot read still means the batch arrived: count nothing as rejected.
        let answer = ExportAnswer::decode(&mut *src).unwrap_or_default();
        src.advance(src.remaining());
        Ok(Some(answer))
    }
}
