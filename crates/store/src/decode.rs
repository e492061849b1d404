//! `Content-Encoding` decoding for the stored copy of a body, bounded by the body limit so that a
//! decompression bomb costs at most the limit.
//!
//! After decoding, [`CapturedBody::encoding`] names the encoding the bytes were decoded *from*
//! (`Some("gzip")`); `None` means the bytes are as they crossed the wire (identity, an encoding
//! mcptap does not know, or data that did not decode). This makes decoding idempotent: a body
//! whose `encoding` is set is never decoded twice. `total_len` stays the number of bytes on the
//! wire.

use mcptap_flow::{BodyState, CapturedBody, Headers};
use std::io::Read;

/// What [`decode_body`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Nothing to do: no `Content-Encoding`, `identity`, an empty body, or already decoded.
    Unchanged,
    /// Decoded from this encoding (as the header spells it, normalised: `gzip, br`).
    Decoded {
        /// The encoding(s) removed.
        from: String,
        /// True when the decoded data went past the body limit and was cut there (a bomb, or
        /// just a large body); the body is then marked `truncated`.
        cut: bool,
    },
    /// An encoding mcptap does not decode (`compress`, `exi`…); the bytes are left as they were.
    Unsupported(String),
    /// The data did not decode; the bytes are left as they were.
    Failed {
        /// The encoding the header claimed.
        encoding: String,
        /// The decoder's complaint.
        reason: String,
    },
}

/// Decodes `body` in place according to the `Content-Encoding` fields in `headers`, keeping at
/// most `limit` decoded bytes. A body that was already cut on the wire (`truncated`, or not
/// `Complete`) keeps whatever prefix decodes.
pub fn decode_body(body: &mut CapturedBody, headers: &Headers, limit: usize) -> Decoded {
    if body.encoding.is_some() || body.bytes.is_empty() {
        return Decoded::Unchanged;
    }
    let codings: Vec<String> = headers
        .get_all("content-encoding")
        .flat_map(|v| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    if codings.is_empty() {
        return Decoded::Unchanged;
    }
    let name = codings.join(", ");
    if let Some(bad) = codings.iter().find(|c| coding(c).is_none()) {
        return Decoded::Unsupported(bad.clone());
    }
    // Codings are listed in the order they were applied: undo them from the last.
    let mut reader: Box<dyn Read + '_> = Box::new(&body.bytes[..]);
    for c in codings.iter().rev() {
        reader = match coding(c) {
            Some(Coding::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            Some(Coding::Deflate) => deflate_reader(reader),
            Some(Coding::Brotli) => Box::new(brotli_decompressor::Decompressor::new(reader, 8192)),
            Some(Coding::Zstd) => match ruzstd::decoding::StreamingDecoder::new(reader) {
                Ok(d) => Box::new(d),
                Err(e) => {
                    return Decoded::Failed {
                        encoding: name,
                        reason: e.to_string(),
                    }
                }
            },
            None => return Decoded::Unsupported(c.clone()),
        };
    }
    let (out, err) = read_bounded(reader, limit);
    let wire_cut = body.truncated || body.state != BodyState::Complete;
    if let Some(e) = err {
        // A body cut on the wire ends mid-stream: keep the prefix. Anything else is corrupt.
        if !wire_cut || out.is_empty() {
            return Decoded::Failed {
                encoding: name,
                reason: e.to_string(),
            };
        }
    }
    let cut = out.len() > limit;
    let mut out = out;
    out.truncate(limit);
    body.bytes = out.into();
    body.truncated |= cut;
    body.encoding = Some(name.clone());
    Decoded::Decoded { from: name, cut }
}

enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

fn coding(c: &str) -> Option<Coding> {
    match c {
        "gzip" | "x-gzip" => Some(Coding::Gzip),
        "deflate" => Some(Coding::Deflate),
        "br" => Some(Coding::Brotli),
        "zstd" => Some(Coding::Zstd),
        _ => None,
    }
}

/// HTTP `deflate` is meant to be zlib-wrapped, but some servers send raw deflate: look at the
/// first two bytes to tell.
fn deflate_reader<'a>(inner: Box<dyn Read + 'a>) -> Box<dyn Read + 'a> {
    let mut inner = std::io::BufReader::new(inner);
    let head = std::io::BufRead::fill_buf(&mut inner)
        .map(|b| b.get(..2).map(|h| [h[0], h[1]]))
        .ok()
        .flatten();
    let zlib =
        head.is_some_and(|[a, b]| a & 0x0f == 8 && (u16::from(a) << 8 | u16::from(b)) % 31 == 0);
    if zlib {
        Box::new(flate2::read::ZlibDecoder::new(inner))
    } else {
        Box::new(flate2::read::DeflateDecoder::new(inner))
    }
}

/// Reads at most `limit + 1` bytes (one more than kept, to know whether the limit was passed).
fn read_bounded(reader: impl Read, limit: usize) -> (Vec<u8>, Option<std::io::Error>) {
    let mut out = Vec::new();
    let max = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut take = reader.take(max);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match take.read(&mut chunk) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (out, Some(e)),
        }
    }
}
