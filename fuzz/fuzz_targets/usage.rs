//! Usage extraction from provider bodies, plain and compressed: never panics, bounded, and
//! any body compressed by a real encoder, then decoded chunk by chunk (as Envoy hands it over,
//! cut anywhere), gives back exactly its bytes and the same usage as the body read whole.
//!
//! Arbitrary bytes are decoded too, for panics and bounds only: for an invalid stream the
//! decoders may notice the damage at a different point depending on where it is cut.
#![no_main]

use std::io::Write;

use ai_extproc::llm::{decode_all, Chat, DecodeError, Decoder, Family, Limits, FAMILIES};
use libfuzzer_sys::fuzz_target;

const ENCODINGS: [&str; 3] = ["gzip", "deflate", "br"];

fn encode(encoding: &str, data: &[u8]) -> Vec<u8> {
    match encoding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("in memory");
            e.finish().expect("in memory")
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("in memory");
            e.finish().expect("in memory")
        }
        _ => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(data).expect("in memory");
            }
            out
        }
    }
}

/// `data` decoded in the pieces that `cuts` (sorted offsets) make.
fn piecewise(encoding: &str, data: &[u8], cuts: &[usize]) -> Result<Vec<u8>, DecodeError> {
    let mut decoder = Decoder::for_encoding(encoding, Limits::default())?.expect("an encoding");
    let mut out = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain([&data.len()]) {
        let to = to.clamp(from, data.len());
        out.extend(decoder.feed(&data[from..to])?);
        from = to;
    }
    Ok(out)
}

fuzz_target!(|input: (Vec<u16>, &[u8])| {
    let (cuts, data) = input;
    // Every family's body parser: no panic, the same answer twice.
    for family in FAMILIES {
        assert_eq!(family.response_info(data), family.response_info(data));
    }
    let info = Chat.response_info(data);
    for encoding in ENCODINGS {
        let encoded = encode(encoding, data);
        let mut at: Vec<usize> = cuts
            .iter()
            .map(|&c| usize::from(c) % (encoded.len() + 1))
            .collect();
        at.sort_unstable();
        let every_byte: Vec<usize> = (1..encoded.len()).collect();
        assert_eq!(
            decode_all(encoding, &encoded, Limits::default()).as_deref(),
            Ok(data)
        );
        for cuts in [&at, &every_byte] {
            let decoded = piecewise(encoding, &encoded, cuts);
            assert_eq!(
                decoded.as_deref(),
                Ok(data),
                "{encoding}: a cut changed the bytes"
            );
            assert_eq!(Chat.response_info(&decoded.unwrap_or_default()), info);
        }

        // Arbitrary bytes as a compressed body: no panic, bounded (the limits hold).
        for result in [
            decode_all(encoding, data, Limits::default()),
            piecewise(encoding, data, &at),
        ] {
            if let Ok(decoded) = result {
                assert!(decoded.len() <= Limits::default().max_bytes);
                let _ = Chat.response_info(&decoded);
            }
        }
    }
});
