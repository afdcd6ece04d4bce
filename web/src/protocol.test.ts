import { describe, expect, it } from 'vitest';
import {
  bodyLength,
  bodyProblem,
  encodeClientFrame,
  isValidRoomId,
  newClientId,
  parseHistoryPage,
  parseServerEvent,
} from './protocol';

const alice = { id: 'u1', username: 'alice' };
const message = {
  room: 'general',
  id: '01HZX3Y4Z5A6B7C8D9E0F1G2H3',
  client_id: 'c-1',
  author: alice,
  body: 'hello',
  sent_at: '2024-06-01T12:00:00Z',
};

describe('parseServerEvent', () => {
  it('parses a message event', () => {
    expect(parseServerEvent(JSON.stringify({ type: 'message', ...message }))).toEqual({ type: 'message', ...message });
  });

  it('parses joined and fills in the room of its messages', () => {
    const { room: _room, ...withoutRoom } = message;
    const event = parseServerEvent(
      JSON.stringify({ type: 'joined', room: 'general', members: [alice], messages: [withoutRoom] }),
    );
    expect(event).toEqual({
      type: 'joined',
      room: 'general',
      members: [alice],
      messages: [message],
      truncated: false,
      changes: [],
      changes_truncated: false,
      view: null,
    });
  });

  it('reads the truncated flag of a catch-up snapshot', () => {
    const event = parseServerEvent(JSON.stringify({ type: 'joined', room: 'r', members: [], messages: [], truncated: true }));
    expect(event).toMatchObject({ type: 'joined', truncated: true });
  });

  it('parses lagged', () => {
    expect(parseServerEvent('{"type":"lagged","room":"r","last_id":"01A"}')).toEqual({ type: 'lagged', room: 'r', last_id: '01A' });
    expect(parseServerEvent('{"type":"lagged","room":"r"}')).toEqual({ type: 'lagged', room: 'r', last_id: null });
  });

  it('parses ack, presence, typing, pong and error', () => {
    expect(parseServerEvent('{"type":"ack","client_id":"c","id":"01A","sent_at":"t"}')).toEqual({
      type: 'ack',
      client_id: 'c',
      id: '01A',
      sent_at: 't',
    });
    expect(
      parseServerEvent(JSON.stringify({ type: 'presence', room: 'r', user: alice, state: 'offline' })),
    ).toEqual({ type: 'presence', room: 'r', user: alice, state: 'offline' });
    expect(parseServerEvent(JSON.stringify({ type: 'typing', room: 'r', user: alice }))).toEqual({
      type: 'typing',
      room: 'r',
      user: alice,
    });
    expect(parseServerEvent('{"type":"pong"}')).toEqual({ type: 'pong' });
    expect(parseServerEvent('{"type":"error","code":"unavailable","message":"later","client_id":"c"}')).toEqual({
      type: 'error',
      code: 'unavailable',
      message: 'later',
      client_id: 'c',
    });
  });

  it('parses authenticated, the answer to an in-band token', () => {
    expect(parseServerEvent('{"type":"authenticated","expires_at":1717243200}')).toEqual({
      type: 'authenticated',
      expires_at: 1717243200,
    });
    expect(parseServerEvent('{"type":"authenticated","expires_at":"soon"}')).toBeNull();
  });

  it('treats a missing client_id on a message as null', () => {
    const { client_id: _c, ...rest } = message;
    expect(parseServerEvent(JSON.stringify({ type: 'message', ...rest }))).toEqual({
      type: 'message',
      ...rest,
      client_id: null,
    });
  });

  it('ignores extra fields', () => {
    expect(parseServerEvent('{"type":"pong","extra":1}')).toEqual({ type: 'pong' });
  });

  it.each([
    ['not json', '{oops'],
    ['a non-object', '[1,2]'],
    ['an unknown type', '{"type":"party"}'],
    ['a message without body', JSON.stringify({ type: 'message', ...message, body: undefined })],
    ['a message whose body is not a string', JSON.stringify({ type: 'message', ...message, body: { html: 'x' } })],
    ['a presence with an unknown state', JSON.stringify({ type: 'presence', room: 'r', user: alice, state: 'away' })],
    ['joined with a malformed member', JSON.stringify({ type: 'joined', room: 'r', members: [{ id: 1 }], messages: [] })],
  ])('rejects %s', (_name, text) => {
    expect(parseServerEvent(text)).toBeNull();
  });
});

describe('parseHistoryPage', () => {
  it('reads messages and has_more', () => {
    expect(parseHistoryPage({ messages: [message], has_more: true }, 'general')).toEqual({
      messages: [message],
      has_more: true,
    });
  });

  it('rejects a page without a message list', () => {
    expect(parseHistoryPage({ has_more: false }, 'general')).toBeNull();
  });
});

describe('client frames', () => {
  it('encodes as the JSON the gateway expects', () => {
    expect(JSON.parse(encodeClientFrame({ type: 'join', room: 'general', since: '01A' }))).toEqual({
      type: 'join',
      room: 'general',
      since: '01A',
    });
    expect(JSON.parse(encodeClientFrame({ type: 'send', room: 'r', client_id: 'c', body: 'b' }))).toEqual({
      type: 'send',
      room: 'r',
      client_id: 'c',
      body: 'b',
    });
  });
});

describe('validation', () => {
  it('accepts room ids of 1 to 64 letters, digits, dashes and underscores', () => {
    expect(isValidRoomId('general')).toBe(true);
    expect(isValidRoomId('a_b-C9')).toBe(true);
    expect(isValidRoomId('x'.repeat(64))).toBe(true);
    expect(isValidRoomId('')).toBe(false);
    expect(isValidRoomId('x'.repeat(65))).toBe(false);
    expect(isValidRoomId('with space')).toBe(false);
    expect(isValidRoomId('dot.dot')).toBe(false);
  });

  it('counts characters, not UTF-16 units', () => {
    expect(bodyLength('😀😀')).toBe(2);
    expect(bodyProblem('😀'.repeat(4000))).toBeNull();
    expect(bodyProblem('😀'.repeat(4001))).toMatch(/longer than 4000/);
    expect(bodyProblem('   ')).toMatch(/empty/);
  });

  it('makes distinct version 4 UUIDs', () => {
    const a = newClientId();
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(newClientId()).not.toBe(a);
  });
});

describe('rooms frames', () => {
  const view = {
    id: 'r1',
    kind: 'private',
    name: 'Team',
    topic: 'plans',
    created_by: 'u1',
    created_at: '2024-06-01T12:00:00Z',
    archived: false,
    member_count: 3,
    last_message: { id: '01B', author: alice, preview: 'hi', sent_at: '2024-06-01T12:01:00Z' },
    role: 'owner',
    unread: 4,
    unread_capped: false,
    read_id: '01A',
  };

  it('parses the room view of joined, room_added and room_updated', () => {
    const joined = parseServerEvent(JSON.stringify({ type: 'joined', room: 'r1', members: [], messages: [], view }));
    expect(joined).toMatchObject({ type: 'joined', view: { id: 'r1', kind: 'private', role: 'owner', unread: 4, dm_user: null } });
    expect(parseServerEvent(JSON.stringify({ type: 'room_added', room: view }))).toMatchObject({
      type: 'room_added',
      room: { name: 'Team', last_message: { id: '01B', preview: 'hi' } },
    });
    // A view sent to every member alike has no caller fields.
    const { role: _r, unread: _u, read_id: _i, ...shared } = view;
    expect(parseServerEvent(JSON.stringify({ type: 'room_updated', room: { ...shared, name: 'New' } }))).toMatchObject({
      type: 'room_updated',
      room: { name: 'New', role: null, unread: null, read_id: null },
    });
  });

  it('rejects a room view without an id or with an unknown kind', () => {
    expect(parseServerEvent(JSON.stringify({ type: 'room_added', room: { ...view, kind: 'secret' } }))).toBeNull();
    expect(parseServerEvent(JSON.stringify({ type: 'room_added', room: { kind: 'public' } }))).toBeNull();
  });

  it('parses removed and read', () => {
    expect(parseServerEvent('{"type":"removed","room":"r1","reason":"banned"}')).toEqual({ type: 'removed', room: 'r1', reason: 'banned' });
    expect(parseServerEvent('{"type":"removed","room":"r1","reason":"something-new"}')).toMatchObject({ reason: 'kicked' });
    expect(parseServerEvent('{"type":"read","room":"r1","id":"01C"}')).toEqual({ type: 'read', room: 'r1', id: '01C' });
    expect(parseServerEvent('{"type":"read","room":"r1"}')).toBeNull();
  });

  it('encodes the read frame', () => {
    expect(encodeClientFrame({ type: 'read', room: 'r1', id: '01C' })).toBe('{"type":"read","room":"r1","id":"01C"}');
  });
});

describe('frames of changing messages', () => {
  it('encodes edit, delete, react, a reply and a join with changes_since', () => {
    expect(JSON.parse(encodeClientFrame({ type: 'edit', room: 'r', id: 'M', body: 'b', client_id: 'c' }))).toEqual({
      type: 'edit',
      room: 'r',
      id: 'M',
      body: 'b',
      client_id: 'c',
    });
    expect(JSON.parse(encodeClientFrame({ type: 'delete', room: 'r', id: 'M', client_id: 'c' }))).toEqual({
      type: 'delete',
      room: 'r',
      id: 'M',
      client_id: 'c',
    });
    expect(JSON.parse(encodeClientFrame({ type: 'react', room: 'r', id: 'M', emoji: '👍', on: false, client_id: 'c' }))).toEqual({
      type: 'react',
      room: 'r',
      id: 'M',
      emoji: '👍',
      on: false,
      client_id: 'c',
    });
    expect(JSON.parse(encodeClientFrame({ type: 'send', room: 'r', client_id: 'c', body: 'b', reply_to: 'M' }))).toMatchObject({ reply_to: 'M' });
    expect(JSON.parse(encodeClientFrame({ type: 'join', room: 'r', since: 'M', changes_since: '2024-06-01T12:00:00Z' }))).toEqual({
      type: 'join',
      room: 'r',
      since: 'M',
      changes_since: '2024-06-01T12:00:00Z',
    });
  });

  it('parses edited, deleted and reactions', () => {
    expect(
      parseServerEvent(
        JSON.stringify({ type: 'edited', room: 'r', id: 'M', body: 'new', edited_at: 't1', version: 2, changed_at: 't2' }),
      ),
    ).toEqual({ type: 'edited', room: 'r', id: 'M', body: 'new', edited_at: 't1', version: 2, changed_at: 't2' });
    expect(
      parseServerEvent(JSON.stringify({ type: 'deleted', room: 'r', id: 'M', deleted_at: 't1', by: alice, version: 3, changed_at: 't2' })),
    ).toEqual({ type: 'deleted', room: 'r', id: 'M', deleted_at: 't1', by: alice, version: 3, changed_at: 't2' });
    expect(
      parseServerEvent(
        JSON.stringify({
          type: 'reactions',
          room: 'r',
          id: 'M',
          reactions: [{ emoji: '👍', count: 2 }],
          version: 4,
          by: alice,
          emoji: '👍',
          on: true,
          changed_at: 't2',
        }),
      ),
    ).toEqual({ type: 'reactions', room: 'r', id: 'M', reactions: [{ emoji: '👍', count: 2 }], version: 4, by: alice, emoji: '👍', on: true, changed_at: 't2' });
  });

  it('refuses change frames without a version or id', () => {
    expect(parseServerEvent(JSON.stringify({ type: 'edited', room: 'r', id: 'M', body: 'x', edited_at: 't' }))).toBeNull();
    expect(parseServerEvent(JSON.stringify({ type: 'deleted', room: 'r', version: 2 }))).toBeNull();
  });

  it('parses a message with version, edit time, reactions with the reader\'s flag, and a reply', () => {
    const event = parseServerEvent(
      JSON.stringify({
        type: 'message',
        ...message,
        version: 3,
        edited_at: 't1',
        reactions: [{ emoji: '🎉', count: 1, me: true }],
        reply_to: { id: 'P', author: alice, excerpt: 'the question' },
        changed_at: 't2',
      }),
    );
    expect(event).toEqual({
      type: 'message',
      ...message,
      version: 3,
      edited_at: 't1',
      reactions: [{ emoji: '🎉', count: 1, me: true }],
      reply_to: { id: 'P', author: alice, excerpt: 'the question' },
      changed_at: 't2',
    });
  });

  it('parses a tombstone (no body) and a reply to a deleted message in a history page', () => {
    const page = parseHistoryPage(
      {
        messages: [
          { id: 'A', client_id: 'c', author: alice, sent_at: 't', deleted: true, deleted_at: 't2', version: 2 },
          { id: 'B', client_id: 'd', author: alice, body: 're', sent_at: 't', reply_to: { id: 'A', author: alice, deleted: true } },
        ],
        has_more: false,
      },
      'r',
    );
    expect(page!.messages[0]).toMatchObject({ id: 'A', body: '', deleted: true, version: 2 });
    expect(page!.messages[1]!.reply_to).toEqual({ id: 'A', author: alice, deleted: true });
  });

  it('parses joined with changes and changes_truncated', () => {
    const { room: _room, ...withoutRoom } = message;
    const event = parseServerEvent(
      JSON.stringify({ type: 'joined', room: 'general', members: [], messages: [], changes: [{ ...withoutRoom, version: 2 }], changes_truncated: true }),
    );
    expect(event).toMatchObject({ type: 'joined', changes: [{ ...message, version: 2 }], changes_truncated: true });
  });
});
