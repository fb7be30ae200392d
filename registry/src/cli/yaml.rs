//! `-o yaml` output: a serde_json value printed as block YAML (strings quoted where YAML would misread them).
//! Called by `get`; calls nothing.

use std::fmt::Write as _;

use serde_json::Value;

pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    yaml_value(v, 0, &mut out, false);
    out
}

fn plain_ok(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    !s.is_empty()
        && !matches!(lower.as_str(), "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "~" | "y" | "n")
        && s.parse::<f64>().is_err()
        && !s.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@` ".contains(c))
        && !s.ends_with(' ')
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.contains(['\n', '\t', '\r'])
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) if plain_ok(s) => s.clone(),
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        other => other.to_string(),
    }
}

fn yaml_value(v: &Value, indent: usize, out: &mut String, in_list: bool) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (i, (k, x)) in map.iter().enumerate() {
                let lead = if in_list && i == 0 { String::new() } else { pad.clone() };
                let key = scalar(&Value::String(k.clone()));
                match x {
                    Value::Object(m) if !m.is_empty() => {
                        let _ = writeln!(out, "{lead}{key}:");
                        yaml_value(x, indent + 2, out, false);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        let _ = writeln!(out, "{lead}{key}:");
                        yaml_value(x, indent, out, false);
                    }
                    _ => {
                        let _ = writeln!(out, "{lead}{key}: {}", inline(x));
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for x in items {
                let _ = write!(out, "{pad}- ");
                match x {
                    Value::Object(m) if !m.is_empty() => yaml_value(x, indent + 2, out, true),
                    Value::Array(a) if !a.is_empty() => {
                        let _ = writeln!(out);
                        yaml_value(x, indent + 2, out, false);
                    }
                    _ => {
                        let _ = writeln!(out, "{}", inline(x));
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", inline(other));
        }
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => scalar(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_reads_back_like_the_json() {
        let v = json!({"a": {"b": [1, "x: y", {"c": "true", "d": []}], "e": {}}, "f": "plain", "g": "", "h": [[1, 2]]});
        let y = to_yaml(&v);
        assert!(y.contains("f: plain\n"), "{y}");
        assert!(y.contains("\"x: y\""), "{y}");
        assert!(y.contains("c: \"true\""), "{y}");
        assert!(y.contains("g: \"\""), "{y}");
        assert!(y.contains("  - 1\n"), "{y}");
    }
}
