//! Members of a room: listing, adding by username, kicking and leaving, roles, bans, and
//! direct messages (a room of two).

use actix_web::{HttpResponse, web};
use common::domain::{RemovalReason, Role, RoomId, RoomKind, UserId, UserRef, Username};
use mongodb::bson::doc;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::rooms::policy::{self, Action, Refusal, TargetAction};
use crate::rooms::store::NewRoom;
use crate::rooms::view::room_view;
use crate::startup::AppState;

use super::{known, membership_json, offset, room_id, within};

/// Members per page.
pub(super) const MEMBERS_PAGE: u32 = 100;
/// The DM room of two users: the same whichever side opens it.
pub fn dm_room_id(a: &UserId, b: &UserId) -> RoomId {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let digest = Sha256::digest(format!("{first}:{second}").as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    RoomId::parse(format!("dm-{}", &hex[..40])).expect("hex ids are valid room ids")
}

#[derive(Deserialize)]
pub struct MembersQuery {
    cursor: Option<String>,
}

/// `GET /api/rooms/{room}/members?cursor=`: 100 per page, oldest first.
#[tracing::instrument(skip_all, fields(room = %path.as_str()))]
pub(super) async fn members(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<MembersQuery>,
) -> Result<HttpResponse, ApiError> {
    let room = room_id(path.into_inner())?;
    let from = offset(query.cursor.as_deref())?;
    let state = &state;
    within(&state.rooms.ops, |deadline| async move {
        let known = known(state, &room, &caller.user.id).await?;
        known.decide(Action::Read)?;
        let mut page = state
            .rooms
            .store
            .members(room.as_str(), from, MEMBERS_PAGE, deadline)
            .await?;
        let more = page.len() > MEMBERS_PAGE as usize;
        page.truncate(MEMBERS_PAGE as usize);
        let members: Vec<_> = page.iter().map(membership_json).collect();
        let mut body = json!({"members": members});
        if more {
            body["next_cursor"] = json!((from + u64::from(MEMBERS_PAGE)).to_string());
        }
        Ok(HttpResponse::Ok().json(body))
    })
    .await
}

#[derive(Deserialize)]
pub struct UsernameBody {
    username: String,
}

/// The user named `raw`, asked of auth-service; 404 `user_not_found` when there is none.
pub(super) async fn resolve(
    state: &AppState,
    raw: String,
    caller: &Caller,
) -> Result<UserRef, ApiError> {
    // A name that is not a valid username names nobody.
    let username = Username::parse(raw).map_err(|_| ApiError::UserNotFound)?;
    state
        .rooms
        .users
        .by_name(&username, &caller.token)
        .await?
        .ok_or(ApiError::UserNotFound)
}

/// `POST /api/rooms/{room}/members {"username"}`: adds a member (201; 200 if already one).
#[tracing::instrument(skip_all, fields(room = %path.as_str()))]
pub(super) async fn add_member(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<UsernameBody>,
) -> Result<HttpResponse, ApiError> {
    let room = room_id(path.into_inner())?;
    let username = body.into_inner().username;
    let state = &state;
    within(&state.rooms.ops, |_| async move {
        let store = &state.rooms.store;
        let known = known(state, &room, &caller.user.id).await?;
        known.decide(Action::AddMember)?;
        let found = known.existing_room()?;
        let target = resolve(state, username, &caller).await?;
        if store.banned(room.as_str(), target.id.as_str()).await? {
            return Err(Refusal::Banned.into());
        }
        let (membership, entry, added) = store.add_member(found, &target, Role::Member).await?;
        if !added {
            return Ok(HttpResponse::Ok().json(membership_json(&membership)));
        }
        let found = store
            .room(room.as_str())
            .await?
            .unwrap_or_else(|| found.clone());
        let view = room_view(&found, Some((target.id.as_str(), Some(&entry))));
        state.rooms.events.added(&target.id, &room, view);
        Ok(HttpResponse::Created().json(membership_json(&membership)))
    })
    .await
}

pub(super) fn user_id(raw: String) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|e| ApiError::Validation(e.0))
}

/// `DELETE /api/rooms/{room}/members/{user_id}`: kicks a member, or leaves when it is the
/// caller (a DM is hidden instead).
#[tracing::instrument(skip_all, fields(room = %path.0))]
pub(super) async fn remove_member(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (room, target) = path.into_inner();
    let (room, target) = (room_id(room)?, user_id(target)?);
    let state = &state;
    within(&state.rooms.ops, |deadline| async move {
        let store = &state.rooms.store;
        let events = &state.rooms.events;
        let known = known(state, &room, &caller.user.id).await?;
        if target == caller.user.id {
            known.decide(Action::Leave)?;
            let Some(membership) = &known.membership else {
                return Ok(HttpResponse::NoContent().finish());
            };
            if known.room.as_ref().and_then(|r| r.kind) == Some(RoomKind::Dm) {
                store
                    .set_hidden(room.as_str(), target.as_str(), true)
                    .await?;
            } else {
                let others = membership.role == Role::Owner
                    && store
                        .has_other_owner(room.as_str(), target.as_str(), deadline)
                        .await?;
                policy::check_target(
                    TargetAction::StepDown,
                    membership.role,
                    membership.role,
                    others,
                )?;
                store.remove_member(room.as_str(), target.as_str()).await?;
            }
            events.removed(&target, &room, RemovalReason::Left);
            return Ok(HttpResponse::NoContent().finish());
        }
        known.decide(Action::Moderate)?;
        let actor = known.role()?;
        let member = store
            .membership(room.as_str(), target.as_str())
            .await?
            .ok_or(ApiError::NotFound)?;
        policy::check_target(TargetAction::Remove, actor, member.role, false)?;
        if store.remove_member(room.as_str(), target.as_str()).await? {
            events.removed(&target, &room, RemovalReason::Kicked);
        }
        Ok(HttpResponse::NoContent().finish())
    })
    .await
}

#[derive(Deserialize)]
pub struct RoleBody {
    role: Role,
}

/// `PUT /api/rooms/{room}/members/{user_id} {"role"}`: the owner changes a member's role.
#[tracing::instrument(skip_all, fields(room = %path.0))]
pub(super) async fn set_role(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: web::Json<RoleBody>,
) -> Result<HttpResponse, ApiError> {
    let (room, target) = path.into_inner();
    let (room, target) = (room_id(room)?, user_id(target)?);
    let role = body.into_inner().role;
    let state = &state;
    within(&state.rooms.ops, |deadline| async move {
        let store = &state.rooms.store;
        let known = known(state, &room, &caller.user.id).await?;
        known.decide(Action::ChangeRole)?;
        let actor = known.role()?;
        let mut member = store
            .membership(room.as_str(), target.as_str())
            .await?
            .ok_or(ApiError::NotFound)?;
        if member.role == Role::Owner && role != Role::Owner {
            let others = store
                .has_other_owner(room.as_str(), target.as_str(), deadline)
                .await?;
            policy::check_target(TargetAction::StepDown, actor, member.role, others)?;
        }
        if member.role != role {
            store.set_role(room.as_str(), target.as_str(), role).await?;
            member.role = role;
            state.rooms.events.role(&target, &room, role);
        }
        Ok(HttpResponse::Ok().json(membership_json(&member)))
    })
    .await
}

/// `POST /api/rooms/{room}/bans/{user_id}`: bans, and removes the user if a member.
#[tracing::instrument(skip_all, fields(room = %path.0))]
pub(super) async fn ban(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (room, target) = path.into_inner();
    let (room, target) = (room_id(room)?, user_id(target)?);
    let state = &state;
    within(&state.rooms.ops, |_| async move {
        let store = &state.rooms.store;
        let known = known(state, &room, &caller.user.id).await?;
        known.decide(Action::Moderate)?;
        let actor = known.role()?;
        if target == caller.user.id {
            return Err(Refusal::Forbidden.into());
        }
        let member = store.membership(room.as_str(), target.as_str()).await?;
        if let Some(member) = &member {
            policy::check_target(TargetAction::Remove, actor, member.role, false)?;
        }
        // The ban first: on its own it already refuses the user everywhere.
        store
            .ban(room.as_str(), target.as_str(), caller.user.id.as_str())
            .await?;
        if store.remove_member(room.as_str(), target.as_str()).await? || member.is_some() {
            state
                .rooms
                .events
                .removed(&target, &room, RemovalReason::Banned);
        }
        Ok(HttpResponse::NoContent().finish())
    })
    .await
}

/// `DELETE /api/rooms/{room}/bans/{user_id}`.
#[tracing::instrument(skip_all, fields(room = %path.0))]
pub(super) async fn unban(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (room, target) = path.into_inner();
    let (room, target) = (room_id(room)?, user_id(target)?);
    let state = &state;
    within(&state.rooms.ops, |_| async move {
        let known = known(state, &room, &caller.user.id).await?;
        known.decide(Action::Moderate)?;
        state
            .rooms
            .store
            .unban(room.as_str(), target.as_str())
            .await?;
        Ok(HttpResponse::NoContent().finish())
    })
    .await
}

/// `POST /api/dms {"username"}`: the DM with that user, created on first use, shown again
/// if the caller had hidden it.
#[tracing::instrument(skip_all, fields(user = %caller.user.id))]
pub(super) async fn open_dm(
    state: web::Data<AppState>,
    caller: Caller,
    body: web::Json<UsernameBody>,
) -> Result<HttpResponse, ApiError> {
    let username = body.into_inner().username;
    if username.eq_ignore_ascii_case(caller.user.username.as_str()) {
        return Err(ApiError::Validation(
            "a direct message needs another user".to_string(),
        ));
    }
    let state = &state;
    within(&state.rooms.ops, |_| async move {
        let store = &state.rooms.store;
        let events = &state.rooms.events;
        let me = &caller.user;
        let other = resolve(state, username, &caller).await?;
        if other.id == me.id {
            return Err(ApiError::Validation(
                "a direct message needs another user".to_string(),
            ));
        }
        let room = dm_room_id(&me.id, &other.id);
        let mut names = [me.username.as_str(), other.username.as_str()];
        names.sort_unstable();
        let name = names.join(", ");
        let new = NewRoom {
            id: &room,
            kind: RoomKind::Dm,
            name: &name,
            topic: "",
            created_by: &me.id,
            dm_users: Some([me, &other]),
        };
        store.create(&new).await?;
        let found = store
            .room(room.as_str())
            .await?
            .ok_or_else(|| anyhow::anyhow!("a DM vanished after it was created"))?;
        let (_, other_entry, other_added) = store.add_member(&found, &other, Role::Member).await?;
        let (_, mut entry, me_added) = store.add_member(&found, me, Role::Member).await?;
        if !me_added {
            entry = store
                .inbox_entry(me.id.as_str(), room.as_str())
                .await?
                .unwrap_or(entry);
        }
        let shown_again = entry.hidden;
        if shown_again {
            store
                .set_hidden(room.as_str(), me.id.as_str(), false)
                .await?;
            entry.hidden = false;
        }
        let found = store.room(room.as_str()).await?.unwrap_or(found);
        if other_added {
            let view = room_view(&found, Some((other.id.as_str(), Some(&other_entry))));
            events.added(&other.id, &room, view);
        }
        let view = room_view(&found, Some((me.id.as_str(), Some(&entry))));
        if me_added || shown_again {
            events.added(&me.id, &room, view.clone());
        }
        Ok(HttpResponse::Ok().json(view))
    })
    .await
}
