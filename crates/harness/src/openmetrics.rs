//! A strict reader of the OpenMetrics text format (the subset prometheus-client writes): every
//! sample belongs to a family declared by `# TYPE`, names and labels are well formed, values are
//! numbers, counters end in `_total`, histogram buckets carry `le`, and the text ends in `# EOF`.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The samples of `text`, or what in it breaks the format.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let body = text
        .strip_suffix("# EOF\n")
        .ok_or("the text does not end in `# EOF`")?;
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    for line in body.lines() {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kind, family) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !valid_name(family) {
                return Err(format!("bad family name in {line:?}"));
            }
            match kind {
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    let known = [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "info",
                        "unknown",
                    ];
                    if !known.contains(&t) {
                        return Err(format!("unknown type in {line:?}"));
                    }
                    types.insert(family.to_owned(), t.to_owned());
                }
                "HELP" | "UNIT" => {}
                _ => return Err(format!("unknown comment {line:?}")),
            }
            continue;
        }
        let sample = parse_sample(line)?;
        let family = types
            .iter()
            .filter(|(f, _)| sample.name.starts_with(f.as_str()))
            .max_by_key(|(f, _)| f.len())
            .ok_or_else(|| format!("sample of no declared family: {line:?}"))?;
        let suffix = &sample.name[family.0.len()..];
        let allowed: &[&str] = match family.1.as_str() {
            "counter" => &["_total", "_created"],
            "gauge" | "unknown" => &[""],
            "histogram" => &["_bucket", "_count", "_sum", "_created"],
            _ => &["", "_count", "_sum", "_info", "_created"],
        };
        if !allowed.contains(&suffix) {
            return Err(format!(
                "{} is not a sample of {} {}",
                sample.name, family.1, family.0
            ));
        }
        if suffix == "_bucket" && !sample.labels.contains_key("le") {
            return Err(format!("bucket without le: {line:?}"));
        }
        samples.push(sample);
    }
    Ok(samples)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let bad = || format!("malformed sample {line:?}");
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return Err(bad()),
    };
    if !valid_name(name) {
        return Err(bad());
    }
    let mut labels = BTreeMap::new();
    let rest = if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if c == '}' {
                end = Some(i);
                break;
            }
            if c == ',' {
                continue;
            }
            let start = i;
            let mut eq = None;
            for (j, c) in chars.by_ref() {
                if c == '=' {
                    eq = Some(j);
                    break;
                }
            }
            let eq = eq.ok_or_else(bad)?;
            let key = &inner[start..eq];
            if !valid_name(key) || chars.next().map(|(_, c)| c) != Some('"') {
                return Err(bad());
            }
            let mut value = String::new();
            loop {
                match chars.next().ok_or_else(bad)?.1 {
                    '"' => break,
                    '\\' => match chars.next().ok_or_else(bad)?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        _ => return Err(bad()),
                    },
                    c => value.push(c),
                }
            }
            if labels.insert(key.to_owned(), value).is_some() {
                return Err(format!("repeated label {key} in {line:?}"));
            }
        }
        &inner[end.ok_or_else(bad)? + 1..]
    } else {
        rest
    };
    let mut fields = rest.strip_prefix(' ').ok_or_else(bad)?.split(' ');
    let value = fields.next().ok_or_else(bad)?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| bad())?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The series names Prometheus stores from `text`, declared families included even before
/// their first sample: a counter's `_total`, a histogram's `_bucket`, `_sum` and `_count`.
pub fn series_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        let Some(declared) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = declared.split(' ');
        let (family, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
    }
    names
}

/// The value of the sample named `name` whose labels include `labels`, summed over the rest.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}
