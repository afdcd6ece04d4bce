use std::time::Duration;

use auth_service::refresh_tokens::{RefreshToken, RefreshTokenStore};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mongodb::bson::{Document, doc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, error_code, signed_up_app, spawn_app};

const TOKENS: &str = RefreshTokenStore::TOKENS;
const FAMILIES: &str = RefreshTokenStore::FAMILIES;

async fn login_refresh_token(app: &TestApp) -> String {
    let pair = app.login_pair("alice", "correct horse").await;
    pair["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_string()
}

fn hash(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

async fn token_document(app: &TestApp, token: &str) -> Document {
    app.db
        .collection::<Document>(TOKENS)
        .find_one(doc! {"token_hash": hash(token)})
        .await
        .expect("query")
        .expect("token stored")
}

async fn assert_refused(app: &TestApp, token: &str) {
    let response = app.refresh(token).await;
    assert_eq!(response.status(), 401);
    assert_eq!(error_code(response).await, "invalid_refresh_token");
}

#[tokio::test]
async fn login_returns_a_random_refresh_token_that_is_stored_only_as_its_hash() {
    let app = signed_up_app().await;
    let pair = app.login_pair("alice", "correct horse").await;
    assert_eq!(pair["refresh_expires_in"], 30 * 24 * 3600);
    let token = pair["refresh_token"].as_str().expect("refresh token");
    let bytes = URL_SAFE_NO_PAD.decode(token).expect("base64url");
    assert_eq!(bytes.len(), 32);
    let other = app.login_pair("alice", "correct horse").await;
    assert_ne!(other["refresh_token"], pair["refresh_token"]);

    let stored = token_document(&app, token).await;
    assert_eq!(stored.get_bool("rotated"), Ok(false));
    assert_eq!(stored.get_bool("revoked"), Ok(false));
    for field in ["user_id", "family_id", "expires_at", "created_at"] {
        assert!(stored.contains_key(field), "{field} missing: {stored}");
    }
    let dump = format!("{:?}", app.documents(TOKENS).await);
    assert!(
        !dump.contains(token),
        "the token itself is stored somewhere"
    );

    let mut indexes = app
        .db
        .collection::<Document>(TOKENS)
        .list_indexes()
        .await
        .expect("indexes");
    let mut unique_hash = false;
    while indexes.advance().await.expect("index") {
        let index = indexes.deserialize_current().expect("index model");
        if index.keys == doc! {"token_hash": 1} {
            unique_hash = index.options.and_then(|o| o.unique) == Some(true);
        }
    }
    assert!(unique_hash, "no unique index on token_hash");
}

#[tokio::test]
async fn refresh_returns_a_new_pair_and_the_used_token_is_marked_rotated() {
    let app = signed_up_app().await;
    let first = login_refresh_token(&app).await;

    let response = app.refresh(&first).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("Cache-Control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let pair: Value = response.json().await.expect("json");
    assert_eq!(pair["token_type"], "Bearer");
    assert_eq!(pair["expires_in"], 900);
    let second = pair["refresh_token"].as_str().expect("refresh token");
    assert_ne!(second, first);
    let left = pair["refresh_expires_in"].as_u64().expect("seconds");
    assert!(
        (30 * 24 * 3600 - 60..=30 * 24 * 3600).contains(&left),
        "the family's lifetime continues: {left}"
    );

    let me = app
        .me(pair["access_token"].as_str().expect("access token"))
        .await;
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.expect("json");
    assert_eq!(me["user"]["username"], "alice");

    assert_eq!(
        token_document(&app, &first).await.get_bool("rotated"),
        Ok(true)
    );
    assert_eq!(app.refresh(second).await.status(), 200);
}

#[tokio::test]
async fn presenting_a_rotated_token_again_revokes_the_whole_family() {
    let app = signed_up_app().await;
    let other_session = login_refresh_token(&app).await;
    let first = login_refresh_token(&app).await;
    let pair: Value = app.refresh(&first).await.json().await.expect("json");
    let second = pair["refresh_token"].as_str().expect("refresh token");

    // Whoever copied `first` tries it: refused, and the holder of `second` is logged out too.
    assert_refused(&app, &first).await;
    assert_refused(&app, second).await;
    let family_id = token_document(&app, second)
        .await
        .get_str("family_id")
        .expect("family id")
        .to_string();
    let families = app.documents(FAMILIES).await;
    let family = families
        .iter()
        .find(|f| f.get_str("_id") == Ok(family_id.as_str()))
        .expect("family stored");
    assert_eq!(family.get_bool("revoked"), Ok(true));

    // Other sessions of the same user are not affected.
    assert_eq!(app.refresh(&other_session).await.status(), 200);
}

/// Two uses of one token are what theft looks like, even when they arrive together: the
/// token is replaced at most once and the session ends.
#[tokio::test]
async fn concurrent_refreshes_with_one_token_replace_it_at_most_once_and_end_the_session() {
    let app = signed_up_app().await;
    for round in 0..5 {
        let token = login_refresh_token(&app).await;
        let family_id = token_document(&app, &token)
            .await
            .get_str("family_id")
            .expect("family id")
            .to_string();
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let http = app.http.clone();
            let url = format!("{}/api/auth/refresh", app.address);
            let body = json!({ "refresh_token": token });
            requests.spawn(async move {
                let response = http.post(url).json(&body).send().await.expect("sent");
                let status = response.status().as_u16();
                let body: Value = response.json().await.expect("json");
                (status, body)
            });
        }
        let answers = requests.join_all().await;
        let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
        assert!(
            statuses.iter().filter(|s| **s == 200).count() <= 1,
            "round {round}: {statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 401),
            "round {round}: {statuses:?}"
        );
        let family_tokens = app
            .db
            .collection::<Document>(TOKENS)
            .count_documents(doc! {"family_id": &family_id})
            .await
            .expect("count");
        assert_eq!(family_tokens, 2, "round {round}: replaced more than once");
        // Whoever got a new pair holds a revoked session.
        for (_, body) in answers.iter().filter(|(status, _)| *status == 200) {
            assert_refused(&app, body["refresh_token"].as_str().expect("token")).await;
        }
    }
}

#[tokio::test]
async fn a_refresh_that_read_the_token_as_unused_still_cannot_replace_it_twice() {
    let app = signed_up_app().await;
    let first = login_refresh_token(&app).await;
    assert_eq!(app.refresh(&first).await.status(), 200);

    // What a second, concurrent refresh saw when it read the token before the first one
    // marked it: unused. The unique claim on the replacement must still refuse it.
    app.db
        .collection::<Document>(TOKENS)
        .update_one(
            doc! {"token_hash": hash(&first)},
            doc! {"$set": {"rotated": false}},
        )
        .await
        .expect("reset the flag");
    assert_refused(&app, &first).await;
    let tokens_of_family = app.count(TOKENS).await;
    assert_eq!(tokens_of_family, 2, "no second replacement was stored");
}

#[tokio::test]
async fn an_expired_refresh_token_is_refused() {
    let app = signed_up_app().await;
    let token = login_refresh_token(&app).await;
    let past = mongodb::bson::DateTime::from_millis(
        mongodb::bson::DateTime::now().timestamp_millis() - 1000,
    );
    app.db
        .collection::<Document>(TOKENS)
        .update_many(doc! {}, doc! {"$set": {"expires_at": past}})
        .await
        .expect("expire");
    assert_refused(&app, &token).await;
}

#[tokio::test]
async fn unknown_and_malformed_refresh_tokens_are_refused_alike() {
    let app = signed_up_app().await;
    let unknown = RefreshToken::generate();
    for token in [unknown.expose(), "garbage", "", &"A".repeat(43)] {
        assert_refused(&app, token).await;
    }
}

#[tokio::test]
async fn logout_revokes_the_session_and_answers_204_every_time() {
    let app = signed_up_app().await;
    let first = login_refresh_token(&app).await;
    let pair: Value = app.refresh(&first).await.json().await.expect("json");
    let current = pair["refresh_token"].as_str().expect("refresh token");

    let response = app.logout(current).await;
    assert_eq!(response.status(), 204);
    assert_refused(&app, current).await;
    for token in [
        current,
        &first,
        RefreshToken::generate().expose(),
        "garbage",
    ] {
        assert_eq!(app.logout(token).await.status(), 204, "{token}");
    }
    let families = app.documents(FAMILIES).await;
    assert_eq!(families.len(), 1);
    assert_eq!(families[0].get_bool("revoked"), Ok(true));
}

#[tokio::test]
async fn expired_tokens_and_families_are_purged() {
    let app = spawn_app().await;
    let store = RefreshTokenStore::open(&app.db, Duration::from_secs(3600))
        .await
        .expect("store");
    let live = store.start_family("user-1").await.expect("family");
    let expired = store.start_family("user-2").await.expect("family");
    let past = mongodb::bson::DateTime::from_millis(0);
    for collection in [TOKENS, FAMILIES] {
        app.db
            .collection::<Document>(collection)
            .update_many(
                doc! {"user_id": "user-2"},
                doc! {"$set": {"expires_at": past}},
            )
            .await
            .expect("expire");
    }
    // The application's own hourly purge may run first (its first round starts with the app),
    // so check what remains rather than what this call counted.
    store.purge_expired().await.expect("purge");
    for collection in [TOKENS, FAMILIES] {
        let remaining = app
            .db
            .collection::<Document>(collection)
            .count_documents(doc! {"user_id": "user-2"})
            .await
            .expect("count");
        assert_eq!(remaining, 0, "expired documents left in {collection}");
        let live_left = app
            .db
            .collection::<Document>(collection)
            .count_documents(doc! {"user_id": "user-1"})
            .await
            .expect("count");
        assert_eq!(live_left, 1, "live documents purged from {collection}");
    }
    assert!(store.rotate(&live.token).await.is_ok());
    assert!(store.rotate(&expired.token).await.is_err());
}
