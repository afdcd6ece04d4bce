//! The room resource: create, list (the caller's rooms), the directory of public rooms, show,
//! update and archive.

use actix_web::{HttpResponse, web};
use common::domain::{Role, RoomId, RoomKind, UserId};
use mongodb::bson::{self, doc};
use serde::Deserialize;
use serde_json::json;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::rooms::policy::{Action, Refusal};
use crate::rooms::store::{Created, NewRoom, RoomDoc};
use crate::rooms::view::room_view;
use crate::startup::AppState;

use super::{known, known_member, offset, room_id, within};

/// Rooms per directory page.
pub(super) const DIRECTORY_PAGE: u32 = 50;
/// Longest room name, in characters.
pub(super) const NAME_MAX: usize = 80;
/// Longest topic, in characters.
pub(super) const TOPIC_MAX: usize = 250;
/// Length of the random id of a room created without one.
pub(super) const RANDOM_ID_LEN: usize = 22;

/// A room name: 1–80 characters, not blank, no control characters.
pub(super) fn room_name(raw: &str) -> Result<String, ApiError> {
    let length = raw.chars().count();
    if raw.trim().is_empty() || length > NAME_MAX {
        return Err(ApiError::Validation(format!(
            "name must be 1–{NAME_MAX} characters"
        )));
    }
    if raw.chars().any(char::is_control) {
        return Err(ApiError::Validation(
            "name must not contain control characters".to_string(),
        ));
    }
    Ok(raw.to_string())
}

/// A topic: 0–250 characters, no control characters.
pub(super) fn topic(raw: &str) -> Result<String, ApiError> {
    if raw.chars().count() > TOPIC_MAX {
        return Err(ApiError::Validation(format!(
            "topic must be at most {TOPIC_MAX} characters"
        )));
    }
    if raw.chars().any(char::is_control) {
        return Err(ApiError::Validation(
            "topic must not contain control characters".to_string(),
        ));
    }
    Ok(raw.to_string())
}

pub(super) fn random_room_id() -> RoomId {
    use rand::Rng;
    let id: String = rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(RANDOM_ID_LEN)
        .map(char::from)
        .collect();
    RoomId::parse(id).expect("alphanumeric ids are valid room ids")
}

#[derive(Deserialize)]
pub struct CreateBody {
    id: Option<String>,
    kind: RoomKind,
    name: String,
    #[serde(default)]
    topic: String,
}

/// `POST /api/rooms`: creates a public or private room owned by the caller.
#[tracing::instrument(skip_all, fields(user = %caller.user.id))]
pub(super) async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.kind == RoomKind::Dm {
        return Err(ApiError::Validation(
            "kind must be public or private; open a DM with POST /api/dms".to_string(),
        ));
    }
    let name = room_name(&body.name)?;
    let topic = topic(&body.topic)?;
    let id = match body.id {
        Some(id) => room_id(id)?,
        None => random_room_id(),
    };
    state
        .rooms
        .creation
        .take(caller.user.id.as_str())
        .map_err(|retry_after_s| ApiError::RateLimited { retry_after_s })?;
    let state = &state;
    within(&state.rooms.ops, |_| async move {
        let store = &state.rooms.store;
        let new = NewRoom {
            id: &id,
            kind: body.kind,
            name: &name,
            topic: &topic,
            created_by: &caller.user.id,
            dm_users: None,
        };
        if store.create(&new).await? == Created::Exists {
            return Err(ApiError::RoomExists);
        }
        let room = store
            .room(id.as_str())
            .await?
            .ok_or_else(|| anyhow::anyhow!("a room vanished after it was created"))?;
        let (_, entry, _) = store.add_member(&room, &caller.user, Role::Owner).await?;
        let room = store.room(id.as_str()).await?.unwrap_or(room);
        let view = room_view(&room, Some((caller.user.id.as_str(), Some(&entry))));
        state.rooms.events.added(&caller.user.id, &id, view.clone());
        Ok(HttpResponse::Created().json(view))
    })
    .await
}

/// `GET /api/rooms`: the caller's rooms and visible DMs, most recent activity first.
#[tracing::instrument(skip_all, fields(user = %caller.user.id))]
pub(super) async fn list(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let state = &state;
    within(&state.rooms.ops, |deadline| async move {
        let store = &state.rooms.store;
        let inbox = store.inbox_cached(caller.user.id.as_str()).await?;
        let ids: Vec<String> = inbox
            .rooms
            .iter()
            .filter(|(_, entry)| !entry.hidden)
            .map(|(id, _)| id.clone())
            .collect();
        let rooms = store.rooms_cached(ids, deadline).await?;
        let mut views: Vec<(Option<bson::DateTime>, String, serde_json::Value)> = rooms
            .iter()
            .filter(|room| room.kind.is_some())
            .map(|room| {
                let entry = inbox.rooms.get(&room.id);
                let view = room_view(room, Some((caller.user.id.as_str(), entry)));
                (
                    room.last_activity.or(room.created_at),
                    room.id.clone(),
                    view,
                )
            })
            .collect();
        views.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let rooms: Vec<_> = views.into_iter().map(|(_, _, view)| view).collect();
        Ok(HttpResponse::Ok().json(json!({"rooms": rooms})))
    })
    .await
}

#[derive(Deserialize)]
pub struct DirectoryQuery {
    #[serde(default)]
    q: String,
    cursor: Option<String>,
}

/// `GET /api/rooms/directory?q=&cursor=`: public, unarchived rooms, most members first.
#[tracing::instrument(skip_all)]
pub(super) async fn directory(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<DirectoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    if query.q.chars().count() > NAME_MAX {
        return Err(ApiError::Validation(format!(
            "q must be at most {NAME_MAX} characters"
        )));
    }
    let from = offset(query.cursor.as_deref())?;
    let state = &state;
    within(&state.rooms.ops, |deadline| async move {
        let store = &state.rooms.store;
        let (mut rooms, inbox) = tokio::try_join!(
            store.directory(&query.q, from, DIRECTORY_PAGE, deadline),
            store.inbox(caller.user.id.as_str()),
        )?;
        let more = rooms.len() > DIRECTORY_PAGE as usize;
        rooms.truncate(DIRECTORY_PAGE as usize);
        let views: Vec<_> = rooms
            .iter()
            .map(|room| {
                room_view(
                    room,
                    Some((caller.user.id.as_str(), inbox.rooms.get(&room.id))),
                )
            })
            .collect();
        let mut body = json!({"rooms": views});
        if more {
            body["next_cursor"] = json!((from + u64::from(DIRECTORY_PAGE)).to_string());
        }
        Ok(HttpResponse::Ok().json(body))
    })
    .await
}

/// The caller's view of a room they may see.
pub(super) async fn caller_view(
    state: &AppState,
    room: &RoomDoc,
    caller: &UserId,
) -> Result<serde_json::Value, ApiError> {
    let entry = state
        .rooms
        .store
        .inbox_entry(caller.as_str(), &room.id)
        .await?;
    Ok(room_view(room, Some((caller.as_str(), entry.as_ref()))))
}

/// `GET /api/rooms/{room}`.
#[tracing::instrument(skip_all, fields(room = %path.as_str()))]
pub(super) async fn show(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let room = room_id(path.into_inner())?;
    let state = &state;
    // A member's view, what gateways ask each time a decision expires: the membership and
    // inbox entry from memory, at most the room read.
    let member = state
        .rooms
        .store
        .cached_member(room.as_str(), caller.user.id.as_str());
    within(&state.rooms.ops, |deadline| async move {
        if let Some(member) = member {
            let known = known_member(state, &room, &member, deadline).await?;
            known.decide(Action::View)?;
            let view = room_view(
                known.existing_room()?,
                Some((caller.user.id.as_str(), Some(&member.entry))),
            );
            return Ok(HttpResponse::Ok().json(view));
        }
        let known = known(state, &room, &caller.user.id).await?;
        known.decide(Action::View)?;
        let view = caller_view(state, known.existing_room()?, &caller.user.id).await?;
        Ok(HttpResponse::Ok().json(view))
    })
    .await
}

#[derive(Deserialize)]
pub struct UpdateBody {
    name: Option<String>,
    topic: Option<String>,
    kind: Option<RoomKind>,
}

/// `PATCH /api/rooms/{room}`: rename, set the topic, switch public ↔ private.
#[tracing::instrument(skip_all, fields(room = %path.as_str()))]
pub(super) async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<UpdateBody>,
) -> Result<HttpResponse, ApiError> {
    let room = room_id(path.into_inner())?;
    let body = body.into_inner();
    let mut set = doc! {};
    if let Some(name) = &body.name {
        set.insert("name", room_name(name)?);
    }
    if let Some(raw) = &body.topic {
        set.insert("topic", topic(raw)?);
    }
    if let Some(kind) = body.kind {
        if kind == RoomKind::Dm {
            return Err(ApiError::Validation(
                "kind may only change between public and private".to_string(),
            ));
        }
        set.insert("kind", bson::to_bson(&kind).map_err(anyhow::Error::from)?);
    }
    let state = &state;
    within(&state.rooms.ops, |_| async move {
        let known = known(state, &room, &caller.user.id).await?;
        known.decide(Action::Moderate)?;
        let current = known.existing_room()?;
        let updated = if set.is_empty() {
            current.clone()
        } else {
            state
                .rooms
                .store
                .update_room(room.as_str(), set)
                .await?
                .ok_or(ApiError::Refused(Refusal::NotFound))?
        };
        state.rooms.events.updated(&room, room_view(&updated, None));
        let view = caller_view(state, &updated, &caller.user.id).await?;
        Ok(HttpResponse::Ok().json(view))
    })
    .await
}

/// `DELETE /api/rooms/{room}`: archives the room (read-only from then on).
#[tracing::instrument(skip_all, fields(room = %path.as_str()))]
pub(super) async fn archive(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let room = room_id(path.into_inner())?;
    let state = &state;
    within(&state.rooms.ops, |_| async move {
        let known = known(state, &room, &caller.user.id).await?;
        known.decide(Action::Archive)?;
        known.existing_room()?;
        state
            .rooms
            .store
            .update_room(room.as_str(), doc! {"archived": true})
            .await?;
        state.rooms.events.archived(&room);
        Ok(HttpResponse::NoContent().finish())
    })
    .await
}
