//! The journal's JSON writer: a serde `Serializer` that writes exactly what `serde_json`'s
//! compact writer does, byte for byte, into a `Vec<u8>`, faster.
//!
//! The recorder writes one line per flow; measured on the proxy's small and echo flows (a
//! JSON-RPC body in a string), `serde_json` spent most of a line in its byte-at-a-time string
//! escaping and its per-fragment writes (~3 µs per 1.2 KB line). Here a string is scanned eight
//! bytes at a time for what needs escaping (`"`, `\`, control characters), and runs are copied
//! whole into the buffer. Everything else follows `serde_json`'s rules: the same escapes
//! (`\b \t \n \f \r`, else `\u00xx` in lower-case hex), map keys as strings (integers and
//! booleans quoted), floats formatted by `serde_json` itself, unit variants as their name. The
//! reader is `serde_json`, unchanged; the tests compare both writers on every kind of line.

use serde::ser::{self, Serialize};

/// Appends `value` as compact JSON to `out` (what `serde_json::to_writer` would write).
pub(crate) fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> serde_json::Result<()> {
    value.serialize(&mut Writer { out })
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

/// What needs escaping in a JSON string: `"`, `\` and control characters.
const fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The lowest byte of the eight of `x` (little-endian) that needs escaping, if one does: the
/// classic has-less-than and has-zero-byte tests, whose lowest flagged byte is exact (a false
/// flag can only follow a true one, through the borrow).
#[inline]
fn first_to_escape(x: u64) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let control = x.wrapping_sub(LO * 0x20) & !x & HI;
    let q = x ^ (LO * u64::from(b'"'));
    let quote = q.wrapping_sub(LO) & !q & HI;
    let b = x ^ (LO * u64::from(b'\\'));
    let backslash = b.wrapping_sub(LO) & !b & HI;
    let flagged = control | quote | backslash;
    (flagged != 0).then(|| flagged.trailing_zeros() as usize / 8)
}

/// Appends `s` as a JSON string, quotes included.
fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0; // of the run not yet copied
    let mut i = 0;
    // Eight bytes at a time, then what is left one by one.
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        match first_to_escape(u64::from_le_bytes(word)) {
            None => i += 8,
            Some(at) => {
                let at = i + at;
                out.extend_from_slice(&bytes[start..at]);
                write_escape(out, bytes[at]);
                start = at + 1;
                i = at + 1;
            }
        }
    }
    for (at, &b) in bytes.iter().enumerate().skip(i) {
        if needs_escape(b) {
            out.extend_from_slice(&bytes[start..at]);
            write_escape(out, b);
            start = at + 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// One escaped byte, as `serde_json` writes it.
#[inline]
fn write_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        _ => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 0xf)],
        ]),
    }
}

fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    if n < 10 {
        out.push(b'0' + n as u8);
        return;
    }
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

/// A sequence or map being written: whether a comma comes before the next element.
pub(crate) struct Compound<'w, 'a> {
    w: &'w mut Writer<'a>,
    first: bool,
    /// What closes it: `]`, `}`, or `}}` for a variant's content.
    close: &'static [u8],
}

impl Compound<'_, '_> {
    fn comma(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.w.out.push(b',');
        }
    }

    fn key(&mut self, key: &str) {
        self.comma();
        write_str(self.w.out, key);
        self.w.out.push(b':');
    }
}

impl<'w, 'a> Writer<'a> {
    fn open(&'w mut self, open: &[u8], close: &'static [u8]) -> Compound<'w, 'a> {
        self.out.extend_from_slice(open);
        Compound {
            w: self,
            first: true,
            close,
        }
    }

    /// `{"variant":` before a variant's content.
    fn variant(&mut self, variant: &str) {
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.push(b':');
    }
}

impl<'w, 'a> ser::Serializer for &'w mut Writer<'a> {
    type Ok = ();
    type Error = serde_json::Error;
    type SerializeSeq = Compound<'w, 'a>;
    type SerializeTuple = Compound<'w, 'a>;
    type SerializeTupleStruct = Compound<'w, 'a>;
    type SerializeTupleVariant = Compound<'w, 'a>;
    type SerializeMap = Compound<'w, 'a>;
    type SerializeStruct = Compound<'w, 'a>;
    type SerializeStructVariant = Compound<'w, 'a>;

    fn serialize_bool(self, v: bool) -> serde_json::Result<()> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> serde_json::Result<()> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i16(self, v: i16) -> serde_json::Result<()> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i32(self, v: i32) -> serde_json::Result<()> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i64(self, v: i64) -> serde_json::Result<()> {
        write_i64(self.out, v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> serde_json::Result<()> {
        self.out.extend_from_slice(v.to_string().as_bytes());
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> serde_json::Result<()> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u16(self, v: u16) -> serde_json::Result<()> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u32(self, v: u32) -> serde_json::Result<()> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u64(self, v: u64) -> serde_json::Result<()> {
        write_u64(self.out, v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> serde_json::Result<()> {
        self.out.extend_from_slice(v.to_string().as_bytes());
        Ok(())
    }
    // Floats (a JWT claim, rarely) as serde_json formats them.
    fn serialize_f32(self, v: f32) -> serde_json::Result<()> {
        serde_json::to_writer(&mut *self.out, &v)
    }
    fn serialize_f64(self, v: f64) -> serde_json::Result<()> {
        serde_json::to_writer(&mut *self.out, &v)
    }
    fn serialize_char(self, v: char) -> serde_json::Result<()> {
        write_str(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> serde_json::Result<()> {
        write_str(self.out, v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> serde_json::Result<()> {
        use ser::SerializeSeq as _;
        let mut seq = self.serialize_seq(Some(v.len()))?;
        for b in v {
            seq.serialize_element(b)?;
        }
        seq.end()
    }
    fn serialize_none(self) -> serde_json::Result<()> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> serde_json::Result<()> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> serde_json::Result<()> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> serde_json::Result<()> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> serde_json::Result<()> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        self.variant(variant);
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> serde_json::Result<Compound<'w, 'a>> {
        Ok(self.open(b"[", b"]"))
    }
    fn serialize_tuple(self, len: usize) -> serde_json::Result<Compound<'w, 'a>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> serde_json::Result<Compound<'w, 'a>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> serde_json::Result<Compound<'w, 'a>> {
        self.variant(variant);
        Ok(self.open(b"[", b"]}"))
    }
    fn serialize_map(self, _len: Option<usize>) -> serde_json::Result<Compound<'w, 'a>> {
        Ok(self.open(b"{", b"}"))
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> serde_json::Result<Compound<'w, 'a>> {
        Ok(self.open(b"{", b"}"))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> serde_json::Result<Compound<'w, 'a>> {
        self.variant(variant);
        Ok(self.open(b"{", b"}}"))
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = serde_json::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        self.comma();
        value.serialize(&mut *self.w)
    }
    fn end(self) -> serde_json::Result<()> {
        self.w.out.extend_from_slice(self.close);
        Ok(())
    }
}

impl ser::SerializeTuple for Compound<'_, '_> {
    type Ok = ();
    type Error = serde_json::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> serde_json::Result<()> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> serde_json::Result<()> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> serde_json::Result<()> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = serde_json::Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> serde_json::Result<()> {
        self.comma();
        key.serialize(MapKey { out: self.w.out })?;
        self.w.out.push(b':');
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        value.serialize(&mut *self.w)
    }
    fn end(self) -> serde_json::Result<()> {
        self.w.out.extend_from_slice(self.close);
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        self.key(key);
        value.serialize(&mut *self.w)
    }
    fn end(self) -> serde_json::Result<()> {
        self.w.out.extend_from_slice(self.close);
        Ok(())
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> serde_json::Result<()> {
        ser::SerializeStruct::end(self)
    }
}

/// A map key: a string, or an integer, boolean or character written as one (serde_json's
/// rules); anything else is an error, as there.
struct MapKey<'a> {
    out: &'a mut Vec<u8>,
}

fn key_must_be_a_string() -> serde_json::Error {
    ser::Error::custom("key must be a string")
}

impl MapKey<'_> {
    fn quoted(self, text: &str) -> serde_json::Result<()> {
        write_str(self.out, text);
        Ok(())
    }
}

impl ser::Serializer for MapKey<'_> {
    type Ok = ();
    type Error = serde_json::Error;
    type SerializeSeq = ser::Impossible<(), serde_json::Error>;
    type SerializeTuple = ser::Impossible<(), serde_json::Error>;
    type SerializeTupleStruct = ser::Impossible<(), serde_json::Error>;
    type SerializeTupleVariant = ser::Impossible<(), serde_json::Error>;
    type SerializeMap = ser::Impossible<(), serde_json::Error>;
    type SerializeStruct = ser::Impossible<(), serde_json::Error>;
    type SerializeStructVariant = ser::Impossible<(), serde_json::Error>;

    fn serialize_str(self, v: &str) -> serde_json::Result<()> {
        self.quoted(v)
    }
    fn serialize_char(self, v: char) -> serde_json::Result<()> {
        self.quoted(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_bool(self, v: bool) -> serde_json::Result<()> {
        self.quoted(if v { "true" } else { "false" })
    }
    fn serialize_i8(self, v: i8) -> serde_json::Result<()> {
        self.quoted(&v.to_string())
    }
    fn serialize_i16(self, v: i16) -> serde_json::Result<()> {
        self.quoted(&v.to_string())
    }
    fn serialize_i32(self, v: i32) -> serde_json::Result<()> {
        self.quoted(&v.to_string())
    }
    fn serialize_i64(self, v: i64) -> serde_json::Result<()> {
        self.quoted(&v.to_string())
    }
    fn serialize_i128(self, v: i128) -> serde_json::Result<()> {
        self.quoted(&v.to_string())
    }
    fn serialize_u8(self, v: u8) -> serde_json::Result<()> {
        self.quoted(&v.to_string())
    }
    fn serialize_u16(self, v: u16) -> serde_json::Result<()> {
        self.quoted(&v.to_string())
    }
    fn serialize_u32(self, v: u32) -> serde_json::Result<()> {
        self.quoted(&v.to_string())
    }
    fn serialize_u64(self, v: u64) -> serde_json::Result<()> {
        self.quoted(&v.to_string())
    }
    fn serialize_u128(self, v: u128) -> serde_json::Result<()> {
        self.quoted(&v.to_string())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> serde_json::Result<()> {
        self.quoted(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        value.serialize(self)
    }
    fn serialize_f32(self, _v: f32) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }
    fn serialize_f64(self, _v: f64) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }
    fn serialize_bytes(self, _v: &[u8]) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }
    fn serialize_none(self) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }
    fn serialize_unit(self) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }
    fn serialize_seq(self, _len: Option<usize>) -> serde_json::Result<Self::SerializeSeq> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple(self, _len: usize) -> serde_json::Result<Self::SerializeTuple> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> serde_json::Result<Self::SerializeTupleStruct> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> serde_json::Result<Self::SerializeTupleVariant> {
        Err(key_must_be_a_string())
    }
    fn serialize_map(self, _len: Option<usize>) -> serde_json::Result<Self::SerializeMap> {
        Err(key_must_be_a_string())
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> serde_json::Result<Self::SerializeStruct> {
        Err(key_must_be_a_string())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> serde_json::Result<Self::SerializeStructVariant> {
        Err(key_must_be_a_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcptap_flow::{
        CapturedBody, ErrorKind, Flow, FlowError, FlowEvent, FlowId, Header, Headers, Phase,
        Request, Response, SseEvent, TimeLimit, Timings, TlsInfo, TunnelStats,
    };
    use std::sync::Arc;

    fn same<T: Serialize + ?Sized>(value: &T) {
        let mut ours = Vec::new();
        write(&mut ours, value).unwrap();
        let theirs = serde_json::to_vec(value).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
    }

    /// Every byte below 0x80, and some beyond, at every offset around the eight-byte steps.
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let all: String = (0u8..0x80).map(char::from).collect();
        same(&all);
        for c in (0u8..0x80)
            .map(char::from)
            .chain(['é', '€', '😀', '\u{7f}'])
        {
            for len in 0..20 {
                for at in 0..=len {
                    let mut s: String = "abcdefghijklmnopqrstuvwxyz".chars().take(len).collect();
                    s.insert(at, c);
                    same(&s);
                }
            }
        }
        same(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"q":"a\"b\\c"}}"#);
        same(&'"');
        same(&'\u{1}');
    }

    #[test]
    fn numbers_keys_and_values_are_written_as_serde_json_writes_them() {
        same(&[0u64, 1, 9, 10, 99, 100, u64::MAX]);
        same(&[0i64, -1, -9, -10, i64::MIN, i64::MAX]);
        same(&(1u8, -2i8, 3u16, -4i16, 5u32, -6i32, 7u128, -8i128));
        same(&[0.0f64, -0.5, 1e300, 3.25, f64::NAN, f64::INFINITY]);
        same(&[1.5f32]);
        same(&(true, false, (), Some(3), None::<u8>));
        let mut keys = std::collections::BTreeMap::new();
        keys.insert(-3i32, "a");
        keys.insert(7, "b\n");
        same(&keys);
        let bools: std::collections::BTreeMap<bool, u8> = [(true, 1), (false, 0)].into();
        same(&bools);
        same(&serde_json::json!({
            "a": [1, -2, 3.5, "x", null, true, {"b": {}}, []],
            "e\u{1}": {"\"": 1e-7}
        }));
        same(&Bytes(vec![0, 1, 255]));
        let no: std::collections::BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into();
        assert!(write(&mut Vec::new(), &no).is_err());
        assert!(serde_json::to_vec(&no).is_err());
    }

    /// Bytes that serialise as bytes (serde's impl for a slice is a sequence).
    struct Bytes(Vec<u8>);

    impl Serialize for Bytes {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }

    #[derive(serde::Serialize)]
    enum Shapes {
        Unit,
        Newtype(u8),
        Tuple(u8, String),
        Struct { a: u8, b: Option<String> },
    }

    #[test]
    fn enums_are_written_as_serde_json_writes_them() {
        same(&[
            Shapes::Unit,
            Shapes::Newtype(1),
            Shapes::Tuple(2, "x".into()),
            Shapes::Struct {
                a: 3,
                b: Some("y".into()),
            },
        ]);
    }

    /// A flow with every member the journal can hold.
    fn full_flow() -> Flow {
        let mut headers = Headers::new();
        headers.push("content-type", "application/json");
        headers.push_header(Header::from_bytes("x-latin", b"caf\xe9"));
        headers.push("authorization", "Bearer [redacted]");
        let sse = SseEvent {
            at: 7,
            event: Some("message".into()),
            id: Some("e1".into()),
            data: "{\"a\":\"\u{0}\"}".into(),
            retry: Some(10),
        };
        Flow {
            id: FlowId(42),
            kind: mcptap_flow::FlowKind::Http,
            state: mcptap_flow::FlowState::Failed,
            client_addr: Some("127.0.0.1:5".into()),
            host: "mcp.example".into(),
            port: 443,
            client_tls: Some(Arc::new(TlsInfo {
                sni: Some("mcp.example".into()),
                alpn: Some("h2".into()),
                version: Some("TLSv1_3".into()),
                cipher: Some("X".into()),
                unverified: true,
            })),
            upstream_tls: Some(Arc::new(TlsInfo::default())),
            request: Request {
                method: "POST".into(),
                url: "https://mcp.example/mcp?q=\"1\"".into(),
                version: mcptap_flow::HttpVersion::Http2,
                headers: headers.clone(),
                body: CapturedBody::complete(&b"{\"jsonrpc\":\"2.0\",\"id\":1}\n\t"[..]),
            },
            response: Some(Response {
                status: 200,
                version: mcptap_flow::HttpVersion::Http11,
                headers,
                body: CapturedBody {
                    bytes: bytes::Bytes::from_static(&[0xff, 0, 1]),
                    total_len: 9,
                    truncated: true,
                    state: mcptap_flow::BodyState::Cancelled,
                    encoding: Some("gzip".into()),
                },
                sse: vec![sse.clone(), SseEvent::default()],
                sse_elided: 3,
                synthetic: true,
            }),
            timings: Timings {
                started: 1,
                connected: Some(2),
                request_done: Some(3),
                response_head: Some(4),
                finished: Some(5),
            },
            error: Some(FlowError {
                kind: ErrorKind::UpstreamTimeout,
                message: "timed out".into(),
                hint: Some("raise it".into()),
                limit: Some(TimeLimit {
                    phase: Phase::ResponseHead,
                    after_ms: 30_000,
                }),
            }),
            tunnel: Some(TunnelStats {
                bytes_up: 1,
                bytes_down: 2,
            }),
            injected: Some(mcptap_flow::Injection {
                fingerprint: "sha256:ab".into(),
                token_flow: Some(FlowId(3)),
            }),
            not_injected: Some("no token".into()),
            by_mcptap: Some("probe".into()),
            secrets: vec![mcptap_flow::redact::SecretNote {
                fingerprint: "sha256:cd".into(),
                len: 12,
                place: "request.header.authorization".into(),
                jwt: Some(mcptap_flow::redact::JwtInfo {
                    header: serde_json::json!({"alg": "RS256"})
                        .as_object()
                        .cloned()
                        .unwrap(),
                    claims: serde_json::json!({"exp": 1.5e9, "aud": ["a", "b"], "n": -1})
                        .as_object()
                        .cloned()
                        .unwrap(),
                }),
            }],
            raw_secrets: true,
        }
    }

    #[test]
    fn every_event_line_is_written_as_serde_json_writes_it() {
        let flow = full_flow();
        same(&flow);
        same(&Flow::default());
        let events = [
            FlowEvent::RequestStarted {
                flow: Box::new(flow.head()),
            },
            FlowEvent::ResponseHead {
                id: FlowId(1),
                at: 2,
                status: 404,
                version: mcptap_flow::HttpVersion::Http10,
                headers: flow.request.headers.clone(),
            },
            FlowEvent::Body {
                id: FlowId(1),
                direction: mcptap_flow::Direction::Response,
                total: 3,
            },
            FlowEvent::Sse {
                id: FlowId(1),
                event: flow.response.as_ref().unwrap().sse[0].clone(),
            },
            FlowEvent::Completed {
                flow: Box::new(flow.clone()),
            },
            FlowEvent::Failed {
                flow: Box::new(flow),
            },
        ];
        for ev in &events {
            same(ev);
        }
    }
}
