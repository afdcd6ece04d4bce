//! Layered configuration: compiled-in defaults (each service's `config/default.toml`), then an
//! optional file named by `<PREFIX>_CONFIG_FILE`, then environment variables
//! `<PREFIX>__SECTION__KEY` (e.g. `AUTH__MONGODB__URI`). `APP_ENVIRONMENT` selects the profile.

use std::collections::{BTreeSet, HashMap};

use config::{Config, Environment, File, FileFormat, Source, ValueKind};
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

impl Profile {
    /// In production, refuses connection URIs (`(key, uri)` pairs such as
    /// `("amqp.uri", &settings.amqp.uri)`) that carry a password anyone can read: a
    /// `…-dev-only` one (the development fallbacks written in docker-compose.yml), an empty one,
    /// or RabbitMQ's `guest` account, which is also what an `amqp://` URI without credentials
    /// logs in as. A MongoDB URI without credentials is accepted: authentication may come from
    /// elsewhere (X.509, a cloud identity). Every problem is named, the password never is
    /// unless it is a published one.
    pub fn refuse_development_credentials(
        self,
        uris: &[(&str, &SecretString)],
    ) -> anyhow::Result<()> {
        if self != Profile::Production {
            return Ok(());
        }
        let problems: Vec<String> = uris
            .iter()
            .filter_map(|(key, uri)| {
                development_credential(uri.expose_secret()).map(|why| format!("`{key}` {why}"))
            })
            .collect();
        anyhow::ensure!(
            problems.is_empty(),
            "APP_ENVIRONMENT=production refuses development credentials: {}",
            problems.join("; ")
        );
        Ok(())
    }
}

/// Why `uri`'s credentials are development ones, if they are.
fn development_credential(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let userinfo = authority.rsplit_once('@').map(|(userinfo, _)| userinfo);
    let amqp = scheme == "amqp" || scheme == "amqps";
    let Some(userinfo) = userinfo else {
        return amqp.then(|| {
            "has no credentials, so it logs in as RabbitMQ's default `guest` account".to_string()
        });
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (percent_decode(user), percent_decode(password)),
        // MongoDB's X.509 and Kerberos logins name a user and no password.
        None if !amqp => return None,
        None => (percent_decode(userinfo), String::new()),
    };
    if password.ends_with("-dev-only") {
        Some(format!(
            "uses the development password `{password}`, published in this repository"
        ))
    } else if password.is_empty() {
        Some(format!("gives the user `{user}` an empty password"))
    } else if amqp && user == "guest" && password == "guest" {
        Some("uses RabbitMQ's default `guest` account".to_string())
    } else {
        None
    }
}

/// `%XX` escapes of a URI's user information decoded; anything malformed kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where an HTTP server listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    /// May carry credentials, so it is kept secret in logs.
    pub uri: SecretString,
    /// More addresses of the same broker cluster (one URI per node), tried in turn after
    /// `uri` when a connection cannot be made or is lost (see [`Self::addresses`]). Given in
    /// the environment as a comma-separated list.
    pub uris: Vec<SecretString>,
    pub exchange: String,
    /// Longest a connection attempt with its set-up (channels, declarations, consumer) may
    /// take before it counts as failed and is retried.
    pub setup_timeout_ms: u64,
    /// Certificate authorities trusted for `amqps://` addresses besides the public ones, for
    /// a broker whose certificate a private CA signed. Read and checked when the settings
    /// load, so a wrong path stops the service at start instead of failing every connection.
    pub tls_ca_file: CaBundle,
}

/// A PEM file of CA certificates (`amqp.tls_ca_file`), or none when the setting is empty.
/// Deserialized from the file's path: the file is read then, and refused when it cannot be
/// read or holds no certificate.
#[derive(Clone, Default, Deserialize)]
#[serde(try_from = "String")]
pub struct CaBundle {
    /// The path and the file's PEM text.
    file: Option<(String, String)>,
}

/// Why `amqp.tls_ca_file` was refused.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    #[error("amqp.tls_ca_file: cannot read {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("amqp.tls_ca_file: {path} is not a PEM certificate bundle: {reason}")]
    NotPem { path: String, reason: String },
}

impl CaBundle {
    /// Reads and checks the PEM file at `path`; an empty path is no bundle.
    pub fn read(path: &str) -> Result<Self, CaBundleError> {
        if path.trim().is_empty() {
            return Ok(Self::default());
        }
        let pem = std::fs::read_to_string(path).map_err(|source| CaBundleError::Unreadable {
            path: path.to_string(),
            source,
        })?;
        let not_pem = |reason: String| CaBundleError::NotPem {
            path: path.to_string(),
            reason,
        };
        use rustls_pki_types::pem::PemObject;
        let certificates = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| not_pem(error.to_string()))?;
        if certificates.is_empty() {
            return Err(not_pem("it holds no CERTIFICATE block".to_string()));
        }
        Ok(Self {
            file: Some((path.to_string(), pem)),
        })
    }

    /// The certificates as PEM text, when a file is configured.
    pub fn pem(&self) -> Option<&str> {
        self.file.as_ref().map(|(_, pem)| pem.as_str())
    }
}

impl TryFrom<String> for CaBundle {
    type Error = CaBundleError;

    fn try_from(path: String) -> Result<Self, Self::Error> {
        Self::read(&path)
    }
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            Some((path, _)) => f.debug_tuple("CaBundle").field(path).finish(),
            None => f.write_str("CaBundle(none)"),
        }
    }
}

impl AmqpSettings {
    /// The key of the list of further broker addresses, given in the environment as a
    /// comma-separated list: every service passes it to [`Layout::lists`].
    pub const URIS_KEY: &'static str = "amqp.uris";

    /// Every broker address, `uri` first, then those of `uris` that differ from the ones
    /// before them (empty entries skipped).
    pub fn addresses(&self) -> Vec<SecretString> {
        let mut addresses: Vec<SecretString> = Vec::new();
        for uri in std::iter::once(&self.uri).chain(&self.uris) {
            let text = uri.expose_secret().trim();
            if !text.is_empty() && !addresses.iter().any(|a| a.expose_secret() == text) {
                addresses.push(SecretString::from(text.to_string()));
            }
        }
        addresses
    }

    /// The broker URIs named by their keys (`amqp.uri`, `amqp.uris[0]`, …), for
    /// [`Profile::refuse_development_credentials`].
    pub fn named_uris(&self) -> Vec<(String, &SecretString)> {
        std::iter::once(("amqp.uri".to_string(), &self.uri))
            .chain(
                self.uris
                    .iter()
                    .enumerate()
                    .map(|(i, uri)| (format!("amqp.uris[{i}]"), uri)),
            )
            .collect()
    }

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
    Layout::new(defaults_toml, prefix).load()
}

/// [`load`] where the keys in `list_keys` (e.g. `security.allowed_origins`) are lists, given in
/// the environment as comma-separated values.
pub fn load_with_lists<T: DeserializeOwned>(
    defaults_toml: &str,
    prefix: &str,
    list_keys: &[&str],
) -> anyhow::Result<T> {
    Layout::new(defaults_toml, prefix).lists(list_keys).load()
}

/// [`load_with_lists`] with an explicit environment map instead of the process environment.
pub fn load_with_env<T: DeserializeOwned>(
    defaults_toml: &str,
    prefix: &str,
    list_keys: &[&str],
    env: Option<HashMap<String, String>>,
) -> anyhow::Result<T> {
    let layout = Layout::new(defaults_toml, prefix).lists(list_keys);
    match env {
        Some(env) => layout.load_from(env),
        None => layout.load(),
    }
}

/// Where one service's settings come from and which keys exist.
///
/// The keys of `defaults_toml` are the settings: an environment variable `<PREFIX>__A__B`
/// or a key `a.b` of the `<PREFIX>_CONFIG_FILE` file that names none of them (nor one of
/// [`Self::optional`]) stops the service at start, naming the variable or the file, instead of
/// running silently with the default. Variables with one underscore after the prefix
/// (`GATEWAY_SERVICE_HOST`, which Kubernetes sets for a Service named `gateway`) are not
/// settings and are left alone.
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    defaults_toml: &'a str,
    prefix: &'a str,
    list_keys: &'a [&'a str],
    optional_keys: &'a [&'a str],
}

impl<'a> Layout<'a> {
    /// `defaults_toml` holds every setting with its default (the service's
    /// `config/default.toml`); `prefix` is the environment prefix (`GATEWAY`).
    pub fn new(defaults_toml: &'a str, prefix: &'a str) -> Self {
        Self {
            defaults_toml,
            prefix,
            list_keys: &[],
            optional_keys: &[],
        }
    }

    /// Keys (e.g. `security.allowed_origins`) given in the environment as comma-separated
    /// lists.
    pub fn lists(self, list_keys: &'a [&'a str]) -> Self {
        Self { list_keys, ..self }
    }

    /// Settings that have no default, so are absent from the defaults (an `Option` field),
    /// yet may be set.
    pub fn optional(self, optional_keys: &'a [&'a str]) -> Self {
        Self {
            optional_keys,
            ..self
        }
    }

    /// Loads from the process environment.
    pub fn load<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        // Variables whose name or value is not Unicode are no settings of ours; the config
        // crate skips such names too.
        let env = std::env::vars_os()
            .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
            .collect();
        self.load_from(env)
    }

    /// Loads from `env` instead of the process environment.
    pub fn load_from<T: DeserializeOwned>(
        &self,
        env: HashMap<String, String>,
    ) -> anyhow::Result<T> {
        let prefix = self.prefix;
        let defaults = File::from_str(self.defaults_toml, FileFormat::Toml);
        let mut known = BTreeSet::new();
        leaf_keys("", defaults.collect()?, &mut known);
        known.extend(self.optional_keys.iter().map(|key| key.to_string()));

        let mut unknown = Vec::new();
        let file_var = format!("{prefix}_CONFIG_FILE");
        let file = env.get(&file_var).cloned();
        let mut builder = Config::builder().add_source(defaults);
        if let Some(path) = &file {
            let source = File::with_name(path).required(true);
            let mut in_file = BTreeSet::new();
            let in_path = source
                .collect()
                .map_err(|error| anyhow::anyhow!("{file_var}={path}: {error}"))?;
            leaf_keys("", in_path, &mut in_file);
            unknown.extend(
                in_file
                    .into_iter()
                    .filter(|key| !known.contains(key))
                    .map(|key| (key, format!("in {path} ({file_var})"))),
            );
            builder = builder.add_source(source);
        }

        let env_prefix = format!("{prefix}__").to_lowercase();
        let mut variables: Vec<&String> = env
            .keys()
            .filter(|name| name.to_lowercase().starts_with(&env_prefix))
            .collect();
        variables.sort();
        for name in variables {
            let key = name.to_lowercase()[env_prefix.len()..].replace("__", ".");
            if !known.contains(&key) {
                unknown.push((key, format!("from the environment variable {name}")));
            }
        }
        if !unknown.is_empty() {
            let lines: Vec<String> = unknown
                .iter()
                .map(|(key, origin)| match closest(key, &known) {
                    Some(near) => format!("`{key}` {origin} (did you mean `{near}`?)"),
                    None => format!("`{key}` {origin}"),
                })
                .collect();
            anyhow::bail!(
                "unknown setting{} {}: every setting is a key of the defaults file \
                 (config/default.toml), set as {prefix}__SECTION__KEY or in {file_var}",
                if lines.len() == 1 { "" } else { "s" },
                lines.join(", ")
            );
        }

        let mut environment = Environment::with_prefix(prefix)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(env));
        if !self.list_keys.is_empty() {
            environment = environment.list_separator(",");
            for key in self.list_keys {
                environment = environment.with_list_parse_key(key);
            }
        }
        let config = builder.add_source(environment).build()?;
        Ok(config.try_deserialize()?)
    }
}

/// Adds the dotted paths of `table`'s values that are not tables themselves (lists included)
/// to `keys`.
fn leaf_keys(path: &str, table: config::Map<String, config::Value>, keys: &mut BTreeSet<String>) {
    for (name, value) in table {
        let key = if path.is_empty() {
            name
        } else {
            format!("{path}.{name}")
        };
        match value.kind {
            ValueKind::Table(inner) => leaf_keys(&key, inner, keys),
            _ => {
                keys.insert(key);
            }
        }
    }
}

/// The known key nearest to `key` by edit distance, when it is a likely misspelling.
fn closest<'k>(key: &str, known: &'k BTreeSet<String>) -> Option<&'k str> {
    known
        .iter()
        .map(|candidate| (edit_distance(key, candidate), candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate.as_str())
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
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
    #[test]
    fn a_misspelt_environment_variable_is_refused_naming_it() {
        let env = HashMap::from([("APP__HTTP__PROT".to_string(), "9001".to_string())]);
        let error = load_with_env::<Sample>(DEFAULTS, "APP", &[], Some(env))
            .expect_err("an unknown key is refused")
            .to_string();
        assert!(error.contains("`http.prot`"), "{error}");
        assert!(error.contains("APP__HTTP__PROT"), "{error}");
        assert!(error.contains("did you mean `http.port`?"), "{error}");
    }

    #[test]
    fn a_variable_naming_a_section_rather_than_a_setting_is_refused() {
        let env = HashMap::from([("APP__HTTP".to_string(), "x".to_string())]);
        let error = load_with_env::<Sample>(DEFAULTS, "APP", &[], Some(env))
            .expect_err("a section is not a setting")
            .to_string();
        assert!(error.contains("`http`"), "{error}");
    }

    #[test]
    fn variables_with_one_underscore_after_the_prefix_are_not_settings() {
        // Kubernetes sets <SERVICE>_SERVICE_HOST and <SERVICE>_PORT for every Service.
        let env = HashMap::from([
            ("APP_SERVICE_HOST".to_string(), "10.0.0.1".to_string()),
            ("APP_PORT".to_string(), "tcp://10.0.0.1:80".to_string()),
            ("APPLE__X".to_string(), "1".to_string()),
        ]);
        let sample: Sample = load_with_env(DEFAULTS, "APP", &[], Some(env)).expect("loads");
        assert_eq!(sample.http.port, 8000);
    }

    #[test]
    fn a_misspelt_key_in_the_settings_file_is_refused_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("settings-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("app.toml");
        std::fs::write(&path, "name = \"from file\"\n[http]\nhots = \"0.0.0.0\"\n").expect("write");
        let path = path.to_string_lossy().to_string();
        let env = HashMap::from([("APP_CONFIG_FILE".to_string(), path.clone())]);
        let error = load_with_env::<Sample>(DEFAULTS, "APP", &[], Some(env))
            .expect_err("an unknown key is refused")
            .to_string();
        assert!(error.contains("`http.hots`"), "{error}");
        assert!(error.contains(&path), "{error}");
        assert!(error.contains("did you mean `http.host`?"), "{error}");

        std::fs::write(&path, "name = \"from file\"\n[http]\nhost = \"0.0.0.0\"\n").expect("write");
        let env = HashMap::from([("APP_CONFIG_FILE".to_string(), path)]);
        let sample: Sample = load_with_env(DEFAULTS, "APP", &[], Some(env)).expect("loads");
        assert_eq!(sample.name, "from file");
        assert_eq!(sample.http.host, "0.0.0.0");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn every_unknown_key_is_named_at_once() {
        let env = HashMap::from([
            ("APP__NAEM".to_string(), "x".to_string()),
            ("APP__TLS__CA".to_string(), "x".to_string()),
        ]);
        let error = load_with_env::<Sample>(DEFAULTS, "APP", &[], Some(env))
            .expect_err("unknown keys are refused")
            .to_string();
        assert!(
            error.contains("`naem`") && error.contains("`tls.ca`"),
            "{error}"
        );
        assert!(
            !error.contains("`tls.ca` from the environment variable APP__TLS__CA (did"),
            "{error}"
        );
    }

    #[test]
    fn optional_keys_without_a_default_may_be_set() {
        #[derive(Debug, serde::Deserialize)]
        struct WithOptional {
            name: String,
            expires_ms: Option<u32>,
        }
        let layout = Layout::new("name = \"x\"\n", "APP").optional(&["expires_ms"]);
        let loaded: WithOptional = layout.load_from(HashMap::new()).expect("loads");
        assert_eq!((loaded.name.as_str(), loaded.expires_ms), ("x", None));
        let env = HashMap::from([("APP__EXPIRES_MS".to_string(), "5".to_string())]);
        let loaded: WithOptional = layout.load_from(env).expect("loads");
        assert_eq!(loaded.expires_ms, Some(5));
    }

    #[test]
    fn a_default_that_no_setting_reads_is_refused_by_the_shared_sections() {
        // The shared sections deny fields they do not have, so a stale key in a service's
        // defaults file cannot be accepted and then ignored.
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct WithMetrics {
            metrics: MetricsSettings,
        }
        let defaults = "[metrics]\nhost = \"127.0.0.1\"\nport = 0\npath = \"/m\"\n";
        let error = load_with_env::<WithMetrics>(defaults, "APP", &[], Some(HashMap::new()))
            .expect_err("a stale default is refused")
            .to_string();
        assert!(error.contains("path"), "{error}");
    }
    /// A file under a directory of its own (removed by the caller) holding `text`.
    fn temp_file(name: &str, text: &str) -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("settings-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        let path = path.to_string_lossy().to_string();
        (dir, path)
    }

    #[derive(Debug, serde::Deserialize)]
    struct WithAmqp {
        amqp: ServiceAmqp,
    }

    /// As the services hold the shared broker settings: flattened into their own section.
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ServiceAmqp {
        #[serde(flatten)]
        connection: AmqpSettings,
        #[allow(dead_code)]
        queue: String,
    }

    const AMQP_DEFAULTS: &str = "[amqp]\nuri = \"amqp://u:p@h:5672/%2f\"\nuris = []\n\
        tls_ca_file = \"\"\nexchange = \"x\"\nsetup_timeout_ms = 1000\nqueue = \"q\"\n";

    // Parsing checks the PEM armour and base64 only; the bytes need not be a real certificate.
    const PEM: &str = "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";

    #[test]
    fn no_tls_ca_file_by_default_and_a_pem_file_named_in_the_environment_is_read() {
        let loaded: WithAmqp =
            load_with_env(AMQP_DEFAULTS, "APP", &[], Some(HashMap::new())).expect("loads");
        assert!(loaded.amqp.connection.tls_ca_file.pem().is_none());

        let (dir, path) = temp_file("ca.pem", PEM);
        let env = HashMap::from([("APP__AMQP__TLS_CA_FILE".to_string(), path)]);
        let loaded: WithAmqp = load_with_env(AMQP_DEFAULTS, "APP", &[], Some(env)).expect("loads");
        assert_eq!(loaded.amqp.connection.tls_ca_file.pem(), Some(PEM));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_tls_ca_file_that_cannot_be_read_or_holds_no_certificate_is_refused_naming_the_setting() {
        let (dir, not_pem) = temp_file("ca.pem", "not a certificate\n");
        let missing = dir.join("missing.pem").to_string_lossy().to_string();
        for path in [missing, not_pem] {
            let env = HashMap::from([("APP__AMQP__TLS_CA_FILE".to_string(), path.clone())]);
            let error = load_with_env::<WithAmqp>(AMQP_DEFAULTS, "APP", &[], Some(env))
                .expect_err("refused")
                .to_string();
            assert!(error.contains("amqp.tls_ca_file"), "{error}");
            assert!(error.contains(&path), "{error}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    fn refused(uri: &str) -> Option<String> {
        let secret = SecretString::from(uri.to_string());
        Profile::Production
            .refuse_development_credentials(&[("amqp.uri", &secret)])
            .err()
            .map(|error| error.to_string())
    }

    #[test]
    fn production_refuses_published_empty_and_guest_passwords_naming_the_setting() {
        for uri in [
            "amqp://chat-gateway:gateway-dev-only@rabbitmq:5672/%2f",
            "amqp://chat-gateway:gateway%2Ddev-only@rabbitmq:5672/%2f",
            "mongodb://chat:chat-dev-only@mongo:27017/?authSource=admin",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            "amqp://127.0.0.1:5672/%2f",
            "amqps://chat-gateway:@broker.example:5671/%2f",
            "mongodb://chat:@mongo:27017",
        ] {
            let error = refused(uri).unwrap_or_else(|| panic!("{uri} is refused"));
            assert!(error.contains("`amqp.uri`"), "{error}");
        }
        let error = refused("amqp://a:history-dev-only@h/").expect("refused");
        assert!(error.contains("history-dev-only"), "{error}");
    }

    #[test]
    fn production_accepts_passwords_of_the_installation_and_development_accepts_anything() {
        for uri in [
            "amqp://chat-gateway:5f2b9c0e7d@rabbitmq:5672/%2f",
            "amqps://guest:a-real-one@broker.example/%2f",
            "mongodb://chat:s3cret@mongo-0,mongo-1:27017/?replicaSet=rs0",
            "mongodb://127.0.0.1:27017",
            "mongodb://CN=gateway@mongo:27017/?authMechanism=MONGODB-X509&tls=true",
            "mongodb+srv://cluster0.example.net/?authMechanism=MONGODB-X509",
        ] {
            assert_eq!(refused(uri), None, "{uri}");
        }
        let dev = SecretString::from("amqp://guest:guest@127.0.0.1:5672/%2f".to_string());
        assert!(
            Profile::Development
                .refuse_development_credentials(&[("amqp.uri", &dev)])
                .is_ok()
        );
    }

    #[test]
    fn every_broker_address_is_checked_for_development_credentials() {
        let secret = |uri: &str| SecretString::from(uri.to_string());
        let settings = AmqpSettings {
            uri: secret("amqp://chat-gateway:5f2b9c0e7d@rabbit-1:5672/%2f"),
            uris: vec![
                secret("amqp://chat-gateway:5f2b9c0e7d@rabbit-2:5672/%2f"),
                secret("amqp://guest:guest@rabbit-3:5672/%2f"),
            ],
            exchange: "chat.events".into(),
            setup_timeout_ms: 1000,
            tls_ca_file: CaBundle::default(),
        };
        let named = settings.named_uris();
        let uris: Vec<(&str, &SecretString)> = named
            .iter()
            .map(|(key, uri)| (key.as_str(), *uri))
            .collect();
        let error = Profile::Production
            .refuse_development_credentials(&uris)
            .expect_err("guest is refused")
            .to_string();
        assert!(error.contains("`amqp.uris[1]`"), "{error}");
        assert!(!error.contains("amqp.uris[0]"), "{error}");
        assert_eq!(settings.addresses().len(), 3);
    }
}
