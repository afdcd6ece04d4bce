//! Load shedding: a flood of reads is answered fast (served or 503 with `Retry-After`) while
//! health checks and fresh reads keep answering, and a read past its deadline is abandoned.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::event::MessageEvent;
use common::testing;
use serde_json::Value;

use crate::helpers::{TestApp, message, spawn_app_with};

/// Fills `room` with `n` messages, stored directly; a page of the latest messages of such a
/// room costs FerretDB a few hundred milliseconds.
async fn fill_room(app: &TestApp, room: &str, n: usize) -> Vec<String> {
    let events: Vec<MessageEvent> = (0..n)
        .map(|i| MessageEvent::new(message(room, &format!("message {i}"))))
        .collect();
    app.store_directly(&events).await;
    events.iter().map(|e| e.message.id.to_string()).collect()
}

/// How a read was answered: served, or shed with a `Retry-After` and the error body.
#[derive(Debug)]
enum Answer {
    Served,
    Shed,
}

async fn answer(response: reqwest::Response) -> Result<Answer, String> {
    let status = response.status();
    match status.as_u16() {
        200 => Ok(Answer::Served),
        503 => {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let body: Value = response.json().await.map_err(|e| e.to_string())?;
            if retry_after.is_none_or(|s| s == 0) {
                return Err(format!("503 without a Retry-After in seconds: {body}"));
            }
            if body["error"]["code"] != "unavailable" {
                return Err(format!("503 with the body {body}"));
            }
            Ok(Answer::Shed)
        }
        _ => Err(format!("answered {status}")),
    }
}

#[tokio::test]
async fn a_flood_of_reads_is_shed_fast_while_health_and_fresh_reads_still_answer() {
    const READ_TIMEOUT_MS: u64 = 2000;
    let app = spawn_app_with(|settings| {
        settings.history.max_concurrent_reads = 2;
        settings.history.max_queued_reads = 4;
        settings.history.read_queue_wait_ms = 100;
        settings.history.read_timeout_ms = READ_TIMEOUT_MS;
    })
    .await;
    let ids = fill_room(&app, "flood", 3000).await;
    let token = testing::token("user-1", "alice");
    assert_eq!(app.join("flood", &token).await.status(), 200);
    // Every request gets an answer well before this, or the test fails.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");

    let flooding = Arc::new(AtomicBool::new(true));
    let probe = tokio::spawn({
        let (http, address, flooding) = (http.clone(), app.address.clone(), flooding.clone());
        async move {
            let mut checks = Vec::new();
            while flooding.load(Ordering::Relaxed) {
                let started = Instant::now();
                let live = http.get(format!("{address}/health/live")).send().await;
                let live_took = started.elapsed();
                let ready = http.get(format!("{address}/health/ready")).send().await;
                checks.push((
                    live.map(|r| r.status().as_u16()).map_err(|e| e.to_string()),
                    live_took,
                    ready
                        .map(|r| r.status().as_u16())
                        .map_err(|e| e.to_string()),
                ));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            checks
        }
    });

    // The latest page (sorting the whole room) mostly, and some single messages: every route
    // that reads messages.
    let reads = (0..300).map(|i| {
        let path = if i % 10 == 9 {
            format!("/{}", ids[i])
        } else {
            "?limit=100".to_string()
        };
        let request = http
            .get(format!("{}/api/rooms/flood/messages{path}", app.address))
            .bearer_auth(&token)
            .send();
        async move {
            // Ten more every 50 ms, for 1.5 s.
            tokio::time::sleep(Duration::from_millis(50 * (i as u64 % 30))).await;
            match request.await {
                Ok(response) => answer(response).await,
                Err(error) => Err(format!("no answer: {error}")),
            }
        }
    });
    let answers = futures_util::future::join_all(reads).await;
    flooding.store(false, Ordering::Relaxed);
    let checks = probe.await.expect("probe task");

    let failures: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of 300 reads not answered 200 or 503 + Retry-After, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    let shed = answers
        .iter()
        .filter(|a| matches!(a, Ok(Answer::Shed)))
        .count();
    println!("flood: {} served, {shed} shed", answers.len() - shed);
    assert!(shed >= 1, "no read was shed");
    assert!(
        app.metrics()
            .await
            .contains(r#"history_reads_shed_total{reason="busy"}"#),
        "shed reads are counted"
    );

    assert!(!checks.is_empty(), "health was checked during the flood");
    for (live, took, ready) in &checks {
        assert_eq!(live.as_ref(), Ok(&200), "/health/live during the flood");
        assert!(
            *took < Duration::from_secs(1),
            "/health/live took {took:?} during the flood"
        );
        assert_eq!(ready.as_ref(), Ok(&200), "/health/ready during the flood");
    }

    let started = Instant::now();
    let fresh = http
        .get(format!(
            "{}/api/rooms/flood/messages?limit=100",
            app.address
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("a fresh read is answered");
    let took = started.elapsed();
    answer(fresh).await.expect("200, or 503 with Retry-After");
    assert!(
        took < Duration::from_millis(2 * READ_TIMEOUT_MS),
        "a fresh read after the flood took {took:?}"
    );
}

#[tokio::test]
async fn a_read_past_its_deadline_is_answered_503_with_retry_after() {
    let app = spawn_app_with(|settings| {
        settings.history.read_timeout_ms = 5;
        settings.history.retry_after_s = 3;
    })
    .await;
    fill_room(&app, "big", 3000).await;
    let token = testing::token("user-1", "alice");

    let response = app.get_history("big", "?limit=100", Some(&token)).await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("3")
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        app.metrics()
            .await
            .contains(r#"history_reads_shed_total{reason="deadline"} 1"#)
    );
}
