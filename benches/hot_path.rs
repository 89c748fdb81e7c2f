//! The processor's own per-request work, in isolation: request parsing + in-place model
//! rewrite, SSE reading, usage extraction. Throughput is per byte of body, so a regression in
//! the hot path shows as ns/KB, independent of the gRPC and Envoy costs `make bench` measures.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use ai_extproc::llm::{
    apply_edits, decode_all, model_edit, parse_request, Chat, Family, Limits, SseReader,
    UsageChunkFilter,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn chat_body(image_bytes: usize) -> Vec<u8> {
    let image = "A".repeat(image_bytes);
    format!(
        r#"{{"model":"qwen-thinking","stream":true,"messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":[{{"type":"text","text":"Tell me about the weather in Lisbon in spring, briefly."}},{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{image}"}}}}]}}],"temperature":0.2,"top_k":40}}"#
    )
    .into_bytes()
}

fn sse_stream(events: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..events {
        s.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"accounts/fireworks/models/q\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"word{i} \"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    s.push_str("data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":100,\"total_tokens\":110}}\n\ndata: [DONE]\n\n");
    s.into_bytes()
}

fn request(c: &mut Criterion) {
    let mut group = c.benchmark_group("request");
    for (name, body) in [("1KB", chat_body(600)), ("9MB", chat_body(9 * 1024 * 1024))] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("parse_and_rewrite/{name}"), |b| {
            b.iter(|| {
                let info = parse_request(&Chat, black_box(&body)).unwrap();
                let mut edits = vec![model_edit(
                    &info,
                    "accounts/fireworks/models/qwen3-vl-30b-a3b-thinking",
                )];
                edits.extend(Chat.usage_edit(&body, &info));
                black_box(apply_edits(&body, edits))
            })
        });
    }
    group.finish();
}

fn response(c: &mut Criterion) {
    let mut group = c.benchmark_group("response");
    let json = br#"{"id":"chatcmpl-9508df2d129c403f97a59319bb857925","object":"chat.completion","created":1768319392,"model":"accounts/fireworks/models/qwen3-vl-235b-a22b-instruct","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today? I can answer questions, write, summarise and more."},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"total_tokens":46,"completion_tokens":36,"prompt_tokens_details":{"cached_tokens":0}}}"#;
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.bench_function("usage_from_json", |b| {
        b.iter(|| black_box(Chat.response_info(black_box(json))))
    });
    let stream = sse_stream(100);
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("sse_100_events_in_512B_chunks", |b| {
        b.iter(|| {
            let mut r = SseReader::new(&Chat);
            let now = Instant::now();
            for chunk in stream.chunks(512) {
                r.feed(black_box(chunk), now);
            }
            r.finish(now);
            black_box(r.state.usage)
        })
    });
    // The same stream read while the usage-only chunk (asked for by the gateway) is taken out
    // of what the client gets: the cost of keeping the OpenAI contract, beside the row above.
    group.bench_function("sse_100_events_in_512B_chunks_usage_chunk_dropped", |b| {
        b.iter(|| {
            let mut r = SseReader::new(&Chat);
            let mut f = UsageChunkFilter::default();
            let now = Instant::now();
            let mut out = 0;
            for chunk in stream.chunks(512) {
                out += f
                    .feed(black_box(chunk), &mut r, now)
                    .map_or(chunk.len(), |b| b.len());
            }
            r.finish(now);
            black_box((r.state.usage, out))
        })
    });
    group.finish();
}

/// Decoding a compressed request body within the gateway's bounds (size and ratio).
fn decode(c: &mut Criterion) {
    use std::io::Write;
    let mut group = c.benchmark_group("decode");
    let body = chat_body(600).repeat(16);
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&body).unwrap();
    let gz = e.finish().unwrap();
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("gzip_request_16KB_bounded", |b| {
        b.iter(|| black_box(decode_all("gzip", black_box(&gz), Limits::bytes(16 << 20)).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, request, response, decode);
criterion_main!(benches);
