//! auth-service settings: `config/default.toml`, then `AUTH_CONFIG_FILE`, then `AUTH__*`.

use common::settings::{HttpSettings, MongoSettings, Profile};
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub http: HttpSettings,
    pub mongodb: MongoSettings,
    pub jwt: JwtSettings,
    pub password: PasswordSettings,
    /// From `APP_ENVIRONMENT`, not from the files.
    #[serde(skip, default = "default_profile")]
    pub profile: Profile,
}

fn default_profile() -> Profile {
    Profile::Development
}

#[derive(Debug, Clone, Deserialize)]
pub struct JwtSettings {
    /// Ed25519 private key, PKCS#8 PEM. Empty selects the dev-only key (refused in production).
    pub private_key_pem: SecretString,
    /// Key id; empty means the key's RFC 7638 thumbprint.
    pub kid: String,
    pub issuer: String,
    pub audience: String,
    pub access_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PasswordSettings {
    /// bcrypt work factor (4–31); 12 costs a couple of hundred milliseconds per hash.
    pub bcrypt_cost: u32,
}

impl Settings {
    pub fn load() -> anyhow::Result<Self> {
        let mut settings: Settings =
            common::settings::load(include_str!("../config/default.toml"), "AUTH")?;
        settings.profile = Profile::from_env()?;
        Ok(settings)
    }
}
