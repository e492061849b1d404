//! What people read is snapshot-tested: the human report, the markdown report, `explain`, and
//! the JSON schema's shape.

use crate::common::steps::*;
use crate::common::*;
use mcptap_analyze::{
    analyze, explain, finding_ids, render_markdown, render_text, MarkdownOptions, Severity,
};
use serde_json::json;

/// A client that gets a token and never sends it, plus a tools/list with a broken schema.
fn broken_session() -> Scenario {
    let mut s = Scenario::new();
    s.add(init_401());
    s.add(prm(RS_MCP, AS));
    s.add(as_meta(AS));
    s.add(register(AS));
    s.add(authorize(AS, "code-1"));
    s.wait(2_000);
    s.add(issued(
        token_code(AS, "code-1"),
        "tok-secret-1",
        Some("refresh-secret-1"),
    ));
    s.add(init_401());
    s.add(init_401());
    s
}

#[test]
fn text_report_of_a_broken_session() {
    let r = analyze(&broken_session().flows);
    insta::assert_snapshot!("text_token_not_sent", render_text(&r));
}

#[test]
fn text_report_of_a_healthy_session() {
    let s = crate::healthy::session(crate::healthy::Healthy {
        authorize_visible: false,
        ..Default::default()
    });
    insta::assert_snapshot!("text_healthy", render_text(&analyze(&s.flows)));
}

#[test]
fn markdown_report_fingerprints_every_secret() {
    let s = broken_session();
    let r = analyze(&s.flows);
    let md = render_markdown(&r, &s.flows, &MarkdownOptions::default());
    for secret in [
        "tok-secret-1",
        "refresh-secret-1",
        "secret-1\"",
        "code-1&",
        VERIFIER,
    ] {
        assert!(!md.contains(secret), "{secret} leaked:\n{md}");
    }
    assert!(md.contains(&format!("[redacted sha256:{}", fp("tok-secret-1"))));
    insta::assert_snapshot!("markdown_token_not_sent", md);
}

#[test]
fn explain_pages() {
    insta::assert_snapshot!("explain_token_not_sent", explain("token-not-sent").unwrap());
    assert!(explain("token-unused").unwrap().contains("token-not-sent"));
    assert_eq!(finding_ids().len(), 56);
    for id in finding_ids() {
        let page = explain(id.as_str()).unwrap();
        for section in [
            "## What it means",
            "## How mcptap decides",
            "## How to fix it",
            "## Public reports",
        ] {
            assert!(page.contains(section), "{id} lacks {section}");
        }
    }
    assert!(explain("nope").is_none());
}

#[test]
fn json_schema_shape_is_stable() {
    let r = analyze(&broken_session().flows);
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["schema"], json!(1));
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "environment",
            "findings",
            "flows",
            "schema",
            "stories",
            "visibility"
        ]
    );
    let f = &v["findings"][0];
    assert_eq!(f["id"], "token-not-sent");
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["culprit"], "client");
    assert_eq!(f["subcase"], "never-sent");
    assert_eq!(f["evidence"], json!([6, 7, 8]));
    for k in ["key", "summary", "occurrences", "hint"] {
        assert!(f.get(k).is_some(), "finding lacks {k}");
    }
    let flow = &v["flows"][5];
    assert_eq!(flow["role"], "token_code");
    assert_eq!(v["flows"][0]["mcp"]["messages"][0]["method"], "initialize");
    assert_eq!(
        v["stories"][0]["tokens"][0]["fingerprint"],
        json!(fp("tok-secret-1"))
    );
    assert!(r.fails(Severity::High) && r.fails(Severity::Critical));
    assert_eq!("high".parse::<Severity>().unwrap(), Severity::High);
    assert!("loud".parse::<Severity>().is_err());
}

/// The broken session, then a revocation the server refuses and a stray request to another
/// host: the report opens with the verdict and the diagram, and its timeline lists every flow.
#[test]
fn markdown_report_tells_the_story() {
    let mut s = broken_session();
    s.add(init_401());
    s.add(
        FlowBuilder::post(&format!("{AS}/revoke"))
            .form(&[("token", "tok-secret-1")])
            .status(400)
            .resp_json(json!({"error": "unsupported_token_type"})),
    );
    s.add(FlowBuilder::get("https://telemetry.example/ping").status(204));
    let r = analyze(&s.flows);
    let md = render_markdown(&r, &s.flows, &MarkdownOptions::default());
    assert!(!md.contains("tok-secret-1"), "{md}");
    assert!(md.starts_with("# mcptap report\n\n**Verdict:**"), "{md}");
    assert!(md.contains("```mermaid\nsequenceDiagram"), "{md}");
    assert!(
        md.contains("/revoke"),
        "a refused revocation is listed:\n{md}"
    );
    assert!(
        md.contains("telemetry.example"),
        "other flows are listed:\n{md}"
    );
    assert!(md.contains("<details>"), "{md}");
    insta::assert_snapshot!("markdown_story", md);
}
