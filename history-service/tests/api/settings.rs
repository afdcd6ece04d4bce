//! Settings history-service refuses at start, before it connects to anything.

use common::testing::refused_at_start;

const BIN: &str = env!("CARGO_BIN_EXE_history-service");

#[test]
fn a_misspelt_environment_variable_stops_the_service_naming_it() {
    let output = refused_at_start(BIN, &[("HISTORY__MONGODB__URL", "x")]);
    assert!(output.contains("unknown setting `mongodb.url`"), "{output}");
    assert!(output.contains("HISTORY__MONGODB__URL"), "{output}");
    assert!(output.contains("did you mean `mongodb.uri`?"), "{output}");
}

#[test]
fn a_misspelt_key_in_the_settings_file_stops_the_service_naming_it() {
    let path = std::env::temp_dir().join(format!("history-settings-{}.toml", ulid::Ulid::new()));
    std::fs::write(&path, "[history]\nmax_pages = 10\n").expect("write the settings file");
    let file = path.to_string_lossy().to_string();
    let output = refused_at_start(BIN, &[("HISTORY_CONFIG_FILE", &file)]);
    std::fs::remove_file(&path).ok();
    assert!(
        output.contains("unknown setting `history.max_pages`"),
        "{output}"
    );
    assert!(output.contains(&file), "{output}");
    assert!(
        output.contains("did you mean `history.max_page`?"),
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
                "HISTORY__AMQP__URI",
                "amqp://chat-history:history-dev-only@127.0.0.1:5672/%2f",
            ),
            (
                "HISTORY__MONGODB__URI",
                "mongodb://chat:chat-dev-only@127.0.0.1:27017/?authSource=admin",
            ),
        ],
    );
    assert!(
        output.contains("`amqp.uri` uses the development password `history-dev-only`"),
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
