//! The rooms HTTP API of docs/rooms.md. Every handler authenticates through the [`Caller`]
//! extractor, runs within an admission bound of its own (joins in `joins`, everything else
//! in `ops`; neither queues behind history reads), asks [`policy::decide`] before it acts,
//! and answers errors through [`ApiError`].

use std::future::Future;

use actix_web::{HttpResponse, web};
use common::domain::{MessageId, RemovalReason, Role, RoomId, RoomKind, UserId, UserRef, Username};
use mongodb::bson::{self, doc};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::reads::{Deadline, ReadLimiter, ShedReason};
use crate::rooms::lookups::LookupError;
use crate::rooms::policy::{self, Action, Decision, Facts, Refusal, TargetAction};
use crate::rooms::store::{Created, MembershipDoc, NewRoom, RoomDoc, to_chrono};
use crate::rooms::view::room_view;
use crate::startup::AppState;

/// Rooms per directory page.
const DIRECTORY_PAGE: u32 = 50;
/// Members per page.
const MEMBERS_PAGE: u32 = 100;
/// Longest room name, in characters.
const NAME_MAX: usize = 80;
/// Longest topic, in characters.
const TOPIC_MAX: usize = 250;
/// Length of the random id of a room created without one.
const RANDOM_ID_LEN: usize = 22;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/rooms")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(web::resource("/api/rooms/directory").route(web::get().to(directory)))
    .service(
        web::resource("/api/rooms/{room}")
            .route(web::get().to(show))
            .route(web::patch().to(update))
            .route(web::delete().to(archive)),
    )
    .service(web::resource("/api/rooms/{room}/join").route(web::post().to(join)))
    .service(
        web::resource("/api/rooms/{room}/members")
            .route(web::get().to(members))
            .route(web::post().to(add_member)),
    )
    .service(
        web::resource("/api/rooms/{room}/members/{user}")
            .route(web::delete().to(remove_member))
            .route(web::put().to(set_role)),
    )
    .service(
        web::resource("/api/rooms/{room}/bans/{user}")
            .route(web::post().to(ban))
            .route(web::delete().to(unban)),
    )
    .service(web::resource("/api/rooms/{room}/read").route(web::put().to(mark_read)))
    .service(web::resource("/api/dms").route(web::post().to(open_dm)));
}

/// Runs `work` in one of `limiter`'s slots, under its deadline; 503 `unavailable` with
/// `Retry-After` when it is shed.
async fn within<T, F, Fut>(limiter: &ReadLimiter, work: F) -> Result<T, ApiError>
where
    F: FnOnce(Deadline) -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let admitted = limiter.admit()?;
    admitted
        .run(|deadline| async move { Ok(work(deadline).await) })
        .await?
        .map_err(ApiError::Unavailable)?
}

fn room_id(raw: String) -> Result<RoomId, ApiError> {
    RoomId::parse(raw).map_err(|e| ApiError::Validation(e.0))
}

/// What the store knows about the caller in a room: the room, their membership, their ban.
struct Known {
    room: Option<RoomDoc>,
    membership: Option<MembershipDoc>,
    banned: bool,
}

impl Known {
    fn facts(&self) -> Facts {
        Facts {
            room: self.room.as_ref().and_then(RoomDoc::facts),
            role: self.membership.as_ref().map(|m| m.role),
            banned: self.banned,
        }
    }

    /// The table's answer to `action`, the refusal as an error.
    fn decide(&self, action: Action) -> Result<Decision, ApiError> {
        match policy::decide(action, self.facts()) {
            Decision::Refuse(refusal) => Err(refusal.into()),
            decision => Ok(decision),
        }
    }

    /// The room, once [`Known::decide`] allowed an action that needs it to exist.
    fn existing_room(&self) -> Result<&RoomDoc, ApiError> {
        self.room
            .as_ref()
            .filter(|room| room.kind.is_some())
            .ok_or(ApiError::Refused(Refusal::NotFound))
    }

    fn role(&self) -> Result<Role, ApiError> {
        self.membership
            .as_ref()
            .map(|m| m.role)
            .ok_or(ApiError::Refused(Refusal::Forbidden))
    }
}

/// The room, the caller's membership and ban: three reads by `_id`, at once.
async fn known(state: &AppState, room: &RoomId, user: &UserId) -> Result<Known, ApiError> {
    let store = &state.rooms.store;
    let (room, membership, banned) = tokio::try_join!(
        store.room(room.as_str()),
        store.membership(room.as_str(), user.as_str()),
        store.banned(room.as_str(), user.as_str()),
    )?;
    Ok(Known {
        room,
        membership,
        banned,
    })
}

/// Whether `user` may read `room`'s history (members only); used by the history routes.
pub async fn may_read(
    state: &AppState,
    room: &RoomId,
    user: &UserId,
) -> anyhow::Result<Result<(), Refusal>> {
    let store = &state.rooms.store;
    // The common case, a member, costs one read by `_id`.
    if store
        .membership(room.as_str(), user.as_str())
        .await?
        .is_some()
    {
        return Ok(Ok(()));
    }
    let (found, banned) = tokio::try_join!(
        store.room(room.as_str()),
        store.banned(room.as_str(), user.as_str()),
    )?;
    let facts = Facts {
        room: found.as_ref().and_then(RoomDoc::facts),
        role: None,
        banned,
    };
    Ok(match policy::decide(Action::Read, facts) {
        Decision::Refuse(refusal) => Err(refusal),
        _ => Ok(()),
    })
}

fn membership_json(membership: &MembershipDoc) -> serde_json::Value {
    json!({
        "user": {"id": membership.user.id, "username": membership.user.username},
        "role": membership.role,
        "joined_at": to_chrono(membership.joined_at),
    })
}

/// A room name: 1–80 characters, not blank, no control characters.
fn room_name(raw: &str) -> Result<String, ApiError> {
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
fn topic(raw: &str) -> Result<String, ApiError> {
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

fn random_room_id() -> RoomId {
    use rand::Rng;
    let id: String = rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(RANDOM_ID_LEN)
        .map(char::from)
        .collect();
    RoomId::parse(id).expect("alphanumeric ids are valid room ids")
}

/// The DM room of two users: the same whichever side opens it.
pub fn dm_room_id(a: &UserId, b: &UserId) -> RoomId {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let digest = Sha256::digest(format!("{first}:{second}").as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    RoomId::parse(format!("dm-{}", &hex[..40])).expect("hex ids are valid room ids")
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
async fn create(
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
async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
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

/// A page cursor: the offset of the page's first item.
fn offset(cursor: Option<&str>) -> Result<u64, ApiError> {
    cursor
        .map(|raw| {
            raw.parse::<u64>()
                .map_err(|_| ApiError::Validation("cursor is not one this API gave".to_string()))
        })
        .transpose()
        .map(Option::unwrap_or_default)
}

/// `GET /api/rooms/directory?q=&cursor=`: public, unarchived rooms, most members first.
#[tracing::instrument(skip_all)]
async fn directory(
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
async fn caller_view(
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
async fn show(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let room = room_id(path.into_inner())?;
    let state = &state;
    within(&state.rooms.ops, |_| async move {
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
async fn update(
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
async fn archive(
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

/// `POST /api/rooms/{room}/join`: what the WebSocket `join` asks. A member's join writes
/// nothing: its reads are batched with the other joins waiting ([`crate::rooms::lookups`]).
/// Any other join (a first one, a repair, a creation) then runs within `joins`. Idempotent;
/// creates the room when `rooms.create_on_join` allows.
#[tracing::instrument(skip_all, fields(room = %path.as_str()))]
async fn join(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let room = room_id(path.into_inner())?;
    let state = &state;
    let user = &caller.user;
    let found = match state
        .rooms
        .lookups
        .find(room.as_str(), user.id.as_str())
        .await
    {
        Ok(found) => found,
        Err(LookupError::Full) => return Err(state.rooms.joins.shed(ShedReason::Busy).into()),
        Err(LookupError::TimedOut) => {
            return Err(state.rooms.joins.shed(ShedReason::Deadline).into());
        }
        Err(LookupError::Store(error)) => return Err(error.into()),
    };
    let action = Action::Join {
        create_on_join: state.rooms.settings.create_on_join,
    };
    if let (Some(_), Some(entry)) = (&found.membership, &found.entry) {
        // The usual case: nothing to write. A member is not banned: a ban deletes the
        // membership (right after writing the ban).
        let known = Known {
            room: found.room.as_deref().cloned(),
            membership: found.membership.clone(),
            banned: false,
        };
        known.decide(action)?;
        let view = room_view(
            known.existing_room()?,
            Some((user.id.as_str(), Some(entry))),
        );
        return Ok(HttpResponse::Ok().json(view));
    }
    if found.membership.is_none() {
        // Refused whether or not the caller is banned (a private room's non-member learns
        // nothing either way): answered without reading the ban.
        let facts = |banned| Facts {
            room: found.room.as_deref().and_then(RoomDoc::facts),
            role: None,
            banned,
        };
        let decision = policy::decide(action, facts(false));
        if let Decision::Refuse(refusal) = decision
            && decision == policy::decide(action, facts(true))
        {
            return Err(refusal.into());
        }
    }
    within(&state.rooms.joins, |_| async move {
        let store = &state.rooms.store;
        let banned = match found.membership {
            Some(_) => false,
            None => store.banned(room.as_str(), user.id.as_str()).await?,
        };
        let known = Known {
            room: found.room.as_deref().cloned(),
            membership: found.membership,
            banned,
        };
        let (found, role) = match known.decide(action)? {
            Decision::Allow => match &known.membership {
                // A member whose inbox entry is missing: written again below.
                Some(membership) => (known.existing_room()?.clone(), membership.role),
                None => (known.existing_room()?.clone(), Role::Member),
            },
            Decision::Create => {
                let new = NewRoom {
                    id: &room,
                    kind: RoomKind::Public,
                    name: room.as_str(),
                    topic: "",
                    created_by: &user.id,
                    dm_users: None,
                };
                let created = store.create(&new).await?;
                let found = store
                    .room(room.as_str())
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("a room vanished after it was created"))?;
                match created {
                    Created::Created => (found, Role::Owner),
                    // Someone else created it meanwhile: join it as anyone would.
                    Created::Exists => {
                        let again = Known {
                            room: Some(found),
                            ..known
                        };
                        again.decide(Action::Join {
                            create_on_join: false,
                        })?;
                        (again.existing_room()?.clone(), Role::Member)
                    }
                }
            }
            Decision::Refuse(refusal) => return Err(refusal.into()),
        };
        let (_, entry, added) = store.add_member(&found, user, role).await?;
        let mut found = found;
        if added {
            // What the `$inc` of the member count made of it, without reading it again.
            found.member_count += 1;
        }
        let entry = match added {
            true => entry,
            // A repair of a missing entry, or one written meanwhile: read what is there.
            false => store
                .inbox_entry(user.id.as_str(), room.as_str())
                .await?
                .unwrap_or(entry),
        };
        let view = room_view(&found, Some((user.id.as_str(), Some(&entry))));
        if added {
            state.rooms.events.added(&user.id, &room, view.clone());
        }
        Ok(HttpResponse::Ok().json(view))
    })
    .await
}

#[derive(Deserialize)]
pub struct MembersQuery {
    cursor: Option<String>,
}

/// `GET /api/rooms/{room}/members?cursor=`: 100 per page, oldest first.
#[tracing::instrument(skip_all, fields(room = %path.as_str()))]
async fn members(
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
async fn resolve(state: &AppState, raw: String, caller: &Caller) -> Result<UserRef, ApiError> {
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
async fn add_member(
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

fn user_id(raw: String) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|e| ApiError::Validation(e.0))
}

/// `DELETE /api/rooms/{room}/members/{user_id}`: kicks a member, or leaves when it is the
/// caller (a DM is hidden instead).
#[tracing::instrument(skip_all, fields(room = %path.0))]
async fn remove_member(
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
async fn set_role(
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
async fn ban(
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
async fn unban(
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

#[derive(Deserialize)]
pub struct MarkerBody {
    id: String,
}

/// `PUT /api/rooms/{room}/read {"id"}`: moves the caller's read marker forward. Two reads by
/// `_id` at once (the membership, the message), then one conditional write.
#[tracing::instrument(skip_all, fields(room = %path.as_str()))]
async fn mark_read(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<MarkerBody>,
) -> Result<HttpResponse, ApiError> {
    let room = room_id(path.into_inner())?;
    let id = MessageId::parse(&body.id).map_err(|_| ApiError::InvalidMarker)?;
    let state = &state;
    within(&state.rooms.joins, |deadline| async move {
        let store = &state.rooms.store;
        let user = &caller.user.id;
        let (membership, message) = tokio::try_join!(
            store.membership(room.as_str(), user.as_str()),
            state.store.locate(id, deadline),
        )?;
        if membership.is_none() {
            let known = known(state, &room, user).await?;
            known.decide(Action::Read)?;
            return Err(Refusal::NotFound.into());
        }
        let seq = match message {
            Some((in_room, seq)) if in_room == room.as_str() => seq.unwrap_or(0),
            _ => return Err(ApiError::InvalidMarker),
        };
        let moved = store
            .mark_read(user.as_str(), room.as_str(), &id.to_string(), seq)
            .await?;
        if moved {
            state
                .rooms
                .events
                .read(user, &room, id, u64::try_from(seq).unwrap_or(0));
        }
        Ok(HttpResponse::NoContent().finish())
    })
    .await
}

/// `POST /api/dms {"username"}`: the DM with that user, created on first use, shown again
/// if the caller had hidden it.
#[tracing::instrument(skip_all, fields(user = %caller.user.id))]
async fn open_dm(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dm_has_the_same_id_from_either_side() {
        let a = UserId::parse("u-a".into()).expect("valid");
        let b = UserId::parse("u-b".into()).expect("valid");
        assert_eq!(dm_room_id(&a, &b), dm_room_id(&b, &a));
        assert_eq!(dm_room_id(&a, &b).as_str().len(), 43);
    }

    #[test]
    fn names_and_topics_are_checked() {
        assert!(room_name("General").is_ok());
        assert!(room_name("").is_err());
        assert!(room_name("  ").is_err());
        assert!(room_name(&"é".repeat(80)).is_ok());
        assert!(room_name(&"é".repeat(81)).is_err());
        assert!(room_name("a\u{7}b").is_err());
        assert!(topic("").is_ok());
        assert!(topic(&"t".repeat(251)).is_err());
        assert!(topic("line\nbreak").is_err());
    }
}
