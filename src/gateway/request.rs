//! The request as the provider gets it: the body decoded within bounds, parsed and routed to a
//! rule and backend, then the path, credentials, model and stream options rewritten. What the
//! response phases need of it travels on as [`Routed`].

use std::time::Instant;

use crate::config::{Config, SecretString, StreamUsage, MODEL_HEADER};
use crate::contract::{
    BACKEND_HEADER, ENVOY_ADDED_HEADERS, MAX_REQUEST_HEADERS, MAX_REQUEST_HEADER_BYTES,
};
use crate::llm::{
    apply_edits, decode_all, include_usage_edit, model_edit, parse_request, DecodeError, Endpoint,
    Limits,
};

use super::error::ClientError;
use super::headers::Headers;
use super::identity;
use super::reply::{Continue, MetaValue};
use super::route::{random_pick, select, Selection};
use super::Options;

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

/// A request whose body has arrived whole.
#[derive(Debug, Clone, Copy)]
pub(super) struct Request<'a> {
    pub endpoint: Endpoint,
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
            endpoint,
            path,
            headers,
            body,
            started,
        } = *self;
        let limits = Limits::bytes(options.max_body_bytes as usize);
        let decoded = decode_request_body(headers, body, limits)?;
        let body = decoded.as_deref().unwrap_or(body);
        let info = parse_request(endpoint, body)?;
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
            backend.api_key.as_ref().filter(|_| options.inject_keys),
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
            user: options
                .user_header
                .as_deref()
                .and_then(|name| headers.get(name))
                .map(identity::capped)
                .unwrap_or_default(),
            started,
            sent: options.clock.now(),
            status: 0,
            strip_usage_chunk,
        };
        Ok((reply, routed))
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
