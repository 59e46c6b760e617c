//! The JSON Schema subset tools are described with, and the check of call arguments against it.
//!
//! [`validate`] understands what [`crate::ToolBuilder`] writes and what hand-written tool schemas
//! commonly use: `type` (a name or a list of names), `properties`, `required`, `enum`, `const`,
//! `items`, `additionalProperties: false`, `minimum`/`maximum`, `minLength`/`maxLength`. Other
//! keywords are accepted and not checked. The first violation is reported with the path of the
//! offending field, so the model can correct the call.

use serde_json::{Map, Value};

/// The JSON type names of JSON Schema.
const TYPE_NAMES: &[&str] = &[
    "string", "number", "integer", "boolean", "object", "array", "null",
];

/// An empty object schema: `{"type":"object","properties":{}}`.
pub fn empty_object_schema() -> Value {
    serde_json::json!({"type": "object", "properties": {}})
}

/// Checks `value` against `schema`; on failure, says which field is wrong and why.
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value, "")
}

/// Checks a tool's `arguments` object against its `inputSchema`.
pub fn validate_arguments(schema: &Value, arguments: &Map<String, Value>) -> Result<(), String> {
    // Avoid cloning large arguments: check the object's members directly.
    let Some(schema) = schema.as_object() else {
        return Ok(());
    };
    if let Some(t) = schema.get("type") {
        if !type_allows(t, "object") {
            return Err("the tool's input schema does not describe an object".into());
        }
    }
    check_object(schema, arguments, "")
}

fn field(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn describe(path: &str) -> String {
    if path.is_empty() {
        "the arguments".to_owned()
    } else {
        format!("'{path}'")
    }
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn matches_type(name: &str, value: &Value) -> bool {
    match name {
        "integer" => match value {
            Value::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        "number" => value.is_number(),
        other => type_of(value) == other,
    }
}

fn type_allows(t: &Value, name: &str) -> bool {
    match t {
        Value::String(s) => s == name,
        Value::Array(list) => list.iter().any(|v| v.as_str() == Some(name)),
        _ => true,
    }
}

fn check(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    let Some(schema) = schema.as_object() else {
        // `true`, `false` or something we do not understand: only `false` forbids.
        return match schema {
            Value::Bool(false) => Err(format!("{} is not allowed", describe(path))),
            _ => Ok(()),
        };
    };
    if let Some(t) = schema.get("type") {
        let names: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let known: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| TYPE_NAMES.contains(n))
            .collect();
        if !known.is_empty() && !known.iter().any(|n| matches_type(n, value)) {
            return Err(format!(
                "{} must be {}, got {}",
                describe(path),
                with_article(&known.join(" or ")),
                with_article(type_of(value)),
            ));
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(format!(
                "{} must be one of {}, got {value}",
                describe(path),
                list.join(", ")
            ));
        }
    }
    if let Some(expected) = schema.get("const") {
        if expected != value {
            return Err(format!("{} must be {expected}", describe(path)));
        }
    }
    match value {
        Value::Object(obj) => check_object(schema, obj, path)?,
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{}[{i}]", describe_raw(path)))?;
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                if x < min {
                    return Err(format!("{} must be at least {min}", describe(path)));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                if x > max {
                    return Err(format!("{} must be at most {max}", describe(path)));
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
                if len < min {
                    return Err(format!(
                        "{} must be at least {min} characters long",
                        describe(path)
                    ));
                }
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                if len > max {
                    return Err(format!(
                        "{} must be at most {max} characters long",
                        describe(path)
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn describe_raw(path: &str) -> &str {
    if path.is_empty() {
        "arguments"
    } else {
        path
    }
}

fn with_article(word: &str) -> String {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {word}"),
        _ => format!("a {word}"),
    }
}

fn check_object(
    schema: &Map<String, Value>,
    obj: &Map<String, Value>,
    path: &str,
) -> Result<(), String> {
    if let Some(Value::Array(required)) = schema.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !obj.contains_key(name) {
                return Err(format!("missing required argument '{}'", field(path, name)));
            }
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    for (name, value) in obj {
        match properties.and_then(|p| p.get(name)) {
            Some(prop) => check(prop, value, &field(path, name))?,
            None => match schema.get("additionalProperties") {
                Some(Value::Bool(false)) => {
                    return Err(format!("unknown argument '{}'", field(path, name)))
                }
                Some(extra @ Value::Object(_)) => check(extra, value, &field(path, name))?,
                _ => {}
            },
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn required_and_types_name_the_field() {
        let schema = json!({
            "type": "object",
            "properties": {
                "a": {"type": "number"},
                "op": {"type": "string", "enum": ["add", "sub"]},
                "n": {"type": "integer"},
                "flag": {"type": "boolean"}
            },
            "required": ["a", "op"]
        });
        assert!(validate_arguments(&schema, &args(json!({"a": 1.5, "op": "add"}))).is_ok());
        let e = validate_arguments(&schema, &args(json!({"op": "add"}))).unwrap_err();
        assert_eq!(e, "missing required argument 'a'");
        let e = validate_arguments(&schema, &args(json!({"a": "x", "op": "add"}))).unwrap_err();
        assert_eq!(e, "'a' must be a number, got a string");
        let e = validate_arguments(&schema, &args(json!({"a": 1, "op": "mul"}))).unwrap_err();
        assert!(e.starts_with("'op' must be one of \"add\", \"sub\""), "{e}");
        let e =
            validate_arguments(&schema, &args(json!({"a": 1, "op": "add", "n": 1.5}))).unwrap_err();
        assert_eq!(e, "'n' must be an integer, got a number");
        assert!(validate_arguments(&schema, &args(json!({"a": 1, "op": "add", "n": 2.0}))).is_ok());
        let e = validate_arguments(&schema, &args(json!({"a": 1, "op": "add", "flag": "yes"})))
            .unwrap_err();
        assert_eq!(e, "'flag' must be a boolean, got a string");
    }

    #[test]
    fn nested_objects_arrays_and_additional_properties() {
        let schema = json!({
            "type": "object",
            "properties": {
                "tags": {"type": "array", "items": {"type": "string"}},
                "opts": {
                    "type": "object",
                    "properties": {"depth": {"type": "integer", "minimum": 0}},
                    "additionalProperties": false
                }
            },
            "additionalProperties": false
        });
        let e = validate_arguments(&schema, &args(json!({"tags": ["a", 3]}))).unwrap_err();
        assert_eq!(e, "'tags[1]' must be a string, got an integer");
        let e = validate_arguments(&schema, &args(json!({"opts": {"depth": -1}}))).unwrap_err();
        assert_eq!(e, "'opts.depth' must be at least 0");
        let e = validate_arguments(&schema, &args(json!({"opts": {"x": 1}}))).unwrap_err();
        assert_eq!(e, "unknown argument 'opts.x'");
        let e = validate_arguments(&schema, &args(json!({"zzz": 1}))).unwrap_err();
        assert_eq!(e, "unknown argument 'zzz'");
    }

    #[test]
    fn unknown_keywords_and_open_schemas_pass() {
        let schema = json!({"type": "object", "x-custom": 1});
        assert!(validate_arguments(&schema, &args(json!({"anything": [1, {}]}))).is_ok());
        assert!(validate(&json!(true), &json!(5)).is_ok());
        assert!(validate(&json!(false), &json!(5)).is_err());
        assert!(validate(&json!({"type": ["string", "null"]}), &Value::Null).is_ok());
        assert!(validate(&json!({"type": "string", "maxLength": 2}), &json!("abc")).is_err());
    }
}
