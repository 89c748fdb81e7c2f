//! Which backend holds a stored response. A Responses API response is kept by the provider that
//! made it (`store` is true by default), and only that provider can answer `GET`/`DELETE
//! /v1/responses/{id}` or continue it (`previous_response_id`). Ids are the provider's and are
//! passed to the client unchanged, so the gateway remembers, when a response ends, which
//! backend (and for which client model and owner) served it; the requests naming it later go
//! there.
//!
//! The memory is this process's and bounded (the oldest forgotten first): after a restart, on
//! another replica, or past [`MAX_PINS`] newer responses, an id is unknown. Then a request that
//! needs a backend is routed to the only backend serving the Responses API if there is one,
//! else answered 404; a request continuing an unknown id is routed by its model as usual.
//!
//! Ids are capabilities at the provider, and behind a gateway every client shares the
//! gateway's key: a response remembered with an owner (the verified identity, else the user
//! header) is found only by requests of that owner; another gets the 404 an unknown id gets.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Most ids remembered (about 100 bytes each).
pub const MAX_PINS: usize = 100_000;

/// Where a stored response lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The AIServiceBackend that served it (`namespace/name`).
    pub backend: String,
    /// The client's model (Envoy Gateway's routes match on it).
    pub model: String,
    /// Who made it (empty: anyone may name it).
    pub owner: String,
}

/// The remembered ids.
#[derive(Debug, Default)]
pub struct Pins {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<String, Pin>,
    order: VecDeque<String>,
}

impl Pins {
    /// Remembers that `id` lives at `pin.backend`.
    pub fn remember(&self, id: &str, pin: Pin) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.by_id.insert(id.to_string(), pin).is_none() {
            g.order.push_back(id.to_string());
        }
        while g.order.len() > MAX_PINS {
            if let Some(old) = g.order.pop_front() {
                g.by_id.remove(&old);
            }
        }
    }

    /// Where `id` lives, for a request of `owner`.
    pub fn find(&self, id: &str, owner: &str) -> Option<Pin> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.by_id
            .get(id)
            .filter(|p| p.owner.is_empty() || p.owner == owner)
            .cloned()
    }
}

/// The owner of a request: its verified identity's values, else its user header's value.
pub fn owner(identity: &[(String, String)], user: &str) -> String {
    if identity.is_empty() {
        return user.to_string();
    }
    identity
        .iter()
        .map(|(h, v)| format!("{h}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// The id a stored-response path names (`/v1/responses/{id}[/...][?...]`).
pub fn id_of(path: &str) -> &str {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let rest = path.strip_prefix("/v1/responses/").unwrap_or("");
    rest.split('/').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(backend: &str, owner: &str) -> Pin {
        Pin {
            backend: backend.into(),
            model: "m".into(),
            owner: owner.into(),
        }
    }

    #[test]
    fn remembered_for_their_owner_and_bounded() {
        let pins = Pins::default();
        pins.remember("resp_1", pin("ns/a", "alice"));
        pins.remember("resp_2", pin("ns/b", ""));
        assert_eq!(pins.find("resp_1", "alice").unwrap().backend, "ns/a");
        assert_eq!(pins.find("resp_1", "bob"), None);
        assert_eq!(pins.find("resp_2", "bob").unwrap().backend, "ns/b");
        for i in 0..MAX_PINS {
            pins.remember(&format!("r{i}"), pin("ns/a", ""));
        }
        assert_eq!(pins.find("resp_1", "alice"), None);
        assert!(pins.find("r0", "").is_some());
        assert!(pins.inner.lock().unwrap().order.len() <= MAX_PINS);
    }

    #[test]
    fn ids_and_owners() {
        assert_eq!(id_of("/v1/responses/resp_1"), "resp_1");
        assert_eq!(id_of("/v1/responses/resp_1/input_items?limit=2"), "resp_1");
        assert_eq!(id_of("/v1/responses/resp_1?x"), "resp_1");
        assert_eq!(owner(&[], "u"), "u");
        assert_eq!(
            owner(&[("x-user-id".into(), "a".into())], "ignored"),
            "x-user-id=a"
        );
    }
}
