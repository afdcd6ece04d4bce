//! Layered configuration: compiled-in defaults (each service's `config/default.toml`), then an
//! optional file named by `<PREFIX>_CONFIG_FILE`, then environment variables
//! `<PREFIX>__SECTION__KEY` (e.g. `AUTH__MONGODB__URI`). `APP_ENVIRONMENT` selects the profile.

use std::collections::HashMap;

use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Deployment profile. `production` refuses dev-only keys and default secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Development,
    Production,
}

impl Profile {
    /// Reads `APP_ENVIRONMENT` (`development` when unset).
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var("APP_ENVIRONMENT") {
            Err(_) => Ok(Profile::Development),
            Ok(value) => match value.to_ascii_lowercase().as_str() {
                "development" | "dev" | "local" | "" => Ok(Profile::Development),
                "production" | "prod" => Ok(Profile::Production),
                other => anyhow::bail!(
                    "APP_ENVIRONMENT must be `development` or `production`, not `{other}`"
                ),
            },
        }
    }
}

/// Where an HTTP server listens.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub host: String,
    /// 0 picks a free port (tests).
    pub port: u16,
    /// Largest accepted request body, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

fn default_max_body_bytes() -> usize {
    16 * 1024
}

impl HttpSettings {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The separate listener that serves `GET /metrics` (`<PREFIX>__METRICS__*`), so the public
/// port never does.
#[derive(Debug, Clone, Deserialize)]
pub struct MetricsSettings {
    /// Loopback by default: only a scraper on the same host (or pod) reaches it.
    pub host: String,
    /// 0 picks a free port (tests).
    pub port: u16,
}

impl MetricsSettings {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// MongoDB connection.
#[derive(Debug, Clone, Deserialize)]
pub struct MongoSettings {
    /// May carry credentials, so it is kept secret in logs.
    pub uri: SecretString,
    pub database: String,
}

impl MongoSettings {
    /// A client that fails fast when the server is unreachable instead of the driver's 30 s.
    pub async fn client(&self, app_name: &str) -> anyhow::Result<mongodb::Client> {
        Ok(mongodb::Client::with_options(
            self.options(app_name).await?,
        )?)
    }

    /// The options of [`Self::client`], for a service that sets more of them (its pool size,
    /// say) before building its client.
    pub async fn options(&self, app_name: &str) -> anyhow::Result<mongodb::options::ClientOptions> {
        let mut options = mongodb::options::ClientOptions::parse(self.uri.expose_secret()).await?;
        options.app_name = Some(app_name.to_string());
        options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
        options.connect_timeout = Some(std::time::Duration::from_secs(5));
        Ok(options)
    }
}

/// RabbitMQ connection and the names of the exchange every service shares.
#[derive(Debug, Clone, Deserialize)]
pub struct AmqpSettings {
    /// May carry credentials, so it is kept secret in logs.
    pub uri: SecretString,
    pub exchange: String,
    /// Longest a connection attempt with its set-up (channels, declarations, consumer) may
    /// take before it counts as failed and is retried.
    pub setup_timeout_ms: u64,
}

impl AmqpSettings {
    /// Runs a connection attempt under [`Self::setup_timeout_ms`]. A broker that is shutting
    /// down can accept a TCP connection and never answer the handshake; without a deadline
    /// the supervisor waiting on that attempt would never try again.
    pub async fn within_setup_timeout<T>(
        &self,
        attempt: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let limit = std::time::Duration::from_millis(self.setup_timeout_ms);
        tokio::time::timeout(limit, attempt).await.map_err(|_| {
            anyhow::anyhow!("the broker did not complete the set-up within {limit:?}")
        })?
    }
}

/// Loads settings of type `T` for the service whose environment prefix is `prefix`.
pub fn load<T: DeserializeOwned>(defaults_toml: &str, prefix: &str) -> anyhow::Result<T> {
    load_with_env(defaults_toml, prefix, &[], None)
}

/// [`load`] where the keys in `list_keys` (e.g. `security.allowed_origins`) are lists, given in
/// the environment as comma-separated values.
pub fn load_with_lists<T: DeserializeOwned>(
    defaults_toml: &str,
    prefix: &str,
    list_keys: &[&str],
) -> anyhow::Result<T> {
    load_with_env(defaults_toml, prefix, list_keys, None)
}

/// [`load_with_lists`] with an explicit environment map instead of the process environment.
pub fn load_with_env<T: DeserializeOwned>(
    defaults_toml: &str,
    prefix: &str,
    list_keys: &[&str],
    env: Option<HashMap<String, String>>,
) -> anyhow::Result<T> {
    let file_var = format!("{prefix}_CONFIG_FILE");
    let file = match &env {
        Some(map) => map.get(&file_var).cloned(),
        None => std::env::var(&file_var).ok(),
    };
    let mut builder = Config::builder().add_source(File::from_str(defaults_toml, FileFormat::Toml));
    if let Some(path) = file {
        builder = builder.add_source(File::with_name(&path).required(true));
    }
    let mut environment = Environment::with_prefix(prefix)
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .source(env);
    if !list_keys.is_empty() {
        environment = environment.list_separator(",");
        for key in list_keys {
            environment = environment.with_list_parse_key(key);
        }
    }
    let config = builder.add_source(environment).build()?;
    Ok(config.try_deserialize()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Sample {
        http: Http,
        name: String,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Http {
        host: String,
        port: u16,
    }

    const DEFAULTS: &str = "name = \"chat\"\n[http]\nhost = \"127.0.0.1\"\nport = 8000\n";

    #[test]
    fn defaults_load_when_nothing_overrides_them() {
        let sample: Sample =
            load_with_env(DEFAULTS, "APP", &[], Some(HashMap::new())).expect("loads");
        assert_eq!(sample.http.host, "127.0.0.1");
        assert_eq!(sample.http.port, 8000);
    }

    #[test]
    fn environment_overrides_nested_keys_and_numeric_strings_stay_strings() {
        let env = HashMap::from([
            ("APP__HTTP__PORT".to_string(), "9001".to_string()),
            ("APP__NAME".to_string(), "12345".to_string()),
            ("OTHER__HTTP__PORT".to_string(), "1".to_string()),
        ]);
        let sample: Sample = load_with_env(DEFAULTS, "APP", &[], Some(env)).expect("loads");
        assert_eq!(sample.http.port, 9001);
        assert_eq!(sample.name, "12345");
    }

    #[test]
    fn list_keys_are_split_on_commas_and_other_values_are_not() {
        #[derive(Debug, serde::Deserialize)]
        struct WithList {
            name: String,
            origins: Vec<String>,
        }
        let defaults = "name = \"x\"\norigins = []\n";
        let env = HashMap::from([
            (
                "APP__ORIGINS".to_string(),
                "https://a.example,https://b.example".to_string(),
            ),
            ("APP__NAME".to_string(), "a,b".to_string()),
        ]);
        let loaded: WithList =
            load_with_env(defaults, "APP", &["origins"], Some(env)).expect("loads");
        assert_eq!(
            loaded.origins,
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(loaded.name, "a,b");
    }

    #[test]
    fn a_bad_value_is_an_error_not_a_default() {
        let env = HashMap::from([("APP__HTTP__PORT".to_string(), "eighty".to_string())]);
        assert!(load_with_env::<Sample>(DEFAULTS, "APP", &[], Some(env)).is_err());
    }
}
