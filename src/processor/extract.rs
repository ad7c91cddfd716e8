//! From a source record to what the engine needs: the key, the event time
//! and one input per aggregate — or the reason the record is bad.

use serde_json::value::RawValue;
use serde_json::Value;

use super::aggregate::{AggState, Input};
use super::config::{AggFn, ProcessorSpec, SourceFormat, TimeFormat};

/// Why a record could not be processed (the dead-letter `reason` header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bad {
    Unparseable,
    MissingKey,
    MissingTime,
    BadTime,
    /// A field an aggregate needs is missing, null, or (numeric aggregates) not a number.
    BadField(String),
}

impl Bad {
    /// The kinds of bad record, as metric labels: `kind()` indexes it.
    pub const KINDS: [&'static str; 5] = ["unparseable", "missing_key", "missing_time", "bad_time", "bad_field"];

    /// This record's kind, an index into `KINDS` (the field a `bad_field`
    /// names is left out: labels stay few).
    pub fn kind(&self) -> usize {
        match self {
            Bad::Unparseable => 0,
            Bad::MissingKey => 1,
            Bad::MissingTime => 2,
            Bad::BadTime => 3,
            Bad::BadField(_) => 4,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Bad::Unparseable => "unparseable".into(),
            Bad::MissingKey => "missing_key".into(),
            Bad::MissingTime => "missing_time".into(),
            Bad::BadTime => "bad_time".into(),
            Bad::BadField(f) => format!("bad_field:{f}"),
        }
    }
}

/// The parts of a record the engine uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Extracted {
    pub key: String,
    pub time: i64,
    pub inputs: Vec<Input>,
}

fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, part| v.get(part.as_str())).filter(|v| !v.is_null())
}

/// An object's members, unparsed, in document order (objects are small: a
/// linear search beats hashing). A repeated name: the last one wins, as
/// when parsing into a map.
struct Fields<'a>(Vec<(&'a str, &'a RawValue)>);

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&&'a RawValue> {
        self.0.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Fields<'de>, A::Error> {
                let mut v = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some((k, val)) = m.next_entry::<&'de str, &'de RawValue>()? {
                    v.push((k, val));
                }
                Ok(Fields(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// The fields a processor reads, taken from a JSON object without building
/// the rest of it: the object's members are split into unparsed slices and
/// only the paths asked for are decoded. None when the fast path does not
/// apply (not an object, escaped member names); the caller then parses the
/// whole value.
fn lookup_raw(fields: &Fields<'_>, path: &[String]) -> Option<Option<Value>> {
    Some(match find_raw(fields, path)? {
        Some(raw) => {
            let v: Value = serde_json::from_str(raw.get()).ok()?;
            Some(v).filter(|v| !v.is_null())
        }
        None => None,
    })
}

/// The unparsed value at `path` (Some(None): absent).
fn find_raw<'a>(fields: &Fields<'a>, path: &[String]) -> Option<Option<&'a RawValue>> {
    let mut cur: &RawValue = match fields.get(path[0].as_str()) {
        Some(v) => v,
        None => return Some(None),
    };
    for part in &path[1..] {
        let inner: Fields<'_> = match serde_json::from_str(cur.get()) {
            Ok(m) => m,
            Err(_) if !cur.get().trim_start().starts_with('{') => return Some(None),
            Err(_) => return None,
        };
        cur = match inner.get(part.as_str()) {
            Some(v) => v,
            None => return Some(None),
        };
    }
    Some(Some(cur))
}

/// A key part's JSON text. A string without escapes is already in the
/// canonical form serde_json writes, so its text is used as it is; anything
/// else is decoded and written again (so equal values give equal keys).
fn key_text(raw: &RawValue) -> Option<Option<String>> {
    let text = raw.get();
    if text.starts_with('"') && !text.contains('\\') {
        return Some(Some(text.to_string()));
    }
    let v: Value = serde_json::from_str(text).ok()?;
    Some((!v.is_null()).then(|| v.to_string()))
}

/// Extraction from the unparsed members of an object (the fast path).
fn extract_fields(spec: &ProcessorSpec, fields: &Fields<'_>, timestamp: i64) -> Option<Result<Extracted, Bad>> {
    let mut parts = Vec::with_capacity(spec.key_fields.len());
    for p in &spec.key_fields {
        match find_raw(fields, p)?.map(key_text) {
            Some(Some(Some(text))) => parts.push(text),
            Some(None) => return None,
            _ => return Some(Err(Bad::MissingKey)),
        }
    }
    let key = if parts.len() == 1 { parts.pop().expect("one part") } else { format!("[{}]", parts.join(",")) };
    let time = match &spec.time_field {
        None => timestamp,
        Some(p) => match find_raw(fields, p)? {
            // An integer in epoch milliseconds: read it straight from the text.
            Some(raw) if spec.time_format == TimeFormat::EpochMs && raw.get().bytes().all(|b| b.is_ascii_digit() || b == b'-') => match raw.get().parse::<i64>() {
                Ok(t) => t,
                Err(_) => return Some(Err(Bad::BadTime)),
            },
            Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
                Ok(Value::Null) => return Some(Err(Bad::MissingTime)),
                Ok(v) => match parse_time(&v, spec.time_format) {
                    Ok(t) => t,
                    Err(e) => return Some(Err(e)),
                },
                Err(_) => return None,
            },
            None => return Some(Err(Bad::MissingTime)),
        },
    };
    let mut inputs = Vec::with_capacity(spec.aggregates.len());
    for a in &spec.aggregates {
        let input = match &a.field {
            None => Input::None,
            Some(p) => match lookup_raw(fields, p)? {
                Some(v) => Input::Value(v),
                None => return Some(Err(Bad::BadField(a.name.clone()))),
            },
        };
        if !AggState::accepts(&a.func, &input) {
            return Some(Err(Bad::BadField(a.name.clone())));
        }
        inputs.push(input);
    }
    Some(Ok(Extracted { key, time, inputs }))
}

/// Event times beyond this (about ±146 000 years around 1970) are bad:
/// window arithmetic (time ± size, grace, gap, retention) must not overflow.
pub const MAX_EVENT_TIME: i64 = 1 << 62;

pub fn extract(spec: &ProcessorSpec, key: Option<&[u8]>, value: Option<&[u8]>, timestamp: i64) -> Result<Extracted, Bad> {
    let x = extract_unchecked(spec, key, value, timestamp)?;
    if x.time.unsigned_abs() > MAX_EVENT_TIME as u64 {
        return Err(Bad::BadTime);
    }
    Ok(x)
}

fn extract_unchecked(spec: &ProcessorSpec, key: Option<&[u8]>, value: Option<&[u8]>, timestamp: i64) -> Result<Extracted, Bad> {
    match spec.format {
        SourceFormat::Json => {
            let bytes = value.ok_or(Bad::Unparseable)?;
            if let Ok(fields) = serde_json::from_slice::<Fields<'_>>(bytes) {
                if let Some(done) = extract_fields(spec, &fields, timestamp) {
                    return done;
                }
            }
            let v: Value = serde_json::from_slice(bytes).map_err(|_| Bad::Unparseable)?;
            let parts: Vec<&Value> = spec.key_fields.iter().map(|p| lookup(&v, p)).collect::<Option<_>>().ok_or(Bad::MissingKey)?;
            let key = if parts.len() == 1 { parts[0].to_string() } else { Value::Array(parts.into_iter().cloned().collect()).to_string() };
            let time = match &spec.time_field {
                None => timestamp,
                Some(p) => parse_time(lookup(&v, p).ok_or(Bad::MissingTime)?, spec.time_format)?,
            };
            let mut inputs = Vec::with_capacity(spec.aggregates.len());
            for a in &spec.aggregates {
                let input = match &a.field {
                    None => Input::None,
                    Some(p) => Input::Value(lookup(&v, p).cloned().ok_or_else(|| Bad::BadField(a.name.clone()))?),
                };
                if !AggState::accepts(&a.func, &input) {
                    return Err(Bad::BadField(a.name.clone()));
                }
                inputs.push(input);
            }
            Ok(Extracted { key, time, inputs })
        }
        SourceFormat::String => {
            let key = std::str::from_utf8(key.ok_or(Bad::MissingKey)?).map_err(|_| Bad::Unparseable)?;
            let text = value.map(std::str::from_utf8).transpose().map_err(|_| Bad::Unparseable)?;
            let mut inputs = Vec::with_capacity(spec.aggregates.len());
            for a in &spec.aggregates {
                let input = match (&a.func, text) {
                    (AggFn::Count, _) => Input::None,
                    (_, None) => return Err(Bad::BadField(a.name.clone())),
                    (_, Some(t)) => Input::Value(Value::String(t.to_string())),
                };
                if !AggState::accepts(&a.func, &input) {
                    return Err(Bad::BadField(a.name.clone()));
                }
                inputs.push(input);
            }
            Ok(Extracted { key: Value::String(key.to_string()).to_string(), time: timestamp, inputs })
        }
    }
}

fn parse_time(v: &Value, format: TimeFormat) -> Result<i64, Bad> {
    let finite = |x: f64| if x.is_finite() && x.abs() < 9.0e15 { Ok(x) } else { Err(Bad::BadTime) };
    match format {
        TimeFormat::EpochMs => match v {
            Value::Number(n) => n.as_i64().map_or_else(|| finite(n.as_f64().unwrap_or(f64::NAN)).map(|x| x.floor() as i64), Ok),
            Value::String(s) => s.trim().parse::<i64>().map_err(|_| Bad::BadTime),
            _ => Err(Bad::BadTime),
        },
        TimeFormat::EpochS => {
            let secs = match v {
                Value::Number(n) => n.as_f64().ok_or(Bad::BadTime)?,
                Value::String(s) => s.trim().parse::<f64>().map_err(|_| Bad::BadTime)?,
                _ => return Err(Bad::BadTime),
            };
            Ok((finite(secs)? * 1000.0).round() as i64)
        }
        TimeFormat::Rfc3339 => match v {
            Value::String(s) => parse_rfc3339(s).ok_or(Bad::BadTime),
            _ => Err(Bad::BadTime),
        },
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses RFC 3339 date-times (`2024-05-01T12:30:00Z`, `...T12:30:00.123+02:00`,
/// a space instead of `T` accepted) into milliseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d, h, mi, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days_in_month = match mo {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=12).contains(&mo) || !(1..=days_in_month).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut pos = 19;
    let mut millis = 0i64;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while b.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        if pos == start {
            return None;
        }
        let frac = &s.trim()[start..pos];
        let padded = format!("{:0<3}", &frac[..frac.len().min(3)]);
        millis = padded.parse().ok()?;
    }
    let offset_min = match b.get(pos)? {
        b'Z' | b'z' if pos + 1 == b.len() => 0,
        c @ (b'+' | b'-') if pos + 6 == b.len() && b[pos + 3] == b':' => {
            let m = num(pos + 1..pos + 3)? * 60 + num(pos + 4..pos + 6)?;
            if *c == b'+' {
                m
            } else {
                -m
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) - offset_min * 60) * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-02-29T12:00:00.5Z"), Some(1_709_208_000_500));
        assert_eq!(parse_rfc3339("2024-02-29T14:00:00.500+02:00"), Some(1_709_208_000_500));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59.999Z"), Some(-1));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400_000), "2000 is a leap year");
        for bad in ["2024-02-29", "2024-13-01T00:00:00Z", "2024-02-29T12:00:00", "2024-02-29T12:00:00+0200", "x024-02-29T12:00:00Z", "2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2024-04-31T00:00:00Z"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
