//! A version 4 journal written back as version 3 wrote it, for tests that compare what both
//! give: every final line says its flow whole, its head merged in from the lines its `head`
//! points at, value by value with `serde_json` (not mcptap's reader); `sse` line offsets moved
//! with the lines. Shared by the store's tests and the CLI's (`#[path]`).

use serde_json::Value;
use std::path::Path;

/// The journal's lines with where each starts.
pub fn lines(path: &Path) -> Vec<(u64, Value)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut at = 0;
    let mut out = Vec::new();
    for l in text.split_inclusive('\n') {
        // A damaged line as null.
        out.push((at, serde_json::from_str(l).unwrap_or(Value::Null)));
        at += l.len() as u64;
    }
    out
}

/// The same journal as version 3 wrote it: every final line says its flow whole (its head
/// merged in from the lines it points at, value by value, without mcptap's reader).
pub fn as_v3(path: &Path, out: &Path) {
    let all = lines(path);
    let by_offset: std::collections::HashMap<u64, &Value> =
        all.iter().map(|(a, v)| (*a, v)).collect();
    let at = |offset: u64| by_offset[&offset];
    let mut text = String::new();
    // Where each line went (lines pointed at are always earlier).
    let mut moved: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for (offset, v) in &all {
        let line = match v["type"].as_str().unwrap() {
            "session" => {
                let mut v = v.clone();
                v["version"] = 3.into();
                type_first(&v)
            }
            "completed" | "failed" if v.get("head").is_some() => {
                let head = v["head"].as_array().unwrap();
                let mut flow = at(head[0].as_u64().unwrap())["flow"].clone();
                let rest = &v["flow"];
                for (k, x) in rest.as_object().unwrap() {
                    match k.as_str() {
                        "request" => flow["request"]["body"] = x["body"].clone(),
                        "response" => {
                            let mut resp = x.clone();
                            if let Some(r) = head.get(1) {
                                let h = at(r.as_u64().unwrap());
                                for m in ["status", "version", "headers"] {
                                    resp[m] = h[m].clone();
                                }
                            }
                            flow["response"] = resp;
                        }
                        _ => flow[k] = x.clone(),
                    }
                }
                // Members of the start's flow the final flow does not have.
                for k in [
                    "upstream_tls",
                    "response",
                    "error",
                    "tunnel",
                    "injected",
                    "not_injected",
                    "by_mcptap",
                    "secrets",
                    "raw_secrets",
                ] {
                    if rest.get(k).is_none() {
                        flow.as_object_mut().unwrap().remove(k);
                    }
                }
                // `type` first, the members pointing elsewhere last, as the writer orders them.
                let mut line = format!(r#"{{"type":{},"flow":{flow}"#, v["type"]);
                if let Some(sse) = v.get("sse") {
                    // Its members in the writer's order, the lines where they are now.
                    line.push_str(r#","sse":{"#);
                    if let Some(x) = sse.get("extra") {
                        line.push_str(&format!(r#""extra":{x},"#));
                    }
                    let at: Vec<String> = sse["lines"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| moved[&a.as_u64().unwrap()].to_string())
                        .collect();
                    line.push_str(&format!(r#""lines":[{}]"#, at.join(",")));
                    if let Some(x) = sse.get("body") {
                        line.push_str(&format!(r#","body":{x}"#));
                    }
                    line.push('}');
                }
                if let Some(x) = v.get("bodies") {
                    line.push_str(&format!(r#","bodies":{x}"#));
                }
                line.push('}');
                line
            }
            _ => type_first(v),
        };
        moved.insert(*offset, text.len() as u64);
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(out, text).unwrap();
    let side = path.with_file_name("bodies.bin");
    if side.exists() {
        std::fs::copy(side, out.with_file_name("bodies.bin")).unwrap();
    }
}

/// A line as the writer orders it: `type` first.
fn type_first(v: &Value) -> String {
    let rest: Vec<String> = v
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "type")
        .map(|(k, x)| format!("{}:{x}", Value::from(k.as_str())))
        .collect();
    format!(r#"{{"type":{},{}}}"#, v["type"], rest.join(","))
}
