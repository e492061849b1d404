//! Flow filters, mitmproxy style: `~d host`, `~u regex`, `~c 401`, `~m POST`, combined with
//! `!`, `&` (or juxtaposition), `|` and parentheses. Regexes match case-insensitively.
//!
//! | expression | matches |
//! | --- | --- |
//! | `~d REGEX` | host |
//! | `~u REGEX` | host + path (the URL without its scheme) |
//! | `~p REGEX` | path |
//! | `~c CODE` | status: `401`, `4xx`, `4` |
//! | `~m REGEX` | HTTP method |
//! | `~ph REGEX` | phase (`PRM`, `AS meta`, `register`, `authorize`, `token`, `refresh`, `MCP`) |
//! | `~rpc REGEX` | MCP method (`tools/call echo`) |
//! | `~noauth` | no `Authorization` header (and none injected) |
//! | `~auth` | an `Authorization` header, sent or injected |
//! | `~f` | cited by a finding |
//! | `~e` | failed or aborted |
//! | `~q` | still pending |
//! | `~sse` | carried server-sent events |
//! | `WORD` | host + path or MCP method contains WORD (a regex) |

use crate::row::{Auth, Row};
use mcptap_flow::FlowState;
use regex::{Regex, RegexBuilder};

/// A parsed filter.
#[derive(Debug, Clone)]
pub enum Filter {
    /// Both.
    And(Box<Filter>, Box<Filter>),
    /// Either.
    Or(Box<Filter>, Box<Filter>),
    /// Not.
    Not(Box<Filter>),
    /// One test.
    Pred(Pred),
}

/// One test on a row.
#[derive(Debug, Clone)]
pub enum Pred {
    /// `~d`
    Host(Regex),
    /// `~u`
    Url(Regex),
    /// `~p`
    Path(Regex),
    /// `~c`: low and high bound, inclusive.
    Status(u16, u16),
    /// `~m`
    Method(Regex),
    /// `~ph`
    Phase(Regex),
    /// `~rpc`
    Rpc(Regex),
    /// `~noauth`
    NoAuth,
    /// `~auth`
    Auth,
    /// `~f`
    Finding,
    /// `~e`
    Error,
    /// `~q`
    Pending,
    /// `~sse`
    Sse,
    /// A bare word.
    Any(Regex),
}

impl Filter {
    /// Parses an expression; the error says what is wrong in a few words.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Err("empty filter".to_owned());
        }
        let mut p = Parser { tokens, pos: 0 };
        let f = p.or()?;
        match p.tokens.get(p.pos) {
            None => Ok(f),
            Some(t) => Err(format!("unexpected {}", t.show())),
        }
    }

    /// True when `row` passes; `has_finding` tells whether a finding cites it.
    pub fn matches(&self, row: &Row, has_finding: bool) -> bool {
        match self {
            Filter::And(a, b) => a.matches(row, has_finding) && b.matches(row, has_finding),
            Filter::Or(a, b) => a.matches(row, has_finding) || b.matches(row, has_finding),
            Filter::Not(a) => !a.matches(row, has_finding),
            Filter::Pred(p) => p.matches(row, has_finding),
        }
    }
}

impl Pred {
    fn matches(&self, row: &Row, has_finding: bool) -> bool {
        match self {
            Pred::Host(re) => re.is_match(&row.host),
            Pred::Url(re) => re.is_match(&row.target()),
            Pred::Path(re) => re.is_match(&row.path),
            Pred::Status(lo, hi) => row.status.is_some_and(|s| (*lo..=*hi).contains(&s)),
            Pred::Method(re) => re.is_match(&row.method),
            Pred::Phase(re) => {
                let p = row.phase();
                !p.is_empty() && re.is_match(p) || row.role.is_some_and(|r| re.is_match(r.as_str()))
            }
            Pred::Rpc(re) => row.mcp.as_deref().is_some_and(|m| re.is_match(m)),
            Pred::NoAuth => row.auth == Auth::None,
            Pred::Auth => row.auth != Auth::None,
            Pred::Finding => has_finding,
            Pred::Error => matches!(row.state, FlowState::Failed | FlowState::Aborted),
            Pred::Pending => row.state == FlowState::Pending,
            Pred::Sse => row.sse_events > 0,
            Pred::Any(re) => {
                re.is_match(&row.target()) || row.mcp.as_deref().is_some_and(|m| re.is_match(m))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Not,
    And,
    Or,
    Open,
    Close,
    Word(String),
}

impl Tok {
    fn show(&self) -> String {
        match self {
            Tok::Not => "`!`".into(),
            Tok::And => "`&`".into(),
            Tok::Or => "`|`".into(),
            Tok::Open => "`(`".into(),
            Tok::Close => "`)`".into(),
            Tok::Word(w) => format!("{w:?}"),
        }
    }
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '!' => {
                chars.next();
                out.push(Tok::Not);
            }
            '&' => {
                chars.next();
                out.push(Tok::And);
            }
            '|' => {
                chars.next();
                out.push(Tok::Or);
            }
            '(' => {
                chars.next();
                out.push(Tok::Open);
            }
            ')' => {
                chars.next();
                out.push(Tok::Close);
            }
            '"' | '\'' => {
                let q = c;
                chars.next();
                let mut w = String::new();
                loop {
                    match chars.next() {
                        None => return Err("unclosed quote".to_owned()),
                        Some('\\') => {
                            if let Some(n) = chars.next() {
                                w.push(n);
                            }
                        }
                        Some(ch) if ch == q => break,
                        Some(ch) => w.push(ch),
                    }
                }
                out.push(Tok::Word(w));
            }
            _ => {
                let mut w = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_whitespace() || matches!(ch, '&' | '|' | '(' | ')') {
                        break;
                    }
                    w.push(ch);
                    chars.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut left = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.unary()?;
        loop {
            match self.peek() {
                Some(Tok::And) => {
                    self.pos += 1;
                }
                Some(Tok::Not | Tok::Open | Tok::Word(_)) => {}
                _ => return Ok(left),
            }
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Filter, String> {
        match self.next() {
            Some(Tok::Not) => Ok(Filter::Not(Box::new(self.unary()?))),
            Some(Tok::Open) => {
                let f = self.or()?;
                match self.next() {
                    Some(Tok::Close) => Ok(f),
                    _ => Err("missing `)`".to_owned()),
                }
            }
            Some(Tok::Word(w)) => self.atom(&w),
            Some(t) => Err(format!("unexpected {}", t.show())),
            None => Err("incomplete expression".to_owned()),
        }
    }

    fn arg(&mut self, flag: &str) -> Result<String, String> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            _ => Err(format!("{flag} needs an argument")),
        }
    }

    fn atom(&mut self, w: &str) -> Result<Filter, String> {
        let pred = match w {
            "~d" => Pred::Host(re(&self.arg(w)?)?),
            "~u" => Pred::Url(re(&self.arg(w)?)?),
            "~p" => Pred::Path(re(&self.arg(w)?)?),
            "~m" => Pred::Method(re(&self.arg(w)?)?),
            "~ph" => Pred::Phase(re(&self.arg(w)?)?),
            "~rpc" => Pred::Rpc(re(&self.arg(w)?)?),
            "~c" => {
                let a = self.arg(w)?;
                let (lo, hi) = status_range(&a).ok_or_else(|| format!("~c {a:?}: not a status"))?;
                Pred::Status(lo, hi)
            }
            "~noauth" => Pred::NoAuth,
            "~auth" => Pred::Auth,
            "~f" => Pred::Finding,
            "~e" => Pred::Error,
            "~q" => Pred::Pending,
            "~sse" => Pred::Sse,
            w if w.starts_with('~') => return Err(format!("unknown filter {w}")),
            w => Pred::Any(re(w)?),
        };
        Ok(Filter::Pred(pred))
    }
}

fn re(s: &str) -> Result<Regex, String> {
    RegexBuilder::new(s)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|_| format!("bad regex {s:?}"))
}

/// `401` → 401..=401, `4xx` / `4` → 400..=499, `40x` → 400..=409.
fn status_range(s: &str) -> Option<(u16, u16)> {
    let s = s.trim().to_ascii_lowercase();
    if s.is_empty() || s.len() > 3 {
        return None;
    }
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() || !s[digits.len()..].chars().all(|c| c == 'x') {
        return None;
    }
    let n: u16 = digits.parse().ok()?;
    let scale = 10u16.pow(3 - u32::try_from(digits.len()).ok()?);
    Some((n * scale, n * scale + scale - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcptap_analyze::Role;
    use mcptap_flow::{FlowId, FlowKind};

    fn row(method: &str, host: &str, path: &str, status: Option<u16>) -> Row {
        Row {
            id: FlowId(1),
            started: 0,
            method: method.into(),
            host: host.into(),
            path: path.into(),
            status,
            synthetic: false,
            duration: None,
            req_size: 0,
            resp_size: 0,
            role: None,
            mcp: None,
            auth: Auth::None,
            session: None,
            state: FlowState::Completed,
            kind: FlowKind::Http,
            sse_events: 0,
            error: None,
            issued: None,
            answered: false,
        }
    }

    fn m(expr: &str, r: &Row, finding: bool) -> bool {
        Filter::parse(expr).unwrap().matches(r, finding)
    }

    #[test]
    fn expressions_match_like_mitmproxy() {
        let mut r = row("POST", "mcp.example.com", "/mcp", Some(401));
        assert!(m("~d example", &r, false));
        assert!(!m("~d other", &r, false));
        assert!(m("~u example.com/mcp", &r, false));
        assert!(m("~p ^/mcp$", &r, false));
        assert!(m("~c 401", &r, false));
        assert!(m("~c 4xx", &r, false));
        assert!(m("~c 4", &r, false));
        assert!(!m("~c 2xx", &r, false));
        assert!(m("~m post", &r, false));
        assert!(m("~noauth", &r, false));
        assert!(!m("~auth", &r, false));
        assert!(!m("~f", &r, false));
        assert!(m("~f", &r, true));
        assert!(m("~m POST & ~c 401", &r, false));
        assert!(m("~m POST ~c 401", &r, false));
        assert!(!m("~m GET & ~c 401", &r, false));
        assert!(m("~m GET | ~c 401", &r, false));
        assert!(m("!~m GET", &r, false));
        assert!(m("!(~m GET | ~c 200) & mcp", &r, false));
        assert!(!m("~ph MCP", &r, false));
        r.role = Some(Role::Mcp);
        r.mcp = Some("tools/call echo".into());
        assert!(m("~ph mcp", &r, false));
        assert!(m("~rpc 'tools/call'", &r, false));
        assert!(m("echo", &r, false));
        r.role = Some(Role::TokenRefresh);
        assert!(m("~ph refresh", &r, false));
        assert!(m("~ph token_refresh", &r, false));
    }

    #[test]
    fn bad_expressions_say_why() {
        for (e, why) in [
            ("", "empty"),
            ("~c", "needs an argument"),
            ("~c abc", "not a status"),
            ("~zz", "unknown filter"),
            ("(~m GET", "missing `)`"),
            ("~d (", "needs an argument"),
            ("~d '[", "unclosed quote"),
            ("~d [", "bad regex"),
            ("~m GET |", "incomplete"),
        ] {
            let err = Filter::parse(e).unwrap_err();
            assert!(err.contains(why), "{e}: {err}");
        }
    }
}
