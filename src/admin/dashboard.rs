//! The Grafana dashboard (`deploy/grafana/ai-extproc.json`) reads only series this processor
//! exports, with labels they carry: a renamed metric or label cannot leave a panel silently
//! empty.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::Metrics;
use crate::usage::{FailedAttempt, UsageRecord};

const DASHBOARD: &str = include_str!("../../deploy/grafana/ai-extproc.json");

/// Every series name the metrics expose (a counter's `_total`, a histogram's `_bucket`, `_sum`,
/// `_count`), from the `# TYPE` lines (a labelled family without samples has none: the test
/// gives each one a sample first).
fn exported(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => {
                out.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            _ => {
                out.insert(name.to_string());
            }
        }
    }
    out
}

/// The label names each series has in `text`'s samples.
fn labels(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        let set = out.entry(name.to_string()).or_default();
        for pair in rest.split("\",") {
            if let Some((label, _)) = pair.split_once("=\"") {
                set.insert(label.trim_start_matches(',').to_string());
            }
        }
    }
    out
}

/// Removes every `open ... close` group (selectors, ranges, string literals), keeping what
/// `keep` returns for its inside.
fn strip(expr: &str, open: char, close: char, mut keep: impl FnMut(&str)) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find(open) {
        out.push_str(&rest[..i]);
        let inner = &rest[i + 1..];
        let j = inner.find(close).expect("closed");
        keep(&inner[..j]);
        out.push(' ');
        rest = &inner[j + 1..];
    }
    out.push_str(rest);
    out
}

/// PromQL's aggregation operators (they may be followed by `by (...)` before their `(`).
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
];

/// A query's series names and, per series, the labels the query reads (in its selectors or a
/// `by (...)` / `without (...)`).
fn read(expr: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut used_labels = BTreeSet::new();
    let e = strip(expr, '"', '"', |_| {});
    let e = strip(&e, '[', ']', |_| {});
    let e = strip(&e, '{', '}', |inner| {
        for m in inner.split(',') {
            let name: String = m
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                used_labels.insert(name);
            }
        }
    });
    // Tokens: identifiers (with `$` for variables) and single punctuation characters.
    let mut tokens: Vec<String> = Vec::new();
    let mut word = String::new();
    for c in e.chars() {
        if c.is_alphanumeric() || matches!(c, '_' | ':' | '$' | '.') {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() {
            tokens.push(c.to_string());
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    let mut names = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        let next = tokens.get(i + 1).map(String::as_str);
        let identifier = t.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
        if matches!(t, "by" | "without" | "on" | "ignoring") && next == Some("(") {
            i += 2;
            while i < tokens.len() && tokens[i] != ")" {
                if tokens[i] != "," {
                    used_labels.insert(tokens[i].clone());
                }
                i += 1;
            }
        } else if identifier && next != Some("(") && !AGGREGATIONS.contains(&t) {
            names.push(t.to_string());
        }
        i += 1;
    }
    names
        .into_iter()
        .map(|n| (n, used_labels.clone()))
        .collect()
}

fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// `label_values(metric, label)` read as `metric{label}`.
fn as_selector(q: &str) -> String {
    match q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|r| r.split_once(','))
    {
        Some((metric, label)) => format!("{}{{{}=\"\"}}", metric.trim(), label.trim()),
        None => q.to_string(),
    }
}

#[test]
fn every_panel_reads_series_the_processor_exports() {
    let m = Metrics::new();
    // One of everything, so that labelled families have samples to read labels from.
    m.observe(&UsageRecord {
        endpoint: "chat",
        requested_model: "m".into(),
        backend: "default/b".into(),
        input_tokens: 1,
        output_tokens: 1,
        usage_seen: true,
        stream: true,
        duration_ms: 1.0,
        time_to_first_token_ms: 1.0,
        inter_token_latency_ms: 1.0,
        budget_charges: vec![("ns/p#0".into(), 1)],
        failed_attempts: vec![FailedAttempt {
            backend: "default/a".into(),
            reason: "503".into(),
        }],
        ..UsageRecord::default()
    });
    m.stream_error("k");
    m.immediate_response(404);
    m.budget_refused("ns/p#0");
    m.reload(true);
    m.budget.store_error("admit");
    let reservation = |reserved| crate::budget::Reservation {
        claim: crate::budget::Claim {
            budget: "ns/p#0".into(),
            key: "ns/p#0/u".into(),
            limit: 10,
            window: std::time::Duration::from_secs(60),
            request_cost: 0,
            estimate: reserved,
            tokens: true,
            global: false,
        },
        counter: "c".into(),
        charged: 0,
        reserved,
    };
    m.budget.settled(&reservation(1), 2);
    m.budget.settled(&reservation(2), 1);
    let text = m.encode();
    let exported = exported(&text);
    let labels = labels(&text);

    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().unwrap();
    let graphs: Vec<&Value> = panels.iter().filter(|p| p["type"] != "row").collect();
    assert!(graphs.len() >= 12, "{} panels", graphs.len());
    for p in &graphs {
        assert!(
            !p["targets"].as_array().unwrap().is_empty(),
            "panel {} has no query",
            p["title"]
        );
    }
    let mut all = Vec::new();
    queries(&dashboard, &mut all);
    let mut read_series = BTreeSet::new();
    for q in &all {
        let series = read(&as_selector(q));
        assert!(!series.is_empty(), "no series in {q}");
        for (name, used) in series {
            assert!(
                exported.contains(&name),
                "{name} (in {q}) is not exported; exported: {exported:?}"
            );
            if let Some(have) = labels.get(&name) {
                for l in used
                    .iter()
                    .filter(|l| *l != "le" || name.ends_with("_bucket"))
                {
                    assert!(
                        have.contains(l),
                        "{name} has no label {l} (in {q}): {have:?}"
                    );
                }
            }
            read_series.insert(name);
        }
    }
    // What the dashboard is for: requests, errors, latency and first-token percentiles,
    // tokens, usage-record drops, config generation and reloads.
    for needed in [
        "gen_ai_server_request_duration_seconds_count",
        "ai_extproc_immediate_responses_total",
        "gen_ai_server_request_duration_seconds_bucket",
        "gen_ai_server_time_to_first_token_seconds_bucket",
        "gen_ai_client_token_usage_sum",
        "ai_extproc_usage_records_dropped",
        "ai_extproc_trace_spans_dropped",
        "ai_extproc_config_generation",
        "ai_extproc_config_reloads_total",
    ] {
        assert!(read_series.contains(needed), "no panel reads {needed}");
    }
}

#[test]
fn the_query_reader_sees_names_and_labels() {
    let r = read(
        r#"histogram_quantile(0.95, sum by (le, model) (rate(x_bucket{a=~"$m", b!="q"}[$__rate_interval])))"#,
    );
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].0, "x_bucket");
    let want: BTreeSet<String> = ["a", "b", "le", "model"].map(String::from).into();
    assert_eq!(r[0].1, want);
    let r = read("sum(ai_x) + max(ai_y)");
    let names: Vec<&str> = r.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["ai_x", "ai_y"]);
}
