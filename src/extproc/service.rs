//! The `ExternalProcessor` gRPC service: one task per ext_proc stream, feeding a bounded channel
//! that tonic sends from; the task ends when Envoy closes its side or stops reading.

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    processing_request, ProcessingRequest, ProcessingResponse,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{processing_response, TrailersResponse};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::convert::{self, Answering};
use crate::admin::Metrics;
use crate::config::ConfigHandle;
use crate::gateway::{Options, Stream, StreamError};

/// The processor service.
#[derive(Debug, Clone)]
pub struct Processor {
    config: ConfigHandle,
    options: Options,
    metrics: Arc<Metrics>,
}

impl Processor {
    pub fn new(config: ConfigHandle) -> Self {
        Self::with_options(config, Options::default(), Arc::default())
    }

    pub fn with_options(config: ConfigHandle, options: Options, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            options,
            metrics,
        }
    }

    /// The usage hub records go to, if any.
    pub fn usage(&self) -> Option<&crate::usage::UsageHub> {
        self.options.usage.as_ref()
    }
}

#[tonic::async_trait]
impl ExternalProcessor for Processor {
    type ProcessStream = ReceiverStream<Result<ProcessingResponse, Status>>;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let inbound = request.into_inner();
        // One reply per message, and Envoy waits for each: a small buffer is enough.
        let (tx, rx) = mpsc::channel(4);
        let stream = Stream::with_options(self.config.snapshot(), self.options.clone());
        let metrics = self.metrics.clone();
        metrics.streams.inc();
        metrics.streams_active.inc();
        tokio::spawn(async move {
            run_stream(inbound, tx, stream, &metrics).await;
            metrics.streams_active.dec();
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

type Replies = mpsc::Sender<Result<ProcessingResponse, Status>>;

/// Answers one ext_proc stream's messages in order until Envoy closes it.
async fn run_stream(
    mut inbound: Streaming<ProcessingRequest>,
    tx: Replies,
    mut stream: Stream,
    metrics: &Metrics,
) {
    let Some(first) = next_message(&mut inbound).await else {
        return;
    };
    // The span is made from the first message (request headers), so it can carry the request
    // id and, with trace export on, be a child of the client's trace before it starts.
    let span = stream_span(&first);
    let work = async move {
        let mut message = Some(first);
        while let Some(m) = message.take() {
            if !answer(&mut stream, m, &tx, metrics).await {
                return;
            }
            message = next_message(&mut inbound).await;
        }
    };
    work.instrument(span).await;
}

async fn next_message(inbound: &mut Streaming<ProcessingRequest>) -> Option<ProcessingRequest> {
    match inbound.message().await {
        Ok(m) => m,
        Err(status) => {
            // Envoy resets finished streams; that is the normal end, not an error.
            tracing::trace!(%status, "ext_proc stream ended by Envoy");
            None
        }
    }
}

/// Handles one message and sends its reply; false when the stream should end.
async fn answer(
    stream: &mut Stream,
    message: ProcessingRequest,
    tx: &Replies,
    metrics: &Metrics,
) -> bool {
    let observe_only = message.observability_mode;
    let is_body = matches!(
        message.request,
        Some(processing_request::Request::RequestBody(_))
    );
    let mut reply = handle(stream, message).map_err(|e| {
        tracing::warn!(error = %e, "ext_proc protocol error");
        metrics.stream_error("protocol");
        Status::failed_precondition(e.to_string())
    });
    if let (true, Ok(r)) = (is_body, &mut reply) {
        propagate_trace_context(r);
    }
    if let Ok(ProcessingResponse {
        response: Some(processing_response::Response::ImmediateResponse(i)),
        ..
    }) = &reply
    {
        let status = i.status.as_ref().map_or(0, |s| s.code);
        metrics.immediate_response(u16::try_from(status).unwrap_or(0));
    }
    let failed = reply.is_err();
    if !observe_only && tx.send(reply).await.is_err() {
        return false;
    }
    !failed
}

/// The stream's span, named after Envoy's request id and, with trace export on, a child of the
/// client's trace context. Every line logged for the stream carries the request id.
fn stream_span(first: &ProcessingRequest) -> tracing::Span {
    let span = tracing::info_span!("ext_proc", request_id = tracing::field::Empty);
    let Some(processing_request::Request::RequestHeaders(h)) = &first.request else {
        return span;
    };
    let pairs: Vec<(String, String)> = h
        .headers
        .as_ref()
        .map(|m| {
            m.headers
                .iter()
                .filter(|hv| {
                    matches!(
                        hv.key.as_str(),
                        "x-request-id" | "traceparent" | "tracestate"
                    )
                })
                .map(|hv| {
                    (
                        hv.key.clone(),
                        String::from_utf8_lossy(&hv.raw_value).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some((_, id)) = pairs.iter().find(|(k, _)| k == "x-request-id") {
        span.record("request_id", id.as_str());
    }
    crate::telemetry::adopt_parent(&span, &pairs);
    span
}

/// Hands the stream span's trace context to the provider (`traceparent`), when exporting.
fn propagate_trace_context(reply: &mut ProcessingResponse) {
    let headers = crate::telemetry::context_headers(&tracing::Span::current());
    if headers.is_empty() {
        return;
    }
    let Some(processing_response::Response::RequestBody(body)) = &mut reply.response else {
        return;
    };
    let Some(common) = &mut body.response else {
        return;
    };
    convert::add_headers(common, headers);
}

fn handle(
    stream: &mut Stream,
    message: ProcessingRequest,
) -> Result<ProcessingResponse, StreamError> {
    use processing_request::Request as R;
    let Some(request) = message.request else {
        return Err(StreamError::UnexpectedMessage {
            got: "an empty message",
            expected: "a request or response part",
        });
    };
    match request {
        R::RequestHeaders(h) => {
            let eos = h.end_of_stream;
            let reply = stream.on_request_headers(convert::headers(Some(h)), eos)?;
            Ok(convert::response(Answering::RequestHeaders, reply))
        }
        R::RequestBody(b) => {
            let reply = stream.on_request_body(b.body.into(), b.end_of_stream)?;
            Ok(convert::response(Answering::RequestBody, reply))
        }
        R::ResponseHeaders(h) => {
            let eos = h.end_of_stream;
            let reply = stream.on_response_headers(convert::headers(Some(h)), eos)?;
            Ok(convert::response(Answering::ResponseHeaders, reply))
        }
        R::ResponseBody(b) => {
            let reply = stream.on_response_body(b.body.into(), b.end_of_stream)?;
            Ok(convert::response(Answering::ResponseBody, reply))
        }
        // Trailers are not requested; answer them unchanged should a filter config ask.
        R::RequestTrailers(_) => Ok(trailers(true)),
        R::ResponseTrailers(_) => Ok(trailers(false)),
    }
}

fn trailers(request: bool) -> ProcessingResponse {
    let t = TrailersResponse::default();
    ProcessingResponse {
        response: Some(if request {
            processing_response::Response::RequestTrailers(t)
        } else {
            processing_response::Response::ResponseTrailers(t)
        }),
        ..ProcessingResponse::default()
    }
}
