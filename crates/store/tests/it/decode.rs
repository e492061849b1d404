//! Content-Encoding decoding for the stored copy, bounded.

use crate::common::fixture;
use mcptap_flow::{BodyState, CapturedBody, Headers};
use mcptap_store::{decode_body, Decoded};
use std::io::Write;

fn ce(v: &str) -> Headers {
    [("Content-Encoding", v)].into_iter().collect()
}

const JSON: &[u8] =
    br#"{"access_token":"br-or-zstd-token","token_type":"Bearer","expires_in":3600}"#;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn each_encoding_decodes_and_is_noted() {
    let zlib = {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(JSON).unwrap();
        e.finish().unwrap()
    };
    let raw_deflate = {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(JSON).unwrap();
        e.finish().unwrap()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("gzip", gzip(JSON)),
        ("x-gzip", gzip(JSON)),
        ("deflate", zlib),
        ("deflate", raw_deflate),
        ("br", std::fs::read(fixture("token.json.br")).unwrap()),
        ("zstd", std::fs::read(fixture("token.json.zst")).unwrap()),
        (
            "ZSTD",
            ruzstd::encoding::compress_to_vec(JSON, ruzstd::encoding::CompressionLevel::Fastest),
        ),
        ("identity, gzip", gzip(JSON)),
    ];
    for (enc, wire) in cases {
        let mut body = CapturedBody::complete(wire.clone());
        let got = decode_body(&mut body, &ce(enc), 1 << 20);
        let name = enc.to_ascii_lowercase().replace("identity, ", "");
        assert_eq!(
            got,
            Decoded::Decoded {
                from: name.clone(),
                cut: false
            },
            "{enc}"
        );
        assert_eq!(&body.bytes[..], JSON, "{enc}");
        assert_eq!(body.encoding.as_deref(), Some(name.as_str()), "{enc}");
        assert_eq!(
            body.total_len,
            wire.len() as u64,
            "{enc}: total_len stays the wire length"
        );
        assert!(!body.truncated);
        // Idempotent.
        assert_eq!(
            decode_body(&mut body, &ce(enc), 1 << 20),
            Decoded::Unchanged
        );
    }
}

#[test]
fn stacked_encodings_are_undone_in_reverse() {
    let wire = gzip(&gzip(JSON));
    let mut body = CapturedBody::complete(wire);
    let headers: Headers = [("content-encoding", "gzip"), ("content-encoding", "gzip")]
        .into_iter()
        .collect();
    assert!(matches!(
        decode_body(&mut body, &headers, 1 << 20),
        Decoded::Decoded { .. }
    ));
    assert_eq!(&body.bytes[..], JSON);
    assert_eq!(body.encoding.as_deref(), Some("gzip, gzip"));
}

#[test]
fn bombs_are_cut_at_the_limit_and_marked() {
    // 256 MiB of zeros, about 250 KiB gzip'd.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        e.write_all(&zeros).unwrap();
    }
    let gz = e.finish().unwrap();
    assert!(gz.len() < 2 << 20);
    let limit = 1 << 20;
    let mut bombs = vec![("gzip", gz)];
    bombs.push(("br", std::fs::read(fixture("bomb-64MiB.br")).unwrap()));
    bombs.push(("zstd", std::fs::read(fixture("bomb-64MiB.zst")).unwrap()));
    for (enc, wire) in bombs {
        let mut body = CapturedBody::complete(wire.clone());
        let got = decode_body(&mut body, &ce(enc), limit);
        assert_eq!(
            got,
            Decoded::Decoded {
                from: enc.into(),
                cut: true
            },
            "{enc}"
        );
        assert_eq!(body.bytes.len(), limit, "{enc}: cut at the body limit");
        assert!(body.truncated, "{enc}: marked");
        assert_eq!(body.total_len, wire.len() as u64);
        assert_eq!(body.encoding.as_deref(), Some(enc));
    }
}

#[test]
fn what_does_not_decode_is_left_as_it_was() {
    // Corrupt data: kept raw, not marked decoded.
    let mut body = CapturedBody::complete(&b"definitely not gzip"[..]);
    let got = decode_body(&mut body, &ce("gzip"), 1 << 20);
    assert!(matches!(got, Decoded::Failed { .. }), "{got:?}");
    assert_eq!(&body.bytes[..], b"definitely not gzip");
    assert_eq!(body.encoding, None);
    // Unknown encoding.
    let mut body = CapturedBody::complete(&b"x"[..]);
    assert_eq!(
        decode_body(&mut body, &ce("compress"), 10),
        Decoded::Unsupported("compress".into())
    );
    // A body cut on the wire keeps the prefix that decodes.
    let wire = gzip(&JSON.repeat(200));
    let mut body = CapturedBody {
        bytes: wire[..wire.len() / 2].to_vec().into(),
        total_len: wire.len() as u64,
        truncated: true,
        state: BodyState::Complete,
        encoding: None,
    };
    assert!(matches!(
        decode_body(&mut body, &ce("gzip"), 1 << 20),
        Decoded::Decoded { .. }
    ));
    assert!(!body.bytes.is_empty() && JSON.repeat(200).starts_with(&body.bytes));
    assert!(body.truncated);
    // Garbage for every decoder never panics.
    for enc in ["gzip", "deflate", "br", "zstd"] {
        for junk in [
            &b""[..],
            b"\x1f\x8b",
            b"\x28\xb5\x2f\xfd\xff\xff\xff\xff",
            &[0xffu8; 100],
        ] {
            let mut body = CapturedBody::complete(junk.to_vec());
            let _ = decode_body(&mut body, &ce(enc), 1024);
        }
    }
}
