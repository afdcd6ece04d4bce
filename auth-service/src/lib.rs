//! auth-service: sign-up, login and access tokens.
//!
//! Users live in MongoDB ([`user_store`]); passwords are bcrypt hashes computed off the async
//! workers ([`password`]); access tokens are Ed25519-signed JWTs whose public key is published
//! at `/.well-known/jwks.json` for the other services ([`tokens`]). [`startup::Application`]
//! wires it together; `main` only loads settings and runs it.

pub mod error;
pub mod password;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod tokens;
pub mod user_store;
