//! Large body strings cut out of a JSON object before it is parsed (a journal line, a HAR
//! entry), each decoded once into a buffer of its exact size.
//!
//! `serde_json` unescapes a string that has escapes (a JSON body inside a JSON string is full
//! of `\"`) into a scratch buffer that grows by doubling, then copies it into the `String`: a
//! 4 MB body costs the line, up to 8 MB of scratch and the string at once. Cut out first, the
//! body is one exact allocation next to the text, and what `serde_json` parses is small.
//!
//! The cut is only an optimisation: anything unusual about a string (a bad escape, a lone
//! surrogate, a control character, bytes that are not UTF-8) leaves it in place, and `None`
//! tells the caller to parse the text as it is, so errors and results stay `serde_json`'s.
//! A string cut is checked when it is cut and decoded when the caller asks ([`Cut::decode`]):
//! a reader can let go of the flow before (a flow waiting for its turn) and only then
//! allocate the next one's bodies.
//!
//! Reading a file, the text of a large body is not even held: [`Unescape`] decodes a string's
//! content fed in pieces cut anywhere, so a cutter can measure the string as it streams by
//! ([`Measure`]: its decoded length, and whether it is base64) and the reader decode it from
//! its place in the file afterwards ([`decode_at`]) into a buffer of that size, or, base64,
//! into the bytes ([`B64Sink`]).

/// Strings shorter than this are left to `serde_json`.
pub(crate) const CUT_MIN: usize = 64 * 1024;

/// A JSON object's text with some of its strings taken out.
#[derive(Debug)]
pub(crate) struct Cut {
    /// The text with each cut string replaced by `""`.
    pub text: Vec<u8>,
    /// The strings cut: the index of each one's path in the caller's list, where its content
    /// is in the text it was cut from (between its quotes), and its length decoded.
    pub spans: Vec<Span>,
}

/// A string cut out of a text (see [`Cut::spans`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Span {
    pub path: usize,
    pub raw: std::ops::Range<usize>,
    len: usize,
}

impl Span {
    /// The string, decoded from `from` (the text it was cut from) into a buffer of its size.
    pub(crate) fn decode(&self, from: &[u8]) -> String {
        decode(&from[self.raw.clone()], self.len)
    }
}

/// One level of nesting: an object (with the key whose value is being read, as a range of the
/// text, and whether a key comes next) or an array.
#[derive(Clone, Copy)]
enum Frame {
    Object {
        key: Option<(usize, usize)>,
        want_key: bool,
    },
    Array,
}

/// Cuts out of `text` (a JSON object) the string values of [`CUT_MIN`] bytes or more found at
/// one of `paths` (keys from the top object down, each an object member). `None` when there is
/// nothing to cut, or something the cut does not vouch for (see the module's docs).
pub(crate) fn cut_strings(text: &[u8], paths: &[&[&str]]) -> Option<Cut> {
    if text.len() < CUT_MIN {
        return None;
    }
    let mut stack: Vec<Frame> = Vec::new();
    // Ranges of the strings to cut (with their quotes) and their paths.
    let mut found: Vec<(usize, usize, usize)> = Vec::new();
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'{' => stack.push(Frame::Object {
                key: None,
                want_key: true,
            }),
            b'[' => stack.push(Frame::Array),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => {
                if let Some(Frame::Object { want_key, .. }) = stack.last_mut() {
                    *want_key = true;
                }
            }
            b':' => {
                if let Some(Frame::Object { want_key, .. }) = stack.last_mut() {
                    *want_key = false;
                }
            }
            b'"' => {
                let end = string_end(text, i)?;
                match stack.last_mut() {
                    Some(Frame::Object {
                        key,
                        want_key: true,
                    }) => *key = Some((i + 1, end - 1)),
                    _ if end - i >= CUT_MIN => {
                        if let Some(p) = paths.iter().position(|p| at_path(text, &stack, p)) {
                            found.push((i, end, p));
                        }
                    }
                    _ => {}
                }
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if found.is_empty() {
        return None;
    }
    let mut spans = Vec::with_capacity(found.len());
    for &(start, end, path) in &found {
        let raw = start + 1..end - 1;
        let len = decoded_len(&text[raw.clone()])?;
        std::str::from_utf8(&text[raw.clone()]).ok()?;
        spans.push(Span { path, raw, len });
    }
    let cut_len: usize = found.iter().map(|(s, e, _)| e - s - 2).sum();
    let mut out = Vec::with_capacity(text.len() - cut_len);
    let mut from = 0;
    for &(start, end, _) in &found {
        out.extend_from_slice(&text[from..start]);
        out.extend_from_slice(b"\"\"");
        from = end;
    }
    out.extend_from_slice(&text[from..]);
    Some(Cut { text: out, spans })
}

/// Whether the value being read sits at `path`: one object per key, the keys matching.
fn at_path(text: &[u8], stack: &[Frame], path: &[&str]) -> bool {
    stack.len() == path.len()
        && stack.iter().zip(path).all(|(f, want)| match f {
            Frame::Object {
                key: Some((s, e)), ..
            } => &text[*s..*e] == want.as_bytes(),
            _ => false,
        })
}

/// The end (past the closing quote) of the string whose opening quote is at `start`; `None`
/// when it does not close.
fn string_end(text: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        // (`get`: a text cut short right after a backslash ends past its end.)
        i += memchr::memchr2(b'"', b'\\', text.get(i..)?)?;
        if text[i] == b'\\' {
            i += 2;
            continue;
        }
        return Some(i + 1);
    }
}

/// A JSON string's content (between its quotes), checked when it was cut (UTF-8, and
/// [`decoded_len`] said `len`), decoded into a buffer of that size.
fn decode(raw: &[u8], len: usize) -> String {
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while i < raw.len() {
        let k = memchr::memchr(b'\\', &raw[i..]).map_or(raw.len(), |k| i + k);
        out.extend_from_slice(&raw[i..k]);
        if k == raw.len() {
            break;
        }
        let Some((c, used)) = escape(&raw[k..]) else {
            break; // checked when cut: never
        };
        match c {
            Escaped::Byte(b) => out.push(b),
            Escaped::Char(c) => {
                let mut tmp = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
            }
        }
        i = k + used;
    }
    debug_assert_eq!(out.len(), len);
    // UTF-8 checked when cut, escapes decode to characters: the lossy branch is never taken.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// How long [`decode`]'s output is; `None` when `raw` is not a string `serde_json` takes as is.
fn decoded_len(raw: &[u8]) -> Option<usize> {
    if raw.iter().any(|&b| b < 0x20) {
        return None;
    }
    let mut len = 0;
    let mut i = 0;
    while i < raw.len() {
        let Some(k) = memchr::memchr(b'\\', &raw[i..]) else {
            len += raw.len() - i;
            break;
        };
        len += k;
        let (c, used) = escape(&raw[i + k..])?;
        len += match c {
            Escaped::Byte(_) => 1,
            Escaped::Char(c) => c.len_utf8(),
        };
        i += k + used;
    }
    Some(len)
}

enum Escaped {
    Byte(u8),
    Char(char),
}

/// The escape at the start of `s` (which starts with `\`) and how many bytes it took.
fn escape(s: &[u8]) -> Option<(Escaped, usize)> {
    let b = match *s.get(1)? {
        b'"' => b'"',
        b'\\' => b'\\',
        b'/' => b'/',
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'u' => {
            let hi = hex4(s.get(2..6)?)?;
            if (0xD800..0xDC00).contains(&hi) {
                // A pair: `\uD83D\uDE00`. A lone half is left to serde_json.
                if s.get(6..8)? != b"\\u" {
                    return None;
                }
                let lo = hex4(s.get(8..12)?)?;
                if !(0xDC00..0xE000).contains(&lo) {
                    return None;
                }
                let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                return Some((Escaped::Char(char::from_u32(c)?), 12));
            }
            return Some((Escaped::Char(char::from_u32(hi)?), 6));
        }
        _ => return None,
    };
    Some((Escaped::Byte(b), 2))
}

fn hex4(h: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(h).ok()?;
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// A JSON string's content unescaped as it streams by, in pieces cut anywhere (an escape or a
/// UTF-8 sequence split between two pieces waits for the next): what [`decode`] gives for the
/// whole, and a string [`decoded_len`] refuses is refused ([`Unescape::finish`] says false).
#[derive(Debug, Default, Clone)]
pub(crate) struct Unescape {
    /// The start of an escape or a UTF-8 sequence that the last piece cut.
    carry: [u8; 16],
    carried: usize,
    bad: bool,
}

/// Where [`Unescape`] puts what it decodes.
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Unescape {
    /// Decodes the next piece of the string's content into `sink`.
    pub(crate) fn feed(&mut self, mut data: &[u8], sink: &mut impl Sink) {
        if self.bad {
            return;
        }
        while self.carried > 0 && !data.is_empty() {
            let n = self.carried;
            let take = (self.carry.len() - n).min(data.len());
            self.carry[n..n + take].copy_from_slice(&data[..take]);
            let tmp = self.carry;
            let used = self.process(&tmp[..n + take], sink, false);
            if self.bad {
                return;
            }
            if used >= n {
                data = &data[used - n..];
                self.carried = 0;
            } else {
                // Still cut short (the piece was shorter than the sequence).
                self.carry.copy_within(used..n + take, 0);
                self.carried = n + take - used;
                return;
            }
        }
        let used = self.process(data, sink, false);
        if !self.bad {
            let rest = &data[used..];
            self.carry[..rest.len()].copy_from_slice(rest);
            self.carried = rest.len();
        }
    }

    /// The string ended: true when all of it decoded.
    pub(crate) fn finish(mut self, sink: &mut impl Sink) -> bool {
        if self.carried > 0 && !self.bad {
            let tmp = self.carry;
            let n = self.carried;
            if self.process(&tmp[..n], sink, true) < n {
                self.bad = true;
            }
        }
        !self.bad
    }

    /// Decodes what it can of `d`; returns how much (the rest is a cut sequence, unless
    /// `end`), or sets `bad`.
    fn process(&mut self, d: &[u8], sink: &mut impl Sink, end: bool) -> usize {
        let mut i = 0;
        while i < d.len() {
            let k = memchr::memchr(b'\\', &d[i..]).map_or(d.len(), |k| i + k);
            let plain = &d[i..k];
            if has_control(plain) {
                self.bad = true;
                return i;
            }
            match std::str::from_utf8(plain) {
                Ok(_) => sink.put(plain),
                Err(e) => {
                    sink.put(&plain[..e.valid_up_to()]);
                    if e.error_len().is_none() && k == d.len() && !end {
                        return i + e.valid_up_to();
                    }
                    self.bad = true;
                    return i;
                }
            }
            if k == d.len() {
                return k;
            }
            match escape(&d[k..]) {
                Some((c, used)) => {
                    match c {
                        Escaped::Byte(b) => sink.put(&[b]),
                        Escaped::Char(c) => {
                            let mut tmp = [0; 4];
                            sink.put(c.encode_utf8(&mut tmp).as_bytes());
                        }
                    }
                    i = k + used;
                }
                // Maybe an escape cut short: it waits for the next piece.
                None if !end && d.len() - k < 12 => return k,
                None => {
                    self.bad = true;
                    return k;
                }
            }
        }
        i
    }
}

/// The content of a JSON string `len` bytes long at byte `pos` of `file` (where it was cut as
/// it streamed by), decoded into `sink`; false when it does not decode (the file changed).
pub(crate) fn decode_at(
    file: &mut std::fs::File,
    pos: u64,
    len: u64,
    sink: &mut impl Sink,
) -> std::io::Result<bool> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    file.seek(SeekFrom::Start(pos))?;
    let mut u = Unescape::default();
    let mut left = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match file.read(&mut chunk[..want]) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        u.feed(&chunk[..n], sink);
        left -= n as u64;
    }
    Ok(u.finish(sink))
}

/// Whether `s` has a control character (below 0x20), which a JSON string cannot hold raw
/// (a fold over blocks, which the compiler vectorises, rather than a search byte by byte).
fn has_control(s: &[u8]) -> bool {
    s.chunks(64)
        .any(|c| c.iter().fold(false, |found, &b| found | (b < 0x20)))
}

/// What a string cut while it streamed by decodes to: its length, and whether it is base64
/// that [`B64Sink`] decodes (the alphabet, white space, `=` only at the end).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Measure {
    /// Decoded length.
    pub len: usize,
    /// Characters other than white space.
    pub dense: usize,
    /// `=` at the end (white space aside).
    pub pad: usize,
    /// False once a character is not base64's (or something follows a `=`).
    pub base64: bool,
}

impl Measure {
    pub(crate) fn new() -> Self {
        Measure {
            base64: true,
            ..Measure::default()
        }
    }

    /// Bytes when decoded as base64 (`None` unless it is base64 [`B64Sink`] decodes).
    pub(crate) fn base64_len(&self) -> Option<usize> {
        (self.base64 && self.dense % 4 == 0 && self.pad <= 2).then(|| self.dense / 4 * 3 - self.pad)
    }
}

/// 1 for base64's alphabet, 2 for `=`, 3 for white space (`u8::is_ascii_whitespace`), 0 else.
const B64_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphanumeric() || c == b'+' || c == b'/' {
            1
        } else if c == b'=' {
            2
        } else if c.is_ascii_whitespace() {
            3
        } else {
            0
        };
        b += 1;
    }
    t
};

impl Sink for Measure {
    fn put(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        if !self.base64 {
            return;
        }
        // Most of base64 is its alphabet only: counted by blocks.
        let plain = |c: &[u8]| {
            c.iter()
                .fold(true, |all, &b| all & (B64_CLASS[usize::from(b)] == 1))
        };
        if self.pad == 0 && bytes.chunks(64).all(plain) {
            self.dense += bytes.len();
            return;
        }
        for &b in bytes {
            match B64_CLASS[usize::from(b)] {
                1 if self.pad == 0 => self.dense += 1,
                2 => {
                    self.dense += 1;
                    self.pad += 1;
                }
                3 => {}
                _ => {
                    self.base64 = false;
                    return;
                }
            }
        }
    }
}

/// Decodes base64 text as it streams by (white space skipped) into a buffer of the size
/// [`Measure::base64_len`] said. It gives what `STANDARD.decode` of the whole text without its
/// white space gives, or fails (`ok` false); the caller then takes the text path.
pub(crate) struct B64Sink {
    pub out: Vec<u8>,
    pending: Vec<u8>,
    pub ok: bool,
}

/// Characters decoded at a time (a multiple of 4: no padding but at the end).
const B64_STEP: usize = 16 * 1024;

impl B64Sink {
    pub(crate) fn new(len: usize) -> Self {
        B64Sink {
            out: Vec::with_capacity(len),
            pending: Vec::with_capacity(B64_STEP),
            ok: true,
        }
    }

    fn flush(&mut self) {
        use base64::Engine as _;
        let mut tmp = [0u8; B64_STEP / 4 * 3];
        match base64::engine::general_purpose::STANDARD.decode_slice(&self.pending, &mut tmp) {
            Ok(n) if self.out.len() + n <= self.out.capacity() => {
                self.out.extend_from_slice(&tmp[..n]);
            }
            _ => self.ok = false,
        }
        self.pending.clear();
    }

    /// The bytes, or `None` when the text did not decode.
    pub(crate) fn finish(mut self) -> Option<Vec<u8>> {
        if self.ok && !self.pending.is_empty() {
            self.flush();
        }
        (self.ok && self.out.len() == self.out.capacity()).then_some(self.out)
    }
}

impl Sink for B64Sink {
    fn put(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.ok {
            let n = bytes.len().min(B64_STEP - self.pending.len());
            let (piece, rest) = bytes.split_at(n);
            let space = piece
                .chunks(64)
                .any(|c| c.iter().fold(false, |any, b| any | b.is_ascii_whitespace()));
            if space {
                self.pending
                    .extend(piece.iter().filter(|b| !b.is_ascii_whitespace()));
            } else {
                self.pending.extend_from_slice(piece);
            }
            if self.pending.len() == B64_STEP {
                self.flush();
            }
            bytes = rest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATHS: &[&[&str]] = &[&["a", "body", "text"], &["b", "text"]];

    fn big(s: &str) -> String {
        s.repeat(CUT_MIN / s.len() + 1)
    }

    /// Whatever the string holds, the cut gives what serde_json gives: the same string, and
    /// the rest of the object unchanged.
    #[test]
    fn a_cut_string_is_what_serde_json_reads() {
        for body in [
            big("plain text "),
            big(r#"{"jsonrpc":"2.0","x":"quote \" slash \\ tab	"}"#),
            big("é ☃ 😀 \u{1} \u{7f} line\nbreak\r\n/"),
        ] {
            let escaped = serde_json::to_string(&body).unwrap();
            // Also with escapes serde_json never writes but reads.
            let escaped_u = escaped
                .replace("é", "\\u00e9")
                .replace("😀", "\\ud83d\\ude00");
            for s in [escaped, escaped_u] {
                let text = format!(
                    r#"{{"n":[1,{{"text":"x"}}],"a":{{"body":{{"text":{s},"k":2}}}},"b":{{"text":{s}}},"c":{{"text":{s}}}}}"#
                );
                let cut = cut_strings(text.as_bytes(), PATHS).unwrap();
                let strings: Vec<(usize, String)> = cut
                    .spans
                    .iter()
                    .map(|s| (s.path, s.decode(text.as_bytes())))
                    .collect();
                assert_eq!(strings, [(0, body.clone()), (1, body.clone())]);
                let mut got: serde_json::Value = serde_json::from_slice(&cut.text).unwrap();
                assert_eq!(got["a"]["body"]["text"], "");
                got["a"]["body"]["text"] = body.clone().into();
                got["b"]["text"] = body.clone().into();
                let want: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(got, want);
            }
        }
    }

    /// Fed in pieces of any size, a string's content decodes as [`decode`] decodes it whole,
    /// and what [`decoded_len`] refuses is refused; the measure says its length and whether
    /// it is base64 that decodes as `STANDARD` decodes it without its white space.
    #[test]
    fn a_string_streamed_in_pieces_decodes_as_whole() {
        use base64::Engine as _;
        let texts: Vec<Vec<u8>> = [
            r#"plain"#,
            r#"quote \" slash \\ \/ \b\f\n\r\t é ☃ 😀 \u00e9 \ud83d\ude00 \u2603 end"#,
            r#"\ud83d\ude00\ud83d\ude00"#,
            r#"QUJD\r\nREVG\nR0g="#,
            "QUJDREVGR0g",
            "QUJDREVGR0g=x",
            "QR==",
            "Q===",
            r#"QUJD\/\/=="#,
            r#"lone \ud83d here"#,
            r#"lone low \ude00"#,
            r#"bad \q escape"#,
            r#"bad \u12G4 hex"#,
            r#"cut at the end \"#,
            r#"cut at the end \u00"#,
            "control \u{1} char",
        ]
        .iter()
        .map(|t| t.as_bytes().to_vec())
        .chain([b"not \xff utf-8".to_vec(), b"cut \xe2\x82".to_vec()])
        .collect();
        for raw in &texts {
            let want = decoded_len(raw)
                .filter(|_| std::str::from_utf8(raw).is_ok())
                .map(|len| decode(raw, len).into_bytes());
            for step in 1..14 {
                let mut u = Unescape::default();
                let mut out = Vec::new();
                let mut m = Measure::new();
                for piece in raw.chunks(step) {
                    u.feed(piece, &mut out);
                }
                let mut u2 = Unescape::default();
                for piece in raw.chunks(step) {
                    u2.feed(piece, &mut m);
                }
                let ok = u.finish(&mut out) & u2.finish(&mut m);
                let what = String::from_utf8_lossy(raw);
                assert_eq!(ok.then_some(&out), want.as_ref(), "{what} step {step}");
                let Some(want) = &want else { continue };
                assert_eq!(m.len, want.len(), "{what}");
                let clean: Vec<u8> = want
                    .iter()
                    .copied()
                    .filter(|b| !b.is_ascii_whitespace())
                    .collect();
                let standard = base64::engine::general_purpose::STANDARD
                    .decode(&clean)
                    .ok();
                if let Some(n) = m.base64_len() {
                    let mut sink = B64Sink::new(n);
                    sink.put(want);
                    assert_eq!(sink.finish(), standard, "{what}");
                } else {
                    assert!(
                        standard.is_none() || clean.len() % 4 != 0 || !m.base64,
                        "{what}"
                    );
                }
            }
        }
        // Larger than what the base64 sink decodes at a time, line breaks included.
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let wrapped: Vec<u8> = b64
            .as_bytes()
            .chunks(76)
            .flat_map(|l| l.iter().copied().chain(*br"\r\n"))
            .collect();
        for raw in [b64.as_bytes(), &wrapped] {
            let mut u = Unescape::default();
            let mut m = Measure::new();
            u.feed(raw, &mut m);
            assert!(u.finish(&mut m));
            let mut sink = B64Sink::new(m.base64_len().unwrap());
            let mut u = Unescape::default();
            for piece in raw.chunks(1000) {
                u.feed(piece, &mut sink);
            }
            assert!(u.finish(&mut sink));
            assert_eq!(sink.finish().unwrap(), bytes);
        }
    }

    /// Nothing is cut from small text, from other paths, or from a string serde_json would
    /// refuse or read otherwise (the caller then parses the text as it is).
    #[test]
    fn what_is_not_cut() {
        let s = serde_json::to_string(&big("abc")).unwrap();
        let small = r#"{"b":{"text":"short"}}"#;
        assert!(cut_strings(small.as_bytes(), PATHS).is_none());
        for text in [
            format!(r#"{{"c":{{"text":{s}}},"pad":{s}}}"#),
            format!(r#"{{"b":[{{"text":{s}}}]}}"#),
            format!(r#"{{"x":{{"b":{{"text":{s}}}}}}}"#),
        ] {
            assert!(cut_strings(text.as_bytes(), PATHS).is_none(), "{text:.40}");
        }
        let bad = |inner: &str| format!(r#"{{"b":{{"text":"{}{inner}"}}}}"#, big("abc"));
        for inner in [r"\ud83d", r"\ude00x", r"\q", "\u{1}", r"\u12G4", r"\"] {
            assert!(
                cut_strings(bad(inner).as_bytes(), PATHS).is_none(),
                "{inner:?}"
            );
        }
        // Not UTF-8.
        let mut text = bad("").into_bytes();
        let at = text.len() - 5;
        text[at] = 0xff;
        assert!(cut_strings(&text, PATHS).is_none());
        // Never closed, or cut short right after a backslash.
        let open = format!(r#"{{"b":{{"text":"{}"#, big("abc"));
        assert!(cut_strings(open.as_bytes(), PATHS).is_none());
        let open = format!(r#"{{"b":{{"text":"{}"#, big("abc"));
        assert!(cut_strings(open.as_bytes(), PATHS).is_none());
    }
}
