//! Redaction of a command line before it is recorded (the journal's `argv`, the session's
//! `mode`): users attach sessions to public bug reports, and `--proxy-auth user:pass` or
//! `--upstream-proxy http://user:pass@…` must not travel with them. The same markers as in
//! traffic (`[redacted sha256:… len=…]`), so a fingerprint still tells two values apart.

use super::{is_secret_header, parse_redacted, redacted, Redactor};
use crate::{Direction, Header};

/// Options whose whole value is a credential: `user:pass` (the user name is kept).
const CREDENTIAL_OPTIONS: &[&str] = &["--proxy-auth"];

/// Options whose value is a URL that may be written without its scheme (`user:pass@host:port`).
const URL_OPTIONS: &[&str] = &["--upstream-proxy"];

/// `args` with every credential mcptap can recognise replaced by its marker: the value of
/// `--proxy-auth` (`user:[redacted …]`), the password in the userinfo and the secret query
/// parameters of any URL anywhere in an argument (`--upstream-proxy`, `--mode reverse:URL`,
/// `--route P=URL`, a URL given to the command `mcptap run` wraps), and the value of an
/// argument written as a secret header (`Authorization: Bearer …`, as `curl -H` takes it).
/// Everything else is kept as it was.
pub fn argv(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut value_of: Option<&str> = None;
    for arg in args {
        let redacted_arg = match value_of.take() {
            Some(opt) => option_value(opt, arg),
            None => match arg.split_once('=') {
                Some((opt, v)) if is_option(opt) => format!("{opt}={}", option_value(opt, v)),
                _ => {
                    if is_option(arg) {
                        value_of = Some(option_name(arg));
                    }
                    in_text(arg)
                }
            },
        };
        out.push(redacted_arg);
    }
    out
}

/// A URL or a text holding URLs, as [`argv`] redacts one argument (for `mode`).
pub fn text(s: &str) -> String {
    in_text(s)
}

fn is_option(s: &str) -> bool {
    CREDENTIAL_OPTIONS.contains(&s) || URL_OPTIONS.contains(&s)
}

fn option_name(s: &str) -> &'static str {
    CREDENTIAL_OPTIONS
        .iter()
        .chain(URL_OPTIONS)
        .find(|o| **o == s)
        .copied()
        .unwrap_or("")
}

fn option_value(opt: &str, v: &str) -> String {
    if CREDENTIAL_OPTIONS.contains(&opt) {
        return match v.split_once(':') {
            _ if parse_redacted(v).is_some() => v.to_owned(), // already redacted
            Some((_, pass)) if parse_redacted(pass).is_some() => v.to_owned(),
            Some((user, pass)) if !pass.is_empty() => format!("{user}:{}", redacted(pass)),
            _ => redacted(v),
        };
    }
    if URL_OPTIONS.contains(&opt) && !v.contains("://") {
        // `user:pass@host:port`: read as the URL it stands for.
        let url = in_text(&format!("http://{v}"));
        return url.strip_prefix("http://").unwrap_or(&url).to_owned();
    }
    in_text(v)
}

/// `s` with each URL in it (`scheme://…` up to whitespace) redacted as a request URL is, and,
/// when `s` is a secret header line (`Name: value`), its value redacted as that header's.
fn in_text(s: &str) -> String {
    if let Some(h) = header_line(s) {
        return h;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
            .map_or(0, |j| j + 1);
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .map_or(rest.len(), |j| i + j);
        out.push_str(&rest[..start]);
        let mut url = rest[start..end].to_owned();
        Redactor::new().url(Direction::Request, &mut url);
        out.push_str(&url);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `Authorization: Bearer x` → `Authorization: Bearer [redacted …]`; `None` unless `s` is a
/// header line whose value the traffic redaction would change.
fn header_line(s: &str) -> Option<String> {
    let (name, value) = s.split_once(':')?;
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(tchar) || !value.starts_with(' ') {
        return None;
    }
    let mut h = Header::new(name.to_owned(), value.trim_start().to_owned());
    let lower = name.to_ascii_lowercase();
    let before = h.value.clone();
    Redactor::new().header(Direction::Request, &mut h);
    if h.value == before {
        if !is_secret_header(&lower) || before.contains("[redacted sha256:") {
            return None;
        }
        h.value = redacted(&before);
    }
    Some(format!("{name}: {}", h.value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::fingerprint;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn credentials_on_the_command_line_are_replaced_by_their_markers() {
        let out = argv(&args(&[
            "mcptap",
            "proxy",
            "--proxy-auth",
            "alice:s3cret-pw",
            "--upstream-proxy=http://bob:hunter2@corp-proxy:3128",
            "--mode",
            "reverse:https://carol:pa55@mcp.example/?access_token=tok-123",
            "--upstream-proxy",
            "dave:pw-noscheme@corp:3128",
            "--proxy-auth=eve:pw5",
            "run",
            "--",
            "curl",
            "-H",
            "Authorization: Bearer tok-in-header",
            "https://frank:pw6@x.example/mcp",
        ]));
        let all = out.join(" ");
        for secret in [
            "s3cret-pw",
            "hunter2",
            "pa55",
            "tok-123",
            "pw-noscheme",
            "pw5",
            "tok-in-header",
            "pw6",
        ] {
            assert!(!all.contains(secret), "{secret} in {all}");
        }
        assert_eq!(out[3], format!("alice:{}", redacted("s3cret-pw")));
        assert!(out[4].starts_with("--upstream-proxy=http://bob:%5Bredacted%20sha256%3A"));
        assert!(out[4].contains(&fingerprint("hunter2")));
        assert!(out[4].ends_with("@corp-proxy:3128"));
        assert!(out[8].starts_with("dave:%5Bredacted") && out[8].ends_with("@corp:3128"));
        assert_eq!(out[9], format!("--proxy-auth=eve:{}", redacted("pw5")));
        assert!(out[14].starts_with("Authorization: Bearer [redacted sha256:"));
        // What is not a credential stays as it was.
        for (i, kept) in [(0, "mcptap"), (1, "proxy"), (5, "--mode"), (12, "curl")] {
            assert_eq!(out[i], kept);
        }
        assert_eq!(
            argv(&args(&["-p", "8080", "https://mcp.example/mcp?x=1", "a:b"])),
            args(&["-p", "8080", "https://mcp.example/mcp?x=1", "a:b"])
        );
        // Redacting again changes nothing (export redacts what the journal already did).
        assert_eq!(argv(&out), out);
        assert!(parse_redacted(&out[3]["alice:".len()..]).is_some());
    }
}
