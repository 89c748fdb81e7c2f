//! Golden usage extraction: response bodies and streams shaped like real Fireworks and OpenAI
//! traffic (tests/fixtures/usage) -> what the gateway reads from them (snapshots).

use std::time::Instant;

use ai_extproc::llm::{
    Chat, CohereRerank, Completions, Embeddings, Family, Images, Messages, Rerank, Responses,
    SseReader,
};
use serde_json::json;

use crate::root;

#[test]
fn fixtures_match_their_snapshots() {
    let dir = root().join("tests/fixtures/usage");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 17);
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&file).unwrap();
        // Each fixture is read by its family, as the gateway would.
        let family: &'static dyn Family = if name.contains("completion") && !name.contains("chat") {
            &Completions
        } else if name.contains("embeddings") {
            &Embeddings
        } else if name.contains("responses") {
            &Responses
        } else if name.contains("anthropic") {
            &Messages
        } else if name.contains("cohere_rerank") {
            &CohereRerank
        } else if name.contains("rerank") {
            &Rerank
        } else if name.contains("images") {
            &Images
        } else {
            &Chat
        };
        let read = if name.ends_with(".sse") {
            let mut r = SseReader::new(family);
            let now = Instant::now();
            // Chunked oddly on purpose: 7-byte pieces.
            for piece in bytes.chunks(7) {
                r.feed(piece, now);
            }
            r.finish(now);
            let s = r.state;
            json!({"usage": s.usage.map(|u| format!("{u:?}")), "model": s.model, "id": s.id, "events": s.events,
                   "token_events": s.token_events, "malformed": s.malformed, "done": s.done})
        } else {
            let info = family.response_info(&bytes);
            json!({"usage": info.usage.map(|u| format!("{u:?}")), "model": info.model, "id": info.id})
        };
        insta::assert_yaml_snapshot!(format!("usage__{name}"), read);
    }
}
