import { describe, expect, it } from 'vitest';
import { can, memberControls, type Action } from './permissions';
import type { Role, RoomKind } from './protocol';

const roles: (Role | null)[] = ['owner', 'admin', 'member', null];

/** The table of docs/rooms.md, written out row by row: [action, kind, roles allowed]. */
const expected: [Action, RoomKind, (Role | null)[]][] = [
  ['invite', 'public', ['owner', 'admin', 'member']],
  ['invite', 'private', ['owner', 'admin']],
  ['invite', 'dm', []],
  ['kick', 'public', ['owner', 'admin']],
  ['kick', 'private', ['owner', 'admin']],
  ['kick', 'dm', []],
  ['ban', 'public', ['owner', 'admin']],
  ['ban', 'private', ['owner', 'admin']],
  ['ban', 'dm', []],
  ['unban', 'private', ['owner', 'admin']],
  ['edit', 'public', ['owner', 'admin']],
  ['edit', 'private', ['owner', 'admin']],
  ['edit', 'dm', []],
  ['changeRole', 'public', ['owner']],
  ['changeRole', 'private', ['owner']],
  ['changeRole', 'dm', []],
  ['archive', 'public', ['owner']],
  ['archive', 'private', ['owner']],
  ['archive', 'dm', []],
  ['leave', 'public', ['owner', 'admin', 'member']],
  ['leave', 'private', ['owner', 'admin', 'member']],
  ['leave', 'dm', ['owner', 'admin', 'member']],
];

describe('can', () => {
  it.each(expected)('%s in a %s room is allowed for %j only', (action, kind, allowed) => {
    for (const role of roles) expect(can(action, kind, role), `${role ?? 'non-member'}`).toBe(allowed.includes(role));
  });
});

describe('memberControls', () => {
  it('gives the owner every control over others, none over themselves', () => {
    expect(memberControls('private', 'owner', 'u1', { id: 'u2', role: 'admin' })).toEqual({ kick: true, ban: true, changeRole: true });
    expect(memberControls('private', 'owner', 'u1', { id: 'u1', role: 'owner' })).toEqual({ kick: false, ban: false, changeRole: false });
  });

  it('lets an admin kick and ban members but never the owner, and not change roles', () => {
    expect(memberControls('public', 'admin', 'u1', { id: 'u2', role: 'member' })).toEqual({ kick: true, ban: true, changeRole: false });
    expect(memberControls('public', 'admin', 'u1', { id: 'u3', role: 'owner' })).toEqual({ kick: false, ban: false, changeRole: false });
  });

  it('gives a plain member and anyone in a DM no controls', () => {
    expect(memberControls('public', 'member', 'u1', { id: 'u2', role: 'member' })).toEqual({ kick: false, ban: false, changeRole: false });
    expect(memberControls('dm', 'member', 'u1', { id: 'u2', role: 'member' })).toEqual({ kick: false, ban: false, changeRole: false });
  });
});
