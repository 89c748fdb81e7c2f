//! One HTTP stream's life as a state machine: request headers -> request body -> response
//! headers -> response body. Each `on_*` takes the message of its phase and returns the reply.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::config::{Config, SecretString, StreamUsage, MODEL_HEADER};
use crate::contract::{ENVOY_ADDED_HEADERS, MAX_REQUEST_HEADERS, MAX_REQUEST_HEADER_BYTES};
use crate::llm::{
    apply_edits, decode_all, include_usage_edit, model_edit, models_body, parse_request,
    DecodeError, Endpoint, Limits,
};

use super::error::{ClientError, StreamError};
use super::headers::Headers;
use super::identity;
use super::reply::{BodyMode, Continue, Immediate, MetaValue, Reply};
use super::response::{ResponseBody, ResponseOutcome};
use super::route::{random_pick, select, Selection};
use super::Options;

pub use crate::contract::{BACKEND_HEADER, METADATA_NAMESPACE};

/// Compressed bodies larger than this (in compressed bytes) are decoded off the thread that
/// answers Envoy, so one large or hostile body does not hold up every other stream.
pub const LARGE_COMPRESSED_BODY: usize = 64 * 1024;

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
    /// The gateway asked for stream usage the client did not: drop the usage-only chunk.
    pub strip_usage_chunk: bool,
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

    /// Whether the last part of a body (`len` more bytes, `end_of_stream`) makes the next
    /// `on_*_body` decode a large compressed body: the edge then runs it on a blocking thread.
    pub fn decodes_large_body(&self, len: usize, end_of_stream: bool) -> bool {
        if !end_of_stream {
            return false;
        }
        let compressed = match &self.phase {
            Phase::RequestBody {
                headers, buffer, ..
            } => {
                let encoding = headers.get("content-encoding").unwrap_or("").trim();
                (!matches!(encoding, "" | "identity")).then_some(buffer.len())
            }
            Phase::ResponseBody(_, body) => body.compressed_len(),
            Phase::RequestHeaders | Phase::ResponseHeaders(_) | Phase::Done => None,
        };
        compressed.is_some_and(|n| n + len > LARGE_COMPRESSED_BODY)
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
        // Every answer here ends the request; only a body to read changes the phase again.
        self.phase = Phase::Done;
        if let Err(e) = check_header_limits(&headers) {
            return Ok(client_error(e));
        }
        // CONNECT has no :path; it is an unknown URL like any other.
        let method = headers.get(":method").unwrap_or_default().to_string();
        let path = headers.get(":path").unwrap_or_default().to_string();
        let Some(endpoint) = Endpoint::from_path(&path) else {
            return Ok(client_error(ClientError::UnknownPath { method, path }));
        };
        if !endpoint.allows(&method) {
            return Ok(client_error(ClientError::MethodNotAllowed {
                method,
                path,
                allowed: endpoint.allow(),
            }));
        }
        if endpoint == Endpoint::Models {
            // Envoy drops the body of a reply to HEAD.
            return Ok(Reply::Immediate(Immediate::json(
                200,
                models_body(&self.config.models),
            )));
        }
        if end_of_stream {
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
        let limits = Limits::bytes(self.options.max_body_bytes as usize);
        let decoded = decode_request_body(headers, body, limits)?;
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
            backend
                .api_key
                .as_ref()
                .filter(|_| self.options.inject_keys),
            &backend.name,
            endpoint.backend_path(&backend.prefix, path),
        );
        let mut edits = Vec::new();
        if let Some(name) = &target.model_name_override {
            edits.push(model_edit(&info, name));
        }
        // Usage records, metrics and costs need a stream's usage: ask a provider that reports
        // it only when asked, and take its extra chunk out of what the client did not ask for.
        let ask_usage = info.stream
            && !info.include_usage
            && backend.stream_usage == StreamUsage::OnRequest
            && matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions);
        let usage_edit = ask_usage.then(|| include_usage_edit(body, &info)).flatten();
        let strip_usage_chunk = usage_edit.is_some();
        if let Some(edit) = usage_edit {
            edits.push(edit);
            // The chunk is taken out of plain text only.
            reply
                .set_headers
                .push(("accept-encoding".into(), "identity".into()));
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
            ("requested_model".into(), MetaValue::Str(info.model.clone())),
        ];
        let routed = Routed {
            selection,
            endpoint,
            requested_model: info.model,
            provider_model,
            stream: info.stream,
            request_id: identity::request_id(headers),
            user: self
                .options
                .user_header
                .as_deref()
                .and_then(|name| headers.get(name))
                .map(identity::capped)
                .unwrap_or_default(),
            started: self.started,
            sent: Instant::now(),
            status: 0,
            strip_usage_chunk,
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
            ResponseBody::for_response(&headers, routed.status, routed.strip_usage_chunk)
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
        let now = Instant::now();
        let mut forwarded = body.feed(&chunk, now);
        if !end_of_stream {
            return Ok(Reply::Continue(Continue {
                body: forwarded,
                ..Continue::default()
            }));
        }
        if let Some(rest) = body.flush(now) {
            let head = forwarded.unwrap_or(chunk);
            forwarded = Some([head, rest].concat().into());
        }
        let Phase::ResponseBody(routed, body) = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return Err(self.unexpected("response body"));
        };
        let outcome = body.finish(routed.status, routed.sent, now);
        let mut reply = outcome.replacement.clone().unwrap_or_default();
        if reply.body.is_none() {
            reply.body = forwarded;
        }
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

/// A compressed request body, decoded within `limits` (providers take plain JSON); `None` when
/// not compressed.
fn decode_request_body(
    headers: &Headers,
    body: &[u8],
    limits: Limits,
) -> Result<Option<Vec<u8>>, ClientError> {
    let encoding = headers
        .get("content-encoding")
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(None),
        _ => decode_all(&encoding, body, limits)
            .map(Some)
            .map_err(|e| match e {
                DecodeError::Unsupported(enc) => ClientError::UnsupportedEncoding(enc),
                DecodeError::TooLarge(limit) => ClientError::DecodedTooLarge(limit),
                DecodeError::RatioTooHigh(ratio) => ClientError::CompressionRatio(ratio),
                DecodeError::Corrupt(_) => ClientError::BadEncoding(e.to_string()),
            }),
    }
}

/// The headers the provider gets: routing headers for Envoy, its path and credentials (`key`,
/// when the processor injects it: else Envoy does); the client's own key and any other internal
/// `x-ai-eg-*` header are dropped.
fn provider_headers(
    reply: &mut Continue,
    headers: &Headers,
    model: &str,
    key: Option<&SecretString>,
    backend: &str,
    path: String,
) {
    reply
        .set_headers
        .push((MODEL_HEADER.into(), model.to_string()));
    reply
        .set_headers
        .push((BACKEND_HEADER.into(), backend.to_string()));
    reply.set_headers.push((":path".into(), path));
    match key {
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

/// The processor's bound on the request headers (Envoy's own sits higher, so that the headers
/// the processor adds always fit).
fn check_header_limits(headers: &Headers) -> Result<(), ClientError> {
    let count = headers
        .iter()
        .filter(|(n, _)| !n.starts_with(':') && !ENVOY_ADDED_HEADERS.contains(n))
        .count();
    let bytes: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    if count > MAX_REQUEST_HEADERS || bytes > MAX_REQUEST_HEADER_BYTES {
        return Err(ClientError::HeadersTooLarge { count, bytes });
    }
    Ok(())
}

fn client_error(e: ClientError) -> Reply {
    tracing::debug!(error = %e, "refusing request");
    Reply::Immediate(e.to_response())
}
