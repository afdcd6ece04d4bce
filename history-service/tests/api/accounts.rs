//! A deleted or disabled account's earlier tokens no longer read history.

use std::time::Duration;

use common::domain::UserId;
use common::event::{AccountChange, AccountEvent};
use history_service::settings::Settings;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_deleted_accounts_token_is_refused_once_the_event_arrived() {
    let app = spawn_app().await;
    let alice = common::testing::token("u-alice", "alice");
    let bob = common::testing::token("u-bob", "bob");
    assert_eq!(
        app.get_history("general", "", Some(&alice)).await.status(),
        200
    );

    let mut settings = Settings::load().expect("settings load").amqp.connection;
    settings.exchange = app.exchange.clone();
    common::testing::publish_account_event(
        &settings,
        &AccountEvent::new(
            UserId::parse("u-alice".into()).expect("valid user id"),
            AccountChange::Deleted,
            chrono::Utc::now(),
        ),
    )
    .await;

    let mut status = 0;
    for _ in 0..50 {
        status = app
            .get_history("general", "", Some(&alice))
            .await
            .status()
            .as_u16();
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401, "the deleted user's token still reads history");
    assert_eq!(
        app.get_history("general", "", Some(&bob)).await.status(),
        200
    );
}
