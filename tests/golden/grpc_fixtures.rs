//! Recorded ext_proc message sequences (tests/fixtures/grpc/*.yaml) sent to the real tonic
//! service over gRPC; the replies are compared with golden snapshots (tests/golden/snapshots).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ai_extproc::config::{self, CompileOptions, ConfigHandle};
use ai_extproc::extproc::{serve, Listen, Processor};
use ai_extproc::gateway::{Clock, Options};
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation, processing_request, processing_response, CommonResponse, HttpBody, HttpHeaders,
    ProcessingRequest, ProcessingResponse,
};
use envoy_types::pb::google::protobuf::value::Kind;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;

use crate::{examples, root};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    #[allow(dead_code)]
    description: String,
    messages: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    #[serde(default)]
    request_headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    request_body: Option<String>,
    #[serde(default)]
    response_headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    response_body: Option<String>,
    #[serde(default)]
    end_of_stream: bool,
}

fn headers(map: &BTreeMap<String, String>, end_of_stream: bool) -> HttpHeaders {
    HttpHeaders {
        headers: Some(HeaderMap {
            headers: map
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: k.clone(),
                    raw_value: v.clone().into_bytes(),
                    ..HeaderValue::default()
                })
                .collect(),
        }),
        end_of_stream,
        ..HttpHeaders::default()
    }
}

fn request(step: &Step) -> ProcessingRequest {
    use processing_request::Request as R;
    let eos = step.end_of_stream;
    let body = |b: &String| HttpBody {
        body: b.clone().into_bytes(),
        end_of_stream: eos,
        ..HttpBody::default()
    };
    let r = match (
        &step.request_headers,
        &step.request_body,
        &step.response_headers,
        &step.response_body,
    ) {
        (Some(h), None, None, None) => R::RequestHeaders(headers(h, eos)),
        (None, Some(b), None, None) => R::RequestBody(body(b)),
        (None, None, Some(h), None) => R::ResponseHeaders(headers(h, eos)),
        (None, None, None, Some(b)) => R::ResponseBody(body(b)),
        _ => panic!("a step has exactly one message"),
    };
    ProcessingRequest {
        request: Some(r),
        ..ProcessingRequest::default()
    }
}

fn text_or_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

fn common(c: &Option<CommonResponse>) -> Value {
    let Some(c) = c else { return Value::Null };
    let mut v = json!({});
    if let Some(m) = &c.header_mutation {
        let set: Vec<Value> = m
            .set_headers
            .iter()
            .map(|o| {
                let h = o.header.clone().unwrap_or_default();
                assert!(h.value.is_empty(), "values must travel in raw_value");
                json!([
                    h.key,
                    String::from_utf8_lossy(&h.raw_value),
                    o.append_action
                ])
            })
            .collect();
        v["set_headers"] = json!(set);
        v["remove_headers"] = json!(m.remove_headers);
    }
    if let Some(body_mutation::Mutation::Body(b)) =
        c.body_mutation.as_ref().and_then(|m| m.mutation.clone())
    {
        v["body"] = Value::String(String::from_utf8_lossy(&b).into_owned());
    }
    v["clear_route_cache"] = json!(c.clear_route_cache);
    v["status"] = json!(c.status);
    v
}

fn render(r: &ProcessingResponse) -> Value {
    use processing_response::Response as R;
    let mut v = match r.response.as_ref().expect("a response") {
        R::RequestHeaders(h) => json!({"request_headers": common(&h.response)}),
        R::ResponseHeaders(h) => json!({"response_headers": common(&h.response)}),
        R::RequestBody(b) => json!({"request_body": common(&b.response)}),
        R::ResponseBody(b) => json!({"response_body": common(&b.response)}),
        R::ImmediateResponse(i) => json!({"immediate_response": {
            "status": i.status.as_ref().map(|s| s.code),
            "headers": i.headers.as_ref().map(|m| m.set_headers.iter().map(|o| {
                let h = o.header.clone().unwrap_or_default();
                json!([h.key, String::from_utf8_lossy(&h.raw_value)])
            }).collect::<Vec<_>>()),
            "body": text_or_json(&i.body),
        }}),
        other => json!({"other": format!("{other:?}")}),
    };
    if let Some(m) = &r.mode_override {
        v["mode_override"] = json!({"response_body_mode": m.response_body_mode});
    }
    if let Some(md) = &r.dynamic_metadata {
        let mut out = serde_json::Map::new();
        for (ns, value) in &md.fields {
            let Some(Kind::StructValue(s)) = &value.kind else {
                panic!("namespace value is a struct")
            };
            let fields: BTreeMap<&String, Value> = s
                .fields
                .iter()
                .map(|(k, v)| {
                    let v = match &v.kind {
                        Some(Kind::NumberValue(n)) => json!(n),
                        Some(Kind::StringValue(s)) => json!(s),
                        other => json!(format!("{other:?}")),
                    };
                    (k, v)
                })
                .collect();
            out.insert(ns.clone(), json!(fields));
        }
        v["dynamic_metadata"] = Value::Object(out);
    }
    v
}

/// The processor, on a clock that moves only when a replay says so (timings are exact).
async fn start_processor() -> (SocketAddr, Clock) {
    let options = CompileOptions {
        now: 1_700_000_000,
        ..CompileOptions::default()
    };
    let handle = ConfigHandle::new(config::load(&examples(), &options).unwrap());
    let bound = Listen::Tcp("127.0.0.1:0".parse().unwrap())
        .bind()
        .await
        .unwrap();
    let addr = bound.local_addr().unwrap();
    let clock = Clock::manual();
    let options = Options {
        clock: clock.clone(),
        ..Options::default()
    };
    let processor = Processor::with_options(handle, options, Default::default());
    tokio::spawn(serve(bound, processor, std::future::pending()));
    (addr, clock)
}

/// Sends a fixture's messages 10 ms apart.
async fn replay(addr: SocketAddr, clock: &Clock, fixture: &Fixture) -> Vec<Value> {
    let mut client = ExternalProcessorClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut inbound = client
        .process(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut replies = Vec::new();
    for step in &fixture.messages {
        clock.advance(std::time::Duration::from_millis(10));
        tx.send(request(step)).await.unwrap();
        let reply = inbound
            .message()
            .await
            .unwrap()
            .expect("one reply per message");
        let immediate = matches!(
            reply.response,
            Some(processing_response::Response::ImmediateResponse(_))
        );
        replies.push(render(&reply));
        if immediate {
            break;
        }
    }
    replies
}

#[tokio::test]
async fn recorded_sequences_match_their_snapshots() {
    let (addr, clock) = start_processor().await;
    let dir = root().join("tests/fixtures/grpc");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "fixtures missing in {}", dir.display());
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let fixture: Fixture =
            serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let replies = replay(addr, &clock, &fixture).await;
        insta::assert_yaml_snapshot!(name, replies);
    }
}
