//! Settings the gateway refuses at start, before it connects to anything.

use common::testing::refused_at_start;

const BIN: &str = env!("CARGO_BIN_EXE_chat-gateway");

#[test]
fn a_misspelt_environment_variable_stops_the_service_naming_it() {
    let output = refused_at_start(BIN, &[("GATEWAY__AMQP__URl", "x")]);
    assert!(output.contains("unknown setting `amqp.url`"), "{output}");
    assert!(output.contains("GATEWAY__AMQP__URl"), "{output}");
    assert!(output.contains("did you mean `amqp.uri`?"), "{output}");
}

#[test]
fn a_misspelt_key_in_the_settings_file_stops_the_service_naming_it() {
    let path = std::env::temp_dir().join(format!("gateway-settings-{}.toml", ulid::Ulid::new()));
    std::fs::write(&path, "[amqp]\nurl = \"amqp://elsewhere\"\n").expect("write the settings file");
    let file = path.to_string_lossy().to_string();
    let output = refused_at_start(BIN, &[("GATEWAY_CONFIG_FILE", &file)]);
    std::fs::remove_file(&path).ok();
    assert!(output.contains("unknown setting `amqp.url`"), "{output}");
    assert!(output.contains(&file), "{output}");
    assert!(output.contains("did you mean `amqp.uri`?"), "{output}");
}

#[test]
fn production_refuses_the_development_broker_and_database_passwords() {
    let output = refused_at_start(
        BIN,
        &[
            ("APP_ENVIRONMENT", "production"),
            (
                "GATEWAY__AMQP__URI",
                "amqp://chat-gateway:gateway-dev-only@127.0.0.1:5672/%2f",
            ),
            (
                "GATEWAY__MONGODB__URI",
                "mongodb://chat:chat-dev-only@127.0.0.1:27017/?authSource=admin",
            ),
        ],
    );
    assert!(
        output.contains("`amqp.uri` uses the development password `gateway-dev-only`"),
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
