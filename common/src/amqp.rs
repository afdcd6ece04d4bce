//! Guards around the RabbitMQ client for the services' own connection supervisors.
//!
//! The client can report a connection failure without ending a consumer stream or resolving
//! an acknowledgement that was under way; a supervisor that waits only on those never
//! notices the connection is gone. These helpers make both waits end.

use std::future::Future;
use std::time::Duration;

use futures_util::{Stream, StreamExt};

/// Longest an acknowledgement may take to be handed to the connection.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection's events, for [`connection_failure`]. Listening starts before the
/// connection's state is checked, so a failure is either reported here or seen in the stream.
pub fn failure_events(
    connection: &lapin::Connection,
) -> anyhow::Result<impl Stream<Item = lapin::Event> + Send + Unpin + 'static> {
    let events = Box::pin(connection.events_listener());
    if !connection.status().connected() {
        anyhow::bail!("the broker connection closed during set-up");
    }
    Ok(events)
}

/// Resolves with the error once the connection whose [`failure_events`] these are reports a
/// failure or closes; other events are skipped.
pub async fn connection_failure(
    events: &mut (impl Stream<Item = lapin::Event> + Unpin),
) -> anyhow::Error {
    while let Some(event) = events.next().await {
        if let lapin::Event::Error(error) = event {
            return error.into();
        }
    }
    anyhow::anyhow!("the broker connection closed")
}

/// Waits for an acknowledgement (or reject) to be sent, at most [`ACK_TIMEOUT`]. An
/// acknowledger that is already spent or belongs to a closed channel is an error: the
/// delivery goes back to the queue with the channel, so the session must end.
pub async fn acknowledged(ack: impl Future<Output = lapin::Result<bool>>) -> anyhow::Result<()> {
    match tokio::time::timeout(ACK_TIMEOUT, ack).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => anyhow::bail!("the delivery can no longer be acknowledged"),
        Ok(Err(error)) => Err(error.into()),
        Err(_) => anyhow::bail!("the acknowledgement was not sent within {ACK_TIMEOUT:?}"),
    }
}
