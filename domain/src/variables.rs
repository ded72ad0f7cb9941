use crate::DomainError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const MAX_VARIABLES: usize = 50;
pub const MAX_VARIABLES_BYTES: usize = 4096;
pub const MAX_VARIABLE_KEY_LEN: usize = 64;

/// A flat map of string/number/bool values delivered to SDK clients (app- or license-scoped).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Variables(Map<String, Value>);

impl Variables {
    /// Checks the documented limits: ≤50 keys, keys 1–64 characters, flat values, ≤4096 bytes as JSON.
    pub fn new(map: Map<String, Value>) -> Result<Self, DomainError> {
        let invalid = |why: String| Err(DomainError::InvalidVariables(why));
        if map.len() > MAX_VARIABLES {
            return invalid(format!("at most {MAX_VARIABLES} keys are allowed"));
        }
        for (key, value) in &map {
            if key.is_empty() || key.chars().count() > MAX_VARIABLE_KEY_LEN {
                return invalid(format!("key names must be 1 to {MAX_VARIABLE_KEY_LEN} characters"));
            }
            if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                return invalid(format!("value of '{key}' must be a string, number or boolean"));
            }
        }
        let size = Value::Object(map.clone()).to_string().len();
        if size > MAX_VARIABLES_BYTES {
            return invalid(format!("{size} bytes of JSON exceed the {MAX_VARIABLES_BYTES}-byte limit"));
        }
        Ok(Self(map))
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: Value) -> Result<Variables, DomainError> {
        Variables::new(v.as_object().unwrap().clone())
    }

    #[test]
    fn flat_values_within_limits_are_accepted() {
        let v = vars(json!({"plan": "pro", "maxProjects": 10, "beta": true})).unwrap();
        assert_eq!(v.as_map().len(), 3);
    }

    #[test]
    fn nested_values_are_refused() {
        assert!(matches!(vars(json!({"a": {"b": 1}})), Err(DomainError::InvalidVariables(_))));
        assert!(matches!(vars(json!({"a": [1]})), Err(DomainError::InvalidVariables(_))));
        assert!(matches!(vars(json!({"a": null})), Err(DomainError::InvalidVariables(_))));
    }

    #[test]
    fn limits_are_enforced() {
        let many: Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!(i))).collect();
        assert!(Variables::new(many).is_err());
        let long_key = "k".repeat(65);
        assert!(vars(json!({ long_key: 1 })).is_err());
        assert!(vars(json!({ "": 1 })).is_err());
        assert!(vars(json!({ "big": "x".repeat(4090) })).is_err());
        assert!(vars(json!({ "fits": "x".repeat(4000) })).is_ok());
    }
}
