//! envoy-types <-> gateway types.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::ProcessingMode;
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation, processing_response, BodyMutation, BodyResponse, CommonResponse, HeaderMutation,
    HeadersResponse, HttpHeaders, ImmediateResponse, ProcessingResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

use crate::contract::{METADATA_NAMESPACE, PROCESSOR_REPLY_KEY};
use crate::gateway::{BodyMode, Continue, Headers, Immediate, MetaValue, Reply};

/// Which message a reply answers (the oneof variant it must use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answering {
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody,
}

/// Headers as the gateway reads them. Envoy sends values in `raw_value`.
pub fn headers(h: Option<HttpHeaders>) -> Headers {
    let pairs = h
        .and_then(|h| h.headers)
        .map(|map| {
            map.headers
                .into_iter()
                .map(|hv| {
                    let value = if hv.raw_value.is_empty() {
                        hv.value
                    } else {
                        // Moved, not copied, when valid UTF-8 (it nearly always is).
                        String::from_utf8(hv.raw_value)
                            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
                    };
                    (hv.key, value)
                })
                .collect()
        })
        .unwrap_or_default();
    Headers::new(pairs)
}

/// The ext_proc message for a gateway reply.
pub fn response(answering: Answering, reply: Reply) -> ProcessingResponse {
    match reply {
        Reply::Immediate(i) => ProcessingResponse {
            response: Some(processing_response::Response::ImmediateResponse(immediate(
                i,
            ))),
            // Marks the reply as the processor's, so Envoy's local-reply mapping (which shapes
            // Envoy's own errors) leaves it as it is.
            dynamic_metadata: metadata(&[(
                PROCESSOR_REPLY_KEY.to_string(),
                MetaValue::Str("ai-extproc".into()),
            )]),
            ..ProcessingResponse::default()
        },
        Reply::Continue(c) => continue_response(answering, c),
        // The service answers an admission itself (`Stream::admit`) before it gets here; should
        // one slip through, the request fails rather than pass its budgets unchecked.
        Reply::Admit => {
            tracing::error!("an admission reached the encoder unanswered; failing the request");
            response(
                answering,
                Reply::Immediate(crate::gateway::Immediate::json(
                    500,
                    crate::llm::ErrorBody::new(
                        "The gateway could not check this request's budgets.",
                        "server_error",
                        None,
                        Some("gateway_error"),
                    )
                    .to_json(),
                )),
            )
        }
    }
}

fn continue_response(answering: Answering, c: Continue) -> ProcessingResponse {
    let dynamic_metadata = metadata(&c.metadata);
    let mode_override = c.response_body_mode.map(|mode| ProcessingMode {
        response_body_mode: body_mode(mode) as i32,
        ..ProcessingMode::default()
    });
    let common = CommonResponse {
        header_mutation: header_mutation(c.set_headers, c.remove_headers),
        body_mutation: c.body.map(|b| BodyMutation {
            mutation: Some(body_mutation::Mutation::Body(b.to_vec())),
        }),
        clear_route_cache: c.clear_route_cache,
        ..CommonResponse::default()
    };
    let common = (common != CommonResponse::default()).then_some(common);
    let response = match answering {
        Answering::RequestHeaders => {
            processing_response::Response::RequestHeaders(HeadersResponse { response: common })
        }
        Answering::ResponseHeaders => {
            processing_response::Response::ResponseHeaders(HeadersResponse { response: common })
        }
        Answering::RequestBody => {
            processing_response::Response::RequestBody(BodyResponse { response: common })
        }
        Answering::ResponseBody => {
            processing_response::Response::ResponseBody(BodyResponse { response: common })
        }
    };
    ProcessingResponse {
        response: Some(response),
        dynamic_metadata,
        mode_override,
        ..ProcessingResponse::default()
    }
}

fn body_mode(mode: BodyMode) -> BodySendMode {
    match mode {
        BodyMode::None => BodySendMode::None,
        BodyMode::Buffered => BodySendMode::Buffered,
        BodyMode::Streamed => BodySendMode::Streamed,
    }
}

fn header_mutation(set: Vec<(String, String)>, remove: Vec<String>) -> Option<HeaderMutation> {
    if set.is_empty() && remove.is_empty() {
        return None;
    }
    Some(HeaderMutation {
        set_headers: set
            .into_iter()
            .map(|(key, value)| HeaderValueOption {
                // Envoy reads `raw_value`; a value in `value` would arrive empty.
                header: Some(HeaderValue {
                    key,
                    raw_value: value.into_bytes(),
                    ..HeaderValue::default()
                }),
                append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                ..HeaderValueOption::default()
            })
            .collect(),
        remove_headers: remove,
    })
}

fn metadata(entries: &[(String, MetaValue)]) -> Option<Struct> {
    if entries.is_empty() {
        return None;
    }
    let fields: HashMap<String, Value> = entries
        .iter()
        .map(|(k, v)| {
            let kind = match v {
                MetaValue::Str(s) => Kind::StringValue(s.clone()),
                MetaValue::Num(n) => Kind::NumberValue(*n),
            };
            (k.clone(), Value { kind: Some(kind) })
        })
        .collect();
    let inner = Value {
        kind: Some(Kind::StructValue(Struct { fields })),
    };
    Some(Struct {
        fields: HashMap::from([(METADATA_NAMESPACE.to_string(), inner)]),
    })
}

fn immediate(i: Immediate) -> ImmediateResponse {
    ImmediateResponse {
        status: Some(HttpStatus {
            code: i32::from(i.status),
        }),
        headers: header_mutation(i.headers, Vec::new()),
        body: i.body,
        details: "ai_extproc".into(),
        ..ImmediateResponse::default()
    }
}

/// Adds header settings to a reply (trace context, say).
pub fn add_headers(common: &mut CommonResponse, headers: Vec<(String, String)>) {
    let extra = header_mutation(headers, Vec::new())
        .map(|m| m.set_headers)
        .unwrap_or_default();
    common
        .header_mutation
        .get_or_insert_with(HeaderMutation::default)
        .set_headers
        .extend(extra);
}
