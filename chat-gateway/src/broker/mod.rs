//! RabbitMQ in and out.
//!
//! Out: chat messages are published persistent on a confirm-mode channel and a send is
//! acknowledged to its client only after the broker confirmed it; room events (presence,
//! typing) are published fire-and-forget. In: this instance's own queue, bound to the rooms
//! its connections are in (one binding a room, [`topology::room_binding`], for its messages
//! and its room events), feeds [`Rooms::deliver`]; it is also bound to every account event,
//! which [`Accounts::apply`] acts on, and to every membership event (`member.*`), which
//! [`crate::membership`] applies. Every change of the broker connection drops the cached room
//! decisions: membership events may have been missed meanwhile.
//!
//! [`run`] supervises the connection: on any failure it reconnects with backoff and rebuilds
//! everything from application state (exchange, queue, one binding per local room, consumer,
//! confirm mode) rather than relying on the client library's recovery. While disconnected,
//! publishing fails fast with [`PublishError::Unavailable`].
//!
//! Deliveries of the instance queue are acknowledged after they were handed to the local
//! connections (in batches, `multiple`): a delivery lost in flight when the connection drops
//! stays in the durable queue and comes again after the reconnect, where the connections'
//! recent-id memory drops the copies they already wrote.
//!
//! Where the parts live:
//! - `publisher.rs`: the publishing side ([`Broker`]), confirms, and the bound on room events
//!   in flight;
//! - `supervisor.rs`: the broker task ([`run`]), reconnecting with backoff;
//! - `session.rs`: one connection: the queue and its bindings, the consumer, acknowledgements;
//! - `inbound.rs`: where each delivery goes ([`Inbound`], `dispatch`), presence rules included.
//!
//! [`topology::room_binding`]: common::event::topology::room_binding
//! [`Rooms::deliver`]: crate::rooms::Rooms::deliver
//! [`Accounts::apply`]: crate::accounts::Accounts::apply

mod inbound;
mod publisher;
mod session;
mod supervisor;

pub use inbound::Inbound;
pub use publisher::{Broker, PublishError};
pub use supervisor::run;
