//! Data-driven processor cases: every file in `tests/processors/` holds a
//! processor config, input records and the exact expected output (and
//! dead-letter reasons). The runner feeds the records through the same
//! extraction and engine the broker's runtime uses, with one source
//! partition: before each record the watermark becomes the largest event
//! time so far minus `max_out_of_orderness`.
//!
//! Case file:
//! ```toml
//! [processor]            # the [processors.NAME] table
//! [[input]]              # in order: value (string), key, timestamp, flush = true (emit changes: flush after it)
//! [end]                  # optional: watermark = N to advance to at the end (then a final flush)
//! [[expected]]           # output in order: key (JSON text) or key_hex, value (JSON text) or none for a tombstone
//! [[dead]]               # dead-letter reasons in order (reason = "late" ...)
//! ```

use std::path::Path;
use std::sync::Arc;

use eddy::processor::config::{Emit, ProcessorSpec};
use eddy::processor::engine::{Emission, Engine};
use eddy::processor::extract;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    description: String,
    processor: toml::Value,
    input: Vec<InputRecord>,
    end: Option<End>,
    #[serde(default)]
    expected: Vec<Expected>,
    #[serde(default)]
    dead: Vec<Dead>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputRecord {
    value: Option<String>,
    key: Option<String>,
    #[serde(default)]
    timestamp: i64,
    #[serde(default)]
    flush: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct End {
    watermark: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    key: Option<String>,
    key_hex: Option<String>,
    value: Option<String>,
    timestamp: Option<i64>,
    /// Numbers in the value may differ by this relative error (approximate aggregates).
    tolerance: Option<f64>,
}

/// Equal JSON, numbers within `tol` relative error.
fn close_enough(got: &Value, want: &Value, tol: f64) -> bool {
    match (got, want) {
        (Value::Number(g), Value::Number(w)) => {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            (g - w).abs() <= tol * w.abs()
        }
        (Value::Object(g), Value::Object(w)) => g.len() == w.len() && w.iter().all(|(k, wv)| g.get(k).is_some_and(|gv| close_enough(gv, wv, tol))),
        (Value::Array(g), Value::Array(w)) => g.len() == w.len() && g.iter().zip(w).all(|(a, b)| close_enough(a, b, tol)),
        (g, w) => g == w,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Dead {
    reason: String,
}

fn run_case(path: &Path) {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let case: Case = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let spec: Arc<ProcessorSpec> = Arc::new(eddy::processor::config::parse("case", &case.processor).unwrap_or_else(|e| panic!("{name}: {e}")));
    let mut engine = Engine::new(Arc::clone(&spec));
    let mut out: Vec<Emission> = Vec::new();
    let mut dead: Vec<String> = Vec::new();
    let mut high: Option<i64> = None;
    for r in &case.input {
        match extract::extract(&spec, r.key.as_deref().map(str::as_bytes), r.value.as_deref().map(str::as_bytes), r.timestamp) {
            Err(bad) => dead.push(bad.reason()),
            Ok(x) => {
                high = Some(high.map_or(x.time, |h| h.max(x.time)));
                engine.advance(high.unwrap() - spec.max_out_of_orderness_ms, &mut out);
                if !engine.process(x.key, x.time, x.inputs) {
                    dead.push("late".into());
                }
            }
        }
        if r.flush {
            assert_eq!(spec.emit, Emit::Changes, "{name}: flush = true needs emit = \"changes\"");
            engine.flush(&mut out);
        }
    }
    if let Some(w) = case.end.as_ref().and_then(|e| e.watermark) {
        engine.advance(w, &mut out);
    }
    if spec.emit == Emit::Changes {
        engine.flush(&mut out);
    }
    let show = |o: &Emission| format!("{} => {}", String::from_utf8_lossy(&o.key), o.value.as_deref().map_or("(tombstone)".into(), |v| String::from_utf8_lossy(v).into_owned()));
    let all: Vec<String> = out.iter().map(show).collect();
    assert_eq!(out.len(), case.expected.len(), "{name} ({}): output was\n{}", case.description, all.join("\n"));
    for (i, (got, want)) in out.iter().zip(&case.expected).enumerate() {
        match (&want.key, &want.key_hex) {
            (Some(k), None) => {
                let got_key: Value = serde_json::from_slice(&got.key).unwrap_or_else(|_| panic!("{name}: output {i} key is not JSON"));
                assert_eq!(got_key, serde_json::from_str::<Value>(k).unwrap(), "{name}: output {i} key; output was\n{}", all.join("\n"));
            }
            (None, Some(hex)) => {
                let got_hex: String = got.key.iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(&got_hex, hex, "{name}: output {i} key bytes");
            }
            _ => panic!("{name}: expected {i} needs key or key_hex"),
        }
        match (&want.value, &got.value) {
            (Some(w), Some(g)) => {
                let g: Value = serde_json::from_slice(g).unwrap();
                let w: Value = serde_json::from_str(w).unwrap();
                match want.tolerance {
                    Some(tol) => assert!(close_enough(&g, &w, tol), "{name}: output {i} value {g} is not within {tol} of {w}"),
                    None => assert_eq!(g, w, "{name}: output {i} value; output was\n{}", all.join("\n")),
                }
            }
            (None, None) => {}
            _ => panic!("{name}: output {i}: value/tombstone mismatch; output was\n{}", all.join("\n")),
        }
        if let Some(ts) = want.timestamp {
            assert_eq!(got.timestamp, ts, "{name}: output {i} timestamp");
        }
    }
    let want_dead: Vec<&str> = case.dead.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(dead, want_dead, "{name}: dead letters");
}

#[test]
fn every_case_in_tests_processors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/processors");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
    files.sort();
    assert!(files.len() >= 10, "{} cases", files.len());
    for f in &files {
        run_case(f);
    }
}
