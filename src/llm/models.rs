//! The `/v1/models` answer.

use serde::Serialize;

use crate::config::ModelInfo;

#[derive(Serialize)]
struct List<'a> {
    object: &'static str,
    data: Vec<Model<'a>>,
}

#[derive(Serialize)]
struct Model<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    owned_by: &'a str,
}

/// `{"object":"list","data":[{"id","object":"model","created","owned_by"}...]}`.
pub fn models_body(models: &[ModelInfo]) -> Vec<u8> {
    let list = List {
        object: "list",
        data: models
            .iter()
            .map(|m| Model {
                id: &m.id,
                object: "model",
                created: m.created,
                owned_by: &m.owned_by,
            })
            .collect(),
    };
    serde_json::to_vec(&list).unwrap_or_default()
}
