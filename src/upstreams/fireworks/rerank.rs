//! The fake's rerank (`POST /inference/v1/rerank`), shaped like Fireworks': `data` of
//! `{index, relevance_score, document}` by decreasing score, `usage` with `prompt_tokens` and
//! `total_tokens`. Scores are the share of the query's words found in each document, so tests
//! can predict the order. The fake Cohere ranks with the same function.

use serde_json::{json, Value};

use super::{model_of, parse_body, tokens, validation_error, FireworksOptions, ModelKind};
use crate::upstreams::record::Recorded;
use crate::upstreams::responses::{json_response, Body};

const FIELDS: &[&str] = &["model", "query", "documents", "top_n", "return_documents"];

/// The documents' indexes and scores, best first (ties by index), at most `top_n`.
pub(super) fn rank(query: &str, documents: &[String], top_n: Option<usize>) -> Vec<(usize, f64)> {
    let words: Vec<String> = query.split_whitespace().map(|w| w.to_lowercase()).collect();
    let mut scored: Vec<(usize, f64)> = documents
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let d = d.to_lowercase();
            let hits = words.iter().filter(|w| d.contains(w.as_str())).count();
            (i, hits as f64 / words.len().max(1) as f64)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.truncate(top_n.unwrap_or(usize::MAX));
    scored
}

/// `query` and `documents` (strings, or objects with a `text`), or why not.
pub(super) fn query_and_documents(
    body: &serde_json::Map<String, Value>,
) -> Result<(String, Vec<String>), String> {
    let Some(query) = body.get("query").and_then(Value::as_str) else {
        return Err("Field required, field: 'query'".into());
    };
    let Some(Value::Array(items)) = body.get("documents") else {
        return Err("Field required, field: 'documents'".into());
    };
    if items.is_empty() {
        return Err("List should have at least 1 item, field: 'documents'".into());
    }
    let mut documents = Vec::new();
    for item in items {
        match item {
            Value::String(s) => documents.push(s.clone()),
            Value::Object(o) => match o.get("text").and_then(Value::as_str) {
                Some(t) => documents.push(t.to_string()),
                None => return Err("Field required, field: 'documents.text'".into()),
            },
            _ => return Err("Input should be a valid string, field: 'documents'".into()),
        }
    }
    Ok((query.to_string(), documents))
}

pub(super) fn respond(
    req: &Recorded,
    options: &FireworksOptions,
    request_id: &str,
) -> http::Response<Body> {
    let body = match parse_body(req, FIELDS) {
        Ok(b) => b,
        Err(r) => return r.response(),
    };
    let (model, kind) = match model_of(&body, options, request_id) {
        Ok(m) => m,
        Err(r) => return r.response(),
    };
    if kind != ModelKind::Rerank {
        return validation_error(format!("Model {model} does not support rerank"));
    }
    let (query, documents) = match query_and_documents(&body) {
        Ok(q) => q,
        Err(m) => return validation_error(m),
    };
    let top_n = body
        .get("top_n")
        .and_then(Value::as_u64)
        .map(|n| n as usize);
    let with_documents = body.get("return_documents").and_then(Value::as_bool) != Some(false);
    let data: Vec<Value> = rank(&query, &documents, top_n)
        .into_iter()
        .map(|(i, score)| {
            let mut d = json!({"index": i, "relevance_score": score});
            if with_documents {
                d["document"] = json!(documents[i]);
            }
            d
        })
        .collect();
    let prompt: u64 = documents.iter().map(|d| tokens(&query) + tokens(d)).sum();
    json_response(
        200,
        &json!({"object": "list", "model": model, "data": data,
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt, "completion_tokens": 0}}),
        &[("x-request-id", request_id.to_string())],
    )
}
