//! Test helpers (feature `testing`): a committed **test-only** Ed25519 key, minting tokens with
//! any claims, and a tiny HTTP server publishing the key as a JWKS, so services can be tested
//! without auth-service. Never enable this feature in a service's normal dependencies.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{EncodingKey, Header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::token::{ALGORITHM, Claims};

/// Test-only private key; it signs nothing outside tests.
pub const TEST_ONLY_KEY_PEM: &str = include_str!("../testdata/test-only-signing-key.pem");
pub const TEST_KID: &str = "test-key";
pub const TEST_ISSUER: &str = "chat-auth";
pub const TEST_AUDIENCE: &str = "chat";

pub fn encoding_key() -> EncodingKey {
    EncodingKey::from_ed_pem(TEST_ONLY_KEY_PEM.as_bytes()).expect("test key parses")
}

/// The JWKS publishing the test key.
pub fn jwks() -> JwkSet {
    let mut jwk = Jwk::from_encoding_key(&encoding_key(), ALGORITHM).expect("public key");
    jwk.common.key_id = Some(TEST_KID.to_string());
    JwkSet { keys: vec![jwk] }
}

/// Valid claims for `user_id`/`username`, expiring in 15 minutes.
pub fn claims(user_id: &str, username: &str) -> Claims {
    let now = jsonwebtoken::get_current_timestamp();
    Claims {
        sub: user_id.to_string(),
        name: username.to_string(),
        iat: now,
        exp: now + 900,
        nbf: None,
        iss: TEST_ISSUER.to_string(),
        aud: TEST_AUDIENCE.to_string(),
        jti: ulid::Ulid::new().to_string(),
    }
}

/// Signs `claims` with the test key under `kid`.
pub fn sign(claims: &Claims, kid: &str) -> String {
    let mut header = Header::new(ALGORITHM);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &encoding_key()).expect("signs")
}

/// A valid token for `user_id`/`username`.
pub fn token(user_id: &str, username: &str) -> String {
    sign(&claims(user_id, username), TEST_KID)
}

/// Serves the test JWKS at every path on a free loopback port; returns the base URL.
pub async fn serve_jwks() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind jwks server");
    let address = listener.local_addr().expect("address");
    let body = serde_json::to_string(&jwks()).expect("jwks serializes");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{address}")
}

/// A loopback TCP proxy to a broker that can misbehave on demand: leave a connection
/// unanswered, hold back what the broker sends, cut every connection.
pub struct BrokerProxy {
    uri: String,
    state: std::sync::Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    /// The next accepted connection is kept open and never answered.
    silence_next: std::sync::atomic::AtomicBool,
    /// Bytes from the broker are read but not passed on.
    hold: std::sync::atomic::AtomicBool,
    held_bytes: std::sync::atomic::AtomicUsize,
    /// Bumped by [`BrokerProxy::cut`]; connections of an earlier generation close.
    generation: tokio::sync::watch::Sender<u64>,
}

impl BrokerProxy {
    /// Starts a proxy to the broker `settings` name.
    pub async fn start(settings: &crate::settings::AmqpSettings) -> Self {
        use secrecy::ExposeSecret;
        Self::to_uri(settings.uri.expose_secret()).await
    }

    /// Starts a proxy to the host and port of `uri` (a broker's, or a database's such as
    /// `mongodb://127.0.0.1:27017`); [`Self::uri`] is `uri` pointing at the proxy.
    pub async fn to_uri(uri: &str) -> Self {
        use std::sync::atomic::Ordering;

        let mut proxied = reqwest::Url::parse(uri).expect("a valid URI");
        let target = format!(
            "{}:{}",
            proxied.host_str().expect("the URI names a host"),
            proxied.port().expect("the URI names a port")
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("address").port();
        let state = std::sync::Arc::new(ProxyState::default());
        let shared = state.clone();
        tokio::spawn(async move {
            let mut silent = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                if shared.silence_next.swap(false, Ordering::SeqCst) {
                    // Kept open, never read: the client waits for a handshake that never comes.
                    silent.push(socket);
                    continue;
                }
                let Ok(upstream) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                tokio::spawn(forward(socket, upstream, shared.clone()));
            }
        });
        proxied.set_host(Some("127.0.0.1")).expect("host");
        proxied.set_port(Some(port)).expect("port");
        Self {
            uri: proxied.to_string(),
            state,
        }
    }

    /// The broker URI that goes through this proxy.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The next connection is accepted and never answered.
    pub fn silence_next(&self) {
        self.state
            .silence_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// From now on what the broker sends is read and held back, not passed on.
    pub fn hold(&self) {
        self.state
            .hold
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Bytes held back since [`Self::hold`].
    pub fn held_bytes(&self) -> usize {
        self.state
            .held_bytes
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until something sent by the broker is held back (fails after 5 s), then
    /// [`Self::cut`]s.
    pub async fn cut_once_held(&self) {
        for _ in 0..100 {
            if self.held_bytes() > 0 {
                self.cut();
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the broker sent nothing through the proxy");
    }

    /// Closes every open connection, losing what was held back; later connections pass.
    pub fn cut(&self) {
        use std::sync::atomic::Ordering;
        self.state.hold.store(false, Ordering::SeqCst);
        self.state.held_bytes.store(0, Ordering::SeqCst);
        self.state
            .generation
            .send_modify(|generation| *generation += 1);
    }
}

async fn forward(
    client: tokio::net::TcpStream,
    upstream: tokio::net::TcpStream,
    state: std::sync::Arc<ProxyState>,
) {
    use std::sync::atomic::Ordering;

    let mut cut = state.generation.subscribe();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let up = tokio::io::copy(&mut client_read, &mut upstream_write);
    let down = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match upstream_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if state.hold.load(Ordering::SeqCst) {
                state.held_bytes.fetch_add(n, Ordering::SeqCst);
            } else if client_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cut.changed() => {}
    }
}

/// Publishes an account event on `exchange` (declared if missing) as auth-service would, and
/// waits for the broker's confirm.
#[cfg(feature = "amqp")]
pub async fn publish_account_event(
    settings: &crate::settings::AmqpSettings,
    event: &crate::event::AccountEvent,
) {
    let key = crate::event::topology::account_key(&event.user_id);
    publish_event(settings, &key, event).await;
}

/// Publishes `payload` as JSON with `routing_key` on `exchange` (declared if missing), as the
/// service that owns that routing key would, and waits for the broker's confirm.
#[cfg(feature = "amqp")]
pub async fn publish_event(
    settings: &crate::settings::AmqpSettings,
    routing_key: &str,
    payload: &impl serde::Serialize,
) {
    publish_events(settings, routing_key, std::slice::from_ref(payload)).await;
}

/// Publishes each of `payloads` in order, as [`publish_event`] does, over one connection.
#[cfg(feature = "amqp")]
pub async fn publish_events(
    settings: &crate::settings::AmqpSettings,
    routing_key: &str,
    payloads: &[impl serde::Serialize],
) {
    use secrecy::ExposeSecret;
    let connection = lapin::Connection::connect(
        settings.uri.expose_secret(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("broker reachable");
    let channel = connection.create_channel().await.expect("channel");
    crate::event::topology::declare_exchange(&channel, &settings.exchange)
        .await
        .expect("exchange declared");
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    for payload in payloads {
        let payload = serde_json::to_vec(payload).expect("event serializes");
        channel
            .basic_publish(
                settings.exchange.as_str().into(),
                routing_key.into(),
                lapin::options::BasicPublishOptions::default(),
                &payload,
                lapin::BasicProperties::default(),
            )
            .await
            .expect("published")
            .await
            .expect("confirmed");
    }
    let _ = connection.close(200, "done".into()).await;
}

/// Runs a service binary (`env!("CARGO_BIN_EXE_<name>")`) with only `env` in its environment
/// and returns what it printed, once it has exited unsuccessfully. Panics if it exits with
/// success or still runs after 30 s: for tests of what a service refuses at start (the refusal
/// takes milliseconds; 30 s is a generous bound for a loaded machine).
pub fn refused_at_start(bin: &str, env: &[(&str, &str)]) -> String {
    use std::io::Read;
    use std::process::{Command, Stdio};

    let mut child = Command::new(bin)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the service binary starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the service") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("{bin} with {env:?} was still running after 30 s instead of refusing to start");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut output = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        stderr.read_to_string(&mut output).ok();
    }
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut output).ok();
    }
    assert!(
        !status.success(),
        "{bin} with {env:?} exited successfully: {output}"
    );
    output
}
