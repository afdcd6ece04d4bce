//! HTTP routes of auth-service.

mod health;
mod login;
mod me;
mod signup;

use std::collections::BTreeMap;

use actix_web::web;
use serde_json::Value;

use crate::error::ApiError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/auth/signup", web::post().to(signup::signup))
        .route("/api/auth/login", web::post().to(login::login))
        .route("/api/auth/me", web::get().to(me::me))
        .route("/.well-known/jwks.json", web::get().to(me::jwks))
        .route("/health/live", web::get().to(health::live))
        .route("/health/ready", web::get().to(health::ready));
}

/// Collects per-field problems of a JSON request whose fields arrive as raw JSON values, so a
/// non-string (`{"$ne": null}`, a number, an array) is reported on its field instead of
/// failing the whole body.
#[derive(Default)]
struct FieldErrors(BTreeMap<String, String>);

impl FieldErrors {
    /// The field's string value, or `None` after recording why there is none.
    fn string(&mut self, name: &str, value: Option<Value>) -> Option<String> {
        match value {
            Some(Value::String(s)) => Some(s),
            Some(_) => {
                self.0
                    .insert(name.to_string(), "must be a string".to_string());
                None
            }
            None => {
                self.0.insert(name.to_string(), "is required".to_string());
                None
            }
        }
    }

    /// Runs a domain parser over a field, recording its message on failure.
    fn parse<T>(
        &mut self,
        name: &str,
        value: Option<String>,
        parse: impl FnOnce(String) -> Result<T, common::domain::InvalidValue>,
    ) -> Option<T> {
        match parse(value?) {
            Ok(parsed) => Some(parsed),
            Err(e) => {
                self.0.insert(name.to_string(), e.0);
                None
            }
        }
    }

    fn into_result(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}
