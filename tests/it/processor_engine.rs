//! The processor engine against brute-force references: random out-of-order
//! event streams over several keys, with lateness within and beyond grace,
//! through tumbling, hopping, sliding and session windows; every final
//! window must match the reference exactly.

use std::collections::BTreeMap;
use std::sync::Arc;

use eddy::processor::aggregate::Input;
use eddy::processor::config::parse;
use eddy::processor::engine::{Emission, Engine};
use serde_json::{json, Value};

use crate::log_support::Rng;


fn spec(window: &str, grace: &str) -> Arc<eddy::processor::ProcessorSpec> {
    let text = format!(
        r#"
        [source]
        topics = ["in"]
        [key]
        fields = ["k"]
        [time]
        field = "t"
        [window]
        {window}
        grace = "{grace}"
        retention = "1000d"
        [aggregates]
        n = {{ fn = "count" }}
        total = {{ fn = "sum", field = "v" }}
        low = {{ fn = "min", field = "v" }}
        high = {{ fn = "max", field = "v" }}
        first = {{ fn = "first", field = "v" }}
        last = {{ fn = "last", field = "v" }}
        [output]
        topic = "out"
        emit = "final"
        "#
    );
    Arc::new(parse("diff", &toml::from_str::<toml::Value>(&text).unwrap()).unwrap())
}

/// One event: key, event time, value, arrival order.
#[derive(Clone, Copy, Debug)]
struct Ev {
    key: u64,
    t: i64,
    v: i64,
    seq: usize,
}

/// A random stream: times drift upwards with jitter up to `jitter`, so some
/// records arrive out of order (and some beyond grace).
fn stream(rng: &mut Rng, n: usize, jitter: i64) -> Vec<Ev> {
    let mut base = 1_000_000i64;
    (0..n)
        .map(|seq| {
            base += rng.below(40) as i64;
            let t = base - rng.below(jitter as u64 + 1) as i64;
            Ev { key: rng.below(4), t, v: rng.below(200) as i64 - 50, seq }
        })
        .collect()
}

/// The expected output value of a window holding `evs` (arrival order kept).
fn expected_value(start: i64, end: i64, evs: &[Ev]) -> Value {
    let first = evs.iter().min_by_key(|e| (e.t, e.seq)).unwrap();
    let last = evs.iter().max_by_key(|e| (e.t, e.seq)).unwrap();
    json!({
        "window_start": start,
        "window_end": end,
        "n": evs.len(),
        "total": evs.iter().map(|e| e.v).sum::<i64>(),
        "low": evs.iter().map(|e| e.v).min().unwrap(),
        "high": evs.iter().map(|e| e.v).max().unwrap(),
        "first": first.v,
        "last": last.v,
    })
}

/// Runs the stream through the engine with W = the largest event time seen
/// (one partition, no out-of-orderness allowance), then closes everything.
/// Returns the final windows: (key, start, end) → value, and the late count.
fn run(spec: &Arc<eddy::processor::ProcessorSpec>, evs: &[Ev]) -> (BTreeMap<(u64, i64, i64), Value>, u64) {
    let mut e = Engine::new(Arc::clone(spec));
    let mut out: Vec<Emission> = Vec::new();
    let mut high = i64::MIN;
    for ev in evs {
        high = high.max(ev.t);
        e.advance(high, &mut out);
        // One input per aggregate, in the spec's order (by name).
        let inputs = spec.aggregates.iter().map(|a| if a.field.is_some() { Input::Value(json!(ev.v)) } else { Input::None }).collect();
        e.process(json!(format!("k{}", ev.key)).to_string(), ev.t, inputs);
    }
    e.advance(i64::MAX / 4, &mut out);
    let mut finals = BTreeMap::new();
    for o in out {
        let k: Value = serde_json::from_slice(&o.key).unwrap();
        let key: u64 = k["key"].as_str().unwrap()[1..].parse().unwrap();
        let id = (key, k["start"].as_i64().unwrap(), k["end"].as_i64().unwrap());
        let v: Value = serde_json::from_slice(o.value.as_ref().expect("final mode writes values")).unwrap();
        assert!(finals.insert(id, v).is_none(), "window {id:?} emitted twice");
    }
    (finals, e.late)
}

#[test]
fn hopping_and_tumbling_windows_match_the_reference() {
    for (seed, (size, advance, grace, jitter)) in [(300, 300, 100, 150), (300, 100, 50, 400), (100, 25, 0, 300), (200, 200, 1000, 100)].into_iter().enumerate() {
        let mut rng = Rng(0x1234_5678 + seed as u64);
        let evs = stream(&mut rng, 3000, jitter);
        let window = if size == advance { format!("type = \"tumbling\"\nsize = \"{size}ms\"") } else { format!("type = \"hopping\"\nsize = \"{size}ms\"\nadvance = \"{advance}ms\"") };
        let s = spec(&window, &format!("{grace}ms"));
        let (got, late) = run(&s, &evs);
        // Reference: a record counts for a window [k·a, k·a + size) holding it
        // if that window was still open when it arrived (end > W − grace,
        // W = largest time so far, itself included).
        let mut windows: BTreeMap<(u64, i64, i64), Vec<Ev>> = BTreeMap::new();
        let mut high = i64::MIN;
        let mut expected_late = 0;
        for ev in &evs {
            high = high.max(ev.t);
            let mut any = false;
            let mut k = (ev.t - size).div_euclid(advance) + 1;
            while k * advance <= ev.t {
                let (start, end) = (k * advance, k * advance + size);
                if end > high - grace {
                    windows.entry((ev.key, start, end)).or_default().push(*ev);
                    any = true;
                }
                k += 1;
            }
            expected_late += (!any) as u64;
        }
        let expected: BTreeMap<_, _> = windows.iter().map(|(id, evs)| (*id, expected_value(id.1, id.2, evs))).collect();
        assert_eq!(late, expected_late, "case {seed}: late records");
        assert!(seed == 3 || late > 0, "case {seed}: the stream should have late records");
        assert_eq!(got.len(), expected.len(), "case {seed}: window count");
        for (id, v) in &expected {
            assert_eq!(got.get(id), Some(v), "case {seed}: window {id:?}");
        }
    }
}

#[test]
fn session_windows_match_the_reference() {
    for (seed, gap) in [30i64, 100, 7].into_iter().enumerate() {
        let mut rng = Rng(0xabcd + seed as u64);
        // Grace larger than the jitter: nothing is late, so the sessions are
        // the gap-separated runs of each key's sorted times, whatever order
        // the records came in.
        let evs = stream(&mut rng, 2000, 300);
        let s = spec(&format!("type = \"session\"\ngap = \"{gap}ms\""), "1000ms");
        let (got, late) = run(&s, &evs);
        assert_eq!(late, 0);
        let mut expected = BTreeMap::new();
        for key in 0..4 {
            let mut mine: Vec<Ev> = evs.iter().filter(|e| e.key == key).copied().collect();
            mine.sort_by_key(|e| (e.t, e.seq));
            let mut run_start = 0;
            for i in 1..=mine.len() {
                if i == mine.len() || mine[i].t - mine[i - 1].t > gap {
                    let part = &mine[run_start..i];
                    let (start, end) = (part[0].t, part[part.len() - 1].t);
                    expected.insert((key, start, end), expected_value(start, end, part));
                    run_start = i;
                }
            }
        }
        assert_eq!(got.len(), expected.len(), "gap {gap}: session count");
        for (id, v) in &expected {
            assert_eq!(got.get(id), Some(v), "gap {gap}: session {id:?}");
        }
    }
}

#[test]
fn sliding_windows_match_the_reference() {
    for (seed, d) in [50i64, 200, 1].into_iter().enumerate() {
        let mut rng = Rng(0x5eed + seed as u64);
        let evs = stream(&mut rng, 800, 120);
        let s = spec(&format!("type = \"sliding\"\nadvance = \"{d}ms\""), "1000ms");
        let (got, late) = run(&s, &evs);
        assert_eq!(late, 0);
        // KIP-450: for each record at t, the window [t − d, t] ending at it,
        // and [t + 1, t + 1 + d] starting after it when that holds records.
        let mut expected = BTreeMap::new();
        for key in 0..4 {
            let mine: Vec<Ev> = evs.iter().filter(|e| e.key == key).copied().collect();
            for ev in &mine {
                for (start, end) in [(ev.t - d, ev.t), (ev.t + 1, ev.t + 1 + d)] {
                    let inside: Vec<Ev> = mine.iter().filter(|e| e.t >= start && e.t <= end).copied().collect();
                    if !inside.is_empty() {
                        expected.insert((key, start, end), expected_value(start, end, &inside));
                    }
                }
            }
        }
        assert_eq!(got.len(), expected.len(), "d {d}: window count");
        for (id, v) in &expected {
            assert_eq!(got.get(id), Some(v), "d {d}: window {id:?}");
        }
    }
}

#[test]
fn keys_split_over_worker_threads_give_each_key_the_same_output() {
    use eddy::processor::shards::Engines;
    let mut rng = Rng(0xfeed);
    let evs = stream(&mut rng, 5000, 600);
    for window in ["type = \"hopping\"\nsize = \"200ms\"\nadvance = \"100ms\"", "type = \"session\"\ngap = \"20ms\""] {
        let s = spec(window, "20ms");
        type PerKey = BTreeMap<String, Vec<(Vec<u8>, Option<Vec<u8>>)>>;
        let run = |threads: usize| -> (PerKey, usize) {
            let mut engines: Engines<usize> = Engines::new(&s, None, threads);
            let mut high = i64::MIN;
            for ev in &evs {
                high = high.max(ev.t);
                let inputs = s.aggregates.iter().map(|a| if a.field.is_some() { Input::Value(json!(ev.v)) } else { Input::None }).collect();
                engines.process(json!(format!("k{}", ev.key)).to_string(), ev.t, inputs, Some(high), ev.seq);
                if ev.seq % 500 == 0 {
                    engines.advance(high);
                }
            }
            engines.advance(i64::MAX / 4);
            let (mut out, mut late) = (Vec::new(), Vec::new());
            engines.collect(&mut out, &mut late).unwrap();
            // Per key, in order: what a reader of the key would see.
            let mut per_key: PerKey = BTreeMap::new();
            for o in out {
                let k: Value = serde_json::from_slice(&o.key).unwrap();
                per_key.entry(k["key"].to_string()).or_default().push((o.key, o.value));
            }
            (per_key, late.len())
        };
        let (one, late_one) = run(1);
        let (three, late_three) = run(3);
        assert!(late_one > 0, "the stream has late records");
        assert_eq!(late_one, late_three);
        assert_eq!(one, three, "{window}");
    }
}
