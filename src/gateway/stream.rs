//! One HTTP stream's life as a state machine: request headers -> request body -> response
//! headers -> response body. Each `on_*` takes the message of its phase and returns the reply.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::budget::{Claim, Verdict};
use crate::config::{Config, ServiceBackend};
use crate::contract::{
    ATTEMPTS_HEADER, ATTEMPTS_KEY, BACKEND_HEADER, FAILED_ATTEMPTS_KEY, MODEL_HEADER, PINNED_HEADER,
};
use crate::llm::{model_body, models_body, Endpoint, Family, Responses, Usage};
use crate::providers;

use super::attempts::Attempts;
use super::budget;
use super::error::{ClientError, StreamError};
use super::headers::Headers;
use super::pins;
use super::reply::{BodyMode, Continue, Immediate, MetaValue, Reply};
use super::request::{self, Request, Routed};
use super::response::{ResponseBody, ResponseOutcome};
use super::trace::LlmSpan;
use super::Options;

/// Compressed bodies larger than this (in compressed bytes) are decoded off the thread that
/// answers Envoy, so one large or hostile body does not hold up every other stream.
pub const LARGE_COMPRESSED_BODY: usize = 64 * 1024;

#[derive(Debug)]
enum Phase {
    RequestHeaders,
    RequestBody {
        family: &'static dyn Family,
        path: String,
        headers: Headers,
        buffer: BytesMut,
    },
    /// Routed; waiting for its budgets to admit it (`reply` goes on if they do).
    Admitting {
        routed: Box<Routed>,
        reply: Continue,
        claims: Vec<Claim>,
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
    /// The request's span, when traces are exported.
    span: Option<LlmSpan>,
}

impl Stream {
    pub fn new(config: Arc<Config>) -> Self {
        Self::with_options(config, Options::default())
    }

    pub fn with_options(config: Arc<Config>, options: Options) -> Self {
        let started = options.clock.now();
        Self {
            config,
            options,
            phase: Phase::RequestHeaders,
            started,
            span: None,
        }
    }

    /// Makes `span` the request's LLM span (traces are exported).
    pub fn trace_with(&mut self, span: LlmSpan) {
        self.span = Some(span);
    }

    /// The W3C headers that hand the request's span on to the provider (none when traces
    /// are not exported).
    pub fn trace_context_headers(&self) -> Vec<(String, String)> {
        self.span
            .as_ref()
            .map(LlmSpan::context_headers)
            .unwrap_or_default()
    }

    /// The gateway answered the request itself with `status` and `body`: the span says so.
    pub fn trace_refused(&mut self, status: u16, body: &[u8]) {
        if let Some(span) = &mut self.span {
            span.refused(status, body);
        }
    }

    fn expected(&self) -> &'static str {
        match self.phase {
            Phase::RequestHeaders => "request headers",
            Phase::RequestBody { .. } => "request body",
            Phase::Admitting { .. } => "the budgets' answer",
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
            Phase::RequestHeaders
            | Phase::Admitting { .. }
            | Phase::ResponseHeaders(_)
            | Phase::Done => None,
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
        self.started = self.options.clock.now();
        // Every answer here ends the request; only a body to read changes the phase again.
        self.phase = Phase::Done;
        if let Err(e) = request::check_header_limits(&headers) {
            return Ok(client_error(e, None));
        }
        // CONNECT has no :path; it is an unknown URL like any other.
        let method = headers.get(":method").unwrap_or_default().to_string();
        let path = headers.get(":path").unwrap_or_default().to_string();
        let Some(endpoint) = Endpoint::from_path(&path) else {
            return Ok(client_error(
                ClientError::UnknownPath { method, path },
                None,
            ));
        };
        let family = match endpoint {
            Endpoint::Api(family) => Some(family),
            Endpoint::Models | Endpoint::Model | Endpoint::StoredResponse => None,
        };
        if let Some(span) = &mut self.span {
            match family {
                // The trace format picks a family's name (OpenInference's or GenAI's).
                Some(family) => span.named(family),
                None => span.named_as(endpoint.span_name()),
            }
        }
        if !endpoint.allows(&method) {
            let allowed = endpoint.allow();
            let e = ClientError::MethodNotAllowed {
                method,
                path,
                allowed,
            };
            return Ok(client_error(e, family));
        }
        if matches!(endpoint, Endpoint::StoredResponse) {
            return Ok(self.stored_response(&headers, &path));
        }
        let Some(family) = family else {
            // The models; Envoy drops the body of a reply to HEAD.
            let body = match endpoint {
                Endpoint::Model => match model_body(&self.config.models, &path) {
                    Ok(body) => body,
                    Err(id) => return Ok(client_error(ClientError::ModelNotFound(id), None)),
                },
                _ => models_body(&self.config.models),
            };
            return Ok(Reply::Immediate(Immediate::json(200, body)));
        };
        if end_of_stream {
            return Ok(client_error(ClientError::MissingBody, Some(family)));
        }
        self.phase = Phase::RequestBody {
            family,
            path,
            headers,
            buffer: BytesMut::new(),
        };
        Ok(Reply::Continue(Continue::default()))
    }

    /// A request about a stored response: to the backend that holds it (see `pins`), with
    /// its path and key; nothing is metered (no model runs). The stream ends here for the
    /// processor: the response passes unread.
    fn stored_response(&self, headers: &Headers, path: &str) -> Reply {
        let responses: &'static dyn Family = &Responses;
        let id = pins::id_of(path);
        let owner = request::owner(&self.config, &self.options, headers);
        let serving = |b: &ServiceBackend| providers::serves(b.schema, responses);
        let pin = self.options.pins.find(id, &owner);
        let remembered = pin.as_ref().and_then(|p| {
            self.config
                .backends
                .iter()
                .position(|b| b.name == p.backend && serving(b))
        });
        // Unknown here: the only backend that serves the Responses API, if there is one.
        let backend = remembered.or_else(|| {
            let mut serving = self
                .config
                .backends
                .iter()
                .enumerate()
                .filter(|(_, b)| serving(b));
            match (serving.next(), serving.next()) {
                (Some((i, _)), None) => Some(i),
                _ => None,
            }
        });
        let not_found = || {
            client_error(
                ClientError::ResponseNotFound(id.to_string()),
                Some(responses),
            )
        };
        let Some(backend) = backend.map(|i| &self.config.backends[i]) else {
            return not_found();
        };
        let key = backend
            .api_key
            .as_ref()
            .filter(|_| self.options.inject_keys);
        let Some(upstream) = providers::stored_response(backend, path, key) else {
            return not_found();
        };
        let mut reply = Continue {
            clear_route_cache: true,
            ..Continue::default()
        };
        reply.set_headers.push((":path".into(), upstream.path));
        reply.set_headers.extend(upstream.set_headers);
        reply.remove_headers.extend(upstream.remove_headers);
        reply.set_headers.extend([
            (PINNED_HEADER.into(), backend.name.clone()),
            (BACKEND_HEADER.into(), backend.name.clone()),
        ]);
        // Envoy Gateway's routes match the model (ai-extproc's own have a route per backend).
        if let Some(pin) = pin.filter(|_| remembered.is_some()) {
            reply.set_headers.push((MODEL_HEADER.into(), pin.model));
        }
        request::strip_internal_headers(&mut reply, headers);
        reply.metadata = vec![
            ("backend_name".into(), MetaValue::Str(backend.name.clone())),
            ("original_path".into(), MetaValue::Str(path.to_string())),
        ];
        Reply::Continue(reply)
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
            family,
            path,
            headers,
            buffer,
        } = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return Err(self.unexpected("request body"));
        };
        let request = Request {
            family,
            path: &path,
            headers: &headers,
            body: &buffer,
            started: self.started,
        };
        match request.route(&self.config, &self.options) {
            Ok((reply, routed)) => {
                if let Some(span) = &mut self.span {
                    let sent = reply.body.as_deref().unwrap_or(&buffer);
                    span.request(&self.config, &routed, sent);
                }
                let claims = match &self.options.budgets {
                    Some(_) if !self.config.budgets.is_empty() => {
                        budget::claims(&self.config, &routed, &headers)
                    }
                    _ => Vec::new(),
                };
                if claims.is_empty() {
                    self.phase = Phase::ResponseHeaders(Box::new(routed));
                    return Ok(Reply::Continue(reply));
                }
                self.phase = Phase::Admitting {
                    routed: Box::new(routed),
                    reply,
                    claims,
                };
                Ok(Reply::Admit)
            }
            Err(e) => Ok(client_error(e, Some(family))),
        }
    }

    /// After [`Reply::Admit`]: the budgets' answer. Admitted, the request goes on as routed
    /// (its reservations settled when it ends); refused, the client gets 429 and nothing reaches
    /// the provider. The refusing budget's name comes back for the metrics.
    pub async fn admit(&mut self) -> Result<(Reply, Option<String>), StreamError> {
        let Phase::Admitting {
            mut routed,
            reply,
            claims,
        } = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return Err(self.unexpected("an admission"));
        };
        let Some(budgets) = self.options.budgets.clone() else {
            self.phase = Phase::ResponseHeaders(routed);
            return Ok((Reply::Continue(reply), None));
        };
        match budgets.admit(&claims, self.options.clock.wall()).await {
            Verdict::Admitted {
                reservations,
                standing,
            } => {
                routed.reservations = reservations;
                routed.standing = standing;
                self.phase = Phase::ResponseHeaders(routed);
                Ok((Reply::Continue(reply), None))
            }
            Verdict::Refused { budget, standing } => {
                tracing::debug!(%budget, "budget exhausted; refusing");
                let e = ClientError::RateLimited {
                    budget: budget.clone(),
                    standing,
                };
                Ok((client_error(e, Some(routed.family)), Some(budget)))
            }
            // Redis down and the gateway fails closed (fail-open admits, unchecked, above).
            Verdict::Unavailable => Ok((
                client_error(ClientError::BudgetsUnavailable, Some(routed.family)),
                None,
            )),
        }
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
            Phase::RequestHeaders
            | Phase::RequestBody { .. }
            | Phase::Admitting { .. }
            | Phase::Done => {
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
        let (remove_headers, metadata) = if routed.failover {
            self.served(&mut routed, &headers)
        } else {
            (Vec::new(), Vec::new())
        };
        let set_headers = routed
            .standing
            .map(|s| budget::headers(&s, false))
            .unwrap_or_default();
        let body = if end_of_stream {
            None
        } else {
            ResponseBody::for_response(
                routed.family,
                &headers,
                routed.status,
                routed.strip_usage_chunk,
                self.span.as_ref().and_then(LlmSpan::capture_bytes),
            )
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
            set_headers,
            remove_headers,
            metadata,
            ..Continue::default()
        }))
    }

    /// For a rule that fails over: which backend served (the usage, the record and the costs
    /// are that backend's) and the attempts it took, from the per-attempt filter's header,
    /// which the client does not get.
    fn served(
        &self,
        routed: &mut Routed,
        headers: &Headers,
    ) -> (Vec<String>, Vec<(String, MetaValue)>) {
        let Some(attempts) = headers
            .get(ATTEMPTS_HEADER)
            .map(|v| Attempts::parse(v, routed.status))
        else {
            // Envoy's own answer: no attempt was answered (its access log has the attempts).
            return (Vec::new(), Vec::new());
        };
        let rule = &self.config.rules[routed.selection.rule];
        let served = attempts.served().and_then(|name| {
            rule.backends
                .iter()
                .position(|b| self.config.backends[b.backend].name == name)
        });
        let mut metadata = vec![
            (ATTEMPTS_KEY.into(), MetaValue::Num(attempts.count() as f64)),
            (
                FAILED_ATTEMPTS_KEY.into(),
                MetaValue::Str(attempts.failures_line()),
            ),
        ];
        if let Some(index) = served {
            let target = &rule.backends[index];
            routed.selection.backend_ref = index;
            routed.selection.backend = target.backend;
            if let Some(model) = &target.model_name_override {
                routed.provider_model = model.clone();
            }
            metadata.extend([
                (
                    "backend_name".into(),
                    MetaValue::Str(self.config.backends[target.backend].name.clone()),
                ),
                (
                    "model_name_override".into(),
                    MetaValue::Str(routed.provider_model.clone()),
                ),
            ]);
        }
        routed.attempts = attempts;
        (vec![ATTEMPTS_HEADER.to_string()], metadata)
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
        let now = self.options.clock.now();
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
        let outcome = body.finish(routed.status, routed.sent, now, self.key_of(&routed));
        let mut reply = outcome.replacement.clone().unwrap_or_default();
        if reply.body.is_none() {
            reply.body = forwarded;
        }
        reply.metadata = super::record::metadata(&self.config, &routed, &outcome);
        self.emit(&routed, &outcome);
        Ok(Reply::Continue(reply))
    }

    /// The key of the backend a request went to.
    fn key_of(&self, routed: &Routed) -> Option<&str> {
        self.config.backends[routed.selection.backend]
            .api_key
            .as_ref()
            .map(|k| k.expose())
    }

    /// The request ended: its reservations settled to what it used, its usage recorded, the
    /// backend of a stored response remembered.
    fn emit(&mut self, routed: &Routed, outcome: &ResponseOutcome) {
        if let Some(id) = &outcome.response_id {
            let backend = routed.backend_name(&self.config);
            if (200..300).contains(&routed.status) && !backend.is_empty() {
                self.options.pins.remember(
                    id,
                    pins::Pin {
                        backend: backend.to_string(),
                        model: routed.requested_model.clone(),
                        owner: routed.owner.clone(),
                    },
                );
            }
        }
        let charges = if routed.reservations.is_empty() {
            Vec::new()
        } else {
            let used = used(routed, outcome);
            let charges = budget::charges(&self.config, routed, used.as_ref());
            if let Some(budgets) = &self.options.budgets {
                budgets.settle(&routed.reservations, &charges);
            }
            charges
        };
        if let Some(span) = &mut self.span {
            span.response(&self.config, routed, outcome);
        }
        if let Some(hub) = &self.options.usage {
            let now = self.options.clock.now();
            hub.emit(super::record::usage_record(
                &self.config,
                routed,
                outcome,
                now,
                &charges,
            ));
        }
    }
}

impl Drop for Stream {
    /// Envoy ended the stream early (client gone, upstream reset): record what was seen.
    fn drop(&mut self) {
        let now = self.options.clock.now();
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::ResponseHeaders(routed) => self.emit(&routed, &ResponseOutcome::default()),
            Phase::ResponseBody(routed, body) => {
                let outcome = body.finish(routed.status, routed.sent, now, None);
                self.emit(&routed, &outcome);
            }
            // Not admitted yet: nothing was reserved.
            Phase::RequestHeaders
            | Phase::RequestBody { .. }
            | Phase::Admitting { .. }
            | Phase::Done => {}
        }
    }
}

/// What a finished request used, for its budgets: the usage it reported, else (a stream cut
/// before its usage came) its estimated input and the tokens it streamed; nothing for an error
/// or a response that never came.
fn used(routed: &Routed, outcome: &ResponseOutcome) -> Option<Usage> {
    if outcome.usage.is_some() {
        return outcome.usage;
    }
    let answered = (200..300).contains(&routed.status);
    (answered && outcome.token_events > 0).then(|| Usage {
        input: routed.estimate.input,
        output: outcome.token_events,
        total: routed.estimate.input + outcome.token_events,
        ..Usage::default()
    })
}

/// A refusal in `family`'s error shape (OpenAI's while the endpoint is unknown).
fn client_error(e: ClientError, family: Option<&dyn Family>) -> Reply {
    tracing::debug!(error = %e, "refusing request");
    Reply::Immediate(e.to_response(family))
}
