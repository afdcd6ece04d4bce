//! Every permission of docs/rooms.md, decided in one place: [`decide`] takes what the store
//! knows about the room, the caller's membership and ban, and answers whether the action is
//! allowed and, if not, how the refusal is told (private rooms and DMs answer a non-member
//! exactly as a missing room). [`check_target`] adds the rules about the member acted upon
//! (the owner cannot be kicked, the last owner cannot leave).

use common::domain::{Role, RoomKind};

/// What the caller wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// See the room's view (`GET /api/rooms/{room}`).
    View,
    /// Enter the room: `POST …/join`, the WebSocket `join`. `create_on_join` says whether an
    /// id without a room creates one.
    Join { create_on_join: bool },
    /// Read history, the members list, move the read marker.
    Read,
    /// Add (invite) a member.
    AddMember,
    /// Kick, ban, unban, rename, set the topic or the visibility.
    Moderate,
    /// Change a member's role.
    ChangeRole,
    /// Archive the room.
    Archive,
    /// Leave (hide, for a DM).
    Leave,
}

/// What the store knows about a room that has a room document with a kind. A room id
/// without one (no document yet, or only the message counter the consumer keeps) is a room
/// nobody has created yet: it answers as missing (`not_found`, so that it cannot be told
/// from a private room), and a join creates it as a public room (`create_on_join`). Messages
/// stored before rooms existed are served once it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomFacts {
    pub kind: RoomKind,
    pub archived: bool,
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// `None`: no such room yet (see [`RoomFacts`]).
    pub room: Option<RoomFacts>,
    /// The caller's role, when a member.
    pub role: Option<Role>,
    /// Whether the caller is banned from the room.
    pub banned: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// A join of a room id that does not exist yet: create it, owned by the caller.
    Create,
    Refuse(Refusal),
}

/// Why an action is refused; each maps to one HTTP status and error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 404 `not_found`: no such room, or a private room or DM the caller is not in.
    NotFound,
    /// 403 `forbidden`: the room is public, the caller's role does not allow it.
    Forbidden,
    /// 403 `banned`.
    Banned,
    /// 409 `archived`: the room is read-only.
    Archived,
    /// 409 `owner`: the owner cannot be kicked or banned.
    Owner,
    /// 409 `last_owner`: the last owner cannot leave or step down.
    LastOwner,
}

/// The permission table of docs/rooms.md.
pub fn decide(action: Action, facts: Facts) -> Decision {
    use Decision::{Allow, Create, Refuse};
    let Facts { room, role, banned } = facts;
    let Some(room) = room else {
        return match action {
            Action::Join { .. } if banned => Refuse(Refusal::Banned),
            Action::Join {
                create_on_join: true,
            } => Create,
            // Leaving what you are not in changes nothing.
            Action::Leave => Allow,
            _ => Refuse(Refusal::NotFound),
        };
    };
    let public = room.kind == RoomKind::Public;
    // A non-member of a private room or DM learns nothing, not even that it exists.
    if role.is_none() && !public {
        return Refuse(Refusal::NotFound);
    }
    if banned && action != Action::Leave && action != Action::View {
        return Refuse(Refusal::Banned);
    }
    let Some(role) = role else {
        // A public room the caller is not in.
        return match action {
            Action::View | Action::Leave => Allow,
            Action::Join { .. } if room.archived => Refuse(Refusal::Archived),
            Action::Join { .. } => Allow,
            _ => Refuse(Refusal::Forbidden),
        };
    };
    let needs = |least: Role| {
        if room.kind == RoomKind::Dm {
            Refuse(Refusal::Forbidden)
        } else if room.archived {
            Refuse(Refusal::Archived)
        } else if role >= least {
            Allow
        } else {
            Refuse(Refusal::Forbidden)
        }
    };
    match action {
        Action::View | Action::Read | Action::Leave => Allow,
        Action::Join { .. } if room.archived => Refuse(Refusal::Archived),
        Action::Join { .. } => Allow,
        Action::AddMember if public => needs(Role::Member),
        Action::AddMember | Action::Moderate => needs(Role::Admin),
        Action::ChangeRole => needs(Role::Owner),
        // Archiving twice is no error.
        Action::Archive if room.archived && role == Role::Owner => Allow,
        Action::Archive => needs(Role::Owner),
    }
}

/// What is done to a member other than by [`decide`]'s table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetAction {
    /// Kick or ban a member with `target` role.
    Remove,
    /// The caller leaves, or an owner's role changes to something else.
    StepDown,
}

/// The rules about the member acted upon: nobody removes the owner, an admin removes only
/// plain members, and the last owner stays until another owner exists (`other_owners`).
pub fn check_target(
    action: TargetAction,
    actor: Role,
    target: Role,
    other_owners: bool,
) -> Result<(), Refusal> {
    match action {
        TargetAction::Remove if target == Role::Owner => Err(Refusal::Owner),
        TargetAction::Remove if target >= actor => Err(Refusal::Forbidden),
        TargetAction::Remove => Ok(()),
        TargetAction::StepDown if target == Role::Owner && !other_owners => Err(Refusal::LastOwner),
        TargetAction::StepDown => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::{Allow, Create, Refuse};
    use Refusal::*;

    const PUBLIC: Option<RoomFacts> = Some(RoomFacts {
        kind: RoomKind::Public,
        archived: false,
    });
    const PRIVATE: Option<RoomFacts> = Some(RoomFacts {
        kind: RoomKind::Private,
        archived: false,
    });
    const DM: Option<RoomFacts> = Some(RoomFacts {
        kind: RoomKind::Dm,
        archived: false,
    });
    const ARCHIVED: Option<RoomFacts> = Some(RoomFacts {
        kind: RoomKind::Public,
        archived: true,
    });
    const JOIN: Action = Action::Join {
        create_on_join: true,
    };
    const JOIN_NO_CREATE: Action = Action::Join {
        create_on_join: false,
    };

    /// One row of the table: action, room, the caller's role, banned, the decision.
    type Row = (Action, Option<RoomFacts>, Option<Role>, bool, Decision);

    fn facts(room: Option<RoomFacts>, role: Option<Role>, banned: bool) -> Facts {
        Facts { room, role, banned }
    }

    /// (action, room, role, banned) → decision: the table of docs/rooms.md, row by row.
    #[test]
    fn the_permission_table() {
        let owner = Some(Role::Owner);
        let admin = Some(Role::Admin);
        let member = Some(Role::Member);
        let table: &[Row] = &[
            // Join: public for anyone not banned, private and DM for members only.
            (JOIN, PUBLIC, None, false, Allow),
            (JOIN, PUBLIC, None, true, Refuse(Banned)),
            (JOIN, PUBLIC, member, false, Allow),
            (JOIN, PRIVATE, None, false, Refuse(NotFound)),
            (JOIN, PRIVATE, None, true, Refuse(NotFound)),
            (JOIN, PRIVATE, member, false, Allow),
            (JOIN, DM, None, false, Refuse(NotFound)),
            (JOIN, DM, member, false, Allow),
            (JOIN, ARCHIVED, None, false, Refuse(Archived)),
            (JOIN, ARCHIVED, owner, false, Refuse(Archived)),
            (JOIN, None, None, false, Create),
            (JOIN, None, None, true, Refuse(Banned)),
            (JOIN_NO_CREATE, None, None, false, Refuse(NotFound)),
            // Read history, members: members; a public room says forbidden, others not found.
            (Action::Read, PUBLIC, member, false, Allow),
            (Action::Read, PUBLIC, None, false, Refuse(Forbidden)),
            (Action::Read, PUBLIC, None, true, Refuse(Banned)),
            // Not created yet (history stored before rooms existed): as if missing, so that a
            // private room cannot be told from no room; joining creates it.
            (Action::Read, None, None, false, Refuse(NotFound)),
            (Action::Read, PRIVATE, None, false, Refuse(NotFound)),
            (Action::Read, DM, None, false, Refuse(NotFound)),
            (Action::Read, DM, member, false, Allow),
            (Action::Read, ARCHIVED, member, false, Allow),
            (Action::Read, PUBLIC, member, true, Refuse(Banned)),
            // View: public rooms to anyone, others to members.
            (Action::View, PUBLIC, None, false, Allow),
            (Action::View, PRIVATE, None, false, Refuse(NotFound)),
            (Action::View, None, None, false, Refuse(NotFound)),
            (Action::View, PRIVATE, member, false, Allow),
            // Add a member: any member of a public room, owner/admin of a private one.
            (Action::AddMember, PUBLIC, member, false, Allow),
            (Action::AddMember, PUBLIC, None, false, Refuse(Forbidden)),
            (Action::AddMember, PRIVATE, member, false, Refuse(Forbidden)),
            (Action::AddMember, PRIVATE, admin, false, Allow),
            (Action::AddMember, PRIVATE, owner, false, Allow),
            (Action::AddMember, PRIVATE, None, false, Refuse(NotFound)),
            (Action::AddMember, DM, member, false, Refuse(Forbidden)),
            (Action::AddMember, ARCHIVED, owner, false, Refuse(Archived)),
            (Action::AddMember, None, None, false, Refuse(NotFound)),
            // Kick, ban, unban, rename, topic: owner and admin.
            (Action::Moderate, PUBLIC, member, false, Refuse(Forbidden)),
            (Action::Moderate, PUBLIC, admin, false, Allow),
            (Action::Moderate, PRIVATE, owner, false, Allow),
            (Action::Moderate, PUBLIC, None, false, Refuse(Forbidden)),
            (Action::Moderate, PRIVATE, None, false, Refuse(NotFound)),
            (Action::Moderate, DM, member, false, Refuse(Forbidden)),
            (Action::Moderate, ARCHIVED, owner, false, Refuse(Archived)),
            // Roles and archiving: the owner.
            (Action::ChangeRole, PUBLIC, admin, false, Refuse(Forbidden)),
            (Action::ChangeRole, PUBLIC, owner, false, Allow),
            (Action::ChangeRole, DM, member, false, Refuse(Forbidden)),
            (Action::Archive, PRIVATE, admin, false, Refuse(Forbidden)),
            (Action::Archive, PRIVATE, owner, false, Allow),
            (Action::Archive, ARCHIVED, owner, false, Allow),
            (Action::Archive, ARCHIVED, admin, false, Refuse(Archived)),
            (Action::Archive, DM, member, false, Refuse(Forbidden)),
            // Leave: any member; a non-member of a public room changes nothing.
            (Action::Leave, PUBLIC, member, false, Allow),
            (Action::Leave, DM, member, false, Allow),
            (Action::Leave, ARCHIVED, member, false, Allow),
            (Action::Leave, PUBLIC, None, false, Allow),
            (Action::Leave, PRIVATE, None, false, Refuse(NotFound)),
            (Action::Leave, PUBLIC, member, true, Allow),
        ];
        for &(action, room, role, banned, expected) in table {
            assert_eq!(
                decide(action, facts(room, role, banned)),
                expected,
                "{action:?} in {room:?} as {role:?} (banned: {banned})"
            );
        }
    }

    #[test]
    fn the_owner_is_never_removed_and_admins_remove_only_members() {
        use TargetAction::*;
        let cases = [
            (Remove, Role::Owner, Role::Owner, true, Err(Owner)),
            (Remove, Role::Admin, Role::Owner, true, Err(Owner)),
            (Remove, Role::Owner, Role::Admin, false, Ok(())),
            (Remove, Role::Admin, Role::Admin, false, Err(Forbidden)),
            (Remove, Role::Admin, Role::Member, false, Ok(())),
            (StepDown, Role::Owner, Role::Owner, false, Err(LastOwner)),
            (StepDown, Role::Owner, Role::Owner, true, Ok(())),
            (StepDown, Role::Member, Role::Member, false, Ok(())),
        ];
        for (action, actor, target, others, expected) in cases {
            assert_eq!(
                check_target(action, actor, target, others),
                expected,
                "{action:?} {target:?} by {actor:?}"
            );
        }
    }
}
