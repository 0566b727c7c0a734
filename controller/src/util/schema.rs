//! A small JSON Schema validator for tool arguments.
//!
//! It covers what tool schemas use: `type` (one name or a list; `integer` accepts whole
//! numbers), `properties`, `required`, `additionalProperties` (`false` or a schema), `items`,
//! `enum`, `const`, `minimum`/`maximum` (and the exclusive forms), `minLength`/`maxLength`,
//! `minItems`/`maxItems`, `anyOf`/`oneOf` (at least one branch must hold). Keywords it does
//! not know are ignored, as the standard says. The first violation found is reported with
//! the path of the offending value (`command`, `files[2].path`), in words a model can act on.

use serde_json::Value;

/// Checks `value` against `schema`; `Err` names the first violation.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value, "")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => match v {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

fn at(path: &str) -> String {
    if path.is_empty() {
        "the arguments".to_string()
    } else {
        format!("`{path}`")
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

fn check(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    let Some(s) = schema.as_object() else {
        // `true` / `{}` accept anything; `false` nothing.
        return if schema == &Value::Bool(false) {
            Err(format!("{} is not allowed", at(path)))
        } else {
            Ok(())
        };
    };

    if let Some(t) = s.get("type") {
        let names: Vec<&str> = match t {
            Value::String(n) => vec![n.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !names.is_empty() && !names.iter().any(|n| is_type(value, n)) {
            return Err(format!(
                "{} must be {}, got {} {}",
                at(path),
                names.join(" or "),
                type_name(value),
                short(value)
            ));
        }
    }

    if let Some(c) = s.get("const") {
        if c != value {
            return Err(format!("{} must be {}", at(path), short(c)));
        }
    }
    if let Some(Value::Array(options)) = s.get("enum") {
        if !options.contains(value) {
            let list: Vec<String> = options.iter().map(short).collect();
            return Err(format!(
                "{} must be one of {}, got {}",
                at(path),
                list.join(", "),
                short(value)
            ));
        }
    }

    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = s.get(key) {
            let mut first_err = None;
            let ok = branches.iter().any(|b| match check(b, value, path) {
                Ok(()) => true,
                Err(e) => {
                    first_err.get_or_insert(e);
                    false
                }
            });
            if !ok && !branches.is_empty() {
                return Err(first_err.unwrap_or_else(|| format!("{} is invalid", at(path))));
            }
        }
    }

    if let Some(n) = value.as_f64() {
        let num = |k: &str| s.get(k).and_then(Value::as_f64);
        if let Some(m) = num("minimum") {
            if n < m {
                return Err(format!("{} must be at least {m}, got {n}", at(path)));
            }
        }
        if let Some(m) = num("maximum") {
            if n > m {
                return Err(format!("{} must be at most {m}, got {n}", at(path)));
            }
        }
        if let Some(m) = num("exclusiveMinimum") {
            if n <= m {
                return Err(format!("{} must be more than {m}, got {n}", at(path)));
            }
        }
        if let Some(m) = num("exclusiveMaximum") {
            if n >= m {
                return Err(format!("{} must be less than {m}, got {n}", at(path)));
            }
        }
    }

    if let Some(text) = value.as_str() {
        let len = text.chars().count() as u64;
        if let Some(m) = s.get("minLength").and_then(Value::as_u64) {
            if len < m {
                return Err(format!(
                    "{} must have at least {m} characters, got {len}",
                    at(path)
                ));
            }
        }
        if let Some(m) = s.get("maxLength").and_then(Value::as_u64) {
            if len > m {
                return Err(format!(
                    "{} must have at most {m} characters, got {len}",
                    at(path)
                ));
            }
        }
    }

    if let Some(items) = value.as_array() {
        let n = items.len() as u64;
        if let Some(m) = s.get("minItems").and_then(Value::as_u64) {
            if n < m {
                return Err(format!(
                    "{} must have at least {m} items, got {n}",
                    at(path)
                ));
            }
        }
        if let Some(m) = s.get("maxItems").and_then(Value::as_u64) {
            if n > m {
                return Err(format!("{} must have at most {m} items, got {n}", at(path)));
            }
        }
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(item_schema, item, &format!("{path}[{i}]"))?;
            }
        }
    }

    if let Some(obj) = value.as_object() {
        if let Some(Value::Array(req)) = s.get("required") {
            for r in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    return Err(format!("missing required argument `{}`", join(path, r)));
                }
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => check(ps, v, &join(path, k))?,
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        let known: Vec<&str> = props
                            .map(|p| p.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        return Err(format!(
                            "unknown argument `{}` (expected: {})",
                            join(path, k),
                            if known.is_empty() {
                                "none".to_string()
                            } else {
                                known.join(", ")
                            }
                        ));
                    }
                    Some(extra @ Value::Object(_)) => check(extra, v, &join(path, k))?,
                    _ => {}
                },
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bash() -> Value {
        json!({
            "type": "object",
            "properties": {
                "command": {"type": "string", "minLength": 1},
                "timeout_secs": {"type": "integer", "minimum": 1, "maximum": 600}
            },
            "required": ["command"],
            "additionalProperties": false
        })
    }

    #[test]
    fn accepts_valid_arguments() {
        assert_eq!(validate(&bash(), &json!({"command": "ls"})), Ok(()));
        assert_eq!(
            validate(&bash(), &json!({"command": "ls", "timeout_secs": 30})),
            Ok(())
        );
        // 30.0 is a whole number: accepted as an integer.
        assert_eq!(
            validate(&bash(), &json!({"command": "ls", "timeout_secs": 30.0})),
            Ok(())
        );
    }

    #[test]
    fn names_the_first_violation() {
        let cases = [
            (json!({}), "missing required argument `command`"),
            (
                json!({"command": 5}),
                "`command` must be string, got integer 5",
            ),
            (
                json!({"command": ""}),
                "`command` must have at least 1 characters, got 0",
            ),
            (
                json!({"command": "ls", "timeout_secs": "30"}),
                "`timeout_secs` must be integer, got string \"30\"",
            ),
            (
                json!({"command": "ls", "timeout_secs": 0}),
                "`timeout_secs` must be at least 1, got 0",
            ),
            (
                json!({"command": "ls", "timeout_secs": 1.5}),
                "`timeout_secs` must be integer, got number 1.5",
            ),
            (
                json!({"command": "ls", "cwd": "/"}),
                "unknown argument `cwd` (expected: command, timeout_secs)",
            ),
            (
                json!("ls"),
                "the arguments must be object, got string \"ls\"",
            ),
            (json!(null), "the arguments must be object, got null null"),
        ];
        for (v, want) in cases {
            assert_eq!(validate(&bash(), &v), Err(want.to_string()), "{v}");
        }
    }

    #[test]
    fn nested_items_enum_and_any_of() {
        let s = json!({
            "type": "object",
            "properties": {
                "files": {"type": "array", "maxItems": 2, "items": {
                    "type": "object",
                    "properties": {"path": {"type": "string"}, "mode": {"enum": ["r", "w"]}},
                    "required": ["path"]
                }},
                "n": {"anyOf": [{"type": "integer"}, {"type": "null"}]}
            }
        });
        assert_eq!(
            validate(&s, &json!({"files": [{"path": "a"}, {"path": 1}]})),
            Err("`files[1].path` must be string, got integer 1".into())
        );
        assert_eq!(
            validate(&s, &json!({"files": [{"path": "a", "mode": "x"}]})),
            Err("`files[0].mode` must be one of \"r\", \"w\", got \"x\"".into())
        );
        assert_eq!(
            validate(
                &s,
                &json!({"files": [{"path": "a"}, {"path": "b"}, {"path": "c"}]})
            ),
            Err("`files` must have at most 2 items, got 3".into())
        );
        assert_eq!(validate(&s, &json!({"n": null})), Ok(()));
        assert!(validate(&s, &json!({"n": "x"})).is_err());
        // Unknown keywords and extra properties without `additionalProperties: false` pass.
        assert_eq!(validate(&json!({"format": "uri"}), &json!("x")), Ok(()));
        assert_eq!(validate(&s, &json!({"other": 1})), Ok(()));
    }
}
