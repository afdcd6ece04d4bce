//! Changes of stored messages: edits, deletes and reactions (docs/protocol.md, "Changing
//! messages"; docs/guarantees.md, 7).
//!
//! [`check`] is what gateways ask before publishing a change (`POST …/messages/ID/check`,
//! with the user's token). [`apply`] is what the consumer does with each change it takes
//! from the history queue: a change applies only over older ones, by change id, per part
//! of the message (the body, the deletion, each (user, emoji) reaction), so copies, retries
//! and any order of consumption end in the same state. A delete is final and erases the
//! body. [`apply_batch`] reads the messages a batch changes with one query, applies the
//! changes in memory and writes each message once, compare-and-set on its `version`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use common::domain::{Emoji, MessageBody, MessageId, Role, RoomId};
use common::event::{AppliedChange, Change, ChangeEvent};
use mongodb::bson;

use crate::message_store::{
    MessageDocument, MessageStore, ReactionDocument, UserDocument, to_chrono,
};

/// Most distinct emoji a message carries at once.
pub const MAX_EMOJI: usize = 20;
/// Most reaction registers one user holds on one message; beyond, their oldest "off" ones
/// are forgotten (an "off" only guards against an older "on" arriving late).
const MAX_REGISTERS_PER_USER: usize = 2 * MAX_EMOJI;
/// Attempts at writing one message when other writers keep changing it.
const WRITE_ATTEMPTS: usize = 5;

/// The rules the service was configured with.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// How long after sending its author may edit a message; `None` = always.
    pub edit_window: Option<chrono::Duration>,
}

/// A change a gateway asks about.
#[derive(Debug, Clone)]
pub enum Action {
    Edit,
    Delete,
    React { emoji: Emoji, on: bool },
    Reply,
}

/// Why a change is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Forbidden,
    Deleted,
    WindowPassed,
    TooManyReactions,
}

/// Whether `caller` (with `role` in the room) may make `action` on the message now.
pub(crate) fn check(
    message: &MessageDocument,
    action: &Action,
    caller: &str,
    role: Option<Role>,
    now: DateTime<Utc>,
    rules: Rules,
) -> Result<(), Refusal> {
    match action {
        Action::Edit => {
            if message.deleted {
                return Err(Refusal::Deleted);
            }
            if message.author_id != caller {
                return Err(Refusal::Forbidden);
            }
            if !within_window(message, now, rules) {
                return Err(Refusal::WindowPassed);
            }
            Ok(())
        }
        Action::Delete => {
            let allowed = message.author_id == caller
                || matches!(role, Some(Role::Owner) | Some(Role::Admin));
            if allowed {
                Ok(())
            } else {
                Err(Refusal::Forbidden)
            }
        }
        Action::React { emoji, on } => {
            if message.deleted {
                return Err(Refusal::Deleted);
            }
            if *on && !may_add_emoji(message, emoji.as_str()) {
                return Err(Refusal::TooManyReactions);
            }
            Ok(())
        }
        Action::Reply => Ok(()),
    }
}

fn within_window(message: &MessageDocument, at: DateTime<Utc>, rules: Rules) -> bool {
    match (rules.edit_window, to_chrono(message.sent_at)) {
        (None, _) => true,
        (Some(window), Ok(sent_at)) => at - sent_at <= window,
        (Some(_), Err(_)) => false,
    }
}

/// Whether one more user may react with `emoji`: it is there already, or there are fewer
/// than [`MAX_EMOJI`] distinct emoji.
fn may_add_emoji(message: &MessageDocument, emoji: &str) -> bool {
    let mut distinct: Vec<&str> = Vec::new();
    for reaction in message.reactions.iter().filter(|r| r.on) {
        if reaction.emoji == emoji {
            return true;
        }
        if !distinct.contains(&reaction.emoji.as_str()) {
            distinct.push(&reaction.emoji);
        }
    }
    distinct.len() < MAX_EMOJI
}

/// What [`apply`] did with one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The message changed.
    Changed,
    /// The message holds this very change already (a redelivery or a retry): announce the
    /// current state again, in case the first announcement was lost.
    Repeated,
    /// Older than what the message holds, or not allowed on it: nothing to do.
    Dropped,
}

/// Applies `event` to `message` if it is newer than what the message holds. Does not touch
/// `version` or `changed_at` (see [`apply_all`]).
pub(crate) fn apply(message: &mut MessageDocument, event: &ChangeEvent, rules: Rules) -> Outcome {
    let change_id = event.change_id.to_string();
    if message.deleted {
        let repeated = matches!(event.change, Change::Delete)
            && message.deleted_change.as_deref() == Some(change_id.as_str());
        return if repeated {
            Outcome::Repeated
        } else {
            Outcome::Dropped
        };
    }
    let at = bson::DateTime::from_millis(event.at.timestamp_millis());
    match &event.change {
        Change::Edit { body } => {
            if message.author_id != event.by.id.as_str() || !within_window(message, event.at, rules)
            {
                return Outcome::Dropped;
            }
            match message.edit_change.as_deref() {
                Some(held) if held == change_id => Outcome::Repeated,
                Some(held) if held > change_id.as_str() => Outcome::Dropped,
                _ => {
                    message.body = Some(body.to_string());
                    message.edit_change = Some(change_id);
                    message.edited_at = Some(at);
                    Outcome::Changed
                }
            }
        }
        Change::Delete => {
            message.deleted = true;
            message.deleted_change = Some(change_id);
            message.deleted_at = Some(at);
            message.deleted_by = Some(UserDocument::from(&event.by));
            message.body = None;
            message.edited_at = None;
            message.reactions.clear();
            Outcome::Changed
        }
        Change::React { emoji, on } => {
            let user = event.by.id.as_str();
            let held = message
                .reactions
                .iter()
                .position(|r| r.user == user && r.emoji == emoji.as_str());
            match held {
                Some(index) => {
                    let register = &message.reactions[index];
                    if register.change == change_id {
                        return Outcome::Repeated;
                    }
                    if register.change > change_id {
                        return Outcome::Dropped;
                    }
                    if *on && !register.on && !may_add_emoji(message, emoji.as_str()) {
                        return Outcome::Dropped;
                    }
                    let register = &mut message.reactions[index];
                    register.on = *on;
                    register.change = change_id;
                    Outcome::Changed
                }
                None => {
                    if *on && !may_add_emoji(message, emoji.as_str()) {
                        return Outcome::Dropped;
                    }
                    message.reactions.push(ReactionDocument {
                        emoji: emoji.to_string(),
                        user: user.to_string(),
                        on: *on,
                        change: change_id,
                    });
                    forget_old_registers(message, user);
                    Outcome::Changed
                }
            }
        }
    }
}

/// Keeps at most [`MAX_REGISTERS_PER_USER`] registers of `user`, forgetting "off" ones first
/// (oldest change first).
fn forget_old_registers(message: &mut MessageDocument, user: &str) {
    let count = message.reactions.iter().filter(|r| r.user == user).count();
    if count <= MAX_REGISTERS_PER_USER {
        return;
    }
    let mut offs: Vec<String> = message
        .reactions
        .iter()
        .filter(|r| r.user == user && !r.on)
        .map(|r| r.change.clone())
        .collect();
    offs.sort();
    offs.truncate(count - MAX_REGISTERS_PER_USER);
    message
        .reactions
        .retain(|r| !(r.user == user && !r.on && offs.contains(&r.change)));
}

/// What the room is told about one change, from the message's state after it.
fn announcement(
    message: &MessageDocument,
    event: &ChangeEvent,
    version: i64,
    changed_at: DateTime<Utc>,
) -> Option<AppliedChange> {
    let room = event.room.clone();
    let id = event.id;
    let version = version.max(1) as u64;
    if message.deleted {
        return Some(AppliedChange::Deleted {
            room,
            id,
            deleted_at: message.deleted_at.and_then(|at| to_chrono(at).ok())?,
            by: message.deleted_by.as_ref()?.to_user().ok()?,
            version,
            changed_at,
        });
    }
    match &event.change {
        Change::Edit { .. } => Some(AppliedChange::Edited {
            room,
            id,
            body: MessageBody::parse(message.body.clone()?).ok()?,
            edited_at: message.edited_at.and_then(|at| to_chrono(at).ok())?,
            version,
            changed_at,
        }),
        Change::Delete => None,
        Change::React { emoji, on } => Some(AppliedChange::Reactions {
            room,
            id,
            reactions: message.reaction_counts(None),
            version,
            by: event.by.clone(),
            emoji: emoji.clone(),
            on: *on,
            changed_at,
        }),
    }
}

/// Applies `events` (all of one message, in the order taken) to `message`: each applied
/// change adds one to `version` and is announced with the state right after it; repeats are
/// announced with the current state. Returns whether the message must be written.
pub(crate) fn apply_all(
    message: &mut MessageDocument,
    events: &[&ChangeEvent],
    rules: Rules,
    now: DateTime<Utc>,
) -> (bool, Vec<AppliedChange>) {
    let mut changed = false;
    let mut announcements = Vec::new();
    for event in events {
        match apply(message, event, rules) {
            Outcome::Changed => {
                changed = true;
                let version = message.current_version() + 1;
                message.version = Some(version);
                message.changed_at = Some(bson::DateTime::from_millis(now.timestamp_millis()));
                announcements.extend(announcement(message, event, version, now));
            }
            Outcome::Repeated => {
                let changed_at = message
                    .changed_at
                    .and_then(|at| to_chrono(at).ok())
                    .unwrap_or(now);
                announcements.extend(announcement(
                    message,
                    event,
                    message.current_version(),
                    changed_at,
                ));
            }
            Outcome::Dropped => {
                tracing::debug!(
                    id = %event.id,
                    change = event.change.kind(),
                    "a change older than the stored state, or not allowed on it, was dropped"
                );
            }
        }
    }
    (changed, announcements)
}

/// Applies a batch of changes: one read of the messages they change, one compare-and-set
/// write per changed message (read again and redone when another writer got there first),
/// and the room list's preview of a message edited or deleted. Returns what to announce,
/// per room, once the batch is acknowledged.
pub async fn apply_batch(
    store: &MessageStore,
    events: &[ChangeEvent],
    rules: Rules,
) -> anyhow::Result<Vec<(RoomId, AppliedChange)>> {
    let mut by_message: Vec<(MessageId, Vec<&ChangeEvent>)> = Vec::new();
    for event in events {
        match by_message.iter_mut().find(|(id, _)| *id == event.id) {
            Some((_, list)) => list.push(event),
            None => by_message.push((event.id, vec![event])),
        }
    }
    let ids: Vec<String> = by_message.iter().map(|(id, _)| id.to_string()).collect();
    let mut stored: HashMap<String, MessageDocument> = store.documents(&ids).await?;
    let mut announcements = Vec::new();
    for (id, events) in by_message {
        let room = events[0].room.clone();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let found = match stored.remove(&id.to_string()) {
                Some(found) => Some(found),
                None if attempt > 1 => store.document(&room, id, None).await?,
                None => None,
            };
            let Some(mut message) = found.filter(|m| m.room == room.as_str()) else {
                tracing::warn!(%id, %room, "dropping changes of a message that is not stored");
                break;
            };
            let before = message.version;
            let body_before = message.body.clone();
            let (changed, mut applied) = apply_all(&mut message, &events, rules, Utc::now());
            if changed {
                if !store.replace_if_version(&message, before).await? {
                    if attempt >= WRITE_ATTEMPTS {
                        anyhow::bail!("message {id} kept changing under its writes");
                    }
                    continue;
                }
                if message.body != body_before {
                    store
                        .update_preview(message.room.as_str(), &message.id, message.body.as_deref())
                        .await?;
                }
            }
            announcements.extend(applied.drain(..).map(|change| (room.clone(), change)));
            break;
        }
    }
    Ok(announcements)
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::domain::{ClientMessageId, UserId, UserRef, Username};
    use common::event::{ChatMessage, MessageEvent};

    fn user(id: &str) -> UserRef {
        UserRef {
            id: UserId::parse(id.into()).expect("user"),
            username: Username::parse(format!("user-{id}")).expect("name"),
        }
    }

    fn message() -> MessageDocument {
        let sent = ChatMessage::new(
            MessageId::from_ulid(ulid::Ulid::new()),
            RoomId::parse("r".into()).expect("room"),
            ClientMessageId::parse("c".into()).expect("client id"),
            user("alice"),
            MessageBody::parse("hello".into()).expect("body"),
            Utc::now(),
        );
        MessageDocument::from(&MessageEvent::new(sent))
    }

    fn event(message: &MessageDocument, by: &str, change: Change, order: u64) -> ChangeEvent {
        ChangeEvent {
            v: 1,
            room: RoomId::parse("r".into()).expect("room"),
            id: MessageId::parse(&message.id).expect("id"),
            change_id: MessageId::from_ulid(ulid::Ulid::from_parts(order, 0)),
            client_id: ClientMessageId::parse(format!("c{order}")).expect("client id"),
            by: user(by),
            at: Utc::now(),
            change,
        }
    }

    fn edit(body: &str) -> Change {
        Change::Edit {
            body: MessageBody::parse(body.into()).expect("body"),
        }
    }

    fn react(emoji: &str, on: bool) -> Change {
        Change::React {
            emoji: Emoji::parse(emoji.into()).expect("emoji"),
            on,
        }
    }

    const RULES: Rules = Rules { edit_window: None };

    /// Applies `events` in the given order and returns the resulting (body, deleted,
    /// reactions as (emoji, user) on).
    fn final_state(
        base: &MessageDocument,
        events: &[&ChangeEvent],
    ) -> (Option<String>, bool, Vec<(String, String)>) {
        let mut message = base.clone();
        apply_all(&mut message, events, RULES, Utc::now());
        let mut on: Vec<(String, String)> = message
            .reactions
            .iter()
            .filter(|r| r.on)
            .map(|r| (r.emoji.clone(), r.user.clone()))
            .collect();
        on.sort();
        (message.body, message.deleted, on)
    }

    #[test]
    fn every_order_of_the_same_changes_ends_in_the_same_state() {
        let base = message();
        let events = [
            event(&base, "alice", edit("one"), 1),
            event(&base, "bob", react("👍", true), 2),
            event(&base, "alice", edit("two"), 3),
            event(&base, "bob", react("👍", false), 4),
            event(&base, "carol", react("🎉", true), 5),
            event(&base, "bob", react("👍", true), 6),
        ];
        let forward: Vec<&ChangeEvent> = events.iter().collect();
        let expected = final_state(&base, &forward);
        assert_eq!(expected.0.as_deref(), Some("two"));
        assert_eq!(expected.2.len(), 2);
        let mut backward = forward.clone();
        backward.reverse();
        assert_eq!(final_state(&base, &backward), expected);
        let twice: Vec<&ChangeEvent> = forward.iter().chain(backward.iter()).copied().collect();
        assert_eq!(final_state(&base, &twice), expected);
        let shuffled = [
            &events[3], &events[0], &events[5], &events[2], &events[1], &events[4],
        ];
        assert_eq!(final_state(&base, &shuffled), expected);
    }

    #[test]
    fn a_delete_is_final_and_erases_the_body() {
        let base = message();
        let delete = event(&base, "alice", Change::Delete, 5);
        let later_edit = event(&base, "alice", edit("again"), 9);
        let earlier_edit = event(&base, "alice", edit("before"), 1);
        for order in [
            vec![&earlier_edit, &delete, &later_edit],
            vec![&later_edit, &delete, &earlier_edit],
        ] {
            let mut message = base.clone();
            let (_, announced) = apply_all(&mut message, &order, RULES, Utc::now());
            assert!(message.deleted);
            assert_eq!(message.body, None);
            assert!(message.reactions.is_empty());
            assert!(matches!(
                announced.last(),
                Some(AppliedChange::Deleted { .. })
            ));
        }
    }

    #[test]
    fn versions_count_applied_changes_and_repeats_do_not() {
        let base = message();
        let first = event(&base, "alice", edit("one"), 1);
        let mut message = base.clone();
        let (changed, announced) = apply_all(&mut message, &[&first, &first], RULES, Utc::now());
        assert!(changed);
        assert_eq!(message.version, Some(2));
        let versions: Vec<u64> = announced
            .iter()
            .map(|a| match a {
                AppliedChange::Edited { version, .. } => *version,
                _ => 0,
            })
            .collect();
        assert_eq!(versions, vec![2, 2]);
    }

    #[test]
    fn an_edit_by_someone_else_or_after_the_window_is_dropped() {
        let mut base = message();
        let by_bob = event(&base, "bob", edit("x"), 1);
        assert_eq!(apply(&mut base, &by_bob, RULES), Outcome::Dropped);
        base.sent_at = bson::DateTime::from_millis(0);
        let rules = Rules {
            edit_window: Some(chrono::Duration::hours(24)),
        };
        let late = event(&base, "alice", edit("x"), 2);
        assert_eq!(apply(&mut base, &late, rules), Outcome::Dropped);
        assert_eq!(
            check(&base, &Action::Edit, "alice", None, Utc::now(), rules),
            Err(Refusal::WindowPassed)
        );
    }

    #[test]
    fn the_checks_follow_the_rules() {
        let base = message();
        let now = Utc::now();
        assert_eq!(
            check(&base, &Action::Edit, "bob", Some(Role::Owner), now, RULES),
            Err(Refusal::Forbidden)
        );
        assert_eq!(
            check(
                &base,
                &Action::Delete,
                "bob",
                Some(Role::Member),
                now,
                RULES
            ),
            Err(Refusal::Forbidden)
        );
        assert_eq!(
            check(&base, &Action::Delete, "bob", Some(Role::Admin), now, RULES),
            Ok(())
        );
        let mut full = base.clone();
        for (n, emoji) in [
            "😀", "😁", "😂", "🤣", "😃", "😄", "😅", "😆", "😉", "😊", "😋", "😎", "😍", "😘",
            "🥰", "😗", "😙", "😚", "🙂", "🤗",
        ]
        .iter()
        .enumerate()
        {
            let e = event(&full.clone(), "bob", react(emoji, true), n as u64 + 1);
            assert_eq!(apply(&mut full, &e, RULES), Outcome::Changed);
        }
        let one_more = Action::React {
            emoji: Emoji::parse("🤩".into()).expect("emoji"),
            on: true,
        };
        assert_eq!(
            check(&full, &one_more, "carol", None, now, RULES),
            Err(Refusal::TooManyReactions)
        );
        let again = Action::React {
            emoji: Emoji::parse("😀".into()).expect("emoji"),
            on: true,
        };
        assert_eq!(check(&full, &again, "carol", None, now, RULES), Ok(()));
        let e = event(&full.clone(), "carol", react("🤩", true), 99);
        assert_eq!(apply(&mut full, &e, RULES), Outcome::Dropped);
        let mut deleted = base.clone();
        let delete = event(&base, "alice", Change::Delete, 1);
        apply(&mut deleted, &delete, RULES);
        assert_eq!(
            check(&deleted, &again, "carol", None, now, RULES),
            Err(Refusal::Deleted)
        );
        assert_eq!(
            check(&deleted, &Action::Edit, "alice", None, now, RULES),
            Err(Refusal::Deleted)
        );
    }
}
