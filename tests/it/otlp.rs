//! An OTLP/gRPC trace receiver run by a test: keeps every span it gets, in a form tests read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;

/// A span as the receiver got it: trace id (hex), name, duration, error status, attributes as
/// strings, events (name and attributes).
#[derive(Debug, Clone)]
pub struct Seen {
    pub trace_id: String,
    pub name: String,
    pub duration: std::time::Duration,
    pub error: bool,
    pub attrs: HashMap<String, String>,
    pub events: Vec<(String, HashMap<String, String>)>,
}

#[derive(Clone, Default)]
pub struct Receiver(Arc<Mutex<Vec<Seen>>>);

impl Receiver {
    /// A receiver on a free loopback port, and its endpoint (`http://127.0.0.1:port`).
    pub async fn start() -> (Self, String) {
        let r = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(r.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (r, format!("http://{addr}"))
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    /// The spans received once `done` holds of them; spans leave the processor in batches
    /// every 5 s (`OTEL_BSP_SCHEDULE_DELAY`'s default), so this waits up to 15 s, then fails
    /// naming `what` and showing what came.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: {spans:#?}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut seen = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for span in ss.spans {
                    seen.push(Seen {
                        trace_id: span.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
                        name: span.name,
                        duration: std::time::Duration::from_nanos(
                            span.end_time_unix_nano
                                .saturating_sub(span.start_time_unix_nano),
                        ),
                        error: span.status.is_some_and(|s| s.code == 2),
                        attrs: strings(&span.attributes),
                        events: span
                            .events
                            .iter()
                            .map(|e| (e.name.clone(), strings(&e.attributes)))
                            .collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Attributes as strings.
fn strings(attrs: &[KeyValue]) -> HashMap<String, String> {
    attrs
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}
