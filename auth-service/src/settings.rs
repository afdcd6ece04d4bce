//! auth-service settings: `config/default.toml`, then `AUTH_CONFIG_FILE`, then `AUTH__*`.
//! A key none of them has, or (under `APP_ENVIRONMENT=production`) a development password,
//! stops the service at start; the production signing-key rules are in [`crate::signing_key`].

use std::path::PathBuf;
use std::time::Duration;

use common::settings::{AmqpSettings, HttpSettings, MetricsSettings, MongoSettings, Profile};
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: ServerSettings,
    pub mongodb: MongoSettings,
    pub jwt: JwtSettings,
    pub password: PasswordSettings,
    pub limits: LimitSettings,
    pub metrics: MetricsSettings,
    pub amqp: AuthAmqpSettings,
    pub admin: AdminSettings,
    /// From `APP_ENVIRONMENT`, not from the files.
    #[serde(skip, default = "default_profile")]
    pub profile: Profile,
}

fn default_profile() -> Profile {
    Profile::Development
}

/// The listener plus what protects it from slow or lying clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address and body limit, shared in shape with the other services (`AUTH__HTTP__PORT`, …).
    #[serde(flatten)]
    pub listen: HttpSettings,
    /// Time a client has to send a request's headers; slower clients get 408 and are dropped.
    pub client_request_timeout_ms: u64,
    /// Time a request may take from its headers to the answer, body upload included; a body
    /// trickled in slower than that gets 408 instead of holding a worker.
    pub request_timeout_ms: u64,
    /// How long an idle keep-alive connection stays open.
    pub keep_alive_secs: u64,
    /// Take the client address for rate limits from the last `X-Forwarded-For` entry instead
    /// of the TCP peer. Only for deployments where a proxy that appends that header is the sole
    /// way in; otherwise clients could pick their own address.
    pub trust_forwarded_for: bool,
}

impl ServerSettings {
    pub fn client_request_timeout(&self) -> Duration {
        Duration::from_millis(self.client_request_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn keep_alive(&self) -> Duration {
        Duration::from_secs(self.keep_alive_secs)
    }
}

/// The broker account events are published to, and how they wait for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthAmqpSettings {
    /// URI, exchange (the one every service shares) and set-up deadline.
    #[serde(flatten)]
    pub connection: AmqpSettings,
    /// Longest a publication may wait for the broker's confirm before the connection is
    /// treated as lost and the event is published again on the next one.
    pub confirm_timeout_ms: u64,
    /// Account events that wait in memory while the broker is unreachable; further ones are
    /// dropped (logged and counted): the database holds the change either way.
    pub outbox_capacity: usize,
}

/// Who may disable and enable accounts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Usernames (compared case-folded) of the administrators. In the environment:
    /// `AUTH__ADMIN__USERNAMES=alice,bob`.
    pub usernames: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// Ed25519 private key, PKCS#8 PEM. Required in production. Empty elsewhere: the key in
    /// [`Self::private_key_file`], generated there on first start.
    pub private_key_pem: SecretString,
    /// This installation's signing key when `private_key_pem` is empty (not in production):
    /// read if the file exists, otherwise generated and written there (mode 0600). Relative
    /// paths are relative to the working directory.
    pub private_key_file: PathBuf,
    /// Key id; empty means the key's RFC 7638 thumbprint.
    pub kid: String,
    /// More Ed25519 public keys (PEM `PUBLIC KEY` blocks, concatenated) published in the JWKS
    /// next to the signing key, each under its RFC 7638 thumbprint: the previous key while its
    /// tokens are still alive, or the next one before it starts signing.
    #[serde(default)]
    pub additional_public_keys_pem: String,
    pub issuer: String,
    pub audience: String,
    pub access_ttl_secs: u64,
    /// Lifetime of a refresh token; each rotation starts a new one.
    pub refresh_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordSettings {
    /// bcrypt work factor (4–31); 12 costs a couple of hundred milliseconds per hash.
    pub bcrypt_cost: u32,
    /// Hashes running at once; further logins and sign-ups wait their turn. 0 means one
    /// fewer than the cores (at least one), which keeps a core for everything else.
    #[serde(default)]
    pub max_concurrent_hashes: usize,
}

/// Abuse limits. Each allows `N` attempts at once and one more every `window / N`, so a
/// client that used them all waits a fraction of the window, not all of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// `false` turns every limit off (benchmarks); a warning is logged at start.
    pub enabled: bool,
    /// Login attempts per (case-folded) username per `login_window_secs`, from any address.
    pub login_per_username: u32,
    /// Login attempts per client address per `login_window_secs`, whatever the username.
    pub login_per_ip: u32,
    pub login_window_secs: u64,
    /// Sign-ups per client address per `signup_window_secs`.
    pub signup_per_ip: u32,
    pub signup_window_secs: u64,
}

#[cfg(test)]
impl JwtSettings {
    /// Settings for unit tests: `pem` as the key (may be empty), `file` as the key file.
    pub fn for_tests(pem: &str, file: &std::path::Path) -> Self {
        Self {
            private_key_pem: SecretString::from(pem.to_string()),
            private_key_file: file.to_path_buf(),
            kid: String::new(),
            additional_public_keys_pem: String::new(),
            issuer: "iss".into(),
            audience: "aud".into(),
            access_ttl_secs: 60,
            refresh_ttl_secs: 3600,
        }
    }
}

impl Settings {
    /// Keys given in the environment as comma-separated lists.
    const LIST_KEYS: &[&str] = &["admin.usernames", AmqpSettings::URIS_KEY];

    pub fn load() -> anyhow::Result<Self> {
        let mut settings: Settings = common::settings::load_with_lists(
            include_str!("../config/default.toml"),
            "AUTH",
            Self::LIST_KEYS,
        )?;
        settings.profile = Profile::from_env()?;
        let amqp = settings.amqp.connection.named_uris();
        let mut uris: Vec<(&str, &SecretString)> =
            amqp.iter().map(|(key, uri)| (key.as_str(), *uri)).collect();
        uris.push(("mongodb.uri", &settings.mongodb.uri));
        settings.profile.refuse_development_credentials(&uris)?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(env: &[(&str, &str)]) -> Settings {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>();
        common::settings::load_with_env(
            include_str!("../config/default.toml"),
            "AUTH",
            Settings::LIST_KEYS,
            Some(env),
        )
        .expect("settings load")
    }

    #[test]
    fn defaults_are_safe_for_the_internet() {
        let settings = load(&[]);
        assert!(!settings.http.trust_forwarded_for);
        assert!(settings.limits.enabled);
        assert_eq!(settings.limits.login_per_username, 5);
        assert_eq!(settings.limits.login_window_secs, 60);
        assert_eq!(settings.jwt.refresh_ttl_secs, 30 * 24 * 3600);
        assert!(settings.jwt.additional_public_keys_pem.is_empty());
        assert!(settings.admin.usernames.is_empty());
        assert_eq!(settings.metrics.host, "127.0.0.1");
    }

    #[test]
    fn administrators_are_a_comma_separated_list_in_the_environment() {
        let settings = load(&[("AUTH__ADMIN__USERNAMES", "alice,Bob")]);
        assert_eq!(settings.admin.usernames, vec!["alice", "Bob"]);
        let settings = load(&[("AUTH__ADMIN__USERNAMES", "alice")]);
        assert_eq!(settings.admin.usernames, vec!["alice"]);
    }

    #[test]
    fn the_new_keys_are_overridable_from_the_environment_next_to_the_shared_ones() {
        let settings = load(&[
            ("AUTH__HTTP__PORT", "9999"),
            ("AUTH__HTTP__TRUST_FORWARDED_FOR", "true"),
            ("AUTH__HTTP__REQUEST_TIMEOUT_MS", "250"),
            ("AUTH__JWT__REFRESH_TTL_SECS", "60"),
            ("AUTH__LIMITS__LOGIN_PER_IP", "3"),
        ]);
        assert_eq!(settings.http.listen.port, 9999);
        assert_eq!(settings.http.listen.max_body_bytes, 16384);
        assert!(settings.http.trust_forwarded_for);
        assert_eq!(settings.http.request_timeout(), Duration::from_millis(250));
        assert_eq!(settings.jwt.refresh_ttl_secs, 60);
        assert_eq!(settings.limits.login_per_ip, 3);
    }
}
