//! Rooms, memberships, bans and read markers (docs/rooms.md): [`store`] keeps them in
//! MongoDB, [`policy`] decides every permission, [`routes`] serves the HTTP API, [`events`]
//! announces each stored change on the exchange, [`view`] renders a room as one user sees
//! it, [`users`] resolves usernames with auth-service, [`rate_limit`] bounds room creation,
//! [`cache`] keeps the room documents room lists and joins read, [`lookups`] batches the
//! reads of joins.

pub mod cache;
pub mod events;
pub mod lookups;
pub mod policy;
pub mod rate_limit;
pub mod routes;
pub mod store;
pub mod users;
pub mod view;

use crate::reads::ReadLimiter;
use crate::settings::RoomsSettings;

/// Everything the rooms routes share.
pub struct Rooms {
    pub store: store::RoomStore,
    pub events: events::RoomEvents,
    pub users: users::UserDirectory,
    pub creation: rate_limit::CreationLimit,
    pub settings: RoomsSettings,
    /// The reads of joins, batched.
    pub lookups: lookups::JoinLookups,
    /// Admits joins that write (first joins) and read markers: the hot paths the gateway calls for every WebSocket
    /// `join` and `read`, bounded apart from history reads and from the other room routes.
    pub joins: ReadLimiter,
    /// Admits the other room routes.
    pub ops: ReadLimiter,
}
