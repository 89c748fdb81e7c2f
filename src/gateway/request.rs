//! The request as the provider gets it: the body decoded within bounds, parsed and routed to a
//! rule and backend, then the path, credentials, model and stream options rewritten. What the
//! response phases need of it travels on as [`Routed`].

use std::ops::Range;
use std::time::Instant;

use crate::budget::{Reservation, Standing};
use crate::config::{Config, StreamUsage, WeightedBackend};
use crate::contract::{
    BACKEND_HEADER, CLIENT_MODEL_KEY, ENVOY_ADDED_HEADERS, MAX_REQUEST_HEADERS,
    MAX_REQUEST_HEADER_BYTES, MODEL_END_KEY, MODEL_HEADER, MODEL_START_KEY, PATH_SUFFIX_KEY,
    PINNED_HEADER,
};
use crate::llm::{
    apply_edits, decode_all, parse_request, DecodeError, Edit, Family, Limits, Usage,
};
use crate::providers::{self, Target};

use super::attempts::Attempts;
use super::error::ClientError;
use super::headers::Headers;
use super::identity;
use super::pins;
use super::reply::{Continue, MetaValue};
use super::route::{random_pick, select, NoRoute, Selection};
use super::Options;

/// A request routed to a backend: what the response phases and the usage record need.
#[derive(Debug, Clone)]
pub(crate) struct Routed {
    pub selection: Selection,
    pub family: &'static dyn Family,
    pub requested_model: String,
    pub provider_model: String,
    pub stream: bool,
    pub request_id: String,
    pub user: String,
    /// The verified identity: `(header, value)` of the auth's identity headers.
    pub identity: Vec<(String, String)>,
    /// Who may name the response later (see `pins`).
    pub owner: String,
    pub started: Instant,
    /// When the request went upstream (the reply to its body).
    pub sent: Instant,
    /// Provider status, once response headers came.
    pub status: u16,
    /// The gateway asked for stream usage the client did not: drop the usage-only chunk.
    pub strip_usage_chunk: bool,
    /// Envoy picks the backend per attempt: `selection` holds the one that served once the
    /// response says so.
    pub failover: bool,
    /// The attempts Envoy made, when it failed over.
    pub attempts: Attempts,
    /// What the request is estimated to use (reserved on its budgets).
    pub estimate: Usage,
    /// What its budgets hold for it, settled when it ends.
    pub reservations: Vec<Reservation>,
    /// Its tightest budget, told to the client on the response.
    pub standing: Option<Standing>,
}

impl Routed {
    /// The AIServiceBackend that served; empty when Envoy failed over and no attempt was
    /// answered.
    pub fn backend_name<'c>(&self, config: &'c Config) -> &'c str {
        if self.failover && self.attempts.served().is_none() {
            return "";
        }
        &config.backends[self.selection.backend].name
    }
}

/// A request whose body has arrived whole.
#[derive(Debug, Clone, Copy)]
pub(super) struct Request<'a> {
    pub family: &'static dyn Family,
    /// The client's path, query included.
    pub path: &'a str,
    pub headers: &'a Headers,
    pub body: &'a [u8],
    /// When its headers arrived.
    pub started: Instant,
}

impl Request<'_> {
    /// Validates, routes and rewrites the request; what the provider gets, and what the
    /// response phases and the usage record need.
    pub fn route(
        &self,
        config: &Config,
        options: &Options,
    ) -> Result<(Continue, Routed), ClientError> {
        let Request {
            family,
            path,
            headers,
            body,
            started,
        } = *self;
        let limits = Limits::bytes(options.max_body_bytes as usize);
        let decoded = decode_request_body(headers, body, limits)?;
        let body = decoded.as_deref().unwrap_or(body);
        let info = parse_request(family, body)?;
        let mut selection =
            select(config, headers, &info.model, family, random_pick).map_err(|e| match e {
                NoRoute::NoRule => ClientError::ModelNotFound(info.model.clone()),
                NoRoute::NotServed { schemas } => ClientError::NotServed {
                    model: info.model.clone(),
                    path: family.path().to_string(),
                    schemas: schemas.join(", "),
                },
            })?;
        let identity = identity_of(config, headers);
        let user = user_of(options, headers);
        let owner = pins::owner(&identity, &user);
        let rule = &config.rules[selection.rule];
        // A request continuing a stored response goes to the rule's backend that holds it.
        let pinned = info
            .pin
            .as_deref()
            .and_then(|id| options.pins.find(id, &owner))
            .and_then(|pin| {
                rule.backends
                    .iter()
                    .position(|b| config.backends[b.backend].name == pin.backend)
            });
        if let Some(index) = pinned {
            selection.backend_ref = index;
            selection.backend = rule.backends[index].backend;
        }
        let target = &rule.backends[selection.backend_ref];
        let backend = &config.backends[selection.backend];
        let route = &config.routes[rule.route];
        // Envoy fails over only where ai-extproc rendered its config (and Envoy injects the
        // keys); beside Envoy Gateway the processor routes to the first priority.
        let failover = rule.fails_over() && !options.inject_keys && pinned.is_none();
        let mut reply = Continue {
            clear_route_cache: true,
            ..Continue::default()
        };
        let mut edits = Vec::new();
        if failover {
            // Envoy picks the backend of each attempt; the rule's cluster rewrites path, model
            // and key for it (envoy/failover.rs), and Envoy puts the key on.
            reply
                .set_headers
                .push((MODEL_HEADER.into(), info.model.clone()));
        } else {
            routing_headers(&mut reply, &info.model, &backend.name);
            if pinned.is_some() {
                reply
                    .set_headers
                    .push((PINNED_HEADER.into(), backend.name.clone()));
            }
        }
        // With failover, the request is rewritten here only for a first attempt whose backend
        // is certain (the first priority's only one), so that Envoy's filter works on retries.
        if failover && rule.first_backend().is_none() {
            // The client's own key never goes on (the Anthropic SDKs send it as x-api-key).
            reply
                .remove_headers
                .extend(providers::CLIENT_CREDENTIALS.map(String::from));
        } else {
            let upstream = providers::upstream(&Target {
                family,
                client_path: path,
                request: &info,
                backend,
                model_override: target.model_name_override.as_deref(),
                key: backend.api_key.as_ref().filter(|_| options.inject_keys),
            });
            reply.set_headers.push((":path".into(), upstream.path));
            reply.set_headers.extend(upstream.set_headers);
            reply.remove_headers.extend(upstream.remove_headers);
            edits = upstream.edits;
        }
        strip_internal_headers(&mut reply, headers);
        // Usage records, metrics and costs need a stream's usage: ask a provider that reports
        // it only when asked (any of the rule's, when Envoy may fail over) in the family's way,
        // and take its extra chunk out of what the client did not ask for.
        let on_request =
            |b: &WeightedBackend| config.backends[b.backend].stream_usage == StreamUsage::OnRequest;
        let ask_usage = info.stream
            && if failover {
                rule.backends.iter().any(on_request)
            } else {
                on_request(target)
            };
        let usage_edit = ask_usage.then(|| family.usage_edit(body, &info)).flatten();
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
        // Where the model's value sits in the body the provider gets, for a rewrite per attempt.
        let model_span = span_after(&info.model_span, &edits);
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
        reply.metadata = vec![("route_name".into(), MetaValue::Str(route.name.clone()))];
        if failover {
            reply.metadata.extend([
                (
                    PATH_SUFFIX_KEY.into(),
                    MetaValue::Str(family.backend_path("", path)),
                ),
                (
                    MODEL_START_KEY.into(),
                    MetaValue::Num(model_span.start as f64),
                ),
                (MODEL_END_KEY.into(), MetaValue::Num(model_span.end as f64)),
                (
                    CLIENT_MODEL_KEY.into(),
                    MetaValue::Str(serde_json::to_string(&info.model).unwrap_or_default()),
                ),
            ]);
        } else {
            reply.metadata.extend([
                ("backend_name".into(), MetaValue::Str(backend.name.clone())),
                (
                    "model_name_override".into(),
                    MetaValue::Str(provider_model.clone()),
                ),
            ]);
        }
        reply.metadata.extend([
            ("original_path".into(), MetaValue::Str(path.to_string())),
            ("requested_model".into(), MetaValue::Str(info.model.clone())),
        ]);
        let routed = Routed {
            selection,
            family,
            requested_model: info.model,
            provider_model,
            stream: info.stream,
            request_id: identity::request_id(headers),
            user,
            identity,
            owner,
            started,
            sent: options.clock.now(),
            status: 0,
            strip_usage_chunk,
            failover,
            attempts: Attempts::default(),
            estimate: super::budget::estimate(
                body.len(),
                info.max_output_tokens,
                options.default_output_estimate,
            ),
            reservations: Vec::new(),
            standing: None,
        };
        Ok((reply, routed))
    }
}

/// Where `span` is once `edits` are applied: moved by the edits before it, and as long as the
/// text of an edit that replaces it (the model's new value). No other edit overlaps it.
fn span_after(span: &Range<usize>, edits: &[Edit]) -> Range<usize> {
    let mut start = span.start as isize;
    for e in edits
        .iter()
        .filter(|e| e.range.end <= span.start && e.range != *span)
    {
        start += e.text.len() as isize - e.range.len() as isize;
    }
    let start = start.max(0) as usize;
    let len = edits
        .iter()
        .find(|e| e.range == *span)
        .map_or(span.len(), |e| e.text.len());
    start..start + len
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

/// The headers Envoy routes on (its routes remove them before the provider).
fn routing_headers(reply: &mut Continue, model: &str, backend: &str) {
    reply
        .set_headers
        .push((MODEL_HEADER.into(), model.to_string()));
    reply
        .set_headers
        .push((BACKEND_HEADER.into(), backend.to_string()));
}

/// The verified identity: set by Envoy's authentication filters, which removed any the client
/// sent.
fn identity_of(config: &Config, headers: &Headers) -> Vec<(String, String)> {
    config.auth.as_ref().map_or_else(Vec::new, |auth| {
        auth.identity_headers()
            .into_iter()
            .filter_map(|h| Some((h.to_string(), identity::capped(headers.get(h)?))))
            .collect()
    })
}

/// The user header's value (not verified).
fn user_of(options: &Options, headers: &Headers) -> String {
    options
        .user_header
        .as_deref()
        .and_then(|name| headers.get(name))
        .map(identity::capped)
        .unwrap_or_default()
}

/// Who a request is, for the stored responses it may name.
pub(super) fn owner(config: &Config, options: &Options, headers: &Headers) -> String {
    pins::owner(&identity_of(config, headers), &user_of(options, headers))
}

/// Any other internal `x-ai-eg-*` header a client sent is dropped (one the reply sets is
/// replaced instead).
pub(super) fn strip_internal_headers(reply: &mut Continue, headers: &Headers) {
    for (name, _) in headers.iter() {
        let set = reply.set_headers.iter().any(|(n, _)| n == name);
        if name.starts_with("x-ai-eg-") && name != MODEL_HEADER && name != BACKEND_HEADER && !set {
            reply.remove_headers.push(name.to_string());
        }
    }
}

/// The processor's bound on the request headers (Envoy's own sits higher, so that the headers
/// the processor adds always fit).
pub(super) fn check_header_limits(headers: &Headers) -> Result<(), ClientError> {
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
