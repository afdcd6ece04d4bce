//! Settings auth-service refuses at start, before it connects to anything.

use common::testing::refused_at_start;

const BIN: &str = env!("CARGO_BIN_EXE_auth-service");

#[test]
fn a_misspelt_environment_variable_stops_the_service_naming_it() {
    let output = refused_at_start(BIN, &[("AUTH__PASSWORD__BCRYPT_COSTS", "x")]);
    assert!(
        output.contains("unknown setting `password.bcrypt_costs`"),
        "{output}"
    );
    assert!(output.contains("AUTH__PASSWORD__BCRYPT_COSTS"), "{output}");
    assert!(
        output.contains("did you mean `password.bcrypt_cost`?"),
        "{output}"
    );
}

#[test]
fn a_misspelt_key_in_the_settings_file_stops_the_service_naming_it() {
    let path = std::env::temp_dir().join(format!("auth-settings-{}.toml", ulid::Ulid::new()));
    std::fs::write(&path, "[jwt]\nprivate_key_pen = \"x\"\n").expect("write the settings file");
    let file = path.to_string_lossy().to_string();
    let output = refused_at_start(BIN, &[("AUTH_CONFIG_FILE", &file)]);
    std::fs::remove_file(&path).ok();
    assert!(
        output.contains("unknown setting `jwt.private_key_pen`"),
        "{output}"
    );
    assert!(output.contains(&file), "{output}");
    assert!(
        output.contains("did you mean `jwt.private_key_pem`?"),
        "{output}"
    );
}

#[test]
fn production_refuses_the_development_broker_and_database_passwords() {
    let output = refused_at_start(
        BIN,
        &[
            ("APP_ENVIRONMENT", "production"),
            (
                "AUTH__AMQP__URI",
                "amqp://chat-auth:auth-dev-only@127.0.0.1:5672/%2f",
            ),
            (
                "AUTH__MONGODB__URI",
                "mongodb://chat:chat-dev-only@127.0.0.1:27017/?authSource=admin",
            ),
        ],
    );
    assert!(
        output.contains("`amqp.uri` uses the development password `auth-dev-only`"),
        "{output}"
    );
    assert!(
        output.contains("`mongodb.uri` uses the development password `chat-dev-only`"),
        "{output}"
    );
}

#[test]
fn production_refuses_the_default_broker_account() {
    let output = refused_at_start(BIN, &[("APP_ENVIRONMENT", "production")]);
    assert!(
        output.contains("`amqp.uri` uses RabbitMQ's default `guest` account"),
        "{output}"
    );
}
