use super::*;
use crate::llm::family::{Chat, Completions, Embeddings};

fn ok(family: &dyn Family, body: &str) -> RequestInfo {
    parse_request(family, body.as_bytes()).unwrap()
}

fn err(family: &dyn Family, body: &str) -> RequestError {
    parse_request(family, body.as_bytes()).unwrap_err()
}

#[test]
fn finds_the_model_and_stream() {
    let body = r#" {"messages":[{"role":"user","content":"hi"}], "model" : "qwen-instruct","stream":true}"#;
    let info = ok(&Chat, body);
    assert_eq!(info.model, "qwen-instruct");
    assert_eq!(&body[info.model_span.clone()], "\"qwen-instruct\"");
    assert!(info.stream);
    assert!(
        !ok(
            &Embeddings,
            r#"{"model":"m","input":["a","b"],"stream":null}"#
        )
        .stream
    );
    assert_eq!(
        ok(&Completions, r#"{"model":"m","prompt":[1,2]}"#).model,
        "m"
    );
}

#[test]
fn escaped_model_names_are_decoded() {
    let info = ok(&Embeddings, r#"{"model":"a\/b\u0041","input":"x"}"#);
    assert_eq!(info.model, "a/bA");
}

#[test]
fn rewrite_keeps_every_other_byte() {
    let body = "{\n  \"model\":   \"qwen-thinking\" ,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}}]}],\"top_k\":5}";
    let info = ok(&Chat, body);
    let out = rewrite_model(body.as_bytes(), &info, "accounts/fireworks/models/qwen3");
    let expected = body.replace("\"qwen-thinking\"", "\"accounts/fireworks/models/qwen3\"");
    assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
    // A name that needs escaping is escaped.
    let out = rewrite_model(body.as_bytes(), &info, "a\"b");
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["model"], "a\"b");
}

#[test]
fn refusals() {
    assert!(matches!(
        err(&Chat, "not json"),
        RequestError::InvalidJson(_)
    ));
    assert!(matches!(
        err(&Chat, r#"{"model":"m","messages":[#"#),
        RequestError::InvalidJson(_)
    ));
    assert!(matches!(err(&Chat, ""), RequestError::InvalidJson(_)));
    assert_eq!(err(&Chat, r#"["model"]"#), RequestError::NotAnObject);
    assert_eq!(err(&Chat, r#""model""#), RequestError::NotAnObject);
    assert_eq!(
        err(&Chat, r#"{"messages":[{}]}"#),
        RequestError::MissingModel
    );
    assert_eq!(
        err(&Chat, r#"{"model":null,"messages":[{}]}"#),
        RequestError::MissingModel
    );
    assert_eq!(
        err(&Chat, r#"{"model":7,"messages":[{}]}"#),
        RequestError::ModelNotString
    );
    assert_eq!(
        err(&Chat, r#"{"model":"","messages":[{}]}"#),
        RequestError::EmptyModel
    );
    let long = format!(r#"{{"model":"{}","messages":[{{}}]}}"#, "m".repeat(10_000));
    assert_eq!(err(&Chat, &long), RequestError::ModelTooLong);
    // The bound itself is a model name; one byte more is not.
    let at = |n: usize| format!(r#"{{"model":"{}","messages":[{{}}]}}"#, "m".repeat(n));
    assert!(parse_request(&Chat, at(MAX_MODEL_LEN).as_bytes()).is_ok());
    assert_eq!(
        err(&Chat, &at(MAX_MODEL_LEN + 1)),
        RequestError::ModelTooLong
    );
    assert_eq!(
        err(&Chat, r#"{"model":"a\nb","messages":[{}]}"#),
        RequestError::ModelControlChars
    );
    assert_eq!(
        err(&Chat, r#"{"model":"m"}"#),
        RequestError::MissingField("messages")
    );
    assert_eq!(
        err(&Chat, r#"{"model":"m","messages":"hi"}"#),
        RequestError::WrongType {
            field: "messages",
            expected: "an array"
        }
    );
    assert_eq!(
        err(&Chat, r#"{"model":"m","messages":[ ]}"#),
        RequestError::EmptyMessages
    );
    assert_eq!(
        err(&Embeddings, r#"{"model":"m","messages":[{}]}"#),
        RequestError::MissingField("input")
    );
    assert_eq!(
        err(&Embeddings, r#"{"model":"m","input":3}"#),
        RequestError::WrongType {
            field: "input",
            expected: "a string or an array"
        }
    );
    assert_eq!(
        err(&Completions, r#"{"model":"m","prompt":{}}"#),
        RequestError::WrongType {
            field: "prompt",
            expected: "a string or an array"
        }
    );
    assert_eq!(
        err(&Completions, r#"{"model":"m","prompt":"p","stream":"yes"}"#),
        RequestError::WrongType {
            field: "stream",
            expected: "a boolean"
        }
    );
    assert!(
        matches!(err(&Chat, r#"{"model":"a","model":"b","messages":[{}]}"#), RequestError::InvalidJson(m) if m.contains("duplicate field"))
    );
    assert!(matches!(
        parse_request(&Chat, b"{\"model\":\"\xff\",\"messages\":[{}]}"),
        Err(RequestError::InvalidJson(_))
    ));
    let deep = format!(
        r#"{{"model":"m","messages":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(matches!(err(&Chat, &deep), RequestError::InvalidJson(m) if m.contains("recursion")));
    // The nesting limit holds in every field, not only in those the gateway reads.
    for field in ["tools", "response_format", "metadata"] {
        let deep = format!(
            r#"{{"model":"m","messages":[{{}}],"{field}":{}{}}}"#,
            r#"{"a":"#.repeat(10_000),
            "}".repeat(10_000)
        );
        assert!(
            matches!(err(&Chat, &deep), RequestError::InvalidJson(m) if m.contains("recursion")),
            "{field}"
        );
    }
    // Moderately nested extras (a tool's JSON schema) pass.
    let schema = r#"{"model":"m","messages":[{}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"array","items":{"type":"object","properties":{"b":{"type":"string"}}}}}}}}]}"#;
    ok(&Chat, schema);
    assert_eq!(
        err(
            &Chat,
            r#"{"model":"m","stream":true,"stream":false,"messages":[{}]}"#
        ),
        RequestError::InvalidJson("duplicate field `stream` at line 1 column 35".into())
    );
}

#[test]
fn include_usage_is_added_where_missing() {
    let check = |body: &str, expected: Option<&str>| {
        let info = ok(&Chat, body);
        let edit = Chat.usage_edit(body.as_bytes(), &info);
        let out = edit.map(|e| {
            let out = apply_edits(body.as_bytes(), vec![model_edit(&info, "p"), e]);
            String::from_utf8(out.to_vec()).unwrap()
        });
        assert_eq!(out.as_deref(), expected, "{body}");
    };
    check(
        r#" {"model":"m","stream":true,"messages":[{}]}"#,
        Some(
            r#" {"stream_options":{"include_usage":true},"model":"p","stream":true,"messages":[{}]}"#,
        ),
    );
    check(
        r#"{"model":"m","stream":true,"stream_options":{"x":1},"messages":[{}]}"#,
        Some(
            r#"{"model":"p","stream":true,"stream_options":{"include_usage":true,"x":1},"messages":[{}]}"#,
        ),
    );
    check(
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":false},"messages":[{}]}"#,
        Some(
            r#"{"model":"p","stream":true,"stream_options":{"include_usage":true},"messages":[{}]}"#,
        ),
    );
    check(
        r#"{"model":"m","stream":true,"stream_options":null,"messages":[{}]}"#,
        Some(
            r#"{"model":"p","stream":true,"stream_options":{"include_usage":true},"messages":[{}]}"#,
        ),
    );
    check(
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{}]}"#,
        None,
    );
    check(
        r#"{"model":"m","stream":true,"stream_options":7,"messages":[{}]}"#,
        None,
    );
}
