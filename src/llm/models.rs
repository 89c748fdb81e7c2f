//! The `/v1/models` and `/v1/models/{id}` answers.

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

/// The model object of `GET /v1/models/{id}` for the path `path`, when `id` is a configured
/// model: `{"id","object":"model","created","owned_by"}`. The id is taken raw or
/// percent-decoded (`accounts%2Ffireworks%2Fmodels%2Fx`), as the OpenAI SDK sends it.
pub fn model_body(models: &[ModelInfo], path: &str) -> Result<Vec<u8>, String> {
    let bare = path.split_once('?').map_or(path, |(p, _)| p);
    let raw = bare.strip_prefix("/v1/models/").unwrap_or(bare);
    let id = percent_decode(raw);
    let Some(m) = models.iter().find(|m| m.id == id) else {
        return Err(id);
    };
    let model = Model {
        id: &m.id,
        object: "model",
        created: m.created,
        owned_by: &m.owned_by,
    };
    Ok(serde_json::to_vec(&model).unwrap_or_default())
}

/// `%XX` escapes decoded; anything else (and a malformed escape) kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_found_by_its_id_raw_or_encoded() {
        let models = [ModelInfo {
            id: "accounts/fireworks/models/x".into(),
            owned_by: "fireworks".into(),
            created: 7,
        }];
        let want = r#"{"id":"accounts/fireworks/models/x","object":"model","created":7,"owned_by":"fireworks"}"#;
        for path in [
            "/v1/models/accounts/fireworks/models/x",
            "/v1/models/accounts%2Ffireworks%2Fmodels%2fx?q=1",
        ] {
            assert_eq!(
                model_body(&models, path).unwrap(),
                want.as_bytes(),
                "{path}"
            );
        }
        assert_eq!(model_body(&models, "/v1/models/y%2").unwrap_err(), "y%2");
    }
}
