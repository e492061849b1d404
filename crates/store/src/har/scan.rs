//! Cuts a JSON document read from a stream into values, without parsing them: the HAR reader
//! walks the document's outer structure (`{"log": {"entries": [ … ]}}`) with it and hands each
//! entry to `serde_json` as a slice, as journal lines are parsed. serde_json's reader-based
//! parser takes every byte through a call; the slice parser scans, and this cutter only looks
//! at quotes, backslashes and brackets (a string's contents are skipped with `memchr`).
//!
//! Positions (line and column, from 1, in bytes as serde_json counts them) are kept for the
//! errors: a value that does not parse is said at its place in the file.

use std::io::BufRead;

/// Why a document could not be cut: the input failed, or it is not JSON here.
#[derive(Debug)]
pub(crate) enum CutError {
    /// Reading failed (a decompressor's `InvalidData` included).
    Io(std::io::Error),
    /// Not JSON at this place.
    Syntax {
        /// Line of the offending byte (from 1).
        line: u64,
        /// Its column (from 1).
        column: u64,
        /// What was wrong.
        msg: String,
    },
}

/// Deeper nesting than this is refused (serde_json's own limit is 128).
const MAX_DEPTH: usize = 256;

/// A JSON document being read: structure by structure, or a whole value at a time.
pub(crate) struct Cutter<R> {
    input: R,
    /// Line of the next byte.
    line: u64,
    /// Bytes of the current line already consumed (the next byte's column is this plus 1).
    col: u64,
    /// Bytes consumed.
    pos: u64,
    /// True when a raw newline ends the input (a journal line, [`Cutter::line`]).
    line_mode: bool,
}

/// Where a value started, to place the errors of the parser that reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place {
    line: u64,
    col: u64,
    /// Bytes before it.
    pub(crate) pos: u64,
}

impl<R: BufRead> Cutter<R> {
    pub(crate) fn new(input: R) -> Self {
        Cutter {
            input,
            line: 1,
            col: 0,
            pos: 0,
            line_mode: false,
        }
    }

    /// A cutter of one line (a journal's): a raw newline, anywhere (JSON has none inside a
    /// string), is an error before it, left unread.
    pub(crate) fn line(input: R) -> Self {
        Cutter {
            line_mode: true,
            ..Cutter::new(input)
        }
    }

    /// Bytes consumed.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// In line mode, a newline in the first `n` bytes of the current chunk: those before it
    /// are consumed (into `out`, when given) and the error says the line ended.
    fn newline_in(&mut self, n: usize, out: Option<&mut Vec<u8>>) -> Result<(), CutError> {
        if !self.line_mode {
            return Ok(());
        }
        let at = match self.input.fill_buf() {
            Ok(chunk) => memchr::memchr(b'\n', &chunk[..n]),
            Err(_) => None,
        };
        match (at, out) {
            (None, _) => Ok(()),
            (Some(j), Some(out)) => {
                self.take(out, j);
                Err(self.syntax("EOF while parsing a line"))
            }
            (Some(j), None) => {
                self.consume(j);
                Err(self.syntax("EOF while parsing a line"))
            }
        }
    }

    /// Where the next byte is.
    pub(crate) fn place(&self) -> Place {
        Place {
            line: self.line,
            col: self.col,
            pos: self.pos,
        }
    }

    /// A syntax error at the next byte.
    pub(crate) fn syntax(&self, msg: impl Into<String>) -> CutError {
        CutError::Syntax {
            line: self.line,
            column: self.col + 1,
            msg: msg.into(),
        }
    }

    /// serde_json's error on a value cut at `at`, placed in the file.
    pub(crate) fn placed(at: Place, e: &serde_json::Error) -> CutError {
        let (line, column) = if e.line() <= 1 {
            (at.line, at.col + e.column() as u64)
        } else {
            (at.line + e.line() as u64 - 1, e.column() as u64)
        };
        CutError::Syntax {
            line,
            column,
            msg: e.to_string(),
        }
    }

    fn chunk(&mut self) -> Result<&[u8], CutError> {
        loop {
            match self.input.fill_buf() {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CutError::Io(e)),
            }
        }
        // Filled: this returns the same bytes without reading.
        self.input.fill_buf().map_err(CutError::Io)
    }

    /// Consumes `n` bytes of the current chunk, whose first `n` are `seen`.
    fn consume(&mut self, n: usize) {
        // Re-borrowing the chunk (fill_buf on a filled buffer does not read).
        if let Ok(chunk) = self.input.fill_buf() {
            let seen = &chunk[..n];
            match memchr::memrchr(b'\n', seen) {
                Some(last) => {
                    self.line += memchr::memchr_iter(b'\n', seen).count() as u64;
                    self.col = (n - last - 1) as u64;
                }
                None => self.col += n as u64,
            }
        }
        self.input.consume(n);
        self.pos += n as u64;
    }

    /// The next byte that is not white space, not consumed; `None` at the end of input.
    pub(crate) fn peek(&mut self) -> Result<Option<u8>, CutError> {
        loop {
            let chunk = self.chunk()?;
            if chunk.is_empty() {
                return Ok(None);
            }
            match chunk
                .iter()
                .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            {
                Some(i) => {
                    let b = chunk[i];
                    self.consume(i);
                    return Ok(Some(b));
                }
                None => {
                    let n = chunk.len();
                    self.consume(n);
                }
            }
        }
    }

    /// The next byte that is not white space, which must be there.
    pub(crate) fn peek_some(&mut self, what: &str) -> Result<u8, CutError> {
        self.peek()?
            .ok_or_else(|| self.syntax(format!("EOF while parsing {what}")))
    }

    /// Consumes the byte [`peek`](Self::peek) returned.
    pub(crate) fn bump(&mut self) {
        self.consume(1);
    }

    /// Consumes `b` (after white space), or says what was expected.
    pub(crate) fn expect(&mut self, b: u8, what: &str) -> Result<(), CutError> {
        match self.peek()? {
            Some(c) if c == b => {
                self.bump();
                Ok(())
            }
            Some(_) => Err(self.syntax(format!("expected {what}"))),
            None => Err(self.syntax(format!("EOF while parsing {what}"))),
        }
    }

    /// Appends the next value's bytes to `out` (white space before it skipped), and returns
    /// where it started. The value is only cut, not checked: parse `out` to check it.
    pub(crate) fn cut(&mut self, out: &mut Vec<u8>) -> Result<Place, CutError> {
        let first = self.peek_some("a value")?;
        let at = self.place();
        match first {
            b'{' | b'[' => self.cut_nested(out)?,
            b'"' => {
                self.take(out, 1);
                self.cut_string_rest(out)?;
            }
            b']' | b'}' | b',' | b':' => return Err(self.syntax("expected value")),
            _ => self.cut_scalar(out)?,
        }
        Ok(at)
    }

    /// Consumes `n` bytes of the current chunk into `out`.
    fn take(&mut self, out: &mut Vec<u8>, n: usize) {
        if let Ok(chunk) = self.input.fill_buf() {
            out.extend_from_slice(&chunk[..n]);
        }
        self.consume(n);
    }

    /// A string's bytes after its opening quote, up to and with its closing one.
    fn cut_string_rest(&mut self, out: &mut Vec<u8>) -> Result<(), CutError> {
        // True when the chunk before ended in a backslash: the next byte is escaped.
        let mut escaped = false;
        loop {
            let chunk = self.chunk()?;
            if chunk.is_empty() {
                return Err(self.syntax("EOF while parsing a string"));
            }
            let (n, end, next_escaped) = string_span(chunk, escaped);
            escaped = next_escaped;
            self.newline_in(n, Some(out))?;
            self.take(out, n);
            if end {
                return Ok(());
            }
        }
    }

    /// A number, `true`, `false` or `null`: up to the next delimiter.
    fn cut_scalar(&mut self, out: &mut Vec<u8>) -> Result<(), CutError> {
        loop {
            let chunk = self.chunk()?;
            if chunk.is_empty() {
                return Ok(());
            }
            match chunk.iter().position(|b| {
                matches!(
                    b,
                    b' ' | b'\t' | b'\n' | b'\r' | b',' | b']' | b'}' | b':' | b'"' | b'{' | b'['
                )
            }) {
                Some(0) if out.is_empty() => return Err(self.syntax("expected value")),
                Some(i) => {
                    self.take(out, i);
                    return Ok(());
                }
                None => {
                    let n = chunk.len();
                    self.take(out, n);
                }
            }
        }
    }

    /// An object or an array, brackets matched (their contents are left to the parser).
    fn cut_nested(&mut self, out: &mut Vec<u8>) -> Result<(), CutError> {
        self.nested_skipping(out, &[], usize::MAX).map(drop)
    }
}

/// A string value left out of the text [`Cutter::cut_skipping`] cut (`""` in its place): where
/// its content is in the input and what it decodes to.
#[derive(Debug, Clone)]
pub(crate) struct Skipped {
    /// The index of its path in the caller's list.
    pub path: usize,
    /// Where its content (after the opening quote) starts, in bytes of input.
    pub pos: u64,
    /// How many bytes of input its content is.
    pub raw_len: u64,
    /// What it decodes to; `None` when it does not decode as the parser would read it.
    pub measure: Option<crate::cut::Measure>,
}

/// One level of nesting while cutting with [`Cutter::cut_skipping`]: an object (with the key
/// whose value comes, as a range of the text cut, and whether a key comes next), or an array.
#[derive(Clone, Copy)]
enum Level {
    Object {
        key: Option<(usize, usize)>,
        want_key: bool,
    },
    Array,
}

impl<R: BufRead> Cutter<R> {
    /// [`cut`](Self::cut) of an object, but a string value at one of `paths` (keys from the
    /// object down) that reaches `min` bytes is not appended: it is left as `""`, measured as
    /// it streams by ([`crate::cut::Unescape`]) and said in the list returned, so that the
    /// caller can decode it from the input's source into a buffer of its size. The text
    /// appended stays as small as the object without those strings.
    pub(crate) fn cut_skipping(
        &mut self,
        out: &mut Vec<u8>,
        paths: &[&[&str]],
        min: usize,
    ) -> Result<(Place, Vec<Skipped>), CutError> {
        let first = self.peek_some("a value")?;
        let at = self.place();
        if first != b'{' {
            self.cut(out)?;
            return Ok((at, Vec::new()));
        }
        Ok((at, self.nested_skipping(out, paths, min)?))
    }

    /// An object or an array, brackets matched, whose string values at `paths` that reach
    /// `min` bytes are measured and left out ([`cut_skipping`](Self::cut_skipping)); with no
    /// paths, the whole value ([`cut`](Self::cut)).
    fn nested_skipping(
        &mut self,
        out: &mut Vec<u8>,
        paths: &[&[&str]],
        min: usize,
    ) -> Result<Vec<Skipped>, CutError> {
        let mut stack: Vec<Level> = Vec::new();
        let mut skipped = Vec::new();
        let line_mode = self.line_mode;
        loop {
            let chunk = self.chunk()?;
            if chunk.is_empty() {
                return Err(self.syntax(if matches!(stack.last(), Some(Level::Array)) {
                    "EOF while parsing a list"
                } else {
                    "EOF while parsing an object"
                }));
            }
            let mut i = 0;
            let mut string_at = None;
            let mut done = None;
            let mut bad = None;
            while i < chunk.len() {
                match chunk[i] {
                    b'"' => {
                        string_at = Some(i);
                        break;
                    }
                    b'\n' if line_mode => {
                        bad = Some((i, "EOF while parsing a line"));
                        break;
                    }
                    b'{' | b'[' if stack.len() >= MAX_DEPTH => {
                        bad = Some((i, "recursion limit exceeded"));
                        break;
                    }
                    b'{' => stack.push(Level::Object {
                        key: None,
                        want_key: true,
                    }),
                    b'[' => stack.push(Level::Array),
                    b @ (b'}' | b']') => {
                        let ok = matches!(
                            (stack.pop(), b),
                            (Some(Level::Object { .. }), b'}') | (Some(Level::Array), b']')
                        );
                        if !ok {
                            bad = Some((i, "mismatched bracket"));
                            break;
                        }
                        if stack.is_empty() {
                            done = Some(i + 1);
                            break;
                        }
                    }
                    b',' => {
                        if let Some(Level::Object { want_key, .. }) = stack.last_mut() {
                            *want_key = true;
                        }
                    }
                    b':' => {
                        if let Some(Level::Object { want_key, .. }) = stack.last_mut() {
                            *want_key = false;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            if let Some((i, msg)) = bad {
                self.take(out, i);
                return Err(self.syntax(msg));
            }
            if let Some(n) = done {
                self.take(out, n);
                return Ok(skipped);
            }
            let Some(i) = string_at else {
                let n = chunk.len();
                self.take(out, n);
                continue;
            };
            self.take(out, i + 1);
            let start = out.len();
            if let Some(Level::Object {
                key,
                want_key: true,
            }) = stack.last_mut()
            {
                self.cut_string_rest(out)?;
                *key = Some((start, out.len() - 1));
                continue;
            }
            let path = paths.iter().position(|p| {
                stack.len() == p.len()
                    && stack.iter().zip(p.iter()).all(|(l, want)| match l {
                        Level::Object {
                            key: Some((s, e)), ..
                        } => out.get(*s..*e) == Some(want.as_bytes()),
                        _ => false,
                    })
            });
            match path {
                Some(path) => {
                    if let Some(s) = self.string_skipping(out, start, min)? {
                        skipped.push(Skipped { path, ..s });
                    }
                }
                None => self.cut_string_rest(out)?,
            }
        }
    }

    /// A string's bytes after its opening quote (at `start` in `out`), up to and with its
    /// closing one; once `min` bytes long, its content is measured and dropped instead of
    /// appended (`""` is left), and said.
    fn string_skipping(
        &mut self,
        out: &mut Vec<u8>,
        start: usize,
        min: usize,
    ) -> Result<Option<Skipped>, CutError> {
        use crate::cut::{Measure, Unescape};
        // Measuring once the string is known to be long: what it had so far, then the rest.
        let mut skip: Option<(u64, Unescape, Measure)> = None;
        let mut escaped = false;
        loop {
            let chunk = self.chunk()?;
            if chunk.is_empty() {
                return Err(self.syntax("EOF while parsing a string"));
            }
            let (n, end, next_escaped) = string_span(chunk, escaped);
            escaped = next_escaped;
            let content = if end { n - 1 } else { n };
            if skip.is_some() {
                self.newline_in(n, None)?;
            } else {
                self.newline_in(n, Some(out))?;
            }
            // The chunk again (a filled buffer is not read again).
            let chunk = self.input.fill_buf().map_err(CutError::Io)?;
            match skip.as_mut() {
                Some((_, u, m)) => {
                    u.feed(&chunk[..content], m);
                    self.consume(n);
                }
                None if out.len() - start + content >= min => {
                    let before = out.len() - start;
                    let mut u = Unescape::default();
                    let mut m = Measure::new();
                    u.feed(&out[start..], &mut m);
                    u.feed(&chunk[..content], &mut m);
                    out.truncate(start);
                    skip = Some((self.pos - before as u64, u, m));
                    self.consume(n);
                }
                None => self.take(out, n),
            }
            if end {
                if skip.is_some() {
                    out.push(b'"');
                }
                return Ok(skip.map(|(pos, u, mut m)| {
                    let ok = u.finish(&mut m);
                    Skipped {
                        path: 0,
                        pos,
                        raw_len: self.pos - 1 - pos,
                        measure: ok.then_some(m),
                    }
                }));
            }
        }
    }
}

/// How far a string's content runs in `chunk` (`escaped`: the chunk before ended inside an
/// escape, so its first byte is escaped): the bytes to take, whether they end with the closing
/// quote, and whether the next chunk starts inside an escape.
fn string_span(chunk: &[u8], escaped: bool) -> (usize, bool, bool) {
    let mut i = usize::from(escaped);
    let (n, end) = loop {
        match memchr::memchr2(b'"', b'\\', &chunk[i..]) {
            None => break (chunk.len(), false),
            Some(j) if chunk[i + j] == b'\\' => {
                i += j + 2;
                if i > chunk.len() {
                    break (chunk.len(), false);
                }
            }
            Some(j) => break (i + j + 1, true),
        }
    };
    (n, end, !end && i > chunk.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its bytes `step` at a time, so that every token is cut by a read.
    struct Trickle<'a>(&'a [u8], usize);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn cutter(text: &[u8], step: usize) -> Cutter<std::io::BufReader<Trickle<'_>>> {
        Cutter::new(std::io::BufReader::with_capacity(step, Trickle(text, step)))
    }

    #[test]
    fn values_are_cut_whole_whatever_the_read_sizes() {
        let values: &[&str] = &[
            r#"{"a": "b\"}]", "c": [1, {"d": "\\"}], "e": null}"#,
            r#"[ "x", [], {}, "\\\\\"" ]"#,
            r#""a \" quoted \\ string""#,
            "-12.5e3",
            "true",
        ];
        for v in values {
            let text = format!(" \n {v} ,rest");
            for step in 1..9 {
                let mut c = cutter(text.as_bytes(), step);
                let mut out = Vec::new();
                let at = c.cut(&mut out).unwrap();
                assert_eq!(std::str::from_utf8(&out).unwrap(), *v, "step {step}");
                assert_eq!((at.line, at.col), (2, 1));
                assert_eq!(c.peek().unwrap(), Some(b','));
            }
        }
    }

    #[test]
    fn broken_values_are_errors_at_their_place() {
        for (text, want) in [
            ("{\"a\": [1, 2}", (1, 12)),
            ("\n  [\"open", (2, 9)),
            ("{\"a\":\n [", (2, 3)),
            ("]", (1, 1)),
        ] {
            for step in 1..5 {
                let mut c = cutter(text.as_bytes(), step);
                match c.cut(&mut Vec::new()) {
                    Err(CutError::Syntax { line, column, .. }) => {
                        assert_eq!((line, column), want, "{text:?} step {step}")
                    }
                    other => panic!("{text:?}: {other:?}"),
                }
            }
        }
    }
}
