//! Who a request is, as the usage record says it: the request id and the user. Both come from
//! headers a client can write, so neither is copied unchecked.

use std::fmt::Write;

use rand::Rng;

use super::headers::Headers;

/// Longest identity value (a user id) kept as sent.
pub const MAX_IDENTITY: usize = 256;
/// Longest request id accepted (Envoy's are 36-character UUIDs).
const MAX_REQUEST_ID: usize = 128;

/// The request's id. In the bootstraps ai-extproc renders, Envoy replaces a client's
/// `x-request-id` with its own (and returns it to the client); beside another Envoy the id is
/// checked here: a missing one, or one that is not a plain token of at most 128 characters, is
/// replaced by a generated id (logged), so that no client can forge or bloat billing ids.
pub fn request_id(headers: &Headers) -> String {
    match headers.get("x-request-id") {
        Some(id) if is_token(id) => id.to_string(),
        sent => {
            let id = generated_id();
            tracing::debug!(
                sent_len = sent.map_or(0, str::len),
                %id,
                "no usable x-request-id; generated one"
            );
            id
        }
    }
}

fn is_token(id: &str) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn generated_id() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// An identity value (a user id) for usage records: as sent up to [`MAX_IDENTITY`] bytes;
/// a longer one is cut and ends with a hash of the whole value, so two long values that share
/// a beginning stay two identities.
pub fn capped(value: &str) -> String {
    if value.len() <= MAX_IDENTITY {
        return value.to_string();
    }
    let mut cut = MAX_IDENTITY - 20;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…{:016x}", &value[..cut], fnv1a(value.as_bytes()))
}

/// FNV-1a: stable across builds and releases, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_plain_and_short() {
        let id = |v: &str| request_id(&Headers::from([("x-request-id", v)]));
        assert_eq!(
            id("2f1c0a9e-7d5b-4f7e-9a55-0e1f2d3c4b5a"),
            "2f1c0a9e-7d5b-4f7e-9a55-0e1f2d3c4b5a"
        );
        for bad in ["", "has space", "a\u{0}b", &"x".repeat(129)] {
            let got = id(bad);
            assert_ne!(got, bad);
            assert_eq!(got.len(), 32, "{got}");
        }
        assert_eq!(request_id(&Headers::default()).len(), 32);
    }

    #[test]
    fn long_identities_are_cut_but_stay_distinct() {
        assert_eq!(capped("user123"), "user123");
        let a = format!("{}a", "u".repeat(50_000));
        let b = format!("{}b", "u".repeat(50_000));
        let (ca, cb) = (capped(&a), capped(&b));
        assert!(ca.len() <= MAX_IDENTITY, "{}", ca.len());
        assert_ne!(ca, cb);
        assert_eq!(capped(&a), ca, "stable");
        // Exactly: 236 bytes, an ellipsis, the hash of the whole.
        assert_eq!(ca, format!("{}…{:016x}", &a[..236], fnv1a(a.as_bytes())));
        assert_eq!(ca.len(), 255);
        // Never cut inside a character: back to the boundary before byte 236.
        let euros = "€".repeat(1000);
        assert_eq!(capped(&euros).len(), 234 + "…".len() + 16);
        assert!(capped(&euros).starts_with(&"€".repeat(78)));
    }

    #[test]
    fn fnv1a_is_the_standard_one() {
        // Published FNV-1a 64-bit test vectors: the hash must not change between releases.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
