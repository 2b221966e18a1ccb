//! The JSONPath subset custom resource definitions use (printer columns, scale paths): field
//! steps (`.spec.replicas`, `['a.b']`), indexes (`[0]`, `[-1]`), wildcards (`[*]`) and equality
//! filters (`[?(@.type=="Ready")]`), always relative to the object and starting with `.`, as
//! kube-apiserver's printer wraps them in `{...}`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Field(String),
    Index(i64),
    All,
    /// `[?(@.a.b == "x")]` (or `!=`).
    Filter { path: Vec<String>, equal: bool, value: String },
}

/// Parse a path; the error is upstream's message for a printer column's `jsonPath`.
pub fn parse(p: &str) -> Result<Vec<Step>, String> {
    if !p.starts_with('.') {
        return Err("must be a simple json path starting with .".into());
    }
    let bad = |why: &str| Err(format!("invalid JSONPath: {why}"));
    let b: Vec<char> = p.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        match b[i] {
            '.' => {
                i += 1;
                let start = i;
                while i < b.len() && b[i] != '.' && b[i] != '[' {
                    i += 1;
                }
                let name: String = b[start..i].iter().collect();
                if name.is_empty() {
                    if i >= b.len() && out.is_empty() {
                        return bad("empty path");
                    }
                    if i < b.len() && b[i] == '.' {
                        return bad("recursive descent is not supported");
                    }
                    if i < b.len() {
                        continue;
                    }
                    return bad("a path may not end with '.'");
                }
                if !name.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '$')) {
                    return bad(&format!("unexpected character in {name:?}"));
                }
                out.push(Step::Field(name));
            }
            '[' => {
                let Some(end) = b[i..].iter().position(|c| *c == ']').map(|e| e + i) else { return bad("unclosed '['") };
                // A filter may contain ']' in its literal: find the ")]" that closes it.
                let (inner, next): (String, usize) = if b.get(i + 1) == Some(&'?') {
                    let text: String = b[i..].iter().collect();
                    let Some(close) = text.find(")]") else { return bad("unclosed filter") };
                    (text[1..close + 1].to_string(), i + text[..close + 2].chars().count())
                } else {
                    (b[i + 1..end].iter().collect(), end + 1)
                };
                let inner = inner.trim();
                if inner == "*" {
                    out.push(Step::All);
                } else if let Ok(n) = inner.parse::<i64>() {
                    out.push(Step::Index(n));
                } else if (inner.starts_with('\'') && inner.ends_with('\'') || inner.starts_with('"') && inner.ends_with('"')) && inner.len() >= 2 {
                    out.push(Step::Field(inner[1..inner.len() - 1].to_string()));
                } else if let Some(f) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
                    let (lhs, rhs, equal) = match (f.split_once("=="), f.split_once("!=")) {
                        (Some((l, r)), _) => (l, r, true),
                        (None, Some((l, r))) => (l, r, false),
                        _ => return bad("only == and != filters are supported"),
                    };
                    let Some(path) = lhs.trim().strip_prefix("@.") else { return bad("a filter must start with @.") };
                    let rhs = rhs.trim();
                    let value = if rhs.len() >= 2 && (rhs.starts_with('"') && rhs.ends_with('"') || rhs.starts_with('\'') && rhs.ends_with('\'')) {
                        rhs[1..rhs.len() - 1].to_string()
                    } else {
                        rhs.to_string()
                    };
                    out.push(Step::Filter { path: path.split('.').map(str::to_string).collect(), equal, value });
                } else {
                    return bad(&format!("unsupported subscript [{inner}]"));
                }
                i = next;
            }
            c => return bad(&format!("unexpected {c:?}")),
        }
    }
    Ok(out)
}

/// The field names of a path made only of field steps (`.spec.replicas`), else `None`.
pub fn simple_fields(p: &str) -> Option<Vec<String>> {
    parse(p).ok()?.into_iter().map(|s| if let Step::Field(f) = s { Some(f) } else { None }).collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Every value the path selects in `obj`.
pub fn eval<'a>(steps: &[Step], obj: &'a Value) -> Vec<&'a Value> {
    let mut cur = vec![obj];
    for s in steps {
        let mut next = Vec::new();
        for v in cur {
            match s {
                Step::Field(f) => {
                    if let Some(x) = v.get(f.as_str()) {
                        next.push(x);
                    }
                }
                Step::Index(n) => {
                    if let Some(a) = v.as_array() {
                        let idx = if *n < 0 { a.len() as i64 + n } else { *n };
                        if let Some(x) = usize::try_from(idx).ok().and_then(|i| a.get(i)) {
                            next.push(x);
                        }
                    }
                }
                Step::All => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Step::Filter { path, equal, value } => {
                    for item in v.as_array().into_iter().flatten() {
                        let mut at = item;
                        for p in path {
                            at = &at[p.as_str()];
                        }
                        if (!at.is_null() && text(at) == *value) == *equal {
                            next.push(item);
                        }
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        let o = json!({"spec": {"replicas": 3, "a.b": "dots"}, "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Synced", "status": "False"}]}});
        let get = |p: &str| eval(&parse(p).expect(p), &o).into_iter().cloned().collect::<Vec<_>>();
        assert_eq!(get(".spec.replicas"), [json!(3)]);
        assert_eq!(get(".spec['a.b']"), [json!("dots")]);
        assert_eq!(get(".status.conditions[?(@.type==\"Ready\")].status"), [json!("True")]);
        assert_eq!(get(".status.conditions[*].type"), [json!("Ready"), json!("Synced")]);
        assert_eq!(get(".status.conditions[-1].type"), [json!("Synced")]);
        assert!(get(".spec.missing").is_empty());
        assert_eq!(parse("spec.replicas").expect_err("no dot"), "must be a simple json path starting with .");
        assert!(parse(".spec..x").is_err() && parse(".spec[").is_err());
        assert_eq!(simple_fields(".spec.replicas"), Some(vec!["spec".to_string(), "replicas".to_string()]));
        assert_eq!(simple_fields(".spec.items[0]"), None);
    }
}
