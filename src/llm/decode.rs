//! Streaming decoders for `content-encoding` (gzip, deflate, br), so usage can be read from
//! compressed responses while the client still gets the bytes as sent. Output is bounded
//! (decompression bombs); past the bound the decoder stops and reports it.

use std::io::Write;

/// Most decoded bytes kept per response.
pub const MAX_DECODED: usize = 64 * 1024 * 1024;

/// A content decoder fed chunk by chunk.
pub enum Decoder {
    Gzip(flate2::write::MultiGzDecoder<Vec<u8>>),
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>),
    Brotli(Box<brotli::DecompressorWriter<Vec<u8>>>),
}

/// Why decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("content-encoding {0:?} is not supported")]
    Unsupported(String),
    #[error("the body is not valid {0}")]
    Corrupt(&'static str),
    #[error("the decoded body exceeds {MAX_DECODED} bytes")]
    TooLarge,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Decoder {
    /// A decoder for a `content-encoding` value; `None` for identity.
    pub fn for_encoding(encoding: &str) -> Result<Option<Self>, DecodeError> {
        match encoding.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Ok(None),
            "gzip" | "x-gzip" => Ok(Some(Self::Gzip(flate2::write::MultiGzDecoder::new(
                Vec::new(),
            )))),
            "deflate" => Ok(Some(Self::Deflate(flate2::write::ZlibDecoder::new(
                Vec::new(),
            )))),
            "br" => Ok(Some(Self::Brotli(Box::new(
                brotli::DecompressorWriter::new(Vec::new(), 4096),
            )))),
            other => Err(DecodeError::Unsupported(other.to_string())),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Gzip(_) => "gzip",
            Self::Deflate(_) => "deflate",
            Self::Brotli(_) => "br",
        }
    }

    /// Decodes a chunk; returns the bytes decoded so far and not yet returned.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let name = self.name();
        let written = match self {
            Self::Gzip(d) => d.write_all(chunk).and_then(|_| d.flush()),
            Self::Deflate(d) => d.write_all(chunk).and_then(|_| d.flush()),
            Self::Brotli(d) => d.write_all(chunk).and_then(|_| d.flush()),
        };
        written.map_err(|_| DecodeError::Corrupt(name))?;
        let out = match self {
            Self::Gzip(d) => std::mem::take(d.get_mut()),
            Self::Deflate(d) => std::mem::take(d.get_mut()),
            Self::Brotli(d) => std::mem::take(d.get_mut()),
        };
        Ok(out)
    }
}

/// Decodes a whole body (bounded).
pub fn decode_all(encoding: &str, body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let Some(mut d) = Decoder::for_encoding(encoding)? else {
        return Ok(body.to_vec());
    };
    let mut out = Vec::new();
    for chunk in body.chunks(64 * 1024) {
        out.extend(d.feed(chunk)?);
        if out.len() > MAX_DECODED {
            return Err(DecodeError::TooLarge);
        }
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

    #[test]
    fn gzip_deflate_brotli_round_trip_in_pieces() {
        let data = br#"{"usage":{"prompt_tokens":3}}"#.repeat(50);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&data).unwrap();
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(&data).unwrap();
        }
        for (enc, body) in [
            ("gzip", gzip(&data)),
            ("deflate", z.finish().unwrap()),
            ("br", br),
        ] {
            assert_eq!(decode_all(enc, &body).unwrap(), data, "{enc}");
            let mut d = Decoder::for_encoding(enc).unwrap().unwrap();
            let mut out = Vec::new();
            for piece in body.chunks(7) {
                out.extend(d.feed(piece).unwrap());
            }
            assert_eq!(out, data, "{enc} in pieces");
        }
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            decode_all("zstd", b"x"),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(matches!(
            decode_all("gzip", b"definitely not gzip"),
            Err(DecodeError::Corrupt("gzip"))
        ));
        assert_eq!(decode_all("identity", b"x").unwrap(), b"x");
        let bomb = gzip(&vec![0u8; MAX_DECODED + 1024]);
        assert_eq!(decode_all("gzip", &bomb), Err(DecodeError::TooLarge));
    }
}
