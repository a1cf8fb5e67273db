//! A line parser for exactly the canonical spool text that `SpoolFile::render` writes, so that
//! `record` does not pay for a general TOML parser. Anything it does not recognise returns `None`
//! and the caller falls back to the full parser, which decides what is valid.

use super::{Entry, SpoolFile, BOOKKEEPING, FORMAT_VERSION};

/// Parses canonical spool text, or `None` when the text is not in canonical form.
pub fn parse(text: &str) -> Option<SpoolFile> {
    let mut version = None;
    let mut next_seq = None;
    let mut entries: Vec<Entry> = Vec::new();
    let mut current: Option<(Entry, bool)> = None; // (entry, saw bookkeeping) for the open [[intent]]
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "[[intent]]" {
            if let Some((e, _)) = current.take() {
                entries.push(finish(e)?);
            }
            current = Some((blank(), false));
            continue;
        }
        let (key, value) = split_assignment(line)?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return None;
        }
        match current.as_mut() {
            None => match key {
                "version" if version.is_none() => version = Some(integer(value)?),
                "next_seq" if next_seq.is_none() => next_seq = Some(integer(value)?),
                _ => return None,
            },
            Some((e, seen)) => {
                if BOOKKEEPING.contains(&key) {
                    *seen = true;
                    match key {
                        "first" => e.first_ms = datetime(value)?,
                        "last" => e.last_ms = datetime(value)?,
                        "count" => e.count = integer(value)?,
                        "seq" => e.seq = integer(value)?,
                        _ => e.sources = string_list(value)?,
                    }
                } else {
                    let v = if value == "true" || value == "false" {
                        toml::Value::Boolean(value == "true")
                    } else if value.starts_with('[') {
                        toml::Value::Array(string_list(value)?.into_iter().map(toml::Value::String).collect())
                    } else {
                        toml::Value::String(string(value)?)
                    };
                    if e.fields.insert(key.to_string(), v).is_some() {
                        return None; // duplicate key: let the full parser report it
                    }
                }
            }
        }
    }
    if let Some((e, _)) = current.take() {
        entries.push(finish(e)?);
    }
    if version? != FORMAT_VERSION as u64 {
        return None;
    }
    let max_seq = entries.iter().map(|e| e.seq).max().unwrap_or(0);
    Some(SpoolFile { next_seq: next_seq.unwrap_or(1).max(1).max(max_seq + 1), entries })
}

fn blank() -> Entry {
    Entry { fields: toml::Table::new(), first_ms: 0, last_ms: 0, count: 1, seq: 0, sources: Vec::new() }
}

fn finish(e: Entry) -> Option<Entry> {
    matches!(e.fields.get("kind"), Some(toml::Value::String(_))).then_some(e)
}

fn integer(v: &str) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.bytes().all(|b| b.is_ascii_digit()) || (v.len() > 1 && v.starts_with('0')) {
        return None;
    }
    v.parse().ok()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, as `clock::datetime` renders.
fn datetime(v: &str) -> Option<u64> {
    let b = v.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    crate::clock::parse_rfc3339_ms(v)
}

/// A basic string with the escapes `quote` produces (and the other simple TOML ones).
fn string(v: &str) -> Option<String> {
    let inner = v.strip_prefix('"')?.strip_suffix('"')?;
    let (s, rest) = string_prefix(inner)?;
    rest.is_empty().then_some(s)
}

/// Reads string content up to an unescaped `"` (or the end); returns it and what follows.
fn string_prefix(s: &str) -> Option<(String, &str)> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i..])),
            '\\' => match chars.next()?.1 {
                '"' => out.push('"'),
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'u' => {
                    let hex: String = (0..4).map(|_| chars.next().map(|(_, c)| c)).collect::<Option<String>>()?;
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                _ => return None,
            },
            c if c.is_control() => return None,
            c => out.push(c),
        }
    }
    Some((out, ""))
}

/// `["a", "b"]` or `[]`.
fn string_list(v: &str) -> Option<Vec<String>> {
    let mut rest = v.strip_prefix('[')?.strip_suffix(']')?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        rest = rest.strip_prefix('"')?;
        let (s, after) = string_prefix(rest)?;
        out.push(s);
        rest = after.strip_prefix('"')?;
        if let Some(r) = rest.strip_prefix(", ") {
            rest = r;
            if rest.is_empty() {
                return None;
            }
        } else if !rest.is_empty() {
            return None;
        }
    }
    Some(out)
}

/// `line.split_once(" = ")` without building a substring searcher per line (it showed up in
/// `record`'s profile, which parses every pending intent).
fn split_assignment(line: &str) -> Option<(&str, &str)> {
    let b = line.as_bytes();
    let i = b.windows(3).position(|w| w == b" = ")?;
    Some((&line[..i], &line[i + 3..]))
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::parse;

    fn sample() -> SpoolFile {
        let mut s = SpoolFile::default();
        s.add(
            &Intent::KernelAdded { kernel: "6.1.0-47-amd64".into() },
            Some("dpkg:a \"q\" \\ é \u{1}"),
            1_795_219_200_123,
        );
        s.add(&Intent::HeadersChanged { kernel: "k".into(), force: true }, None, 7);
        s.add(&Intent::ModuleChanged { module: "m".into(), version: "1.0~rc1".into() }, Some("x"), 8);
        s.add(&Intent::ToolchainChanged { kernels: vec![] }, None, 9);
        s.add(&Intent::ToolchainChanged { kernels: vec!["a".into(), "b".into()] }, None, 9);
        s.add(&Intent::Rescan, Some("s, with comma"), 10);
        s.add(
            &Intent::Rebuild { kernels: vec!["k".into()], modules: vec!["m/1".parse().unwrap(), "n".parse().unwrap()] },
            None,
            11,
        );
        s.add(&Intent::Rescan, Some("again"), 12);
        s
    }

    #[test]
    fn fast_and_full_parsers_agree_on_rendered_text() {
        let text = sample().render();
        let fast = parse(&text).expect("canonical text takes the fast path");
        assert_eq!(fast, SpoolFile::parse_toml(&text).unwrap());
        assert_eq!(fast, sample());
    }

    #[test]
    fn non_canonical_text_falls_back() {
        for text in [
            "version = 1\n[[intent]]\nkind = 'rescan'\n",
            "version=1\n",
            "version = 2\n",
            "version = 1\n[[intent]]\nkind = \"x\"\nextra = { a = 1 }\n",
            "version = 1\n[[intent]]\nkind = \"x\"\nkind = \"y\"\n",
            "version = 1\n[[intent]]\nkernel = \"x\"\n",
            "version = 1\n[[intent]]\nkind = \"x\"\nfirst = 2026-11-21\n",
            "version = 1\n[[intent]]\nkind = \"x\"\nsources = [\"a\",]\n",
            "version = 1\n[[intent]]\nkind = \"a\\qb\"\n",
            "version = 01\n",
        ] {
            assert!(parse(text).is_none(), "{text}");
        }
    }
}
