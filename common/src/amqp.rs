//! Guards around the RabbitMQ client for the services' own connection supervisors.
//!
//! The client can report a connection failure without ending a consumer stream or resolving
//! an acknowledgement that was under way; a supervisor that waits only on those never
//! notices the connection is gone. These helpers make both waits end.
//!
//! [`Brokers`] makes the connections: to each broker address in turn, over TLS for
//! `amqps://` ones.

use std::future::Future;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use secrecy::{ExposeSecret, SecretString};

use crate::settings::AmqpSettings;

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

/// The broker addresses one connection supervisor uses ([`AmqpSettings::addresses`]): a
/// connection is made to the current one, or failing that to each next one in turn, and a
/// supervisor whose connection failed moves on with [`Self::failed`], so a cluster node that
/// went away is tried last.
///
/// `amqps://` addresses are reached over TLS (rustls): the broker's certificate must chain to
/// a public CA (the Mozilla roots built in) or to one of `amqp.tls_ca_file`, and name the
/// address's host.
pub struct Brokers {
    addresses: Vec<SecretString>,
    current: usize,
    tls: lapin::tcp::OwnedTLSConfig,
}

impl Brokers {
    pub fn new(settings: &AmqpSettings) -> Self {
        Self {
            addresses: settings.addresses(),
            current: 0,
            tls: lapin::tcp::OwnedTLSConfig {
                identity: None,
                cert_chain: settings.tls_ca_file.pem().map(str::to_string),
            },
        }
    }

    /// Connects to the current address, or to the next ones in turn; the one that answered
    /// becomes the current one. The error names every address tried (host and port only).
    pub async fn connect(
        &mut self,
        properties: lapin::ConnectionProperties,
    ) -> anyhow::Result<lapin::Connection> {
        anyhow::ensure!(
            !self.addresses.is_empty(),
            "no broker address is configured"
        );
        let mut errors = Vec::new();
        for _ in 0..self.addresses.len() {
            let uri = &self.addresses[self.current];
            let attempt = lapin::Connection::connect_with_config(
                uri.expose_secret(),
                properties.clone(),
                self.tls.clone(),
                lapin::runtime::default_runtime()?,
            );
            match attempt.await {
                Ok(connection) => return Ok(connection),
                Err(error) => {
                    errors.push(format!("{}: {error}", endpoint(uri.expose_secret())));
                    self.failed();
                }
            }
        }
        anyhow::bail!("no broker address answered ({})", errors.join("; "))
    }

    /// The current address's connection (or its set-up) failed: the next attempt starts
    /// with the next address.
    pub fn failed(&mut self) {
        if !self.addresses.is_empty() {
            self.current = (self.current + 1) % self.addresses.len();
        }
    }

    /// Host and port of the current address, for logs (never its credentials).
    pub fn current(&self) -> String {
        self.addresses
            .get(self.current)
            .map(|uri| endpoint(uri.expose_secret()))
            .unwrap_or_default()
    }
}

/// `scheme://host:port` of an AMQP URI, without credentials, virtual host or query.
fn endpoint(uri: &str) -> String {
    let (scheme, rest) = uri.split_once("://").unwrap_or(("amqp", uri));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(uri: &str, uris: &[&str]) -> AmqpSettings {
        AmqpSettings {
            uri: SecretString::from(uri.to_string()),
            uris: uris
                .iter()
                .map(|u| SecretString::from(u.to_string()))
                .collect(),
            exchange: "x".into(),
            setup_timeout_ms: 1000,
            tls_ca_file: crate::settings::CaBundle::default(),
        }
    }

    #[test]
    fn addresses_are_the_uri_then_the_other_distinct_uris() {
        let brokers = Brokers::new(&settings(
            "amqp://u:p@a:5672/%2f",
            &[
                "amqp://u:p@b:5672/%2f",
                "",
                "amqp://u:p@a:5672/%2f",
                "amqps://c:5671",
            ],
        ));
        let endpoints: Vec<String> = brokers
            .addresses
            .iter()
            .map(|a| endpoint(a.expose_secret()))
            .collect();
        assert_eq!(
            endpoints,
            ["amqp://a:5672", "amqp://b:5672", "amqps://c:5671"]
        );
    }

    #[test]
    fn a_failure_moves_on_to_the_next_address_and_wraps_around() {
        let mut brokers = Brokers::new(&settings("amqp://a", &["amqp://b"]));
        assert_eq!(brokers.current(), "amqp://a");
        brokers.failed();
        assert_eq!(brokers.current(), "amqp://b");
        brokers.failed();
        assert_eq!(brokers.current(), "amqp://a");
    }

    #[tokio::test]
    async fn connect_tries_every_address_and_names_them_without_credentials() {
        // Two ports nothing listens on.
        let closed = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port")
        };
        let (a, b) = (closed(), closed());
        let mut brokers = Brokers::new(&settings(
            &format!("amqp://user:secret@127.0.0.1:{a}/%2f"),
            &[&format!("amqp://user:secret@127.0.0.1:{b}/%2f")],
        ));
        let error = brokers
            .connect(lapin::ConnectionProperties::default())
            .await
            .expect_err("nothing listens")
            .to_string();
        assert!(error.contains(&format!("127.0.0.1:{a}")), "{error}");
        assert!(error.contains(&format!("127.0.0.1:{b}")), "{error}");
        assert!(!error.contains("secret"), "{error}");
    }
}
