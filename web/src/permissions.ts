/**
 * Who may do what in a room: the permission table of docs/rooms.md, in the
 * one place the client consults it. The server decides every action for
 * itself; this table only decides which controls the client shows, so a
 * control that is hidden here would be refused there.
 */
import type { Role, RoomKind } from './protocol';

export type Action =
  /** Add a member by username. */
  | 'invite'
  | 'kick'
  | 'ban'
  | 'unban'
  /** Rename, set the topic, switch public/private. */
  | 'edit'
  | 'changeRole'
  | 'archive'
  | 'leave';

type Table = Record<Action, Record<RoomKind, readonly Role[]>>;

const ANY_MEMBER: readonly Role[] = ['owner', 'admin', 'member'];
const MODERATORS: readonly Role[] = ['owner', 'admin'];
const OWNER: readonly Role[] = ['owner'];
const NOBODY: readonly Role[] = [];

/** docs/rooms.md, "Permissions": action × kind → the roles allowed. */
export const PERMISSIONS: Table = {
  invite: { public: ANY_MEMBER, private: MODERATORS, dm: NOBODY },
  kick: { public: MODERATORS, private: MODERATORS, dm: NOBODY },
  ban: { public: MODERATORS, private: MODERATORS, dm: NOBODY },
  unban: { public: MODERATORS, private: MODERATORS, dm: NOBODY },
  edit: { public: MODERATORS, private: MODERATORS, dm: NOBODY },
  changeRole: { public: OWNER, private: OWNER, dm: NOBODY },
  archive: { public: OWNER, private: OWNER, dm: NOBODY },
  // In a DM, leaving hides the conversation from the list.
  leave: { public: ANY_MEMBER, private: ANY_MEMBER, dm: ANY_MEMBER },
};

/** Whether a member with `role` may do `action` in a room of `kind`; non-members (`null`) may do none of them. */
export function can(action: Action, kind: RoomKind, role: Role | null): boolean {
  return role !== null && PERMISSIONS[action][kind].includes(role);
}

/** The actions one member may take on another, as the members panel offers them. */
export interface MemberControls {
  kick: boolean;
  ban: boolean;
  changeRole: boolean;
}

/**
 * What `me` (with `myRole`) may do to a member with `targetRole`: nothing to
 * oneself (leaving has its own control), and the owner can be neither kicked
 * nor banned (the server answers `409 owner`).
 */
export function memberControls(
  kind: RoomKind,
  myRole: Role | null,
  meId: string,
  target: { id: string; role: Role },
): MemberControls {
  if (target.id === meId) return { kick: false, ban: false, changeRole: false };
  const notOwner = target.role !== 'owner';
  return {
    kick: notOwner && can('kick', kind, myRole),
    ban: notOwner && can('ban', kind, myRole),
    changeRole: can('changeRole', kind, myRole),
  };
}

/**
 * Whether the user may delete messages of others in a room: owners and admins of public
 * and private rooms (docs/protocol.md, "Changing messages"). Everyone may delete their own.
 */
export function canDeleteOthers(kind: RoomKind, role: Role | null): boolean {
  return kind !== 'dm' && (role === 'owner' || role === 'admin');
}

/** Which changes of one message the user is offered. Edits: the author only; nothing on a deleted message. */
export function messageControls(
  meId: string,
  message: { author: { id: string }; deleted?: boolean },
  deleteOthers: boolean,
): { edit: boolean; delete: boolean; react: boolean; reply: boolean } {
  if (message.deleted === true) return { edit: false, delete: false, react: false, reply: false };
  const mine = message.author.id === meId;
  return { edit: mine, delete: mine || deleteOthers, react: true, reply: true };
}
