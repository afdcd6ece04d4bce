//! The JSON error body: `{"error":{"code","message"}}`, plus per-field messages on validation errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Body of every error answer of the HTTP APIs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A machine-readable `code` for clients to branch on and a `message` for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// Field name → what is wrong with it; only on validation errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, String>>,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                fields: None,
            },
        }
    }

    pub fn with_fields(mut self, fields: BTreeMap<String, String>) -> Self {
        self.error.fields = Some(fields);
        self
    }
}
