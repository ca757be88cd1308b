//! The chunked decoder (backends' responses, clients' request bodies) and the chunk
//! encoder (what evenkeel sends), against a strict reference for RFC 9112 §7.1.
//!
//! Properties, for any bytes (the first input byte seeds where reads are split):
//! - decoding gives the same body and the same end whether the bytes come in one read
//!   or in many (and refuses both ways alike);
//! - what evenkeel accepts, the strict reference accepts too, with the same body and
//!   the same end: evenkeel is never the more lenient of two parsers (the shape of a
//!   smuggling bug);
//! - the body's length is the sum of its chunk sizes;
//! - any pieces evenkeel encodes as chunks decode back to the same bytes, ending
//!   exactly at the encoding's end.
#![no_main]

use evenkeel::fuzzing::{decode_body, encode_chunks, Chunk, Framing};
use libfuzzer_sys::fuzz_target;

/// A strict chunked-body reader: `Some((body, consumed, sizes))`, or `None` when the
/// bytes are not a complete, valid chunked body. Chunk extensions are accepted as
/// `;` followed by anything but CR and LF; trailer fields must contain a colon.
fn reference(bytes: &[u8]) -> Option<(Vec<u8>, usize, u64)> {
    let mut at = 0;
    let mut body = Vec::new();
    let mut total = 0u64;
    let line = |at: usize| -> Option<(&[u8], usize)> {
        let end = bytes[at..].windows(2).position(|w| w == b"\r\n")?;
        let line = &bytes[at..at + end];
        if line.contains(&b'\n') || line.contains(&b'\r') {
            return None;
        }
        Some((line, at + end + 2))
    };
    loop {
        let (size_line, next) = line(at)?;
        let digits = size_line
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if digits == 0 || digits > 16 {
            return None;
        }
        let rest = &size_line[digits..];
        if !(rest.is_empty() || rest[0] == b';' || rest[0] == b' ' || rest[0] == b'\t') {
            return None;
        }
        let size = u64::from_str_radix(std::str::from_utf8(&size_line[..digits]).ok()?, 16).ok()?;
        at = next;
        if size == 0 {
            loop {
                let (field, next) = line(at)?;
                at = next;
                if field.is_empty() {
                    return Some((body, at, total));
                }
                if !field.contains(&b':') {
                    return None;
                }
            }
        }
        let end = at.checked_add(usize::try_from(size).ok()?)?;
        if end + 2 > bytes.len() || &bytes[end..end + 2] != b"\r\n" {
            return None;
        }
        body.extend_from_slice(&bytes[at..end]);
        total += size;
        at = end + 2;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, bytes)) = data.split_first() else {
        return;
    };
    let chunked = Framing::Chunked(Chunk::Size);
    let whole = decode_body(chunked, &[bytes]);
    // Reads split every `step` bytes.
    let step = usize::from(seed % 7) + 1;
    let pieces: Vec<&[u8]> = bytes.chunks(step).collect();
    let split = decode_body(chunked, &pieces);
    if whole.body.is_ok() || split.body.is_ok() {
        assert_eq!(whole, split, "split every {step}");
    }
    if let Ok(body) = &whole.body {
        let (expected, consumed, total) =
            reference(bytes).unwrap_or_else(|| panic!("accepted, but not a strict chunked body"));
        assert_eq!(body, &expected);
        assert_eq!(
            bytes.len() - whole.rest,
            consumed,
            "the body ends elsewhere"
        );
        assert_eq!(body.len() as u64, total);
    }
    // The encoder: the input cut into pieces at the seed's step.
    let encoded = encode_chunks(&pieces);
    let decoded = decode_body(chunked, &[&encoded]);
    assert_eq!(decoded.body.as_deref(), Ok(bytes), "round trip");
    assert_eq!(decoded.rest, 0);
});
