//! One HTTP stream's life as a state machine: request headers -> request body -> response
//! headers -> response body. Each `on_*` takes the message of its phase and returns the reply.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::config::{Config, ServiceBackend, MODEL_HEADER};
use crate::llm::{
    apply_edits, decode_all, include_usage_edit, model_edit, models_body, parse_request,
    DecodeError, Endpoint,
};

use super::error::{ClientError, StreamError};
use super::headers::Headers;
use super::reply::{BodyMode, Continue, Immediate, MetaValue, Reply};
use super::response::{ResponseBody, ResponseOutcome};
use super::route::{random_pick, select, Selection};
use super::Options;

/// Dynamic metadata namespace shared with Envoy AI Gateway.
pub const METADATA_NAMESPACE: &str = "io.envoy.ai_gateway";
/// Header the processor sets to the chosen AIServiceBackend, for rules with several backends.
pub const BACKEND_HEADER: &str = "x-ai-eg-backend";

/// A request routed to a backend: what the response phases and the usage record need.
#[derive(Debug, Clone)]
pub(crate) struct Routed {
    pub selection: Selection,
    pub endpoint: Endpoint,
    pub requested_model: String,
    pub provider_model: String,
    pub stream: bool,
    pub request_id: String,
    pub user: String,
    pub started: Instant,
    /// When the request went upstream (the reply to its body).
    pub sent: Instant,
    /// Provider status, once response headers came.
    pub status: u16,
}

#[derive(Debug)]
enum Phase {
    RequestHeaders,
    RequestBody {
        endpoint: Endpoint,
        path: String,
        headers: Headers,
        buffer: BytesMut,
    },
    ResponseHeaders(Box<Routed>),
    ResponseBody(Box<Routed>, ResponseBody),
    Done,
}

/// The processor's state for one HTTP stream, on one config snapshot.
#[derive(Debug)]
pub struct Stream {
    config: Arc<Config>,
    options: Options,
    phase: Phase,
    started: Instant,
}

impl Stream {
    pub fn new(config: Arc<Config>) -> Self {
        Self::with_options(config, Options::default())
    }

    pub fn with_options(config: Arc<Config>, options: Options) -> Self {
        Self {
            config,
            options,
            phase: Phase::RequestHeaders,
            started: Instant::now(),
        }
    }

    fn expected(&self) -> &'static str {
        match self.phase {
            Phase::RequestHeaders => "request headers",
            Phase::RequestBody { .. } => "request body",
            Phase::ResponseHeaders(_) => "response headers",
            Phase::ResponseBody(..) => "response body",
            Phase::Done => "the end of the stream",
        }
    }

    fn unexpected(&self, got: &'static str) -> StreamError {
        StreamError::UnexpectedMessage {
            got,
            expected: self.expected(),
        }
    }

    /// Request headers: recognise the endpoint; answer `/v1/models` and bad paths here.
    pub fn on_request_headers(
        &mut self,
        headers: Headers,
        end_of_stream: bool,
    ) -> Result<Reply, StreamError> {
        if !matches!(self.phase, Phase::RequestHeaders) {
            return Err(self.unexpected("request headers"));
        }
        self.started = Instant::now();
        let (Some(method), Some(path)) = (headers.get(":method"), headers.get(":path")) else {
            return Err(StreamError::MissingPseudoHeader);
        };
        let (method, path) = (method.to_string(), path.to_string());
        let Some(endpoint) = Endpoint::from_path(&path) else {
            self.phase = Phase::Done;
            return Ok(client_error(ClientError::UnknownPath { method, path }));
        };
        if method != endpoint.method() {
            self.phase = Phase::Done;
            return Ok(client_error(ClientError::MethodNotAllowed {
                method,
                path,
                allowed: endpoint.method(),
            }));
        }
        if endpoint == Endpoint::Models {
            self.phase = Phase::Done;
            return Ok(Reply::Immediate(Immediate::json(
                200,
                models_body(&self.config.models),
            )));
        }
        if end_of_stream {
            self.phase = Phase::Done;
            return Ok(client_error(ClientError::MissingBody));
        }
        self.phase = Phase::RequestBody {
            endpoint,
            path,
            headers,
            buffer: BytesMut::new(),
        };
        Ok(Reply::Continue(Continue::default()))
    }

    /// Request body (buffered whole by Envoy): validate, route, rewrite.
    pub fn on_request_body(
        &mut self,
        chunk: Bytes,
        end_of_stream: bool,
    ) -> Result<Reply, StreamError> {
        let Phase::RequestBody { buffer, .. } = &mut self.phase else {
            return Err(self.unexpected("request body"));
        };
        buffer.extend_from_slice(&chunk);
        if !end_of_stream {
            return Ok(Reply::Continue(Continue::default()));
        }
        let Phase::RequestBody {
            endpoint,
            path,
            headers,
            buffer,
        } = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return Err(self.unexpected("request body"));
        };
        match self.route_request(endpoint, &path, &headers, &buffer) {
            Ok((reply, routed)) => {
                self.phase = Phase::ResponseHeaders(Box::new(routed));
                Ok(Reply::Continue(reply))
            }
            Err(e) => Ok(client_error(e)),
        }
    }

    fn route_request(
        &self,
        endpoint: Endpoint,
        path: &str,
        headers: &Headers,
        body: &[u8],
    ) -> Result<(Continue, Routed), ClientError> {
        let decoded = decode_request_body(headers, body)?;
        let body = decoded.as_deref().unwrap_or(body);
        let info = parse_request(endpoint, body)?;
        let config = &self.config;
        let selection = select(config, headers, &info.model, random_pick)
            .ok_or_else(|| ClientError::ModelNotFound(info.model.clone()))?;
        let rule = &config.rules[selection.rule];
        let target = &rule.backends[selection.backend_ref];
        let backend = &config.backends[selection.backend];
        let route = &config.routes[rule.route];
        let mut reply = Continue {
            clear_route_cache: true,
            ..Continue::default()
        };
        provider_headers(
            &mut reply,
            headers,
            &info.model,
            backend,
            endpoint.backend_path(&backend.prefix, path),
        );
        let mut edits = Vec::new();
        if let Some(name) = &target.model_name_override {
            edits.push(model_edit(&info, name));
        }
        // Costs need usage: make sure a stream reports it.
        let streams_usage = matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions);
        if info.stream && streams_usage && !route.costs.is_empty() {
            edits.extend(include_usage_edit(body, &info));
        }
        if decoded.is_some() {
            reply.remove_headers.push("content-encoding".into());
        }
        if !edits.is_empty() || decoded.is_some() {
            let new_body = apply_edits(body, edits);
            reply
                .set_headers
                .push(("content-length".into(), new_body.len().to_string()));
            reply.body = Some(new_body);
        }
        let provider_model = target
            .model_name_override
            .clone()
            .unwrap_or_else(|| info.model.clone());
        reply.metadata = vec![
            ("route_name".into(), MetaValue::Str(route.name.clone())),
            ("backend_name".into(), MetaValue::Str(backend.name.clone())),
            (
                "model_name_override".into(),
                MetaValue::Str(provider_model.clone()),
            ),
            ("original_path".into(), MetaValue::Str(path.to_string())),
        ];
        let header = |name: &str| headers.get(name).unwrap_or_default().to_string();
        let routed = Routed {
            selection,
            endpoint,
            requested_model: info.model,
            provider_model,
            stream: info.stream,
            request_id: header("x-request-id"),
            user: self
                .options
                .user_header
                .as_deref()
                .map(header)
                .unwrap_or_default(),
            started: self.started,
            sent: Instant::now(),
            status: 0,
        };
        Ok((reply, routed))
    }

    /// Response headers: choose how (and whether) to see the body.
    pub fn on_response_headers(
        &mut self,
        headers: Headers,
        end_of_stream: bool,
    ) -> Result<Reply, StreamError> {
        let mut routed = match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::ResponseHeaders(routed) => routed,
            // A local reply (no route, or Envoy's 413 while it buffered the request body) still
            // passes through the response phases.
            Phase::RequestHeaders | Phase::RequestBody { .. } | Phase::Done => {
                return Ok(Reply::Continue(Continue {
                    response_body_mode: Some(BodyMode::None),
                    ..Continue::default()
                }))
            }
            other => {
                self.phase = other;
                return Err(self.unexpected("response headers"));
            }
        };
        routed.status = headers
            .get(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = if end_of_stream {
            None
        } else {
            ResponseBody::for_response(&headers, routed.status)
        };
        let mode = match body {
            Some(body) => {
                let mode = body.mode();
                self.phase = Phase::ResponseBody(routed, body);
                mode
            }
            None => {
                self.emit(&routed, &ResponseOutcome::default());
                BodyMode::None
            }
        };
        Ok(Reply::Continue(Continue {
            response_body_mode: Some(mode),
            ..Continue::default()
        }))
    }

    /// Response body (buffered whole, or streamed chunk by chunk): usage -> metadata.
    pub fn on_response_body(
        &mut self,
        chunk: Bytes,
        end_of_stream: bool,
    ) -> Result<Reply, StreamError> {
        let Phase::ResponseBody(_, body) = &mut self.phase else {
            return Err(self.unexpected("response body"));
        };
        body.feed(&chunk, Instant::now());
        if !end_of_stream {
            return Ok(Reply::Continue(Continue::default()));
        }
        let Phase::ResponseBody(routed, body) = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return Err(self.unexpected("response body"));
        };
        let outcome = body.finish(routed.status, routed.sent, Instant::now());
        let mut reply = outcome.replacement.clone().unwrap_or_default();
        reply.metadata = super::record::metadata(&self.config, &routed, &outcome);
        self.emit(&routed, &outcome);
        Ok(Reply::Continue(reply))
    }

    fn emit(&self, routed: &Routed, outcome: &ResponseOutcome) {
        if let Some(hub) = &self.options.usage {
            hub.emit(super::record::usage_record(&self.config, routed, outcome));
        }
    }
}

impl Drop for Stream {
    /// Envoy ended the stream early (client gone, upstream reset): record what was seen.
    fn drop(&mut self) {
        let now = Instant::now();
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::ResponseHeaders(routed) => self.emit(&routed, &ResponseOutcome::default()),
            Phase::ResponseBody(routed, body) => {
                let outcome = body.finish(routed.status, routed.sent, now);
                self.emit(&routed, &outcome);
            }
            Phase::RequestHeaders | Phase::RequestBody { .. } | Phase::Done => {}
        }
    }
}

/// A compressed request body, decoded (providers take plain JSON); `None` when not compressed.
fn decode_request_body(headers: &Headers, body: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
    let encoding = headers
        .get("content-encoding")
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(None),
        _ => decode_all(&encoding, body).map(Some).map_err(|e| match e {
            DecodeError::Unsupported(enc) => ClientError::UnsupportedEncoding(enc),
            other => ClientError::BadEncoding(other.to_string()),
        }),
    }
}

/// The headers the provider gets: routing headers for Envoy, its path and credentials; the
/// client's own key and any other internal `x-ai-eg-*` header are dropped.
fn provider_headers(
    reply: &mut Continue,
    headers: &Headers,
    model: &str,
    backend: &ServiceBackend,
    path: String,
) {
    reply
        .set_headers
        .push((MODEL_HEADER.into(), model.to_string()));
    reply
        .set_headers
        .push((BACKEND_HEADER.into(), backend.name.clone()));
    reply.set_headers.push((":path".into(), path));
    match &backend.api_key {
        Some(key) => reply
            .set_headers
            .push(("authorization".into(), format!("Bearer {}", key.expose()))),
        None => reply.remove_headers.push("authorization".into()),
    }
    for (name, _) in headers.iter() {
        if name.starts_with("x-ai-eg-") && name != MODEL_HEADER && name != BACKEND_HEADER {
            reply.remove_headers.push(name.to_string());
        }
    }
}

fn client_error(e: ClientError) -> Reply {
    tracing::debug!(error = %e, "refusing request");
    Reply::Immediate(e.to_response())
}
