//! The HAR reader: mcptap's own files come back losslessly (from `_mcptap`), and files from
//! browsers, mitmproxy, HTTP Toolkit, Charles and Insomnia are read as far as they go. Unknown
//! fields are ignored, missing optional fields get defaults, and a file that cannot be read is an
//! error naming the entry and the field.
//!
//! A HAR file is one JSON document, but its entries are parsed one at a time: each is cut out of
//! the stream ([`super::scan`]) and parsed from a slice, so only one entry's bytes and JSON tree
//! are alive at once (a whole-document tree costs several times the file).

use super::scan::{CutError, Cutter};
use super::{split_url, BodyMeta, McptapEntry};
use crate::error::HarError;
use crate::journal::SessionMeta;
use crate::timefmt::parse_iso;
use base64::Engine as _;
use mcptap_flow::{
    sse, BodyState, CapturedBody, ErrorKind, Flow, FlowError, FlowId, FlowKind, FlowState, Header,
    Headers, HttpVersion, Micros, Request, Response, Timings,
};
use serde::de::IgnoredAny;
use serde_json::{Map, Value};
use std::io::{BufRead as _, Read};

/// What a HAR file held.
#[derive(Debug, Clone, Default)]
pub struct HarImport {
    /// The entries as flows, in file order.
    pub flows: Vec<Flow>,
    /// `log.creator.name` and `version` (`"mitmproxy 11.0.2"`).
    pub creator: Option<String>,
    /// mcptap's session metadata, for a file mcptap wrote.
    pub session: Option<SessionMeta>,
    /// True when the file says it holds raw secrets (`log._mcptap.raw_secrets`).
    pub raw_secrets: bool,
    /// When recording stopped (`log._mcptap.ended`, µs since the epoch), for a file mcptap
    /// wrote from a cleanly ended session.
    pub ended: Option<mcptap_flow::Micros>,
    /// Things that were tolerated (an `_mcptap` block that did not parse, …).
    pub warnings: Vec<String>,
}

/// Reads a HAR document from `r` (plain, or compressed with zlib as mitmproxy's `.zhar`, or gzip).
pub fn read_har(r: impl Read) -> Result<HarImport, HarError> {
    let mut flows = Vec::new();
    let mut out = read_har_each(r, &mut |f| flows.push(f))?;
    out.flows = flows;
    Ok(out)
}

/// [`read_har`] one entry at a time, never the whole file in memory: each entry's flow goes
/// to `each` as soon as it is parsed, in file order, and the [`HarImport`] returned holds the
/// rest (its `flows` empty). Bytes that are not UTF-8 become U+FFFD on the way, as
/// [`String::from_utf8_lossy`] makes them.
///
/// The document's outer structure is walked by a [`Cutter`], which cuts out each entry (and
/// each other member of `log`) without parsing it; `serde_json` parses the cut value from a
/// slice, as journal lines are parsed.
pub fn read_har_each(r: impl Read, each: &mut dyn FnMut(Flow)) -> Result<HarImport, HarError> {
    read_har_placed(r, None, &mut |f, _| each(f))
}

/// Where an entry's bytes are in a HAR file that can be read again as it is (neither
/// compressed nor holding bytes that are not UTF-8): [`read_entry_at`] reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryPlace {
    /// Where the entry starts.
    pub offset: u64,
    /// How many bytes it is.
    pub len: u64,
    /// Its index in `log.entries`.
    pub index: usize,
}

/// [`read_har_each`], each flow with its entry's place in the input when it has one. With
/// `source`, the file `r` reads (from its start), a large body is read from its place in it
/// once its entry is cut (see [`read_har_early`]).
pub(crate) fn read_har_placed(
    r: impl Read,
    source: Option<&std::path::Path>,
    each: &mut dyn FnMut(Flow, Option<EntryPlace>),
) -> Result<HarImport, HarError> {
    read_har_early(r, source, &mut |_| {}, each)
}

/// [`read_har_placed`]; before the large bodies of an entry are read, `early` is told its
/// start: no entry still to come, this one included, completes before it (in a file whose
/// entries are in start order), so a consumer can first let go of the flows it holds that
/// complete earlier.
///
/// With `source` (the file `r` reads from its start), a large body (a request's or a
/// response's text of [`CUT_MIN`](crate::cut::CUT_MIN) bytes or more) of a plain file is not
/// kept in the entry's text while the entry is cut: it is measured as it streams by, and once
/// the rest of the entry is parsed, read again from its place in the file and decoded into a
/// buffer of its size (base64 straight into the bytes), so that an entry's escaped text is
/// never held whole next to its body.
pub(crate) fn read_har_early(
    r: impl Read,
    source: Option<&std::path::Path>,
    early: &mut dyn FnMut(Micros),
    each: &mut dyn FnMut(Flow, Option<EntryPlace>),
) -> Result<HarImport, HarError> {
    let mut r = std::io::BufReader::with_capacity(64 * 1024, r);
    let head = r
        .fill_buf()
        .map_err(|e| HarError::at(None, "", format!("cannot read: {e}")))?;
    // Compressed (or not JSON): places in the text are not places in the file.
    let plain = matches!(head, [b'{' | b' ' | b'\t' | b'\r' | b'\n' | 0xEF, ..]);
    let shift = std::rc::Rc::new(std::cell::Cell::new(plain.then_some(0)));
    let decoded: Box<dyn Read> = match head {
        [0x1f, 0x8b, ..] => Box::new(Inflating(flate2::bufread::MultiGzDecoder::new(r))),
        [0x78, b, ..] if (0x78u16 << 8 | u16::from(*b)) % 31 == 0 => {
            Box::new(Inflating(flate2::bufread::ZlibDecoder::new(r)))
        }
        _ => Box::new(r),
    };
    let text = LossyUtf8::new(decoded, shift.clone());
    let mut doc = Doc {
        cut: Cutter::new(std::io::BufReader::with_capacity(256 * 1024, text)),
        out: HarImport::default(),
        each,
        early,
        buf: Vec::new(),
        shift,
        source: source.map(Source::new),
    };
    let found = doc.document().map_err(|e| e.into_har())?;
    if !found.log {
        return Err(HarError::at(None, "log", "missing (not a HAR file)"));
    }
    if !found.entries {
        return Err(HarError::at(None, "log.entries", "missing"));
    }
    Ok(doc.out)
}

/// Why reading stopped: the document is not JSON (or could not be read), or what it says is
/// wrong.
enum DocError {
    Cut(CutError),
    Har(HarError),
}

impl From<CutError> for DocError {
    fn from(e: CutError) -> Self {
        DocError::Cut(e)
    }
}

impl From<HarError> for DocError {
    fn from(e: HarError) -> Self {
        DocError::Har(e)
    }
}

impl DocError {
    fn into_har(self) -> HarError {
        match self {
            DocError::Har(e) => e,
            DocError::Cut(CutError::Io(e)) => {
                let reason = match e.kind() {
                    std::io::ErrorKind::InvalidData => {
                        format!("compressed HAR does not decompress: {e}")
                    }
                    _ => format!("cannot read: {e}"),
                };
                HarError::at(None, "", reason)
            }
            DocError::Cut(CutError::Syntax { line, column, msg }) => HarError {
                entry: None,
                field: String::new(),
                reason: format!("not valid JSON (line {line}, column {column})"),
                source: Some(<serde_json::Error as serde::de::Error>::custom(format!(
                    "{msg} at line {line} column {column}"
                ))),
            },
        }
    }
}

/// Which required parts the document had.
#[derive(Default)]
struct Found {
    log: bool,
    entries: bool,
}

/// A HAR document being read: `{"log": {"entries": [...], "creator": ..., "_mcptap": ...}}`,
/// anything else checked as JSON and ignored.
struct Doc<'a, R> {
    cut: Cutter<R>,
    out: HarImport,
    each: &'a mut dyn FnMut(Flow, Option<EntryPlace>),
    /// Told an entry's start before its large bodies are read ([`read_har_early`]).
    early: &'a mut dyn FnMut(Micros),
    /// The value being parsed.
    buf: Vec<u8>,
    /// How far the text's bytes are from the file's (a byte order mark skipped); `None`
    /// once they are not the file's bytes (compressed, or a sequence replaced).
    shift: std::rc::Rc<std::cell::Cell<Option<u64>>>,
    /// The file read, to read large bodies again from their places ([`read_har_early`]).
    source: Option<Source>,
}

/// Bodies decoded from base64 straight from the file ([`Doc::parse_entry`]): a request's and a
/// response's (their texts in the entry are then `""`).
type Decoded = [Option<Vec<u8>>; 2];

/// The file a HAR document is read from, opened again to read a large body from its place.
struct Source {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
}

impl Source {
    fn new(path: &std::path::Path) -> Self {
        Source {
            path: path.to_owned(),
            file: None,
        }
    }

    /// The file, from byte `pos` on.
    fn at(&mut self, pos: u64) -> std::io::Result<&mut std::fs::File> {
        use std::io::{Seek as _, SeekFrom};
        let file = match self.file.take() {
            Some(f) => f,
            None => std::fs::File::open(&self.path)?,
        };
        let file = self.file.insert(file);
        file.seek(SeekFrom::Start(pos))?;
        Ok(file)
    }

    /// The content of the string at `pos` (`len` bytes), decoded into `sink`; false when it
    /// did not decode (the file changed).
    fn decode(
        &mut self,
        pos: u64,
        len: u64,
        sink: &mut impl crate::cut::Sink,
    ) -> std::io::Result<bool> {
        let file = self.at(pos)?;
        crate::cut::decode_at(file, pos, len, sink)
    }
}

impl<R: std::io::BufRead> Doc<'_, R> {
    fn document(&mut self) -> Result<Found, DocError> {
        let found = if self.cut.peek_some("a value")? == b'{' {
            let mut found = Found::default();
            self.object(|d, key| {
                if key == "log" && !found.log {
                    found = d.log()?;
                    found.log = true;
                } else {
                    d.parse::<IgnoredAny>()?;
                }
                Ok(())
            })?;
            found
        } else {
            // Any other JSON value is not a HAR file.
            self.parse::<IgnoredAny>()?;
            Found::default()
        };
        if self.cut.peek()?.is_some() {
            return Err(self.cut.syntax("trailing characters").into());
        }
        Ok(found)
    }

    /// The next value, cut and parsed from a slice.
    fn parse<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, DocError> {
        self.parse_placed().map(|(v, _)| v)
    }

    /// [`parse`](Self::parse), with where the value was in the text and its length.
    fn parse_placed<T: serde::de::DeserializeOwned>(
        &mut self,
    ) -> Result<(T, (u64, u64)), DocError> {
        self.buf.clear();
        let at = self.cut.cut(&mut self.buf)?;
        let v = serde_json::from_slice(&self.buf).map_err(|e| Cutter::<R>::placed(at, &e))?;
        // The buffer is kept for the next value, as serde_json keeps its scratch buffer: one
        // as large as the largest entry, instead of growing one for each large entry.
        Ok((v, (at.pos, self.buf.len() as u64)))
    }

    /// The next entry, cut from the stream and parsed from a slice ([`parse_entry_text`]),
    /// with where it was in the text and its length. When it has large bodies, `early` is
    /// told its start before they are read: no entry still to come, this one included,
    /// completes before it (a flow ends after it starts, and later entries start later).
    fn parse_entry(&mut self) -> Result<(Value, Decoded, (u64, u64)), DocError> {
        self.buf.clear();
        let shift = self.shift.get();
        let at = match (shift, self.source.is_some()) {
            (Some(shift), true) => {
                let (at, skipped) =
                    self.cut
                        .cut_skipping(&mut self.buf, &PATHS, crate::cut::CUT_MIN)?;
                let len = self.cut.place().pos - at.pos;
                if skipped.is_empty() {
                    at
                } else {
                    if self.shift.get() == Some(shift) {
                        if let Some(v) = self.decode_skipped(&skipped, shift)? {
                            return Ok((v.0, v.1, (at.pos, len)));
                        }
                    }
                    // Something the streaming decode does not vouch for: the entry again
                    // from the file, whole, read as before (errors stay serde_json's).
                    self.recut(at.pos + shift)?;
                    at
                }
            }
            _ => self.cut.cut(&mut self.buf)?,
        };
        let len = self.cut.place().pos - at.pos;
        let (mut v, spans) = parse_entry_cut(&self.buf).map_err(|e| Cutter::<R>::placed(at, &e))?;
        if !spans.is_empty() {
            let started = v.get("startedDateTime").and_then(Value::as_str);
            if let Some(t) = started.and_then(parse_iso) {
                (self.early)(t);
            }
            put_back(&mut v, &spans, &self.buf);
        }
        // The buffer is kept for the next entry (see `parse_placed`).
        Ok((v, [None, None], (at.pos, len)))
    }

    /// The entry cut in `buf` with the strings `skipped` left out, parsed, and each string
    /// read from its place in the file (`shift` bytes from its place in the text) and put
    /// back: base64 decoded into bytes when its `encoding` says so, else its text. `None` when
    /// the rest does not parse or a string does not decode as the parser would read it (the
    /// caller reads the entry whole).
    fn decode_skipped(
        &mut self,
        skipped: &[super::scan::Skipped],
        shift: u64,
    ) -> Result<Option<(Value, Decoded)>, DocError> {
        if skipped.iter().any(|s| s.measure.is_none()) {
            return Ok(None);
        }
        let Ok(mut v) = serde_json::from_slice::<Value>(&self.buf) else {
            return Ok(None);
        };
        if !skipped.iter().all(|s| text_slot(&mut v, s.path).is_some()) {
            return Ok(None);
        }
        let started = v.get("startedDateTime").and_then(Value::as_str);
        if let Some(t) = started.and_then(parse_iso) {
            (self.early)(t);
        }
        let Some(source) = self.source.as_mut() else {
            return Ok(None);
        };
        let changed = |source: &Source, e: Option<std::io::Error>| {
            DocError::Har(HarError::at(
                None,
                "",
                match e {
                    Some(e) => format!("cannot read {}: {e}", source.path.display()),
                    None => "the file changed while it was read".to_owned(),
                },
            ))
        };
        let mut decoded: Decoded = [None, None];
        for s in skipped {
            let Some(m) = s.measure else {
                return Ok(None);
            };
            let pos = s.pos + shift;
            let [a, b, _] = TEXTS[s.path];
            let base64 = v
                .get(a)
                .and_then(|v| v.get(b))
                .and_then(|v| v.get("encoding"))
                .and_then(Value::as_str)
                .is_some_and(|e| e.eq_ignore_ascii_case("base64"));
            if let Some(n) = m.base64_len().filter(|_| base64) {
                let mut sink = crate::cut::B64Sink::new(n);
                let ok = source
                    .decode(pos, s.raw_len, &mut sink)
                    .map_err(|e| changed(source, Some(e)))?;
                if !ok {
                    return Err(changed(source, None));
                }
                if let Some(bytes) = sink.finish() {
                    decoded[s.path.min(1)] = Some(bytes);
                    continue;
                }
                // Not what `STANDARD` decodes: the text, read as before.
            }
            let mut text = Vec::with_capacity(m.len);
            let ok = source
                .decode(pos, s.raw_len, &mut text)
                .map_err(|e| changed(source, Some(e)))?;
            let text = match String::from_utf8(text) {
                Ok(t) if ok && t.len() == m.len => t,
                _ => return Err(changed(source, None)),
            };
            if let Some(slot) = text_slot(&mut v, s.path) {
                *slot = Value::String(text);
            }
        }
        Ok(Some((v, decoded)))
    }

    /// Cuts the entry at `pos` in the file again, whole, into `buf`, as [`Cutter::cut`] cut it
    /// from the stream.
    fn recut(&mut self, pos: u64) -> Result<(), DocError> {
        self.buf.clear();
        let Some(source) = self.source.as_mut() else {
            return Err(HarError::at(None, "", "the file changed while it was read").into());
        };
        let file = source
            .at(pos)
            .map_err(|e| HarError::at(None, "", format!("cannot read: {e}")))?;
        let text = LossyUtf8::new(
            std::io::BufReader::with_capacity(64 * 1024, &mut *file),
            Default::default(),
        );
        let mut again = Cutter::new(std::io::BufReader::with_capacity(64 * 1024, text));
        again.cut(&mut self.buf)?;
        Ok(())
    }

    /// An object's members, each key handed to `member`, which reads its value.
    fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, String) -> Result<(), DocError>,
    ) -> Result<(), DocError> {
        self.cut.expect(b'{', "an object")?;
        if self.cut.peek_some("an object")? == b'}' {
            self.cut.bump();
            return Ok(());
        }
        loop {
            if self.cut.peek_some("an object")? != b'"' {
                return Err(self.cut.syntax("key must be a string").into());
            }
            let key: String = self.parse()?;
            self.cut.expect(b':', "`:`")?;
            member(self, key)?;
            match self.cut.peek_some("an object")? {
                b',' => self.cut.bump(),
                b'}' => {
                    self.cut.bump();
                    return Ok(());
                }
                _ => return Err(self.cut.syntax("expected `,` or `}`").into()),
            }
        }
    }

    /// `log`: the entries, one at a time, and the creator and mcptap blocks.
    fn log(&mut self) -> Result<Found, DocError> {
        match self.cut.peek_some("a value")? {
            b'{' => {}
            b'n' => {
                self.parse::<()>()?;
                return Ok(Found::default());
            }
            _ => {
                // Checked as JSON first: a broken file says where it broke.
                self.parse::<IgnoredAny>()?;
                return Err(HarError::at(None, "log", "expected an object").into());
            }
        }
        let mut found = Found::default();
        self.object(|d, key| {
            match &*key {
                "entries" if !found.entries => found.entries = d.entries()?,
                "creator" => {
                    let c: Value = d.parse()?;
                    let name = c.get("name").and_then(Value::as_str).unwrap_or("");
                    let version = c.get("version").and_then(Value::as_str).unwrap_or("");
                    let s = format!("{name} {version}").trim().to_owned();
                    d.out.creator = (!s.is_empty()).then_some(s);
                }
                "_mcptap" => {
                    let m: Value = d.parse()?;
                    read_mcptap_block(&m, &mut d.out);
                }
                _ => {
                    d.parse::<IgnoredAny>()?;
                }
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// `log.entries`: each entry becomes a flow as soon as it is parsed. Returns whether the
    /// array was there (`null` counts as missing).
    fn entries(&mut self) -> Result<bool, DocError> {
        match self.cut.peek_some("a value")? {
            b'[' => self.cut.bump(),
            b'n' => {
                self.parse::<()>()?;
                return Ok(false);
            }
            _ => {
                self.parse::<IgnoredAny>()?;
                return Err(HarError::at(None, "log.entries", "expected an array").into());
            }
        }
        if self.cut.peek_some("a list")? == b']' {
            self.cut.bump();
            return Ok(true);
        }
        let mut i = 0;
        loop {
            let (mut e, decoded, (pos, len)) = self.parse_entry()?;
            let flow = Entry::new(i, &mut self.out.warnings)
                .with_decoded(decoded)
                .flow(&mut e)?;
            drop(e);
            let place = self.shift.get().map(|shift| EntryPlace {
                offset: pos + shift,
                len,
                index: i,
            });
            (self.each)(flow, place);
            i += 1;
            match self.cut.peek_some("a list")? {
                b',' => self.cut.bump(),
                b']' => {
                    self.cut.bump();
                    return Ok(true);
                }
                _ => return Err(self.cut.syntax("expected `,` or `]`").into()),
            }
        }
    }
}

/// The flow of the entry at `place` in the HAR file at `path` (where [`read_har_placed`]
/// said it was), as it was read then.
pub(crate) fn read_entry_at(
    path: &std::path::Path,
    place: EntryPlace,
) -> Result<Flow, crate::StoreError> {
    use std::io::{Seek as _, SeekFrom};
    let read_err = |source| crate::StoreError::Read {
        path: path.to_owned(),
        source,
    };
    let har_err = |source| crate::StoreError::Har {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    file.seek(SeekFrom::Start(place.offset)).map_err(read_err)?;
    // Cut as it was the first time, its large bodies read from their places.
    let mut doc = Doc {
        cut: Cutter::new(std::io::BufReader::with_capacity(
            64 * 1024,
            file.take(place.len),
        )),
        out: HarImport::default(),
        each: &mut |_, _| {},
        early: &mut |_| {},
        buf: Vec::new(),
        shift: std::rc::Rc::new(std::cell::Cell::new(Some(place.offset))),
        source: Some(Source::new(path)),
    };
    let (mut e, decoded, (_, len)) = doc.parse_entry().map_err(|e| {
        let e = e.into_har();
        har_err(HarError {
            entry: Some(place.index),
            field: String::new(),
            reason: format!("the file changed while it was read: {}", e.reason),
            source: e.source,
        })
    })?;
    if len != place.len {
        return Err(har_err(HarError::at(
            Some(place.index),
            "",
            "the file changed while it was read",
        )));
    }
    drop(doc);
    // Its warnings were said when the entry was first read.
    Entry::new(place.index, &mut Vec::new())
        .with_decoded(decoded)
        .flow(&mut e)
        .map_err(har_err)
}

/// [`parse_entry_text`] with the bodies it cut not put back yet ([`put_back`] puts them in:
/// the spans are of `text`, and their places are in the entry).
fn parse_entry_cut(text: &[u8]) -> Result<(Value, Vec<crate::cut::Span>), serde_json::Error> {
    if let Some(cut) = crate::cut::cut_strings(text, &PATHS) {
        if let Ok(mut v) = serde_json::from_slice::<Value>(&cut.text) {
            if cut
                .spans
                .iter()
                .all(|s| text_slot(&mut v, s.path).is_some())
            {
                return Ok((v, cut.spans));
            }
        }
    }
    serde_json::from_slice(text).map(|v| (v, Vec::new()))
}

/// Where the body `TEXTS[path]` is in the entry `v`.
fn text_slot(v: &mut Value, path: usize) -> Option<&mut Value> {
    let [a, b, c] = TEXTS[path];
    v.get_mut(a)?.get_mut(b)?.get_mut(c)
}

/// Puts the bodies cut out of `text` into the entry `v` parsed from the rest.
fn put_back(v: &mut Value, spans: &[crate::cut::Span], text: &[u8]) {
    for span in spans {
        if let Some(slot) = text_slot(v, span.path) {
            *slot = Value::String(span.decode(text));
        }
    }
}

/// A decompressor whose errors all say the data is bad (`InvalidData`), so that they are told
/// apart from the file's own read errors by kind.
struct Inflating<R>(R);

impl<R: Read> Read for Inflating<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

/// Passes UTF-8 through and turns every invalid sequence into U+FFFD, as
/// [`String::from_utf8_lossy`] does on the whole (a sequence cut by a read boundary waits for
/// the next read to complete or end it), so that a streaming JSON parser, which rejects
/// invalid UTF-8, reads another tool's Latin-1 bodies as the in-memory reader does. A leading
/// byte order mark is skipped.
struct LossyUtf8<R> {
    input: R,
    /// Bytes read but not yet passed on: `pending[start..]`.
    pending: Vec<u8>,
    start: usize,
    /// How many bytes from `start` on are known to be valid (a character may be passed on in
    /// two reads, and its second part is no longer valid on its own).
    valid: usize,
    /// What is left of a replacement character the caller's buffer had no room for.
    spill: Vec<u8>,
    /// True once a leading byte order mark was looked for (and skipped).
    bom_checked: bool,
    eof: bool,
    /// How far the bytes passed on are from the input's: 3 after a byte order mark, `None`
    /// once a sequence was replaced.
    shift: std::rc::Rc<std::cell::Cell<Option<u64>>>,
}

impl<R: Read> LossyUtf8<R> {
    fn new(input: R, shift: std::rc::Rc<std::cell::Cell<Option<u64>>>) -> Self {
        LossyUtf8 {
            input,
            pending: Vec::with_capacity(64 * 1024),
            start: 0,
            valid: 0,
            spill: Vec::new(),
            bom_checked: false,
            eof: false,
            shift,
        }
    }

    /// Reads more input after what is pending; false at the end of input.
    fn refill(&mut self) -> std::io::Result<bool> {
        if self.start > 0 {
            self.pending.drain(..self.start);
            self.start = 0;
        }
        let len = self.pending.len();
        self.pending.resize(len + 64 * 1024, 0);
        let n = loop {
            match self.input.read(&mut self.pending[len..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        self.pending
            .truncate(len + n.as_ref().copied().unwrap_or(0));
        Ok(n? > 0)
    }

    /// Gives what fits of `bytes`, keeping the rest for the next read.
    fn give(&mut self, bytes: &[u8], buf: &mut [u8]) -> usize {
        let n = bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&bytes[..n]);
        self.spill.extend_from_slice(&bytes[n..]);
        n
    }
}

impl<R: Read> Read for LossyUtf8<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        const FFFD: &[u8] = "\u{FFFD}".as_bytes();
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.spill.is_empty() {
            let spill = std::mem::take(&mut self.spill);
            return Ok(self.give(&spill, buf));
        }
        while !self.bom_checked {
            if self.pending.len() - self.start >= 3 || self.eof {
                if self.pending[self.start..].starts_with(b"\xEF\xBB\xBF") {
                    self.start += 3;
                    self.shift.set(self.shift.get().map(|s| s + 3));
                }
                self.bom_checked = true;
            } else if !self.refill()? {
                self.eof = true;
            }
        }
        loop {
            let rest = &self.pending[self.start..];
            let bad = if self.valid > 0 {
                None
            } else {
                match std::str::from_utf8(rest) {
                    Ok(_) => {
                        self.valid = rest.len();
                        None
                    }
                    Err(e) => {
                        self.valid = e.valid_up_to();
                        Some(e.error_len())
                    }
                }
            };
            if self.valid > 0 {
                let n = self.valid.min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                self.start += n;
                self.valid -= n;
                return Ok(n);
            }
            match bad {
                Some(Some(len)) => {
                    self.shift.set(None);
                    self.start += len;
                    return Ok(self.give(FFFD, buf));
                }
                // A sequence cut short by the end of input: one replacement for it.
                Some(None) if self.eof => {
                    self.shift.set(None);
                    self.start = self.pending.len();
                    return Ok(self.give(FFFD, buf));
                }
                None if self.eof => return Ok(0),
                _ => {
                    if !self.refill()? {
                        self.eof = true;
                    }
                }
            }
        }
    }
}

/// [`read_har`] on bytes in memory.
pub fn read_har_bytes(bytes: &[u8]) -> Result<HarImport, HarError> {
    read_har(bytes)
}

/// `log._mcptap`: what mcptap says about its own file.
fn read_mcptap_block(m: &Value, out: &mut HarImport) {
    let Some(m) = m.as_object() else { return };
    out.raw_secrets = m
        .get("raw_secrets")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    out.ended = m.get("ended").and_then(Value::as_i64);
    if let Some(s) = m.get("session") {
        match serde_json::from_value::<SessionMeta>(s.clone()) {
            Ok(s) => out.session = Some(s),
            Err(e) => out
                .warnings
                .push(format!("log._mcptap.session: ignored ({e})")),
        }
    }
}

struct Entry<'a> {
    i: usize,
    warnings: &'a mut Vec<String>,
    /// `request.postData.text` and `response.content.text`, moved out of the entry's tree
    /// (the bodies are the bulk of an entry: they are moved into the flow, not copied).
    texts: [Option<String>; 2],
    /// The same bodies when they were decoded from base64 as they were read
    /// ([`Doc::parse_entry`]).
    decoded: Decoded,
}

type Obj = Map<String, Value>;

/// Where [`Entry::texts`] come from.
const TEXTS: [[&str; 3]; 2] = [
    ["request", "postData", "text"],
    ["response", "content", "text"],
];

/// [`TEXTS`] as the cutters take them.
const PATHS: [&[&str]; 2] = [&TEXTS[0], &TEXTS[1]];

impl<'a> Entry<'a> {
    fn new(i: usize, warnings: &'a mut Vec<String>) -> Self {
        Entry {
            i,
            warnings,
            texts: [None, None],
            decoded: [None, None],
        }
    }

    /// With bodies already decoded from base64 (their texts in the entry are `""`).
    fn with_decoded(mut self, decoded: Decoded) -> Self {
        self.decoded = decoded;
        self
    }

    fn err(&self, field: &str, reason: impl Into<String>) -> HarError {
        HarError::at(Some(self.i), field, reason)
    }

    fn obj<'v>(&self, v: &'v Obj, key: &str, path: &str) -> Result<Option<&'v Obj>, HarError> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(_) => Err(self.err(path, "expected an object")),
        }
    }

    fn str_req<'v>(&self, v: &'v Obj, key: &str, path: &str) -> Result<&'v str, HarError> {
        match v.get(key) {
            None | Some(Value::Null) => Err(self.err(path, "missing")),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(self.err(path, "expected a string")),
        }
    }

    /// An optional string; numbers and booleans are taken as their text.
    fn str_opt(&self, v: &Obj, key: &str, path: &str) -> Result<Option<String>, HarError> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(self.err(path, "expected a string")),
        }
    }

    /// An optional number; numeric strings are accepted; `-1`, negatives and absurd values are
    /// "unknown".
    fn num(&self, v: &Obj, key: &str, path: &str) -> Result<Option<f64>, HarError> {
        let n = match v.get(key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
            Some(Value::String(s)) => Some(
                s.trim()
                    .parse::<f64>()
                    .map_err(|_| self.err(path, format!("expected a number, got {s:?}")))?,
            ),
            Some(_) => return Err(self.err(path, "expected a number")),
        };
        Ok(n.filter(|n| n.is_finite() && *n >= 0.0 && *n < 1e15))
    }

    fn headers(&mut self, v: &Obj, path: &str) -> Result<Headers, HarError> {
        let list = match v.get("headers") {
            None | Some(Value::Null) => return Ok(Headers::new()),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(self.err(&format!("{path}.headers"), "expected an array")),
        };
        let mut out = Headers::new();
        for (k, h) in list.iter().enumerate() {
            let at = format!("{path}.headers[{k}]");
            let (name, value, raw) = match h {
                Value::Object(o) => (
                    self.str_req(o, "name", &format!("{at}.name"))?.to_owned(),
                    self.str_opt(o, "value", &format!("{at}.value"))?
                        .unwrap_or_default(),
                    self.raw_value(o, &at),
                ),
                // Slack writes `[name, value]`.
                Value::Array(a) => match (a.first(), a.get(1)) {
                    (Some(Value::String(n)), Some(Value::String(v))) => {
                        (n.clone(), v.clone(), None)
                    }
                    _ => return Err(self.err(&at, "expected a {name, value} object")),
                },
                _ => return Err(self.err(&at, "expected a {name, value} object")),
            };
            // HTTP/2 pseudo-headers (`:authority`) that Chrome lists are not header fields.
            if name.starts_with(':') {
                continue;
            }
            match raw {
                // Kept only while `value` is still its text (see `Header::with_raw`).
                Some(raw) => out.push_header(Header::with_raw(name, value, raw)),
                None => out.push(name, value),
            }
        }
        Ok(out)
    }

    /// A header's exact bytes (`_mcptapValueBase64`, written by mcptap for a value that was not
    /// UTF-8). A field that does not decode is ignored: `value` still holds the text.
    fn raw_value(&mut self, o: &Obj, at: &str) -> Option<Vec<u8>> {
        let b64 = o.get("_mcptapValueBase64")?.as_str()?;
        match base64::engine::general_purpose::STANDARD.decode(b64.as_bytes()) {
            Ok(raw) => Some(raw),
            Err(e) => {
                self.warnings
                    .push(format!("{at}._mcptapValueBase64: ignored ({e})"));
                None
            }
        }
    }

    /// `text` (+ `encoding: base64`) as bytes; `None` when there is no text.
    fn body(&mut self, v: &Obj, path: &str) -> Result<Option<Vec<u8>>, HarError> {
        let slot = match path {
            "request.postData" => Some(0),
            "response.content" => Some(1),
            _ => None,
        };
        if let Some(bytes) = slot.and_then(|i| self.decoded[i].take()) {
            // Decoded because its `encoding` said base64 (`Doc::decode_skipped`).
            return Ok(Some(bytes));
        }
        let moved = slot.and_then(|i| self.texts[i].take());
        let text = match moved {
            Some(t) => t,
            None => match self.str_opt(v, "text", &format!("{path}.text"))? {
                Some(t) => t,
                None => return Ok(None),
            },
        };
        let enc = self.str_opt(v, "encoding", &format!("{path}.encoding"))?;
        if enc.is_some_and(|e| e.eq_ignore_ascii_case("base64")) {
            // White space (line breaks) taken out, and only when there is some.
            let clean = if text.bytes().any(|b| b.is_ascii_whitespace()) {
                let mut clean = text.into_bytes();
                clean.retain(|b| !b.is_ascii_whitespace());
                clean
            } else {
                text.into_bytes()
            };
            let clean = String::from_utf8(clean).unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(clean.as_bytes())
                .or_else(|_| {
                    base64::engine::general_purpose::STANDARD_NO_PAD
                        .decode(clean.trim_end_matches('='))
                })
                .map_err(|e| self.err(&format!("{path}.text"), format!("invalid base64: {e}")))?;
            return Ok(Some(bytes));
        }
        Ok(Some(text.into_bytes()))
    }

    /// The entry `e` as a flow; its bodies' texts and `_mcptap` are moved out of it.
    fn flow(mut self, e: &mut Value) -> Result<Flow, HarError> {
        for (slot, [a, b, c]) in self.texts.iter_mut().zip(TEXTS) {
            if let Some(Value::String(t)) = e
                .get_mut(a)
                .and_then(|v| v.get_mut(b))
                .and_then(|v| v.get_mut(c))
            {
                *slot = Some(std::mem::take(t));
            }
        }
        let mcptap_block = e.get_mut("_mcptap").map(Value::take);
        let e = e
            .as_object()
            .ok_or_else(|| self.err("", "expected an object"))?;
        let started_s = self.str_req(e, "startedDateTime", "startedDateTime")?;
        let started = parse_iso(started_s).ok_or_else(|| {
            self.err(
                "startedDateTime",
                format!("not an ISO 8601 date: {started_s:?}"),
            )
        })?;
        let req = self
            .obj(e, "request", "request")?
            .ok_or_else(|| self.err("request", "missing"))?;
        let method = self.str_req(req, "method", "request.method")?.to_owned();
        let url = self.str_req(req, "url", "request.url")?.to_owned();
        let req_version = self.version(req, "request.httpVersion")?;
        let req_headers = self.headers(req, "request")?;
        let req_body = self.request_body(req)?;

        let resp = self.obj(e, "response", "response")?;
        let status = match resp {
            Some(r) => match self.num(r, "status", "response.status")? {
                Some(s) if s <= f64::from(u16::MAX) => s as u16,
                Some(_) => return Err(self.err("response.status", "out of range")),
                None if r.get("status").is_none() => {
                    return Err(self.err("response.status", "missing"))
                }
                None => 0,
            },
            None => 0,
        };

        let mcptap = match mcptap_block {
            None | Some(Value::Null) => None,
            Some(v) => match serde_json::from_value::<McptapEntry>(v) {
                Ok(m) => Some(m),
                Err(err) => {
                    self.warnings
                        .push(format!("entry {}: _mcptap: ignored ({err})", self.i));
                    None
                }
            },
        };

        let response = match (resp, mcptap.as_ref().map(|m| m.response_body.is_some())) {
            (Some(r), Some(true)) => Some(self.response(r, status)?),
            (Some(r), None) if status > 0 => Some(self.response(r, status)?),
            _ => None,
        };

        let (_, host, port) = split_url(&url).unwrap_or_default();
        let mut flow = Flow {
            id: FlowId(self.i as u64 + 1),
            kind: FlowKind::Http,
            state: if response.is_some() {
                FlowState::Completed
            } else {
                FlowState::Failed
            },
            client_addr: None,
            host,
            port,
            client_tls: None,
            upstream_tls: None,
            request: Request {
                method,
                url,
                version: req_version,
                headers: req_headers,
                body: req_body,
            },
            response,
            timings: self.timings(e, started, resp.is_some() && status > 0)?,
            error: None,
            tunnel: None,
            injected: None,
            not_injected: None,
            by_mcptap: None,
            secrets: Vec::new(),
            raw_secrets: false,
        };
        if flow.response.is_none() {
            // Chrome and mitmproxy write `_error`; Playwright `_failureText`.
            let message = resp
                .and_then(|r| {
                    ["_error", "_failureText"]
                        .iter()
                        .find_map(|k| r.get(*k).and_then(Value::as_str))
                })
                .filter(|s| !s.is_empty());
            flow.error = Some(FlowError {
                kind: message.map_or(ErrorKind::UpstreamProtocol, classify_foreign_error),
                message: message
                    .unwrap_or("the HAR entry has no response (status 0)")
                    .to_owned(),
                hint: None,
                limit: None,
            });
        }
        match mcptap {
            Some(m) => apply_mcptap(&mut flow, m),
            None => {
                if let Some(r) = flow.response.as_mut() {
                    if is_event_stream(&r.headers) {
                        let at = flow.timings.response_head.unwrap_or(started);
                        r.sse = sse::parse_all(&r.body.bytes, at);
                    }
                }
            }
        }
        Ok(flow)
    }

    fn version(&self, v: &Obj, path: &str) -> Result<HttpVersion, HarError> {
        let s = self.str_opt(v, "httpVersion", path)?.unwrap_or_default();
        Ok(HttpVersion::parse(&s).unwrap_or_default())
    }

    fn request_body(&mut self, req: &Obj) -> Result<CapturedBody, HarError> {
        let size = self.num(req, "bodySize", "request.bodySize")?;
        let Some(post) = self.obj(req, "postData", "request.postData")? else {
            // HTTP Toolkit puts bodies that are not text in `_content` (base64).
            if let Some(c) = self.obj(req, "_content", "request._content")? {
                if let Some(bytes) = self.body(c, "request._content")? {
                    let mut b = CapturedBody::complete(bytes);
                    b.total_len = b.total_len.max(size.map_or(0, |s| s as u64));
                    return Ok(b);
                }
            }
            let mut b = CapturedBody::complete(Vec::new());
            b.total_len = size.map_or(0, |s| s as u64);
            b.truncated = b.total_len > 0;
            return Ok(b);
        };
        let bytes = match self.body(post, "request.postData")? {
            Some(b) => b,
            None => match post.get("params") {
                // Form fields without the text (older Firefox, Charles).
                Some(Value::Array(params)) => {
                    let mut s = String::new();
                    for (k, p) in params.iter().enumerate() {
                        let at = format!("request.postData.params[{k}]");
                        let p = p
                            .as_object()
                            .ok_or_else(|| self.err(&at, "expected a {name, value} object"))?;
                        let n = self.str_req(p, "name", &format!("{at}.name"))?;
                        let v = self
                            .str_opt(p, "value", &format!("{at}.value"))?
                            .unwrap_or_default();
                        if k > 0 {
                            s.push('&');
                        }
                        s.push_str(&mcptap_flow::redact::percent_encode(n));
                        s.push('=');
                        s.push_str(&mcptap_flow::redact::percent_encode(&v));
                    }
                    s.into_bytes()
                }
                None | Some(Value::Null) => Vec::new(),
                Some(_) => return Err(self.err("request.postData.params", "expected an array")),
            },
        };
        let mut b = CapturedBody::complete(bytes);
        if let Some(s) = size {
            b.total_len = b.total_len.max(s as u64);
        }
        Ok(b)
    }

    fn response(&mut self, r: &Obj, status: u16) -> Result<Response, HarError> {
        let headers = self.headers(r, "response")?;
        let version = self.version(r, "response.httpVersion")?;
        let content = self.obj(r, "content", "response.content")?;
        let body_size = self.num(r, "bodySize", "response.bodySize")?;
        let (bytes, size) = match content {
            Some(c) => (
                self.body(c, "response.content")?,
                self.num(c, "size", "response.content.size")?,
            ),
            None => (None, None),
        };
        let missing = bytes.is_none();
        let bytes = bytes.unwrap_or_default();
        let len = bytes.len() as u64;
        // HAR text is decoded (the spec says so, and tools do): note what it was decoded from.
        let encoding = headers
            .get_all("content-encoding")
            .map(str::trim)
            .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
            .collect::<Vec<_>>()
            .join(", ");
        let encoding = (!encoding.is_empty() && !bytes.is_empty()).then_some(encoding);
        let total_len = match (body_size, size) {
            (Some(b), _) if b > 0.0 => b as u64,
            (_, Some(s)) if s > 0.0 => s as u64,
            _ => len,
        };
        let body = CapturedBody {
            bytes: bytes.into(),
            total_len: total_len.max(if encoding.is_some() { 0 } else { len }),
            truncated: missing && size.is_some_and(|s| s > 0.0),
            state: BodyState::Complete,
            encoding,
        };
        Ok(Response {
            status,
            version,
            headers,
            body,
            sse: Vec::new(),
            sse_elided: 0,
            synthetic: false,
        })
    }

    fn timings(&self, e: &Obj, started: Micros, has_response: bool) -> Result<Timings, HarError> {
        let us = |ms: f64| (ms * 1000.0).round() as i64;
        let time = self.num(e, "time", "time")?.map(us);
        let mut t = Timings {
            started,
            ..Timings::default()
        };
        let Some(tm) = self.obj(e, "timings", "timings")? else {
            t.finished = time.map(|d| started + d);
            return Ok(t);
        };
        let part = |k: &str| -> Result<i64, HarError> {
            Ok(self.num(tm, k, &format!("timings.{k}"))?.map_or(0, us))
        };
        let before = part("blocked")? + part("dns")? + part("connect")?;
        let connected = started + before;
        let request_done = connected + part("send")?;
        let response_head = request_done + part("wait")?;
        let end = response_head + part("receive")?;
        t.connected = Some(connected);
        t.request_done = Some(request_done);
        t.response_head = has_response.then_some(response_head);
        t.finished = match time {
            Some(d) if started + d >= response_head => Some(started + d),
            // `time` unknown (`-1`, as HTTP Toolkit writes for aborted requests) and no timing
            // measured either: when it ended is unknown.
            None if end == started => None,
            _ => Some(end),
        };
        Ok(t)
    }
}

/// Restores what only mcptap's own HAR carries.
fn apply_mcptap(flow: &mut Flow, m: McptapEntry) {
    flow.id = FlowId(m.id);
    flow.kind = m.kind;
    flow.state = m.state;
    if let Some(url) = m.url {
        flow.request.url = url;
    }
    flow.host = m.host;
    flow.port = m.port;
    flow.client_addr = m.client_addr;
    flow.client_tls = m.client_tls;
    flow.upstream_tls = m.upstream_tls;
    flow.timings = m.timings;
    flow.error = m.error;
    flow.tunnel = m.tunnel;
    flow.injected = m.injected;
    flow.not_injected = m.not_injected;
    flow.by_mcptap = m.by_mcptap;
    flow.secrets = m.secrets;
    flow.raw_secrets = m.raw_secrets;
    apply_body(&mut flow.request.body, m.request_body);
    if let Some(r) = flow.response.as_mut() {
        if let Some(b) = m.response_body {
            apply_body(&mut r.body, b);
        }
        r.synthetic = m.synthetic;
        r.sse = m.sse;
    }
}

fn apply_body(body: &mut CapturedBody, m: BodyMeta) {
    body.total_len = m.total_len;
    body.truncated = m.truncated;
    body.state = m.state;
    body.encoding = m.encoding;
}

fn is_event_stream(h: &Headers) -> bool {
    h.get("content-type")
        .is_some_and(|c| mcptap_flow::media_type_is(c, "text/event-stream"))
}

/// Other tools only give an error as text (Chrome's `net::ERR_…`, mitmproxy's messages): the one
/// place mcptap has to classify by message, because the type is gone.
fn classify_foreign_error(msg: &str) -> ErrorKind {
    let m = msg.to_ascii_lowercase();
    if m.contains("name_not_resolved") || m.contains("dns") || m.contains("resolve") {
        ErrorKind::UpstreamDns
    } else if m.contains("cert") || m.contains("ssl") || m.contains("tls") {
        ErrorKind::UpstreamTls
    } else if m.contains("timed_out") || m.contains("timeout") || m.contains("timed out") {
        ErrorKind::UpstreamTimeout
    } else if m.contains("refused") || m.contains("unreachable") || m.contains("connect") {
        ErrorKind::UpstreamConnect
    } else if m.contains("aborted") || m.contains("canceled") || m.contains("cancelled") {
        ErrorKind::ClientDisconnected
    } else {
        ErrorKind::UpstreamProtocol
    }
}

#[cfg(test)]
mod lossy_tests {
    use super::LossyUtf8;
    use std::io::Read;

    /// Hands out its bytes `step` at a time, so sequences are cut at every position.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn lossy_utf8_reads_as_from_utf8_lossy_whatever_the_read_sizes() {
        let cases: &[&[u8]] = &[
            b"plain ascii",
            "h\u{e9}llo \u{1F600} w\u{f6}rld".as_bytes(),
            b"latin-1 caf\xe9 and \xff\xfe bytes",
            b"cut at the end \xf0\x9f\x98",
            b"\xe2\x82 broken middle \xe2\x28\xa1 and \xc0\xaf overlong",
            b"\xed\xa0\x80 surrogate",
            b"\xEF\xBB\xBF{\"bom\": 1}",
        ];
        for case in cases {
            let text = case.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(case);
            let want = String::from_utf8_lossy(text).into_owned();
            for step in 1..8 {
                for out in [1, 2, 3, 64] {
                    let mut r = LossyUtf8::new(Trickle(case, step), Default::default());
                    let mut got = Vec::new();
                    let mut buf = vec![0u8; out];
                    loop {
                        let n = r.read(&mut buf).unwrap();
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    assert_eq!(
                        String::from_utf8(got).unwrap(),
                        want,
                        "{case:?} step {step} out {out}"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod cut_tests {
    use super::*;

    /// The whole document parsed by serde_json, each entry made a flow: what the streaming
    /// reader must give.
    /// `read_har_placed` of `text` gives the flows `want`, and the first `first` of them read
    /// back from their places are the same.
    fn placed_as_whole(text: &[u8], want: &[Flow], first: usize) {
        let mut got = Vec::new();
        let mut places = Vec::new();
        read_har_placed(text, None, &mut |f, p| {
            got.push(f);
            places.push(p.unwrap());
        })
        .unwrap();
        assert_eq!(got, want);
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), text).unwrap();
        for (place, f) in places.iter().zip(want).take(first) {
            assert_eq!(&read_entry_at(tmp.path(), *place).unwrap(), f);
        }
        // Read from the file, large bodies decoded from their places as they stream by.
        assert_eq!(from_file(tmp.path()).unwrap(), want);
    }

    /// `read_har_placed` of the file at `path` with the file as its source (large bodies
    /// skipped as they stream by and read back from their places).
    fn from_file(path: &std::path::Path) -> Result<Vec<Flow>, HarError> {
        let mut got = Vec::new();
        let file = std::fs::File::open(path).unwrap();
        read_har_placed(file, Some(path), &mut |f, _| got.push(f))?;
        Ok(got)
    }

    fn whole(bytes: &[u8]) -> Vec<Flow> {
        let doc: Value = serde_json::from_slice(bytes).unwrap();
        let mut warnings = Vec::new();
        let mut doc = doc;
        doc["log"]["entries"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .enumerate()
            .map(|(i, e)| Entry::new(i, &mut warnings).flow(e).unwrap())
            .collect()
    }

    /// Every tool's HAR file the repository keeps, as written and pretty-printed with its
    /// entries' keys reordered (`log` last, `entries` first): the same flows as the whole
    /// document gives, and each entry's place holds the entry.
    #[test]
    fn the_streaming_reader_gives_what_the_whole_document_gives() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_none_or(|x| x != "har") {
                continue;
            }
            n += 1;
            let bytes = std::fs::read(&path).unwrap();
            let mut doc: Value = serde_json::from_slice(&bytes).unwrap();
            let log = doc.as_object_mut().unwrap().remove("log").unwrap();
            let mut log = log.as_object().unwrap().clone();
            let entries = log.remove("entries").unwrap();
            let mut reordered = serde_json::Map::new();
            reordered.insert("x".into(), Value::from("{\"log\": [1, \"]\"]}"));
            let mut inner = serde_json::Map::new();
            inner.insert("entries".into(), entries);
            inner.extend(log);
            reordered.insert("log".into(), Value::Object(inner));
            let pretty = serde_json::to_vec_pretty(&Value::Object(reordered)).unwrap();
            for text in [bytes.clone(), pretty] {
                let want = whole(&text);
                placed_as_whole(&text, &want, usize::MAX);
            }
        }
        assert!(n >= 6, "{n} fixtures");
    }

    /// Large bodies (cut out of an entry before it is parsed, `parse_entry_text`) come out
    /// as the whole document gives them: text with escapes of every kind, a request's text,
    /// base64, and a text at a place that is no body.
    #[test]
    fn large_bodies_read_as_the_whole_document_gives_them() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/chrome-devtools.har");
        let mut doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let unit = "{\"a\":\"quote \\\" slash \\\\ é ☃ 😀 \\u0001\"}\n\t";
        let big = unit.repeat(200_000 / unit.len());
        let entries = doc["log"]["entries"].as_array_mut().unwrap();
        assert!(entries.len() >= 3);
        entries[0]["response"]["content"]["text"] = big.clone().into();
        entries[1]["request"]["postData"] =
            serde_json::json!({"mimeType": "application/json", "text": big});
        entries[1]["response"]["content"]["comment"] = big.clone().into();
        let b64 = base64::engine::general_purpose::STANDARD.encode(big.as_bytes());
        entries[2]["response"]["content"] = serde_json::json!({"size": big.len(), "mimeType": "application/octet-stream", "text": b64, "encoding": "base64"});
        for text in [
            serde_json::to_vec(&doc).unwrap(),
            serde_json::to_vec_pretty(&doc).unwrap(),
        ] {
            let want = whole(&text);
            assert_eq!(
                want[0].response.as_ref().unwrap().body.bytes,
                big.as_bytes()
            );
            assert_eq!(want[1].request.body.bytes, big.as_bytes());
            assert_eq!(
                want[2].response.as_ref().unwrap().body.bytes,
                big.as_bytes()
            );
            placed_as_whole(&text, &want, 3);
        }
    }

    /// Large bodies read from their places in the file (as they stream by) give what the
    /// in-memory reader gives, for bodies of every kind and for files broken inside one: the
    /// same flows, or the same error at the same place (never a panic).
    #[test]
    fn bodies_streamed_from_the_file_are_what_the_text_gives() {
        use base64::Engine as _;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/chrome-devtools.har");
        let base: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let n = crate::cut::CUT_MIN * 2;
        let bin: Vec<u8> = (0..n as u32).map(|i| (i * 13 % 256) as u8).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bin);
        let wrapped = b64
            .as_bytes()
            .chunks(76)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n");
        let unit = "{\"a\":\"quote \\\" slash \\\\ é ☃ 😀 \\u0001\"}\n\t";
        let text = unit.repeat(n / unit.len());
        let json = |t: &str, enc: Option<&str>| {
            let mut c = serde_json::json!({"size": t.len(), "mimeType": "x/y", "text": t});
            if let Some(e) = enc {
                c["encoding"] = e.into();
            }
            c
        };
        // (content, bytes to put in place of `@@`)
        let cases: Vec<(Value, Option<&[u8]>)> = vec![
            (json(&text, None), None),
            (json(&b64, Some("base64")), None),
            (json(&b64, Some("BASE64")), None),
            (json(&wrapped, Some("base64")), None),
            (json(b64.trim_end_matches('='), Some("base64")), None),
            (json(&format!("{b64}="), Some("base64")), None),
            (json(&format!("!{b64}"), Some("base64")), None),
            (json(&b64, None), None),
            (json(&b64, Some("gzip")), None),
            (serde_json::json!({"text": b64, "encoding": 64}), None),
            (json(&format!("{text}@@"), None), Some(br"\ud83d x")),
            (json(&format!("{text}@@"), None), Some(br"\q")),
            (json(&format!("{text}@@"), None), Some(b"\x01")),
            (json(&format!("{text}@@"), None), Some(b"caf\xe9")),
            (json(&format!("{b64}@@"), Some("base64")), Some(br"\/\/")),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (k, (content, patch)) in cases.into_iter().enumerate() {
            let mut doc = base.clone();
            let entries = doc["log"]["entries"].as_array_mut().unwrap();
            entries[0]["response"]["content"] = content.clone();
            entries[1]["request"]["postData"] = content;
            for pretty in [false, true] {
                let mut bytes = if pretty {
                    serde_json::to_vec_pretty(&doc).unwrap()
                } else {
                    serde_json::to_vec(&doc).unwrap()
                };
                if let Some(patch) = patch {
                    while let Some(at) = bytes.windows(2).position(|w| w == b"@@") {
                        bytes.splice(at..at + 2, patch.iter().copied());
                    }
                }
                let file = dir.path().join(format!("{k}-{pretty}.har"));
                std::fs::write(&file, &bytes).unwrap();
                let want = read_har_bytes(&bytes).map(|h| h.flows);
                let got = from_file(&file);
                match (&got, &want) {
                    (Ok(g), Ok(w)) => assert!(g == w, "case {k}"),
                    (Err(g), Err(w)) => assert_eq!(g.to_string(), w.to_string(), "case {k}"),
                    _ => panic!("case {k}: {got:?} but {want:?}"),
                }
                // Cut short inside the first large body, and around it.
                if k == 0 || k == 3 {
                    let at = bytes
                        .windows(8)
                        .position(|w| w == b"\"text\": ")
                        .unwrap_or(0);
                    for cut in [at + 100, at + 70_000, at + 130_000, bytes.len() - 10] {
                        let cut = cut.min(bytes.len() - 1);
                        std::fs::write(&file, &bytes[..cut]).unwrap();
                        let want = read_har_bytes(&bytes[..cut]).unwrap_err().to_string();
                        let got = from_file(&file).unwrap_err().to_string();
                        assert_eq!(got, want, "case {k} cut at {cut}");
                        assert!(got.contains("line"), "{got}");
                    }
                }
            }
        }
    }

    /// A file cut short or broken anywhere is an error that says where (never a panic), at
    /// the line serde_json says for the whole document.
    #[test]
    fn a_broken_file_says_where() {
        let bytes = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/charles.har"),
        )
        .unwrap();
        for cut in (1..bytes.len()).step_by(97) {
            let e = read_har_bytes(&bytes[..cut]).unwrap_err();
            let Some(json) = serde_json::from_slice::<Value>(&bytes[..cut]).err() else {
                continue;
            };
            if e.entry.is_none() {
                assert!(
                    e.reason
                        .starts_with(&format!("not valid JSON (line {}, ", json.line())),
                    "cut at {cut}: {e} ({json})"
                );
            }
        }
    }
}
