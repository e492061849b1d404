//! The engine's layering, enforced: no module imports from a module that calls it (directly or
//! round a cycle). Reads the sources as text: every `crate::…` and `super::…` path (and, in
//! `lib.rs`, every path through a child module) outside comments and test modules is an edge
//! from the file to the module it names.

use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`crate`, `tap`, `inject::hook`) → the source text that counts.
fn modules() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap().with_extension("");
            let name = rel
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "::");
            if name.ends_with("tests") || name == "layering" {
                continue; // tests may reach anywhere
            }
            let name = if name == "lib" {
                "crate".to_owned()
            } else {
                name
            };
            let text = std::fs::read_to_string(&path).unwrap();
            let text = match text.find("#[cfg(test)]\nmod tests") {
                Some(i) => text[..i].to_owned(),
                None => text,
            };
            let code: Vec<&str> = text
                .lines()
                .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
                .collect();
            out.insert(name, code.join("\n"));
        }
    }
    out
}

/// Which modules each module imports from.
fn edges(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let path = Regex::new(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)*)(::\{([^}]*)\})?").unwrap();
    let bare = Regex::new(r"(?:^|[^:\w])([a-z_][a-z0-9_]*)::").unwrap();
    let resolve = |segments: &[&str]| -> Option<String> {
        (1..=segments.len()).rev().find_map(|n| {
            let name = segments[..n].join("::");
            mods.contains_key(&name).then_some(name)
        })
    };
    let mut out = BTreeMap::new();
    for (name, text) in mods {
        let parent: Vec<&str> = match name.rsplit_once("::") {
            Some((p, _)) => p.split("::").collect(),
            None => Vec::new(),
        };
        let mut to = BTreeSet::new();
        for c in path.captures_iter(text) {
            let whole = c.get(0).unwrap();
            if c[2].is_empty() && c.get(4).is_none() && !text[whole.end()..].starts_with("::") {
                continue; // `pub(crate)`, `super` alone: not a path
            }
            let mut base: Vec<&str> = match &c[1] {
                "super" => parent.clone(),
                _ => Vec::new(),
            };
            base.extend(c[2].split("::").filter(|s| !s.is_empty()));
            let group: Vec<&str> = c
                .get(4)
                .map_or(Vec::new(), |g| g.as_str().split(',').collect());
            let mut targets = vec![base.clone()];
            for item in group {
                let mut t = base.clone();
                t.extend(item.trim().split("::").next().filter(|s| !s.is_empty()));
                targets.push(t);
            }
            for t in targets {
                let found = resolve(&t).unwrap_or_else(|| "crate".to_owned());
                to.insert(found);
            }
        }
        if name == "crate" {
            for c in bare.captures_iter(text) {
                if let Some(m) = resolve(&[&c[1]]) {
                    to.insert(m);
                }
            }
        }
        to.remove(name);
        out.insert(name.clone(), to);
    }
    out
}

/// A cycle in `graph`, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if !done.insert(n.to_owned()) {
            return None;
        }
        stack.push(n.to_owned());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_from_a_module_that_calls_it() {
    let mods = modules();
    let graph = edges(&mods);
    // The reader itself works: the known chain is seen.
    assert!(graph["listener"].contains("connect"), "{graph:?}");
    assert!(graph["connect"].contains("tls"), "{graph:?}");
    assert!(graph["tls"].contains("serve"), "{graph:?}");
    assert!(graph["inject::hook"].contains("inject"), "{graph:?}");
    assert!(graph["crate"].contains("listener"), "{graph:?}");
    if let Some(c) = cycle(&graph) {
        panic!("modules import from their callers: {}", c.join(" → "));
    }
}

#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
}
