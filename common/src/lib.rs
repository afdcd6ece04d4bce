//! Shared vocabulary of the chat services.
//!
//! Every service speaks through these types, so the wire formats cannot drift apart:
//! - [`domain`]: validated values (usernames, room ids, message bodies, ids) built at the edge;
//! - [`token`]: access-token claims and their verification against the auth service's JWKS;
//! - [`revocation`]: the users whose tokens are refused after their account was deleted or
//!   disabled;
//! - [`event`]: the chat event carried over RabbitMQ and the topology names both sides use;
//! - [`error`]: the JSON error body every HTTP API answers with;
//! - [`settings`]: layered configuration (compiled-in defaults, optional file, environment);
//! - [`telemetry`]: tracing set-up;
//! - `amqp` (feature `amqp`): guards for the services' broker connection supervisors;
//! - `outbox` (feature `amqp`): a bounded outbox of events and the task that publishes it.

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod domain;
pub mod error;
pub mod event;
pub mod metrics;
pub mod mongo;
#[cfg(feature = "actix")]
pub mod net;
#[cfg(feature = "amqp")]
pub mod outbox;
pub mod revocation;
pub mod settings;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token;
