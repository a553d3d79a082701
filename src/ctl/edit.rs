//! Building a configuration change for `pgha ctl edit-config` (pure, table-tested): `--set
//! key.path=value` and `--pg name=value` become one JSON merge patch (values read as YAML
//! scalars, so `ttl=20` is a number, `pause=true` a boolean and `null` removes the key), and
//! a line diff shows the operator what will change before it is sent.

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error("{0:?} is not key=value: write e.g. --set ttl=20 or --pg max_connections=200")]
    NotAssignment(String),
    #[error("{0:?} has an empty key")]
    EmptyKey(String),
}

/// A scalar as YAML reads it: `20` → number, `true` → boolean, `null`/`~` → null, else string.
pub fn scalar(text: &str) -> Value {
    let t = text.trim();
    match t {
        "null" | "~" | "" => return Value::Null,
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = t.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = t.parse::<f64>() {
        if f.is_finite() {
            return Value::from(f);
        }
    }
    let unquoted = t
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| t.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')));
    Value::String(unquoted.unwrap_or(t).to_string())
}

fn insert(patch: &mut Map<String, Value>, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            patch.insert((*last).to_string(), value);
        }
        [first, rest @ ..] => {
            let child = patch.entry((*first).to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            insert(child.as_object_mut().expect("an object"), rest, value);
        }
    }
}

/// One merge patch from `--set` and `--pg` assignments, in order.
pub fn patch_from(sets: &[String], pgs: &[String]) -> Result<Value, EditError> {
    let mut patch = Map::new();
    let split = |a: &String| -> Result<(String, Value), EditError> {
        let (k, v) = a.split_once('=').ok_or_else(|| EditError::NotAssignment(a.clone()))?;
        if k.trim().is_empty() {
            return Err(EditError::EmptyKey(a.clone()));
        }
        Ok((k.trim().to_string(), scalar(v)))
    };
    for a in sets {
        let (k, v) = split(a)?;
        let path: Vec<&str> = k.split('.').collect();
        insert(&mut patch, &path, v);
    }
    for a in pgs {
        let (k, v) = split(a)?;
        insert(&mut patch, &["postgresql", "parameters", &k], v);
    }
    Ok(Value::Object(patch))
}

/// The merge patch turning `old` into `new` (keys removed in `new` become `null`).
pub fn diff_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = Map::new();
            for (k, ov) in o {
                match n.get(k) {
                    None => {
                        patch.insert(k.clone(), Value::Null);
                    }
                    Some(nv) if nv != ov => {
                        patch.insert(k.clone(), diff_patch(ov, nv));
                    }
                    Some(_) => {}
                }
            }
            for (k, nv) in n {
                if !o.contains_key(k) {
                    patch.insert(k.clone(), nv.clone());
                }
            }
            Value::Object(patch)
        }
        (_, n) => n.clone(),
    }
}

/// A line diff (`-` removed, `+` added, two-space context for unchanged lines) by longest
/// common subsequence; config texts are short.
pub fn line_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_read_like_yaml() {
        let rows = [
            ("20", json!(20)),
            ("true", json!(true)),
            ("null", Value::Null),
            ("0.5", json!(0.5)),
            ("'off'", json!("off")),
            ("on", json!("on")),
            ("host all all 0.0.0.0/0 md5", json!("host all all 0.0.0.0/0 md5")),
        ];
        for (text, want) in rows {
            assert_eq!(scalar(text), want, "{text:?}");
        }
    }

    #[test]
    fn assignments_become_one_patch() {
        let p = patch_from(
            &["ttl=20".into(), "postgresql.use_slots=false".into(), "pause=null".into()],
            &["max_connections=200".into(), "work_mem=64MB".into()],
        )
        .unwrap();
        assert_eq!(
            p,
            json!({"ttl": 20, "pause": null, "postgresql": {"use_slots": false, "parameters": {"max_connections": 200, "work_mem": "64MB"}}})
        );
        assert_eq!(patch_from(&["ttl".into()], &[]), Err(EditError::NotAssignment("ttl".into())));
        assert_eq!(patch_from(&["=1".into()], &[]), Err(EditError::EmptyKey("=1".into())));
    }

    #[test]
    fn diff_patch_turns_old_into_new() {
        let old = json!({"ttl": 10, "pause": false, "postgresql": {"parameters": {"a": 1, "b": 2}}});
        let new = json!({"ttl": 20, "pause": false, "postgresql": {"parameters": {"a": 1, "c": 3}}});
        let p = diff_patch(&old, &new);
        assert_eq!(p, json!({"ttl": 20, "postgresql": {"parameters": {"b": null, "c": 3}}}));
        let mut applied = old.clone();
        crate::api::patroni::merge_patch(&mut applied, p);
        assert_eq!(applied, new);
    }

    #[test]
    fn line_diff_marks_changes() {
        let d = line_diff("a: 1\nb: 2\nc: 3\n", "a: 1\nb: 5\nc: 3\nd: 4\n");
        assert_eq!(d, "  a: 1\n- b: 2\n+ b: 5\n  c: 3\n+ d: 4\n");
    }
}
