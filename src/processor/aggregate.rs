//! Aggregates: each one's state, how a record updates it, how two states
//! merge (session windows merge), and its JSON result. States serialize for
//! checkpoints.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::config::AggFn;

/// HyperLogLog precision: 2^12 registers, standard error 1.04/√4096 ≈ 1.6 %.
pub const HLL_PRECISION: u32 = 12;
/// DDSketch relative accuracy: every percentile is within 1 % of a true
/// value of that rank.
pub const PERCENTILE_ALPHA: f64 = 0.01;

/// What a record gives an aggregate: its field's value (None for `count`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Input {
    None,
    Value(Value),
}

/// (event time, arrival sequence, value) for first/last.
type Stamped = (i64, u64, Value);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AggState {
    Count(u64),
    Sum(f64),
    Min(Option<f64>),
    Max(Option<f64>),
    Avg { sum: f64, n: u64 },
    First(Option<Stamped>),
    Last(Option<Stamped>),
    Distinct(HashSet<String>),
    Hll(Vec<u8>),
    Percentile { q: f64, sketch: Sketch },
    TopK { k: usize, counts: HashMap<String, u64> },
}

/// A value as a number, for numeric aggregates: JSON numbers, and strings
/// that parse as numbers (string sources).
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

/// A value as text, for distinct counts and top-k: strings as they are,
/// anything else as its JSON text.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl AggState {
    pub fn new(f: &AggFn) -> AggState {
        match f {
            AggFn::Count => AggState::Count(0),
            AggFn::Sum => AggState::Sum(0.0),
            AggFn::Min => AggState::Min(None),
            AggFn::Max => AggState::Max(None),
            AggFn::Avg => AggState::Avg { sum: 0.0, n: 0 },
            AggFn::First => AggState::First(None),
            AggFn::Last => AggState::Last(None),
            AggFn::CountDistinct { hll: false } => AggState::Distinct(HashSet::new()),
            AggFn::CountDistinct { hll: true } => AggState::Hll(vec![0; 1 << HLL_PRECISION]),
            AggFn::Percentile { q } => AggState::Percentile { q: *q, sketch: Sketch::default() },
            AggFn::TopK { k } => AggState::TopK { k: *k, counts: HashMap::new() },
        }
    }

    /// Whether `input` is usable by this aggregate (numeric ones need a
    /// number; the others any value; count nothing).
    pub fn accepts(f: &AggFn, input: &Input) -> bool {
        match (f, input) {
            (AggFn::Count, _) => true,
            (_, Input::None) => false,
            (AggFn::Sum | AggFn::Min | AggFn::Max | AggFn::Avg | AggFn::Percentile { .. }, Input::Value(v)) => number(v).is_some(),
            (_, Input::Value(Value::Null)) => false,
            _ => true,
        }
    }

    /// Adds one record (already checked with `accepts`).
    pub fn update(&mut self, input: &Input, ts: i64, seq: u64) {
        let v = match input {
            Input::Value(v) => Some(v),
            Input::None => None,
        };
        let num = v.and_then(number);
        match self {
            AggState::Count(n) => *n += 1,
            AggState::Sum(s) => *s = saturate(*s + num.unwrap_or(0.0)),
            AggState::Min(m) => *m = min_opt(*m, num, f64::min),
            AggState::Max(m) => *m = min_opt(*m, num, f64::max),
            AggState::Avg { sum, n } => {
                *sum = saturate(*sum + num.unwrap_or(0.0));
                *n += 1;
            }
            AggState::First(f) => {
                if let Some(v) = v {
                    if f.as_ref().is_none_or(|(t, s, _)| (ts, seq) < (*t, *s)) {
                        *f = Some((ts, seq, v.clone()));
                    }
                }
            }
            AggState::Last(l) => {
                if let Some(v) = v {
                    if l.as_ref().is_none_or(|(t, s, _)| (ts, seq) >= (*t, *s)) {
                        *l = Some((ts, seq, v.clone()));
                    }
                }
            }
            AggState::Distinct(set) => {
                if let Some(v) = v {
                    set.insert(text(v));
                }
            }
            AggState::Hll(regs) => {
                if let Some(v) = v {
                    hll_add(regs, &text(v));
                }
            }
            AggState::Percentile { sketch, .. } => {
                if let Some(x) = num {
                    sketch.add(x);
                }
            }
            AggState::TopK { counts, .. } => {
                if let Some(v) = v {
                    *counts.entry(text(v)).or_insert(0) += 1;
                }
            }
        }
    }

    /// Folds `other` (the same aggregate) into this one.
    pub fn merge(&mut self, other: &AggState) {
        match (self, other) {
            (AggState::Count(a), AggState::Count(b)) => *a += b,
            (AggState::Sum(a), AggState::Sum(b)) => *a = saturate(*a + b),
            (AggState::Min(a), AggState::Min(b)) => *a = min_opt(*a, *b, f64::min),
            (AggState::Max(a), AggState::Max(b)) => *a = min_opt(*a, *b, f64::max),
            (AggState::Avg { sum, n }, AggState::Avg { sum: s2, n: n2 }) => {
                *sum = saturate(*sum + s2);
                *n += n2;
            }
            (AggState::First(a), AggState::First(b)) => {
                if let Some(bv) = b {
                    if a.as_ref().is_none_or(|av| (bv.0, bv.1) < (av.0, av.1)) {
                        *a = Some(bv.clone());
                    }
                }
            }
            (AggState::Last(a), AggState::Last(b)) => {
                if let Some(bv) = b {
                    if a.as_ref().is_none_or(|av| (bv.0, bv.1) >= (av.0, av.1)) {
                        *a = Some(bv.clone());
                    }
                }
            }
            (AggState::Distinct(a), AggState::Distinct(b)) => a.extend(b.iter().cloned()),
            (AggState::Hll(a), AggState::Hll(b)) => {
                for (x, y) in a.iter_mut().zip(b) {
                    *x = (*x).max(*y);
                }
            }
            (AggState::Percentile { sketch: a, .. }, AggState::Percentile { sketch: b, .. }) => a.merge(b),
            (AggState::TopK { counts: a, .. }, AggState::TopK { counts: b, .. }) => {
                for (k, n) in b {
                    *a.entry(k.clone()).or_insert(0) += n;
                }
            }
            _ => debug_assert!(false, "merging different aggregates"),
        }
    }

    /// The JSON result.
    pub fn result(&self) -> Value {
        match self {
            AggState::Count(n) => json!(n),
            AggState::Sum(s) => num_json(*s),
            AggState::Min(m) | AggState::Max(m) => m.map_or(Value::Null, num_json),
            AggState::Avg { sum, n } => {
                if *n == 0 {
                    Value::Null
                } else {
                    json!(sum / *n as f64)
                }
            }
            AggState::First(v) | AggState::Last(v) => v.as_ref().map_or(Value::Null, |(_, _, v)| v.clone()),
            AggState::Distinct(set) => json!(set.len()),
            AggState::Hll(regs) => json!(hll_estimate(regs).round() as u64),
            AggState::Percentile { q, sketch } => sketch.quantile(*q).map_or(Value::Null, num_json),
            AggState::TopK { k, counts } => {
                let mut v: Vec<(&String, &u64)> = counts.iter().collect();
                v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                Value::Array(v.into_iter().take(*k).map(|(value, count)| json!({ "value": value, "count": count })).collect())
            }
        }
    }
}

/// Sums stay finite (JSON, and so checkpoints and output, have no
/// infinity): an overflowing sum sticks at the largest finite value.
fn saturate(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else if x.is_nan() {
        0.0
    } else {
        f64::MAX.copysign(x)
    }
}

fn min_opt(a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(f(x, y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// A number as JSON: integral values within 2^53 as integers.
pub fn num_json(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

fn hll_add(regs: &mut [u8], item: &str) {
    let h = xxhash_rust::xxh3::xxh3_64(item.as_bytes());
    let idx = (h >> (64 - HLL_PRECISION)) as usize;
    let rest = h << HLL_PRECISION;
    let rank = (rest.leading_zeros().min(64 - HLL_PRECISION) + 1) as u8;
    regs[idx] = regs[idx].max(rank);
}

/// The HyperLogLog estimate with the small-range (linear counting) correction.
fn hll_estimate(regs: &[u8]) -> f64 {
    let m = regs.len() as f64;
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let sum: f64 = regs.iter().map(|&r| 2f64.powi(-(r as i32))).sum();
    let raw = alpha * m * m / sum;
    let zeros = regs.iter().filter(|&&r| r == 0).count();
    if raw <= 2.5 * m && zeros > 0 {
        m * (m / zeros as f64).ln()
    } else {
        raw
    }
}

/// DDSketch (Masson, Rim, Lee 2019) with logarithmic buckets: a value x > 0
/// goes to bucket ⌈log_γ x⌉ with γ = (1 + α)/(1 − α); the quantile is read
/// back as 2γ^i/(γ + 1), within relative error α of a value of that rank.
/// Negative values use a mirrored set of buckets; zeros are counted apart.
/// Buckets merge by adding counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sketch {
    positive: BTreeMap<i32, u64>,
    negative: BTreeMap<i32, u64>,
    zeros: u64,
}

fn gamma() -> f64 {
    (1.0 + PERCENTILE_ALPHA) / (1.0 - PERCENTILE_ALPHA)
}

/// Values this close to zero count as zero (they would need huge negative bucket indexes).
const MIN_MAGNITUDE: f64 = 1e-9;

impl Sketch {
    pub fn add(&mut self, x: f64) {
        if x.abs() < MIN_MAGNITUDE {
            self.zeros += 1;
            return;
        }
        let i = (x.abs().ln() / gamma().ln()).ceil() as i32;
        let side = if x > 0.0 { &mut self.positive } else { &mut self.negative };
        *side.entry(i).or_insert(0) += 1;
    }

    pub fn merge(&mut self, o: &Sketch) {
        for (i, n) in &o.positive {
            *self.positive.entry(*i).or_insert(0) += n;
        }
        for (i, n) in &o.negative {
            *self.negative.entry(*i).or_insert(0) += n;
        }
        self.zeros += o.zeros;
    }

    pub fn count(&self) -> u64 {
        self.zeros + self.positive.values().sum::<u64>() + self.negative.values().sum::<u64>()
    }

    /// The value of rank ⌊q·(n − 1)⌋ (0-based) among the values added.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = (q * (n - 1) as f64).floor() as u64;
        let value = |i: i32| 2.0 * gamma().powi(i) / (gamma() + 1.0);
        let mut seen = 0u64;
        // Negative values, most negative first (largest bucket index first).
        for (i, c) in self.negative.iter().rev() {
            seen += c;
            if seen > rank {
                return Some(-value(*i));
            }
        }
        seen += self.zeros;
        if seen > rank {
            return Some(0.0);
        }
        for (i, c) in &self.positive {
            seen += c;
            if seen > rank {
                return Some(value(*i));
            }
        }
        self.positive.keys().next_back().map(|i| value(*i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: AggFn, values: &[Value]) -> Value {
        let mut s = AggState::new(&f);
        for (i, v) in values.iter().enumerate() {
            let input = Input::Value(v.clone());
            if AggState::accepts(&f, &input) {
                s.update(&input, i as i64 / 2, i as u64);
            }
        }
        s.result()
    }

    #[test]
    fn exact_aggregates() {
        let vals: Vec<Value> = [3, 1, 4, 1, 5].iter().map(|x| json!(x)).collect();
        assert_eq!(run(AggFn::Sum, &vals), json!(14));
        assert_eq!(run(AggFn::Min, &vals), json!(1));
        assert_eq!(run(AggFn::Max, &vals), json!(5));
        assert_eq!(run(AggFn::Avg, &vals), json!(2.8));
        assert_eq!(run(AggFn::First, &vals), json!(3));
        assert_eq!(run(AggFn::Last, &vals), json!(5));
        assert_eq!(run(AggFn::CountDistinct { hll: false }, &vals), json!(4));
        assert_eq!(run(AggFn::TopK { k: 2 }, &vals), json!([{ "value": "1", "count": 2 }, { "value": "3", "count": 1 }]));
        assert!(!AggState::accepts(&AggFn::Sum, &Input::Value(json!("x"))));
        assert!(AggState::accepts(&AggFn::Sum, &Input::Value(json!("2.5"))));
        assert_eq!(run(AggFn::Sum, &[json!(0.5), json!(0.25)]), json!(0.75));
        let huge = run(AggFn::Sum, &[json!(1e308), json!(1e308)]);
        assert_eq!(huge, json!(f64::MAX), "an overflowing sum saturates (and stays valid JSON)");
    }

    #[test]
    fn merging_equals_one_pass() {
        let fs = [AggFn::Count, AggFn::Sum, AggFn::Min, AggFn::Max, AggFn::Avg, AggFn::First, AggFn::Last, AggFn::CountDistinct { hll: false }, AggFn::CountDistinct { hll: true }, AggFn::Percentile { q: 0.9 }, AggFn::TopK { k: 3 }];
        let vals: Vec<(i64, Value)> = (0..200).map(|i| ((i * 7919) % 101, json!((i * 31) % 17))).collect();
        for f in fs {
            let mut whole = AggState::new(&f);
            let (mut a, mut b) = (AggState::new(&f), AggState::new(&f));
            for (i, (t, v)) in vals.iter().enumerate() {
                let input = Input::Value(v.clone());
                whole.update(&input, *t, i as u64);
                if i % 3 == 0 { &mut a } else { &mut b }.update(&input, *t, i as u64);
            }
            b.merge(&a);
            assert_eq!(b.result(), whole.result(), "{f:?}");
        }
    }

    #[test]
    fn approximate_aggregates_stay_within_their_bounds() {
        let mut h = AggState::new(&AggFn::CountDistinct { hll: true });
        for i in 0..100_000 {
            h.update(&Input::Value(json!(i)), 0, 0);
        }
        let est = h.result().as_u64().unwrap() as f64;
        assert!((est - 100_000.0).abs() / 100_000.0 < 0.05, "{est}");
        let mut small = AggState::new(&AggFn::CountDistinct { hll: true });
        for i in 0..100 {
            small.update(&Input::Value(json!(i % 50)), 0, 0);
        }
        assert_eq!(small.result(), json!(50), "linear counting is exact enough for small sets");

        let mut s = Sketch::default();
        let mut vals: Vec<f64> = (1..=10_000).map(|i| (i as f64).powf(1.7) - 3000.0).collect();
        for &v in &vals {
            s.add(v);
        }
        vals.sort_by(f64::total_cmp);
        for q in [0.01, 0.25, 0.5, 0.9, 0.99] {
            let exact = vals[(q * (vals.len() - 1) as f64).floor() as usize];
            let got = s.quantile(q).unwrap();
            assert!((got - exact).abs() <= PERCENTILE_ALPHA * exact.abs() + 1e-9, "q {q}: {got} vs {exact}");
        }
    }
}
