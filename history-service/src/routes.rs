//! HTTP routes: room history (members only, see [`crate::rooms::policy`]) and health; the
//! rooms API is in [`crate::rooms::routes`].

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use common::domain::{MessageId, RoomId};
use mongodb::bson::doc;
use serde::Deserialize;

use crate::caller::authenticate;
pub use crate::error::ApiError;
use crate::message_store::Page;
use crate::reads::Deadline;
use crate::rooms::routes::may_read;
use crate::startup::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/rooms/{room}/messages", web::get().to(room_messages))
        .route(
            "/api/rooms/{room}/messages/{id}",
            web::get().to(room_message),
        )
        .route(
            "/api/rooms/{room}/messages/{id}/check",
            web::post().to(check_change),
        )
        .route("/api/rooms/{room}/changes", web::get().to(room_changes))
        .route("/health/live", web::get().to(live))
        .route("/health/ready", web::get().to(ready));
}

#[derive(Deserialize)]
pub struct PageQuery {
    before: Option<String>,
    after: Option<String>,
    /// With `after`: also messages with earlier ids published after this time (Unix ms)...
    published_after: Option<String>,
    /// ...or after the publish time of `after` minus this many milliseconds.
    late_window_ms: Option<String>,
    /// With `after`: `true` adds `changes`, the messages up to `after` changed since the
    /// late-from time (or since `changes_since`, Unix ms, when later).
    changes: Option<String>,
    changes_since: Option<String>,
    /// `false` leaves `me` out of the reactions: gateways share one read between users.
    me: Option<String>,
    limit: Option<String>,
}

/// `GET /api/rooms/{room}/messages?before=<id>&limit=<n>` (members only): the page of messages just before
/// `before` (the latest without it), oldest first. `after=<id>` instead pages forward, which
/// gateways use to catch a reconnecting client up. With `published_after=<unix ms>` (or
/// `late_window_ms=<ms>`: the publish time of `after` minus that), the page also starts with
/// the messages with ids up to `after` that were published after that time, and the answer
/// says which time it used (`published_after`). Either way a page holds at most `limit`
/// messages, and `has_more` says that some were left out.
#[tracing::instrument(skip_all, fields(room = %path.as_str()))]
pub async fn room_messages(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let read = state.reads.admit()?;
    let caller = authenticate(&state, &request).await?;
    let room = RoomId::parse(path.into_inner()).map_err(|e| ApiError::Validation(e.0))?;
    let query = query.into_inner();
    let limit = match query.limit.as_deref() {
        None => state.pages.default_page,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=state.pages.max_page).contains(n))
            .ok_or_else(|| {
                ApiError::Validation(format!("limit must be 1..={}", state.pages.max_page))
            })?,
    };
    let cursor = |raw: Option<String>, name: &str| {
        raw.map(|raw| {
            MessageId::parse(&raw)
                .map_err(|_| ApiError::Validation(format!("{name} must be a message id")))
        })
        .transpose()
    };
    let before = cursor(query.before, "before")?;
    let after = cursor(query.after, "after")?;
    let published_after = milliseconds(
        query.published_after,
        "published_after",
        chrono::DateTime::from_timestamp_millis,
    )?;
    let late_window = milliseconds(
        query.late_window_ms,
        "late_window_ms",
        chrono::Duration::try_milliseconds,
    )?;
    let changes_since = milliseconds(
        query.changes_since,
        "changes_since",
        chrono::DateTime::from_timestamp_millis,
    )?;
    let changes_asked = match query.changes.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::Validation("changes must be true or false".into())),
    };
    if changes_asked && after.is_none() {
        return Err(ApiError::Validation("changes goes with after".to_string()));
    }
    let with_me = match query.me.as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(_) => return Err(ApiError::Validation("me must be true or false".into())),
    };
    let late_asked = published_after.is_some() || late_window.is_some();
    if late_asked && after.is_none() {
        return Err(ApiError::Validation(
            "published_after and late_window_ms go with after".to_string(),
        ));
    }
    if published_after.is_some() && late_window.is_some() {
        return Err(ApiError::Validation(
            "give either published_after or late_window_ms, not both".to_string(),
        ));
    }
    if before.is_some() && after.is_some() {
        return Err(ApiError::Validation(
            "give either before or after, not both".to_string(),
        ));
    }
    let (state, room, user) = (&state, &room, &caller.user.id);
    let (page, published_after, changed) = read
        .run(|deadline| async move {
            if let Err(refusal) = may_read(state, room, user).await? {
                return Ok(Err(refusal));
            }
            let reader = with_me.then_some(user.as_str());
            let (mut page, late_from, changed) = match after {
                Some(after) => {
                    let late = LateFrom::new(published_after, late_window);
                    let (page, late_from) =
                        catch_up(state, room, after, late, limit, deadline, reader).await?;
                    let changed = if changes_asked {
                        let from = match late_from {
                            Some(from) => from,
                            None => state.store.published_at(after, deadline).await?,
                        };
                        let from = changes_since.map_or(from, |since| since.max(from));
                        let mut changed = state
                            .store
                            .changed_since(room, Some(after), from, limit, deadline, reader)
                            .await?;
                        state
                            .store
                            .resolve_replies(&mut changed.messages, deadline)
                            .await?;
                        Some(changed)
                    } else {
                        None
                    };
                    (page, late_from.map(|at| at.timestamp_millis()), changed)
                }
                None => (
                    state
                        .store
                        .page_before(room, before, limit, deadline, reader)
                        .await?,
                    None,
                    None,
                ),
            };
            state
                .store
                .resolve_replies(&mut page.messages, deadline)
                .await?;
            anyhow::Ok(Ok((page, late_from, changed)))
        })
        .await?
        .map_err(ApiError::Unavailable)??;
    let mut body = serde_json::json!({
        "messages": page.messages,
        "has_more": page.has_more,
    });
    if let Some(at) = published_after {
        body["published_after"] = at.into();
    }
    if let Some(changed) = changed {
        body["changes"] = serde_json::to_value(&changed.messages).unwrap_or_default();
        body["changes_truncated"] = changed.has_more.into();
    }
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Deserialize)]
pub struct ChangesQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /api/rooms/{room}/changes?after=<unix ms>&limit=<n>` (members only): the messages of
/// the room changed after that time, in their current state, oldest change first; what a
/// client pages when `joined` said `changes_truncated`.
#[tracing::instrument(skip_all, fields(room = %path.as_str()))]
pub async fn room_changes(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<String>,
    query: web::Query<ChangesQuery>,
) -> Result<HttpResponse, ApiError> {
    let read = state.reads.admit()?;
    let caller = authenticate(&state, &request).await?;
    let room = RoomId::parse(path.into_inner()).map_err(|e| ApiError::Validation(e.0))?;
    let query = query.into_inner();
    let after = milliseconds(
        query.after,
        "after",
        chrono::DateTime::from_timestamp_millis,
    )?
    .ok_or_else(|| ApiError::Validation("after (Unix ms) is required".to_string()))?;
    let limit = page_limit(&state, query.limit.as_deref())?;
    let (state, room, user) = (&state, &room, &caller.user.id);
    let page = read
        .run(|deadline| async move {
            if let Err(refusal) = may_read(state, room, user).await? {
                return Ok(Err(refusal));
            }
            let mut page = state
                .store
                .changed_since(room, None, after, limit, deadline, Some(user.as_str()))
                .await?;
            state
                .store
                .resolve_replies(&mut page.messages, deadline)
                .await?;
            anyhow::Ok(Ok(page))
        })
        .await?
        .map_err(ApiError::Unavailable)??;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "changes": page.messages,
        "has_more": page.has_more,
    })))
}

fn page_limit(state: &AppState, raw: Option<&str>) -> Result<u32, ApiError> {
    match raw {
        None => Ok(state.pages.default_page),
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=state.pages.max_page).contains(n))
            .ok_or_else(|| {
                ApiError::Validation(format!("limit must be 1..={}", state.pages.max_page))
            }),
    }
}

#[derive(Deserialize)]
pub struct CheckRequest {
    action: String,
    emoji: Option<String>,
    on: Option<bool>,
}

/// `POST /api/rooms/{room}/messages/{id}/check` `{"action","emoji"?,"on"?}`: whether the
/// caller may make that change of the message now (see [`crate::changes::check`]). Gateways
/// ask before publishing an `edit`, `delete`, `react` or a `send` with `reply_to`; it
/// changes nothing.
#[tracing::instrument(skip_all)]
pub async fn check_change(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Json<CheckRequest>,
) -> Result<HttpResponse, ApiError> {
    use crate::changes::{Action, Refusal as ChangeRefusal};
    let read = state.reads.admit()?;
    let caller = authenticate(&state, &request).await?;
    let (room, id) = path.into_inner();
    let room = RoomId::parse(room).map_err(|e| ApiError::Validation(e.0))?;
    let id =
        MessageId::parse(&id).map_err(|_| ApiError::Validation("not a message id".to_string()))?;
    let body = body.into_inner();
    let action = match body.action.as_str() {
        "edit" => Action::Edit,
        "delete" => Action::Delete,
        "reply" => Action::Reply,
        "react" => Action::React {
            emoji: common::domain::Emoji::parse(body.emoji.unwrap_or_default())
                .map_err(|_| ApiError::InvalidEmoji)?,
            on: body.on.unwrap_or(true),
        },
        _ => {
            return Err(ApiError::Validation(
                "action must be edit, delete, react or reply".to_string(),
            ));
        }
    };
    let (state, room, user) = (&state, &room, &caller.user.id);
    let rules = state.rules;
    let (message, role) = read
        .run(|deadline| async move {
            let (membership, message) = tokio::try_join!(
                state.rooms.store.membership(room.as_str(), user.as_str()),
                state.store.document(room, id, Some(deadline)),
            )?;
            if membership.is_none()
                && let Err(refusal) = may_read(state, room, user).await?
            {
                return Ok(Err(refusal));
            }
            anyhow::Ok(Ok((message, membership.map(|m| m.role))))
        })
        .await?
        .map_err(ApiError::Unavailable)??;
    let message = message.ok_or(ApiError::NotFound)?;
    let now = chrono::Utc::now();
    crate::changes::check(&message, &action, user.as_str(), role, now, rules).map_err(
        |refusal| match refusal {
            ChangeRefusal::Forbidden => ApiError::Refused(crate::rooms::policy::Refusal::Forbidden),
            ChangeRefusal::Deleted => ApiError::MessageDeleted,
            ChangeRefusal::WindowPassed => ApiError::EditWindowPassed,
            ChangeRefusal::TooManyReactions => ApiError::TooManyReactions,
        },
    )?;
    let author = message.author()?;
    let excerpt = (!message.deleted)
        .then(|| {
            message
                .body
                .as_deref()
                .map(common::event::ReplyRef::excerpt_of)
        })
        .flatten();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "author": author,
        "excerpt": excerpt,
        "deleted": message.deleted,
        "version": message.current_version(),
    })))
}

/// A query parameter in milliseconds: a whole number that `convert` can represent.
fn milliseconds<T>(
    raw: Option<String>,
    name: &str,
    convert: impl FnOnce(i64) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let ms: u64 = raw
        .parse()
        .map_err(|_| ApiError::Validation(format!("{name} must be a whole number")))?;
    i64::try_from(ms)
        .ok()
        .and_then(convert)
        .map(Some)
        .ok_or_else(|| ApiError::Validation(format!("{name} is out of range")))
}

/// `GET /api/rooms/{room}/messages/{id}`: one stored message, or 404 while it is not stored
/// (gateways ask before publishing a retried send again).
#[tracing::instrument(skip_all)]
pub async fn room_message(
    state: web::Data<AppState>,
    request: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let read = state.reads.admit()?;
    let caller = authenticate(&state, &request).await?;
    let (room, id) = path.into_inner();
    let room = RoomId::parse(room).map_err(|e| ApiError::Validation(e.0))?;
    let id =
        MessageId::parse(&id).map_err(|_| ApiError::Validation("not a message id".to_string()))?;
    let (state, room, user) = (&state, &room, &caller.user.id);
    let message = read
        .run(|deadline| async move {
            if let Err(refusal) = may_read(state, room, user).await? {
                return Ok(Err(refusal));
            }
            let found = state
                .store
                .find(room, id, deadline, Some(user.as_str()))
                .await?;
            let Some(message) = found else {
                return Ok(Ok(None));
            };
            let mut one = [message];
            state.store.resolve_replies(&mut one, deadline).await?;
            let [message] = one;
            anyhow::Ok(Ok(Some(message)))
        })
        .await?
        .map_err(ApiError::Unavailable)??
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(message))
}

/// Which messages published late a catch-up also asks for.
#[derive(Clone, Copy)]
enum LateFrom {
    None,
    /// Those published after this time.
    At(chrono::DateTime<chrono::Utc>),
    /// Those published after the cursor was, less this window.
    Window(chrono::Duration),
}

impl LateFrom {
    fn new(at: Option<chrono::DateTime<chrono::Utc>>, window: Option<chrono::Duration>) -> Self {
        match (at, window) {
            (Some(at), _) => LateFrom::At(at),
            (None, Some(window)) => LateFrom::Window(window),
            (None, None) => LateFrom::None,
        }
    }
}

/// The page after `after`, preceded by the messages published late when asked for: after
/// `published_after` (Unix ms), or after the publish time of `after` minus `late_window` ms.
///
/// The late messages count in `limit`: they come first, in id order, and the messages after
/// the cursor fill what is left of the page. Whatever does not fit sets `has_more`, and
/// paging on from the page's last id finds it, since the late messages left out have ids
/// above the last one sent and up to `after`, and the rest have ids above `after`.
async fn catch_up(
    state: &AppState,
    room: &RoomId,
    after: MessageId,
    late: LateFrom,
    limit: u32,
    deadline: Deadline,
    reader: Option<&str>,
) -> anyhow::Result<(Page, Option<chrono::DateTime<chrono::Utc>>)> {
    let late_from = match late {
        LateFrom::At(at) => Some(at),
        LateFrom::Window(window) => {
            let published = state.store.published_at(after, deadline).await?;
            // A window reaching past the epoch means every message.
            Some(
                published
                    .checked_sub_signed(window)
                    .unwrap_or(chrono::DateTime::UNIX_EPOCH),
            )
        }
        LateFrom::None => None,
    };
    let Some(from) = late_from else {
        let page = state
            .store
            .page_after(room, after, limit, deadline, reader)
            .await?;
        return Ok((page, None));
    };
    let mut late = state
        .store
        .published_late(room, after, from, limit, deadline, reader)
        .await?;
    if late.has_more {
        return Ok((late, late_from));
    }
    let room_left = limit.saturating_sub(late.messages.len() as u32);
    let mut page = state
        .store
        .page_after(room, after, room_left, deadline, reader)
        .await?;
    late.messages.append(&mut page.messages);
    late.has_more = page.has_more;
    Ok((late, late_from))
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Longest the readiness check waits for its turn and MongoDB's answer to a ping.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Ready when MongoDB answers, the queue consumer is connected and the token keys are loaded. The
/// ping does not queue behind reads: reads hold at most their slots of the MongoDB pool, and at
/// most [`crate::reads::READY_PINGS`] pings run at once, within the rest.
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let ping = async {
        let _turn = state.ready_pings.acquire().await?;
        state.db.run_command(doc! {"ping": 1}).await?;
        anyhow::Ok(())
    };
    let mongodb = matches!(
        tokio::time::timeout(READY_PING_TIMEOUT, ping).await,
        Ok(Ok(()))
    );
    let consumer = state.consumer.is_connected();
    // Every route but health checks a token: not ready until the verification keys are in.
    let keys = state.verifier.has_keys() || state.verifier.refresh().await.is_ok();
    let ready = mongodb && consumer && keys;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "unavailable" },
        "mongodb": mongodb,
        "consumer": consumer,
        "keys": keys,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}
