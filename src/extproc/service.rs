//! The `ExternalProcessor` gRPC service. Each ext_proc stream's replies are its messages mapped
//! through the gateway's state machine as tonic pulls them; the state is dropped (its usage
//! recorded) when Envoy closes the stream. A message that decodes a large compressed body is
//! answered on a blocking thread, so it holds up no other stream.

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    processing_request, ProcessingRequest, ProcessingResponse,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{processing_response, TrailersResponse};
use std::sync::Arc;

use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, Answering};
use crate::admin::Metrics;
use crate::config::ConfigHandle;
use crate::gateway::{Options, Reply, Stream, StreamError};
use tracing::Instrument;

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
    type ProcessStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<ProcessingResponse, Status>> + Send>,
    >;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let state = StreamState {
            stream: Some(Stream::with_options(
                self.config.snapshot(),
                self.options.clone(),
            )),
            metrics: self.metrics.clone(),
            span: None,
            failed: false,
        };
        state.metrics.streams.inc();
        state.metrics.streams_active.inc();
        // Each message is answered as tonic pulls the reply stream: no task and no channel per
        // ext_proc stream, so a message costs no wake-up of another task (the future below
        // completes in the poll that reads the message, unless it decodes a large body).
        let replies = futures_util::stream::unfold(
            (request.into_inner(), state),
            |(mut inbound, mut state)| async move {
                let message = inbound.next().await?;
                let reply = state.answer(message).await?;
                Some((reply, (inbound, state)))
            },
        );
        Ok(Response::new(Box::pin(replies)))
    }
}

/// One ext_proc stream's state; dropped (and its usage recorded) when the stream ends.
struct StreamState {
    /// Lent to a blocking thread while it decodes a large body.
    stream: Option<Stream>,
    metrics: Arc<Metrics>,
    span: Option<tracing::Span>,
    failed: bool,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        self.metrics.streams_active.dec();
    }
}

impl StreamState {
    /// The reply to one message; `None` ends the stream (Envoy closed it, or it failed).
    async fn answer(
        &mut self,
        message: Result<ProcessingRequest, Status>,
    ) -> Option<Result<ProcessingResponse, Status>> {
        if self.failed {
            return None;
        }
        let message = match message {
            Ok(m) => m,
            Err(status) => {
                // Envoy resets finished streams; that is the normal end, not an error.
                tracing::trace!(%status, "ext_proc stream ended by Envoy");
                return None;
            }
        };
        let mut stream = self.stream.take()?;
        let span = match &self.span {
            Some(span) => span.clone(),
            None => {
                let headers = trace_headers(&message);
                if let Some(tracer) = crate::otlp::tracer() {
                    let cfg = crate::telemetry::trace_config().clone();
                    stream.trace_with(crate::gateway::LlmSpan::start(tracer, &headers, cfg));
                }
                self.span.insert(stream_span(&headers)).clone()
            }
        };
        let is_body = matches!(
            message.request,
            Some(processing_request::Request::RequestBody(_))
        );
        let large = match &message.request {
            Some(
                processing_request::Request::RequestBody(b)
                | processing_request::Request::ResponseBody(b),
            ) => stream.decodes_large_body(b.body.len(), b.end_of_stream),
            _ => false,
        };
        let result = if large {
            let in_thread = span.clone();
            let work = tokio::task::spawn_blocking(move || {
                let result = in_thread.in_scope(|| handle(&mut stream, message));
                (stream, result)
            });
            match work.await {
                Ok((stream, result)) => {
                    self.stream = Some(stream);
                    result
                }
                Err(e) => {
                    tracing::error!(parent: &span, error = %e, "decoding a large body failed");
                    self.metrics.stream_error("panic");
                    self.failed = true;
                    return Some(Err(Status::internal("the processor failed")));
                }
            }
        } else {
            let result = span.in_scope(|| handle(&mut stream, message));
            self.stream = Some(stream);
            result
        };
        // A request that counts against budgets waits for their answer here.
        let result = match result {
            Ok(Handled::Reply(answering, Reply::Admit)) => {
                let mut stream = self.stream.take()?;
                let admitted = stream.admit().instrument(span.clone()).await;
                self.stream = Some(stream);
                admitted.map(|(reply, refused)| {
                    if let Some(budget) = refused {
                        self.metrics.budget_refused(&budget);
                    }
                    convert::response(answering, reply)
                })
            }
            Ok(Handled::Reply(answering, reply)) => Ok(convert::response(answering, reply)),
            Ok(Handled::Done(response)) => Ok(response),
            Err(e) => Err(e),
        };
        let _entered = span.enter();
        let mut reply = result.map_err(|e| {
            tracing::warn!(error = %e, "ext_proc protocol error");
            self.metrics.stream_error("protocol");
            Status::failed_precondition(e.to_string())
        });
        match &mut reply {
            Ok(ProcessingResponse {
                response: Some(processing_response::Response::ImmediateResponse(i)),
                ..
            }) => {
                let status = i.status.as_ref().map_or(0, |s| s.code);
                let status = u16::try_from(status).unwrap_or(0);
                self.metrics.immediate_response(status);
                if let Some(stream) = &mut self.stream {
                    stream.trace_refused(status, &i.body);
                }
            }
            Ok(r) if is_body => {
                if let Some(stream) = &self.stream {
                    propagate_trace_context(r, stream.trace_context_headers());
                }
            }
            Ok(_) => {}
            Err(_) => self.failed = true,
        }
        Some(reply)
    }
}

/// The request headers that name the request and its trace (`x-request-id`, `traceparent`,
/// `tracestate`), from the stream's first message.
fn trace_headers(first: &ProcessingRequest) -> Vec<(String, String)> {
    let Some(processing_request::Request::RequestHeaders(h)) = &first.request else {
        return Vec::new();
    };
    h.headers
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
        .unwrap_or_default()
}

/// The stream's log span, named after Envoy's request id: every line logged for the stream
/// carries it. (The exported LLM span is `gateway::LlmSpan`, not this.)
fn stream_span(headers: &[(String, String)]) -> tracing::Span {
    let span = tracing::info_span!("ext_proc", request_id = tracing::field::Empty);
    if let Some((_, id)) = headers.iter().find(|(k, _)| k == "x-request-id") {
        span.record("request_id", id.as_str());
    }
    span
}

/// Hands the request's trace context (`headers`: `traceparent`, `tracestate`) to the
/// provider, when exporting.
fn propagate_trace_context(reply: &mut ProcessingResponse, headers: Vec<(String, String)>) {
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

/// A message's answer: the gateway's reply to encode, or a message already made.
enum Handled {
    Reply(Answering, Reply),
    Done(ProcessingResponse),
}

fn handle(stream: &mut Stream, message: ProcessingRequest) -> Result<Handled, StreamError> {
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
            Ok(Handled::Reply(Answering::RequestHeaders, reply))
        }
        R::RequestBody(b) => {
            let reply = stream.on_request_body(b.body.into(), b.end_of_stream)?;
            Ok(Handled::Reply(Answering::RequestBody, reply))
        }
        R::ResponseHeaders(h) => {
            let eos = h.end_of_stream;
            let reply = stream.on_response_headers(convert::headers(Some(h)), eos)?;
            Ok(Handled::Reply(Answering::ResponseHeaders, reply))
        }
        R::ResponseBody(b) => {
            let reply = stream.on_response_body(b.body.into(), b.end_of_stream)?;
            Ok(Handled::Reply(Answering::ResponseBody, reply))
        }
        // Trailers are not requested; answer them unchanged should a filter config ask.
        R::RequestTrailers(_) => Ok(Handled::Done(trailers(true))),
        R::ResponseTrailers(_) => Ok(Handled::Done(trailers(false))),
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
