//! Joins and read markers: the routes the gateway calls for every WebSocket `join` and `read`,
//! admitted as `rooms.joins`.

use actix_web::{HttpResponse, web};
use common::domain::{MessageId, Role, RoomKind};
use mongodb::bson::doc;
use serde::Deserialize;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::reads::ShedReason;
use crate::rooms::lookups::LookupError;
use crate::rooms::policy::{self, Action, Decision, Facts, Refusal};
use crate::rooms::store::{Created, NewRoom, RoomDoc};
use crate::rooms::view::room_view;
use crate::startup::AppState;

use super::{Known, known, room_id, within};

/// `POST /api/rooms/{room}/join`: what the WebSocket `join` asks. A member's join writes
/// nothing: its reads are batched with the other joins waiting ([`crate::rooms::lookups`]).
/// Any other join (a first one, a repair, a creation) then runs within `joins`. Idempotent;
/// creates the room when `rooms.create_on_join` allows.
#[tracing::instrument(skip_all, fields(room = %path.as_str()))]
pub(super) async fn join(
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
pub struct MarkerBody {
    id: String,
}

/// `PUT /api/rooms/{room}/read {"id"}`: moves the caller's read marker forward. Two reads by
/// `_id` at once (the membership, the message), then one conditional write.
#[tracing::instrument(skip_all, fields(room = %path.as_str()))]
pub(super) async fn mark_read(
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
