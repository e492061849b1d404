//! An incremental `text/event-stream` parser (WHATWG HTML §9.2.6) that accepts bytes in any
//! split, so the proxy can record each event the moment its blank line goes through.

use crate::{Micros, SseEvent};

/// Parses server-sent events from chunks of bytes. Bounded: a line longer than `max_line` bytes
/// is cut (the event is still reported), so a hostile stream cannot grow memory without limit.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    line_overflow: bool,
    last_was_cr: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
    max_line: usize,
    started: bool,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::new(1 << 20)
    }
}

impl SseParser {
    /// A parser that keeps at most `max_line` bytes of any one line.
    pub fn new(max_line: usize) -> SseParser {
        SseParser {
            line: Vec::new(),
            line_overflow: false,
            last_was_cr: false,
            data: String::new(),
            has_data: false,
            event: None,
            id: None,
            retry: None,
            max_line,
            started: false,
        }
    }

    /// Feeds a chunk; calls `emit` for every event completed by it, stamped `at`.
    pub fn feed(&mut self, chunk: &[u8], at: Micros, mut emit: impl FnMut(SseEvent)) {
        let mut rest = chunk;
        // A UTF-8 BOM at the very start of the stream is ignored.
        if !self.started && !rest.is_empty() {
            self.started = true;
            if let Some(r) = rest.strip_prefix(b"\xEF\xBB\xBF") {
                rest = r;
            }
        }
        for &b in rest {
            match b {
                b'\n' if self.last_was_cr => {
                    self.last_was_cr = false;
                }
                b'\r' | b'\n' => {
                    self.last_was_cr = b == b'\r';
                    self.end_line(at, &mut emit);
                }
                _ => {
                    self.last_was_cr = false;
                    if self.line.len() < self.max_line {
                        self.line.push(b);
                    } else {
                        self.line_overflow = true;
                    }
                }
            }
        }
    }

    fn end_line(&mut self, at: Micros, emit: &mut impl FnMut(SseEvent)) {
        let line = std::mem::take(&mut self.line);
        self.line_overflow = false;
        if line.is_empty() {
            self.dispatch(at, emit);
            return;
        }
        if line[0] == b':' {
            return; // comment
        }
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (&line[..], &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.event = Some(value.into_owned()),
            b"id" if !value.contains('\0') => self.id = Some(value.into_owned()),
            b"retry" => {
                if let Ok(n) = value.parse() {
                    self.retry = Some(n);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, at: Micros, emit: &mut impl FnMut(SseEvent)) {
        let event = self.event.take();
        let retry = self.retry.take();
        if !self.has_data && event.is_none() && retry.is_none() {
            // Nothing but possibly an id: per spec the id persists, nothing is dispatched.
            return;
        }
        self.has_data = false;
        emit(SseEvent {
            at,
            event,
            id: self.id.clone(),
            data: std::mem::take(&mut self.data),
            retry,
        });
    }
}

/// Parses a whole `text/event-stream` body (for imports and tests); every event gets `at`.
pub fn parse_all(body: &[u8], at: Micros) -> Vec<SseEvent> {
    let mut out = Vec::new();
    let mut p = SseParser::default();
    p.feed(body, at, |e| out.push(e));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_parse_the_same() {
        let stream =
            b"event: message\r\nid: 7\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n: ping\n\ndata: two\n\n";
        let whole = parse_all(stream, 5);
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0].event.as_deref(), Some("message"));
        assert_eq!(whole[0].id.as_deref(), Some("7"));
        assert_eq!(whole[0].data, "{\"a\":\n1}");
        assert_eq!(whole[1].data, "two");
        assert_eq!(whole[1].id.as_deref(), Some("7"), "last event id persists");
        for split in 0..stream.len() {
            let mut p = SseParser::default();
            let mut got = Vec::new();
            p.feed(&stream[..split], 5, |e| got.push(e));
            p.feed(&stream[split..], 5, |e| got.push(e));
            assert_eq!(got, whole, "split at {split}");
        }
    }

    #[test]
    fn an_unfinished_event_is_not_reported() {
        assert!(parse_all(b"data: half", 0).is_empty());
    }

    #[test]
    fn long_lines_are_bounded() {
        let mut p = SseParser::new(8);
        let mut got = Vec::new();
        p.feed(b"data: 123456789\n\n", 0, |e| got.push(e));
        assert_eq!(got[0].data, "12");
    }
}
