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
use tokio::sync::Notify;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use super::settings::Settings;
use super::wire;

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
