//! Streaming decoders for `content-encoding` (gzip, deflate, br): compressed request bodies
//! are decoded for the provider, compressed responses for their usage (the client still gets
//! the bytes as sent).
//!
//! Compressed bytes are a lever for a client: 60 KB of gzip can inflate to 60 MB. So output is
//! bounded twice, as it is produced rather than after: by a size (`Limits::max_bytes`) and by
//! a ratio to the input consumed so far (`Limits::max_ratio`, above `RATIO_FLOOR`). The decoder
//! writes into a sink that refuses the first byte past either bound, so a bomb costs at most
//! the bound's worth of work, never its full size.

use std::io::Write;

/// Most decoded bytes kept per response read for usage.
pub const MAX_DECODED: usize = 64 * 1024 * 1024;
/// Below this many decoded bytes any compression ratio is accepted (small bodies compress
/// very well and cost nothing).
pub const RATIO_FLOOR: usize = 1024 * 1024;
/// Highest ratio of decoded to compressed bytes accepted above the floor: JSON compresses
/// 5-20×, base64 images hardly at all; 100× is a bomb, not a request.
pub const MAX_RATIO: usize = 100;
/// Input fed per step, so the ratio bound follows the input closely.
const STEP: usize = 8 * 1024;

/// Bounds on what a compressed body may inflate to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most decoded bytes in all.
    pub max_bytes: usize,
    /// Most decoded bytes per compressed byte, once past `RATIO_FLOOR`.
    pub max_ratio: usize,
}

impl Limits {
    /// A size bound with the default ratio bound.
    pub const fn bytes(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            max_ratio: MAX_RATIO,
        }
    }

    /// Output allowed after `consumed` compressed bytes.
    fn allowed(self, consumed: usize) -> usize {
        self.max_bytes
            .min(RATIO_FLOOR.max(consumed.saturating_mul(self.max_ratio)))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::bytes(MAX_DECODED)
    }
}

/// Why decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("content-encoding {0:?} is not supported")]
    Unsupported(String),
    #[error("the body is not valid {0}")]
    Corrupt(&'static str),
    #[error("the decoded body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("the body inflates more than {0} times")]
    RatioTooHigh(usize),
}

/// Decoded output with a moving bound: writes past it fail, which stops the decoder.
#[derive(Debug, Default)]
struct Sink {
    out: Vec<u8>,
    /// Bytes written in all (`out` is emptied as it is taken).
    written: usize,
    allowed: usize,
    exceeded: bool,
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.written + data.len() > self.allowed {
            self.exceeded = true;
            return Err(std::io::Error::other("decoded size bound"));
        }
        self.written += data.len();
        self.out.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Inner {
    Gzip(flate2::write::MultiGzDecoder<Sink>),
    Deflate(flate2::write::ZlibDecoder<Sink>),
    Brotli(Box<brotli::DecompressorWriter<Sink>>),
}

/// A content decoder fed chunk by chunk, within [`Limits`].
pub struct Decoder {
    inner: Inner,
    limits: Limits,
    consumed: usize,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Decoder {
    /// A decoder for a `content-encoding` value; `None` for identity.
    pub fn for_encoding(encoding: &str, limits: Limits) -> Result<Option<Self>, DecodeError> {
        let sink = Sink::default();
        let inner = match encoding.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => return Ok(None),
            "gzip" | "x-gzip" => Inner::Gzip(flate2::write::MultiGzDecoder::new(sink)),
            "deflate" => Inner::Deflate(flate2::write::ZlibDecoder::new(sink)),
            "br" => Inner::Brotli(Box::new(brotli::DecompressorWriter::new(sink, 4096))),
            other => return Err(DecodeError::Unsupported(other.to_string())),
        };
        Ok(Some(Self {
            inner,
            limits,
            consumed: 0,
        }))
    }

    fn name(&self) -> &'static str {
        match self.inner {
            Inner::Gzip(_) => "gzip",
            Inner::Deflate(_) => "deflate",
            Inner::Brotli(_) => "br",
        }
    }

    fn sink(&mut self) -> &mut Sink {
        match &mut self.inner {
            Inner::Gzip(d) => d.get_mut(),
            Inner::Deflate(d) => d.get_mut(),
            Inner::Brotli(d) => d.get_mut(),
        }
    }

    /// Decodes a chunk; returns the bytes decoded so far and not yet returned.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, DecodeError> {
        for piece in chunk.chunks(STEP) {
            self.consumed += piece.len();
            let allowed = self.limits.allowed(self.consumed);
            self.sink().allowed = allowed;
            let written = match &mut self.inner {
                Inner::Gzip(d) => d.write_all(piece).and_then(|_| d.flush()),
                Inner::Deflate(d) => d.write_all(piece).and_then(|_| d.flush()),
                Inner::Brotli(d) => d.write_all(piece).and_then(|_| d.flush()),
            };
            if written.is_err() {
                let limits = self.limits;
                return Err(match self.sink().exceeded {
                    true if allowed >= limits.max_bytes => DecodeError::TooLarge(limits.max_bytes),
                    true => DecodeError::RatioTooHigh(limits.max_ratio),
                    false => DecodeError::Corrupt(self.name()),
                });
            }
        }
        Ok(std::mem::take(&mut self.sink().out))
    }
}

/// Decodes a whole body within `limits`.
pub fn decode_all(encoding: &str, body: &[u8], limits: Limits) -> Result<Vec<u8>, DecodeError> {
    let Some(mut d) = Decoder::for_encoding(encoding, limits)? else {
        return Ok(body.to_vec());
    };
    let mut out = Vec::new();
    for chunk in body.chunks(64 * 1024) {
        out.extend(d.feed(chunk)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(data).unwrap();
        }
        br
    }

    #[test]
    fn gzip_deflate_brotli_round_trip_in_pieces() {
        let data = br#"{"usage":{"prompt_tokens":3}}"#.repeat(50);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&data).unwrap();
        for (enc, body) in [
            ("gzip", gzip(&data)),
            ("deflate", z.finish().unwrap()),
            ("br", brotli(&data)),
        ] {
            assert_eq!(
                decode_all(enc, &body, Limits::default()).unwrap(),
                data,
                "{enc}"
            );
            let mut d = Decoder::for_encoding(enc, Limits::default())
                .unwrap()
                .unwrap();
            let mut out = Vec::new();
            for piece in body.chunks(7) {
                out.extend(d.feed(piece).unwrap());
            }
            assert_eq!(out, data, "{enc} in pieces");
        }
    }

    #[test]
    fn refusals() {
        let any = Limits::default();
        assert!(matches!(
            decode_all("zstd", b"x", any),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(matches!(
            decode_all("gzip", b"definitely not gzip", any),
            Err(DecodeError::Corrupt("gzip"))
        ));
        assert_eq!(decode_all("identity", b"x", any).unwrap(), b"x");
    }

    #[test]
    fn bombs_stop_at_the_bound_not_at_their_size() {
        // 60 MB of zeros: ~60 KB of gzip, a few KB of brotli.
        let zeros = vec![0u8; 60 * 1024 * 1024];
        for (enc, bomb) in [("gzip", gzip(&zeros)), ("br", brotli(&zeros))] {
            let ratio = decode_all(enc, &bomb, Limits::bytes(16 * 1024 * 1024));
            assert_eq!(ratio, Err(DecodeError::RatioTooHigh(MAX_RATIO)), "{enc}");
            let size = decode_all(
                enc,
                &bomb,
                Limits {
                    max_bytes: 4 * 1024 * 1024,
                    max_ratio: usize::MAX,
                },
            );
            assert_eq!(size, Err(DecodeError::TooLarge(4 * 1024 * 1024)), "{enc}");
        }
        // Small bodies may compress as well as they like.
        let small = vec![b'a'; RATIO_FLOOR];
        assert_eq!(
            decode_all("gzip", &gzip(&small), Limits::bytes(16 * 1024 * 1024)).unwrap(),
            small
        );
    }

    #[test]
    fn limits_are_the_documented_ones_and_decoders_name_themselves() {
        // README: 64 MiB read for usage, any ratio below 1 MiB, 100:1 above, fed 8 KiB a step.
        assert_eq!(
            (MAX_DECODED, RATIO_FLOOR, MAX_RATIO, STEP),
            (64 << 20, 1 << 20, 100, 8 << 10)
        );
        for encoding in ["gzip", "deflate", "br"] {
            let d = Decoder::for_encoding(encoding, Limits::default())
                .unwrap()
                .unwrap();
            assert_eq!(format!("{d:?}"), encoding);
        }
    }
}
