//! chat-gateway: the WebSocket endpoint of the chat.
//!
//! A tour: [`server`] verifies the access token and upgrades `/ws`; [`connection`] runs one
//! socket: its read loop (`connection/mod.rs`), what it does with each client frame of
//! [`protocol`] (`commands/`), what every connection shares (`hub.rs`) and the writer that
//! stitches each join's history to its live messages (`writer.rs`). Everything for a client is
//! queued in its bounded [`outbox`]. [`receipts`] lets a retried send keep its first id;
//! [`rooms`] tracks which local connections are in which room and fans frames out to them;
//! [`broker`] publishes chat messages to RabbitMQ with confirms and feeds this instance's queue
//! back into [`rooms`], so any number of gateways serve one room, and after a lost broker
//! connection [`recovery`] reads the rooms back to deliver what passed by; [`history`] fetches recent
//! messages on join; [`proxy`] forwards the HTTP APIs so the web client needs one origin;
//! [`accounts`] closes the connections of users whose account was deleted or disabled.
//! [`membership`] asks history-service whether a user may join a room, caches the decisions
//! and applies membership events (removals, room changes) to the connections; [`read_markers`]
//! coalesces the clients' read markers before writing them to history-service.

pub mod accounts;
pub mod broker;
pub mod connection;
pub mod history;
pub mod membership;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod proxy;
pub mod read_markers;
pub mod receipts;
pub mod recovery;
pub mod rooms;
pub mod server;
pub mod settings;
pub mod startup;
