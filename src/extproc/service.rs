//! The `ExternalProcessor` gRPC service: one task per ext_proc stream, feeding a bounded channel
//! that tonic sends from; the task ends when Envoy closes its side or stops reading.

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    processing_request, ProcessingRequest, ProcessingResponse,
};
use envoy_types::pb::envoy::service::ext_proc::v3::{processing_response, TrailersResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{self, Answering};
use crate::config::ConfigHandle;
use crate::gateway::{Options, Stream, StreamError};

/// The processor service.
#[derive(Debug, Clone)]
pub struct Processor {
    config: ConfigHandle,
    options: Options,
}

impl Processor {
    pub fn new(config: ConfigHandle) -> Self {
        Self::with_options(config, Options::default())
    }

    pub fn with_options(config: ConfigHandle, options: Options) -> Self {
        Self { config, options }
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
        let mut inbound = request.into_inner();
        // One reply per message, and Envoy waits for each: a small buffer is enough.
        let (tx, rx) = mpsc::channel(4);
        let mut stream = Stream::with_options(self.config.snapshot(), self.options.clone());
        tokio::spawn(async move {
            loop {
                let message = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(status) => {
                        // Envoy resets finished streams; that is the normal end, not an error.
                        tracing::trace!(%status, "ext_proc stream ended by Envoy");
                        break;
                    }
                };
                let observe_only = message.observability_mode;
                let reply = handle(&mut stream, message).map_err(|e| {
                    tracing::warn!(error = %e, "ext_proc protocol error");
                    Status::failed_precondition(e.to_string())
                });
                let failed = reply.is_err();
                if !observe_only && tx.send(reply).await.is_err() {
                    break;
                }
                if failed {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
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
