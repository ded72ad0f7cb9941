use crate::DomainError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

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

/// Who may read an app variable over a live session (packet 11): by default only a session
/// authorized by a license; `auth_not_required` opens it to every initialized session. The
/// SDKs' HTTP variables are unaffected (they are always read after a license check).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VariableAccess {
    #[default]
    AuthRequired,
    AuthNotRequired,
}

impl VariableAccess {
    pub const fn wire_name(self) -> &'static str {
        match self {
            Self::AuthRequired => "auth_required",
            Self::AuthNotRequired => "auth_not_required",
        }
    }

    pub fn from_wire(text: &str) -> Option<Self> {
        [Self::AuthRequired, Self::AuthNotRequired].into_iter().find(|a| a.wire_name() == text)
    }
}

/// The app's access strategies by variable name, holding only the names that differ from the
/// default (`auth_required`), so an app that never set one stores nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VariableAccessMap(BTreeMap<String, VariableAccess>);

impl VariableAccessMap {
    /// Checks the names as variable keys are checked (1–64 characters, at most 50 of them) and
    /// drops the entries that only restate the default.
    pub fn new(entries: BTreeMap<String, VariableAccess>) -> Result<Self, DomainError> {
        let invalid = |why: String| Err(DomainError::InvalidVariables(why));
        if entries.len() > MAX_VARIABLES {
            return invalid(format!("at most {MAX_VARIABLES} variable names are allowed"));
        }
        if entries.keys().any(|name| name.is_empty() || name.chars().count() > MAX_VARIABLE_KEY_LEN) {
            return invalid(format!("variable names must be 1 to {MAX_VARIABLE_KEY_LEN} characters"));
        }
        Ok(Self(entries.into_iter().filter(|(_, access)| *access != VariableAccess::default()).collect()))
    }

    pub fn get(&self, name: &str) -> VariableAccess {
        self.0.get(name).copied().unwrap_or_default()
    }

    /// The names whose strategy is not the default.
    pub fn explicit(&self) -> impl Iterator<Item = (&str, VariableAccess)> {
        self.0.iter().map(|(name, access)| (name.as_str(), *access))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn variable_access_defaults_to_auth_required_and_keeps_only_the_exceptions() {
        let entries = BTreeMap::from([
            ("motd".to_string(), VariableAccess::AuthNotRequired),
            ("secret".to_string(), VariableAccess::AuthRequired),
        ]);
        let map = VariableAccessMap::new(entries).unwrap();
        assert_eq!(map.get("motd"), VariableAccess::AuthNotRequired);
        assert_eq!(map.get("secret"), VariableAccess::AuthRequired);
        assert_eq!(map.get("never-named"), VariableAccess::AuthRequired);
        assert_eq!(map.explicit().count(), 1, "the default is not stored");
        assert_eq!(serde_json::to_value(&map).unwrap(), json!({ "motd": "auth_not_required" }));
        assert_eq!(VariableAccess::from_wire("auth_not_required"), Some(VariableAccess::AuthNotRequired));
        assert_eq!(VariableAccess::from_wire("public"), None);
    }

    #[test]
    fn variable_access_names_follow_the_variable_key_rules() {
        let one = |name: String| VariableAccessMap::new(BTreeMap::from([(name, VariableAccess::AuthNotRequired)]));
        assert!(matches!(one(String::new()), Err(DomainError::InvalidVariables(_))));
        assert!(matches!(one("k".repeat(65)), Err(DomainError::InvalidVariables(_))));
        assert!(one("k".repeat(64)).is_ok());
        let many = (0..51).map(|i| (format!("k{i}"), VariableAccess::AuthNotRequired)).collect();
        assert!(matches!(VariableAccessMap::new(many), Err(DomainError::InvalidVariables(_))));
    }

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
