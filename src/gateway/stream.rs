//! One HTTP stream's life as a state machine: request headers -> request body -> response
//! headers -> response body. Each `on_*` takes the message of its phase and returns the reply.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::config::{Config, CostKind, MODEL_HEADER};
use crate::llm::{models_body, parse_request, rewrite_model, usage_from_json, Endpoint, Usage};

use super::error::{ClientError, StreamError};
use super::headers::Headers;
use super::reply::{BodyMode, Continue, Immediate, MetaValue, Reply};
use super::route::{random_pick, select, Selection};

/// Dynamic metadata namespace shared with Envoy AI Gateway.
pub const METADATA_NAMESPACE: &str = "io.envoy.ai_gateway";
/// Header the processor sets to the chosen AIServiceBackend, for rules with several backends.
pub const BACKEND_HEADER: &str = "x-ai-eg-backend";

/// A request routed to a backend.
#[derive(Debug, Clone)]
struct Routed {
    selection: Selection,
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
    ResponseHeaders(Routed),
    ResponseBody {
        routed: Routed,
        buffer: BytesMut,
    },
    Done,
}

/// The processor's state for one HTTP stream, on one config snapshot.
#[derive(Debug)]
pub struct Stream {
    config: Arc<Config>,
    phase: Phase,
}

impl Stream {
    pub fn new(config: Arc<Config>) -> Self {
        Self {
            config,
            phase: Phase::RequestHeaders,
        }
    }

    fn expected(&self) -> &'static str {
        match self.phase {
            Phase::RequestHeaders => "request headers",
            Phase::RequestBody { .. } => "request body",
            Phase::ResponseHeaders(_) => "response headers",
            Phase::ResponseBody { .. } => "response body",
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
                self.phase = Phase::ResponseHeaders(routed);
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
        let info = parse_request(endpoint, body)?;
        let config = &self.config;
        let selection = select(config, headers, &info.model, random_pick)
            .ok_or_else(|| ClientError::ModelNotFound(info.model.clone()))?;
        let rule = &config.rules[selection.rule];
        let target = &rule.backends[selection.backend_ref];
        let backend = &config.backends[selection.backend];
        let mut reply = Continue {
            clear_route_cache: true,
            ..Continue::default()
        };
        reply
            .set_headers
            .push((MODEL_HEADER.into(), info.model.clone()));
        reply
            .set_headers
            .push((BACKEND_HEADER.into(), backend.name.clone()));
        reply
            .set_headers
            .push((":path".into(), endpoint.backend_path(&backend.prefix, path)));
        match &backend.api_key {
            Some(key) => reply
                .set_headers
                .push(("authorization".into(), format!("Bearer {}", key.expose()))),
            None => reply.remove_headers.push("authorization".into()),
        }
        let provider_model = match &target.model_name_override {
            Some(name) => {
                let new_body = rewrite_model(body, &info.model_span, name);
                reply
                    .set_headers
                    .push(("content-length".into(), new_body.len().to_string()));
                reply.body = Some(new_body);
                name.clone()
            }
            None => info.model.clone(),
        };
        reply.metadata = vec![
            (
                "route_name".into(),
                MetaValue::Str(config.routes[rule.route].name.clone()),
            ),
            ("backend_name".into(), MetaValue::Str(backend.name.clone())),
            ("model_name_override".into(), MetaValue::Str(provider_model)),
            ("original_path".into(), MetaValue::Str(path.to_string())),
        ];
        Ok((reply, Routed { selection }))
    }

    /// Response headers: ask for the body only when usage can be read from it.
    pub fn on_response_headers(
        &mut self,
        headers: Headers,
        end_of_stream: bool,
    ) -> Result<Reply, StreamError> {
        let routed = match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::ResponseHeaders(routed) => routed,
            // A local reply (no route, say) still passes through the response phases.
            Phase::RequestHeaders | Phase::Done => {
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
        let wants_body = !end_of_stream
            && !self.costs_of(&routed).is_empty()
            && is_success(headers.get(":status"))
            && is_json(headers.get("content-type"))
            && headers
                .get("content-encoding")
                .is_none_or(|e| e == "identity");
        let mode = if wants_body {
            self.phase = Phase::ResponseBody {
                routed,
                buffer: BytesMut::new(),
            };
            BodyMode::Buffered
        } else {
            BodyMode::None
        };
        Ok(Reply::Continue(Continue {
            response_body_mode: Some(mode),
            ..Continue::default()
        }))
    }

    /// Response body (buffered whole): usage -> cost metadata.
    pub fn on_response_body(
        &mut self,
        chunk: Bytes,
        end_of_stream: bool,
    ) -> Result<Reply, StreamError> {
        let Phase::ResponseBody { buffer, .. } = &mut self.phase else {
            return Err(self.unexpected("response body"));
        };
        buffer.extend_from_slice(&chunk);
        if !end_of_stream {
            return Ok(Reply::Continue(Continue::default()));
        }
        let Phase::ResponseBody { routed, buffer } =
            std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return Err(self.unexpected("response body"));
        };
        let metadata = match usage_from_json(&buffer) {
            Some(usage) => self.cost_metadata(&routed, &usage),
            None => Vec::new(),
        };
        Ok(Reply::Continue(Continue {
            metadata,
            ..Continue::default()
        }))
    }

    fn costs_of(&self, routed: &Routed) -> &[crate::config::Cost] {
        let rule = &self.config.rules[routed.selection.rule];
        &self.config.routes[rule.route].costs
    }

    fn cost_metadata(&self, routed: &Routed, usage: &Usage) -> Vec<(String, MetaValue)> {
        self.costs_of(routed)
            .iter()
            .map(|cost| {
                let n = match cost.kind {
                    CostKind::InputToken => usage.input,
                    CostKind::CachedInputToken => usage.cached_input,
                    CostKind::OutputToken => usage.output,
                    CostKind::TotalToken => usage.total,
                    CostKind::ReasoningToken => usage.reasoning,
                };
                (cost.metadata_key.clone(), MetaValue::Num(n as f64))
            })
            .collect()
    }
}

fn client_error(e: ClientError) -> Reply {
    tracing::debug!(error = %e, "refusing request");
    Reply::Immediate(e.to_response())
}

fn is_success(status: Option<&str>) -> bool {
    status.is_some_and(|s| s.starts_with('2'))
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let mime = ct.split(';').next().unwrap_or("").trim();
        mime.eq_ignore_ascii_case("application/json")
    })
}
