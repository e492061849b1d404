//! `mcptap explain ID`: the page for a finding, like `rustc --explain`.

use crate::args::ExplainArgs;
use std::io::IsTerminal as _;
use std::process::ExitCode;

/// Runs `mcptap explain`: the page of an id or of a sub-case (`never-sent`), the list of ids
/// with their titles when none is given, the nearest id on a typo. On a terminal the page is
/// rendered (headings emphasised, no raw `**`); piped, it is the raw markdown.
pub fn main(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    use mcptap_analyze::FindingId;
    let Some(asked) = args.id.as_deref().map(str::trim) else {
        print!("{}", list());
        return Ok(ExitCode::SUCCESS);
    };
    let page = match FindingId::parse(asked) {
        Some(id) => id.page(),
        None => match FindingId::with_subcase(asked).as_slice() {
            [id] => {
                say!("mcptap: {asked} is a sub-case of {id}");
                id.page()
            }
            [] => {
                match nearest(asked) {
                    Some(near) => say!(
                        "mcptap: no finding called {asked:?}; did you mean {near}? \
                         (`mcptap explain` lists them all)"
                    ),
                    None => {
                        say!("mcptap: no finding called {asked:?}. Known findings:");
                        eprint!("{}", list());
                    }
                }
                return Ok(ExitCode::from(2));
            }
            many => {
                let names: Vec<&str> = many.iter().map(|id| id.as_str()).collect();
                say!(
                    "mcptap: {asked} is a sub-case of several findings: {}",
                    names.join(", ")
                );
                return Ok(ExitCode::from(2));
            }
        },
    };
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let text = if std::io::stdout().is_terminal() {
        for_terminal(page, color)
    } else {
        page.to_owned()
    };
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

/// Every id with its one-line title.
pub(crate) fn list() -> String {
    let ids = mcptap_analyze::finding_ids();
    let w = ids.iter().map(|id| id.as_str().len()).max().unwrap_or(0);
    let mut out = String::new();
    for id in ids {
        out.push_str(&format!("  {:<w$}  {}\n", id.as_str(), id.title()));
    }
    out.push_str(
        "\nmcptap explain ID prints a finding's page (sub-cases such as never-sent work too).\n",
    );
    out
}

/// The id or sub-case nearest to a misspelt one, when it is close enough to be meant.
pub(crate) fn nearest(asked: &str) -> Option<&'static str> {
    let candidates = mcptap_analyze::finding_ids()
        .iter()
        .flat_map(|id| std::iter::once(id.as_str()).chain(id.subcases()));
    let (best, d) = candidates
        .map(|c| (c, edit_distance(asked, c)))
        .min_by_key(|(_, d)| *d)?;
    (d <= (asked.len() / 3).max(2)).then_some(best)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A markdown page for a terminal: headings bold (the page title also underlined), `**x**`
/// bold, `` `x` `` in colour, `[text](url)` as `text (url)`; without colour, no escape codes and
/// still no markup.
fn for_terminal(page: &str, color: bool) -> String {
    let (bold, under, code, off) = if color {
        ("\x1b[1m", "\x1b[1;4m", "\x1b[36m", "\x1b[0m")
    } else {
        ("", "", "", "")
    };
    let mut out = String::new();
    let mut fenced = false;
    for line in page.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            out.push_str(&format!("    {code}{line}{off}\n"));
            continue;
        }
        let hashes = line.len() - line.trim_start_matches('#').len();
        if hashes > 0 && line[hashes..].starts_with(' ') {
            let text = inline(line[hashes..].trim(), "", "", "");
            if hashes == 1 {
                out.push_str(&format!("{under}{text}{off}\n"));
                if !color {
                    out.push_str(&format!("{}\n", "=".repeat(text.chars().count())));
                }
            } else {
                out.push_str(&format!("{bold}{}{off}\n", text.to_uppercase()));
            }
            continue;
        }
        out.push_str(&inline(line, bold, code, off));
        out.push('\n');
    }
    out
}

/// Inline markdown: `**bold**`, `` `code` ``, `[text](url)`.
fn inline(line: &str, bold: &str, code: &str, off: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("**") {
            if let Some(end) = r.find("**") {
                out.push_str(&format!("{bold}{}{off}", inline(&r[..end], "", code, off)));
                rest = &r[end + 2..];
                continue;
            }
        }
        if let Some(r) = rest.strip_prefix('`') {
            if let Some(end) = r.find('`') {
                out.push_str(&format!("{code}{}{off}", &r[..end]));
                rest = &r[end + 1..];
                continue;
            }
        }
        if let Some(r) = rest.strip_prefix('[') {
            if let Some((text, after)) = r.split_once("](") {
                if let Some(end) = after.find(')') {
                    if !text.contains('\n') {
                        out.push_str(&format!(
                            "{} ({})",
                            inline(text, bold, code, off),
                            &after[..end]
                        ));
                        rest = &after[end + 1..];
                        continue;
                    }
                }
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// A finding as the line view prints it when it is announced: new, suspected, confirmed,
/// amended (a recovery) or cleared. Several lines.
pub fn finding_line(f: &mcptap_analyze::Finding) -> String {
    use mcptap_analyze::Status;
    let evidence: Vec<String> = f.evidence.iter().map(|id| id.to_string()).collect();
    let sub = f.subcase.map(|s| format!(" ({s})")).unwrap_or_default();
    let head = match (f.status, f.amendments.last()) {
        (Status::Suspected, None) => "?? SUSPECTED",
        (Status::Suspected, Some(_)) => "?? STILL SUSPECTED",
        (Status::Cleared, _) => "-- CLEARED",
        (Status::Confirmed, Some(a)) if a.starts_with("confirmed") => "!! CONFIRMED",
        (Status::Confirmed, Some(_)) => "!! AMENDED",
        (Status::Confirmed, None) => "!! FINDING",
    };
    let mut out = format!(
        "{head} [{}] {}{} — culprit: {}\n   {}\n   evidence: {}",
        f.severity.as_str(),
        f.id,
        sub,
        f.culprit.as_str(),
        f.summary,
        evidence.join(" "),
    );
    if let Some(d) = &f.decides {
        out.push_str(&format!("\n   decides: {d}"));
    }
    if let Some(a) = f.amendments.last() {
        out.push_str(&format!("\n   {a}"));
    }
    if f.status != Status::Cleared {
        out.push_str(&format!(
            "\n   fix: {}\n   more: mcptap explain {}",
            f.hint, f.id
        ));
    }
    out
}

/// A finding as one line (for stderr while `mcptap run`'s command owns the terminal).
pub fn finding_oneline(f: &mcptap_analyze::Finding) -> String {
    let last = f
        .amendments
        .last()
        .map(|a| format!(" ({a})"))
        .unwrap_or_default();
    format!("mcptap: {}{last}", finding_brief(f))
}

/// `[severity status] id (culprit): summary [#evidence]`, as the live line on stderr and the
/// closing summary both say it.
pub fn finding_brief(f: &mcptap_analyze::Finding) -> String {
    use mcptap_analyze::Status;
    let evidence: Vec<String> = f.evidence.iter().map(|id| id.to_string()).collect();
    let status = match f.status {
        Status::Suspected => " suspected",
        Status::Cleared => " cleared",
        Status::Confirmed => "",
    };
    format!(
        "[{}{status}] {} ({}): {} [{}]",
        f.severity.as_str(),
        f.id,
        f.culprit.as_str(),
        f.summary,
        evidence.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_for_a_terminal_has_no_raw_markup() {
        let page = mcptap_analyze::FindingId::TokenNotSent.page();
        assert!(page.contains("**") || page.contains('`'));
        for color in [false, true] {
            let t = for_terminal(page, color);
            assert!(!t.contains("**"), "{t}");
            assert!(!t.contains("\n## "), "{t}");
            assert!(t.contains("WHAT IT MEANS"), "{t}");
            assert_eq!(t.contains('\x1b'), color);
        }
        assert_eq!(
            inline(
                "see **this** and `that` at [RFC](https://x.example)",
                "<b>",
                "<c>",
                "</>"
            ),
            "see <b>this</> and <c>that</> at RFC (https://x.example)"
        );
    }

    #[test]
    fn a_typo_finds_the_nearest_id() {
        assert_eq!(nearest("token-not-snet"), Some("token-not-sent"));
        assert_eq!(nearest("nevre-sent"), Some("never-sent"));
        assert_eq!(nearest("completely-unrelated-words"), None);
        assert!(list()
            .lines()
            .any(|l| l.trim_start().starts_with("token-not-sent ")
                && l.ends_with("A token was issued, but MCP requests go out without it")));
    }
}
