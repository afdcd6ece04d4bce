//! The rooms HTTP API of docs/rooms.md. Every handler authenticates through the [`Caller`]
//! extractor, runs within an admission bound of its own (joins in `joins`, everything else
//! in `ops`; neither queues behind history reads), asks [`policy::decide`] before it acts,
//! and answers errors through [`ApiError`].
//!
//! By resource: [`room`] (create, list, directory, show, update, archive), [`joins`] (joins
//! and read markers, the gateway's hot paths), [`members`] (members, roles, bans, DMs); this
//! file holds the routing table and what they share.

mod joins;
mod members;
mod room;

use std::future::Future;

use actix_web::web;
use common::domain::{Role, RoomId, UserId};
use serde_json::json;

use crate::error::ApiError;
use crate::reads::{Deadline, ReadLimiter};
use crate::rooms::cache::Member;
use crate::rooms::policy::{self, Action, Decision, Facts, Refusal};
use crate::rooms::store::{MembershipDoc, RoomDoc, to_chrono};
use crate::startup::AppState;

use joins::{join, mark_read};
pub use members::dm_room_id;
use members::{add_member, ban, members, open_dm, remove_member, set_role, unban};
use room::{archive, create, directory, list, show, update};

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

/// What the store knows of a member of `room` whose membership the member cache holds: the
/// room document is the only read, and none when it is cached too. A member is not banned (a
/// ban deletes the membership).
async fn known_member(
    state: &AppState,
    room: &RoomId,
    member: &Member,
    deadline: Deadline,
) -> Result<Known, ApiError> {
    let found = state
        .rooms
        .store
        .rooms_cached(vec![room.to_string()], deadline)
        .await?;
    Ok(Known {
        room: found.first().map(|room| RoomDoc::clone(room)),
        membership: Some(member.membership.clone()),
        banned: false,
    })
}

/// Whether `user` may read `room`'s history (members only); used by the history routes.
pub async fn may_read(
    state: &AppState,
    room: &RoomId,
    user: &UserId,
) -> anyhow::Result<Result<(), Refusal>> {
    let store = &state.rooms.store;
    // The common case, a member: from the member cache, or one read by `_id`.
    if store.cached_member(room.as_str(), user.as_str()).is_some() {
        return Ok(Ok(()));
    }
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

#[cfg(test)]
mod tests {
    use super::room::{room_name, topic};
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
