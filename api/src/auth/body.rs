//! Request bodies of the public auth endpoints: invalid JSON is `malformed_request`; missing or
//! mistyped fields are `bad_request` with a `details` entry per field.

use super::{AuthError, Refusal};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

/// The raw body; one over the size limit is refused with `payload_too_large` in the auth shape.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state).await.map(Self).map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AuthError::PayloadTooLarge.into_response()
            } else {
                AuthError::MalformedRequest.into_response()
            }
        })
    }
}

pub struct Fields {
    object: Map<String, Value>,
    problems: Vec<Value>,
}

/// Longest accepted value of any string field (HWIDs are the longest legitimate ones).
const MAX_FIELD_CHARS: usize = 512;

impl Fields {
    pub fn parse(body: &Bytes) -> Result<Self, Refusal> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(object)) => Ok(Self { object, problems: Vec::new() }),
            Ok(_) => {
                let details = vec![json!({ "field": "", "issue": "must be a JSON object" })];
                Err(Refusal::with_details(AuthError::BadRequest, details))
            }
            Err(_) => Err(AuthError::MalformedRequest.into()),
        }
    }

    fn problem(&mut self, field: &str, issue: &str) {
        self.problems.push(json!({ "field": field, "issue": issue }));
    }

    /// A required non-empty string (surrounding whitespace removed).
    pub fn string(&mut self, field: &str) -> String {
        match self.object.get(field) {
            Some(Value::String(s)) if s.trim().is_empty() => self.problem(field, "must not be empty"),
            Some(Value::String(s)) if s.chars().count() > MAX_FIELD_CHARS => self.problem(field, "is too long"),
            Some(Value::String(s)) if crate::control_chars::in_identifier(s) => {
                self.problem(field, "must not contain control characters")
            }
            Some(Value::String(s)) => return s.trim().to_string(),
            Some(_) => self.problem(field, "must be a string"),
            None => self.problem(field, "is required"),
        }
        String::new()
    }

    pub fn optional_integer(&mut self, field: &str) -> Option<i64> {
        match self.object.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
            Some(_) => {
                self.problem(field, "must be an integer");
                None
            }
        }
    }

    pub fn bool_or(&mut self, field: &str, default: bool) -> bool {
        match self.object.get(field) {
            None | Some(Value::Null) => default,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.problem(field, "must be a boolean");
                default
            }
        }
    }

    pub fn has(&self, field: &str) -> bool {
        self.object.get(field).is_some_and(|v| !v.is_null())
    }

    /// `bad_request` listing every field found wrong so far.
    pub fn check(&mut self) -> Result<(), Refusal> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(Refusal::with_details(AuthError::BadRequest, std::mem::take(&mut self.problems)))
        }
    }
}
