//! auth-service: sign-up, login and access tokens.
//!
//! Users live in MongoDB ([`user_store`]); passwords are bcrypt hashes computed off the async
//! workers ([`password`]); access tokens are Ed25519-signed JWTs whose public keys are
//! published at `/.well-known/jwks.json` for the other services ([`tokens`]), signed with the
//! configured key or this installation's own ([`signing_key`]); refresh tokens
//! are random, stored as hashes and rotated on every use ([`refresh_tokens`]); login and
//! sign-up attempts are limited per client address and username ([`rate_limit`],
//! [`client_ip`]). Deleting, disabling and enabling an account is announced on RabbitMQ
//! ([`account_events`]) so the other services stop honouring its tokens. [`startup::Application`] wires it together; `main` only loads settings and
//! runs it. `docs/security.md` describes the defences and their settings.

pub mod account_events;
pub mod client_ip;
pub mod error;
pub mod indexes;
pub mod password;
pub mod rate_limit;
pub mod refresh_tokens;
pub mod routes;
pub mod settings;
pub mod signing_key;
pub mod startup;
pub mod tokens;
pub mod user_store;
