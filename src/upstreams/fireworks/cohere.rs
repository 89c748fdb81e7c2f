//! A stand-in for Cohere's v2 API (`Speaks::Cohere`): `POST /v2/rerank` with a Bearer key,
//! `results` of `{index, relevance_score}` and `meta` with `billed_units` and `tokens`;
//! errors as Cohere writes them, `{"message": ...}`. Its models are the options' chat models.

use serde_json::{json, Value};

use super::rerank::{query_and_documents, rank};
use super::{request_id, tokens, FireworksOptions};
use crate::upstreams::record::Recorded;
use crate::upstreams::responses::{json_response, Body};

const FIELDS: &[&str] = &[
    "model",
    "query",
    "documents",
    "top_n",
    "max_tokens_per_doc",
    "rank_fields",
];

fn error(status: u16, message: &str) -> http::Response<Body> {
    json_response(status, &json!({ "message": message }), &[])
}

pub(super) fn respond(
    req: &Recorded,
    options: &FireworksOptions,
    endpoint: &str,
) -> http::Response<Body> {
    if req.header("authorization") != Some(format!("Bearer {}", options.api_key).as_str()) {
        return error(401, "invalid api token");
    }
    if (req.method.as_str(), endpoint) != ("POST", "/rerank") {
        return error(404, "Not Found");
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&req.body) else {
        return error(400, "invalid request: body must be a JSON object");
    };
    if let Some(extra) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return error(400, &format!("invalid request: unknown field {extra:?}"));
    }
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    if !options.extra_chat_models.iter().any(|m| m == model) {
        return error(
            404,
            &format!("model '{model}' not found, make sure the correct model ID was used and that you have access to the model."),
        );
    }
    let (query, documents) = match query_and_documents(&body) {
        Ok(q) => q,
        Err(m) => return error(400, &format!("invalid request: {m}")),
    };
    let top_n = body
        .get("top_n")
        .and_then(Value::as_u64)
        .map(|n| n as usize);
    let results: Vec<Value> = rank(&query, &documents, top_n)
        .into_iter()
        .map(|(i, score)| json!({"index": i, "relevance_score": score}))
        .collect();
    let input: u64 = documents.iter().map(|d| tokens(&query) + tokens(d)).sum();
    json_response(
        200,
        &json!({
            "id": request_id(req),
            "results": results,
            "meta": {
                "api_version": {"version": "2"},
                "billed_units": {"search_units": 1},
                "tokens": {"input_tokens": input, "output_tokens": 0}
            }
        }),
        &[],
    )
}
