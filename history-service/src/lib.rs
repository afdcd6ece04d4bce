//! history-service: stores every room's messages and serves them back.
//!
//! [`consumer`] reads the durable history queue and writes batches to MongoDB through
//! [`message_store`], acknowledging only after the write; [`routes`] serves
//! `GET /api/rooms/{room}/messages` to holders of a valid access token, admitted by
//! [`reads`] (a bounded number at once, each with a deadline); `GET /metrics` is served on a
//! listener of its own. [`rooms`] owns rooms, memberships, bans and read markers
//! (docs/rooms.md): their HTTP API, the one permission table every route (history included)
//! asks, and the member and room events it publishes after each change.

pub mod caller;
pub mod changes;
pub mod consumer;
pub mod doc_locks;
pub mod error;
pub mod message_store;
pub mod metrics;
pub mod reads;
pub mod rooms;
pub mod routes;
pub mod settings;
pub mod startup;
