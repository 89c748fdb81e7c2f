//! A stand-in for Azure OpenAI (`Speaks::AzureOpenAI`): the key only as `api-key`, every path
//! needs `?api-version=`, deployments in the path (`/openai/deployments/{deployment}/chat/
//! completions`, `/completions`, `/images/generations`) and the Responses API at
//! `/openai/responses`; errors in Azure's envelope (`{"error":{"code","message"}}`). Its
//! deployments are the options' chat models; those named `gpt-image-*` or `dall-e-*` generate
//! images and nothing else, as Azure refuses an operation a deployment's model cannot do.

use base64::Engine;
use serde_json::{json, Value};

use super::{generate, request_id, responses, tokens, FireworksOptions, Kind, CREATED};
use crate::upstreams::record::Recorded;
use crate::upstreams::responses::{json_response, sse_response, Body};

fn error(status: u16, code: &str, message: &str) -> http::Response<Body> {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
        &[],
    )
}

fn is_image_model(deployment: &str) -> bool {
    deployment.starts_with("gpt-image") || deployment.starts_with("dall-e")
}

pub(super) fn respond(
    req: &Recorded,
    options: &FireworksOptions,
    endpoint: &str,
    request_id: &str,
) -> http::Response<Body> {
    if req.header("api-key") != Some(options.api_key.as_str()) {
        return error(
            401,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
        );
    }
    let query = req.path.split_once('?').map_or("", |(_, q)| q);
    if !query.split('&').any(|p| {
        p.strip_prefix("api-version=")
            .is_some_and(|v| !v.is_empty())
    }) {
        return error(404, "404", "Resource not found");
    }
    if endpoint == "/openai/responses" && req.method == "POST" {
        return responses::respond(req, options);
    }
    if let Some(id) = endpoint.strip_prefix("/openai/responses/") {
        return responses::stored(req, options, id);
    }
    let Some((deployment, operation)) = endpoint
        .strip_prefix("/openai/deployments/")
        .and_then(|rest| rest.split_once('/'))
    else {
        return error(404, "404", "Resource not found");
    };
    if !options.extra_chat_models.iter().any(|m| m == deployment) {
        return error(
            404,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
        );
    }
    let unsupported = || {
        error(
            400,
            "OperationNotSupported",
            &format!("The {operation} operation does not work with the specified model, {deployment}. Please choose different model and try again."),
        )
    };
    match (req.method.as_str(), operation, is_image_model(deployment)) {
        ("POST", "chat/completions", false) => generate(req, options, request_id, Kind::Chat),
        ("POST", "completions", false) => generate(req, options, request_id, Kind::Completion),
        ("POST", "images/generations", true) => images(req, options, deployment),
        ("POST", _, _) => unsupported(),
        _ => error(404, "404", "Resource not found"),
    }
}

/// OpenAI's image generation: `data` of `b64_json` images; gpt-image models report `usage`
/// (input text tokens, 272 output tokens a low-quality square image), DALL-E does not. With
/// `stream: true` (gpt-image) the events are `image_generation.partial_image` then
/// `image_generation.completed`, which carries the usage.
fn images(req: &Recorded, options: &FireworksOptions, deployment: &str) -> http::Response<Body> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&req.body) else {
        return error(
            400,
            "invalid_request_error",
            "The request body is not valid JSON.",
        );
    };
    let Some(prompt) = body.get("prompt").and_then(Value::as_str) else {
        return error(
            400,
            "invalid_request_error",
            "'prompt' is a required property",
        );
    };
    let n = body
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 10);
    let image = base64::engine::general_purpose::STANDARD.encode(format!("fake image of {prompt}"));
    let data: Vec<Value> = (0..n).map(|_| json!({"b64_json": image})).collect();
    let input = tokens(prompt);
    let output = 272 * n;
    let usage = json!({
        "input_tokens": input,
        "input_tokens_details": {"text_tokens": input, "image_tokens": 0},
        "output_tokens": output,
        "total_tokens": input + output,
    });
    let gpt_image = deployment.starts_with("gpt-image");
    if gpt_image && body.get("stream").and_then(Value::as_bool) == Some(true) {
        let partial = json!({"type": "image_generation.partial_image", "b64_json": image,
            "created_at": CREATED, "size": "1024x1024", "quality": "low", "background": "opaque",
            "output_format": "png", "partial_image_index": 0});
        let done = json!({"type": "image_generation.completed", "b64_json": image,
            "created_at": CREATED, "size": "1024x1024", "quality": "low", "background": "opaque",
            "output_format": "png", "usage": usage});
        let events = [partial, done]
            .iter()
            .map(|d| format!("event: {}\ndata: {d}\n\n", d["type"].as_str().unwrap_or("")))
            .collect();
        return sse_response(events, options.stream_interval, &[]);
    }
    let mut whole = json!({"created": CREATED, "data": data});
    if gpt_image {
        whole["usage"] = usage;
    }
    json_response(200, &whole, &[("apim-request-id", request_id(req))])
}
