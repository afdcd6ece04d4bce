/** A `ChatClient` on a fake socket, for component tests that need live frames. */
import { vi } from 'vitest';
import { ChatClient, type SocketLike } from '../connection';
import type { ClientFrame, RoomView, UserRef } from '../protocol';

/** The browser's socket as the client sees it, driven from the test as the server. */
export class FakeSocket implements SocketLike {
  readyState = 0;
  sent: ClientFrame[] = [];
  closed = false;
  onopen: ((ev: Event) => void) | null = null;
  onclose: ((ev: CloseEvent) => void) | null = null;
  onmessage: ((ev: MessageEvent) => void) | null = null;
  onerror: ((ev: Event) => void) | null = null;

  constructor(readonly url = 'ws://test/ws') {}

  send(data: string): void {
    this.sent.push(JSON.parse(data) as ClientFrame);
  }
  close(): void {
    this.closed = true;
    this.readyState = 3;
  }
  // Server side:
  open(): void {
    this.readyState = 1;
    this.onopen?.(new Event('open'));
  }
  receive(event: object): void {
    this.onmessage?.(new MessageEvent('message', { data: JSON.stringify(event) }));
  }
  drop(code = 1006): void {
    this.readyState = 3;
    this.onclose?.(new CloseEvent('close', { code }));
  }
  framesOf<T extends ClientFrame['type']>(type: T): Extract<ClientFrame, { type: T }>[] {
    return this.sent.filter((f): f is Extract<ClientFrame, { type: T }> => f.type === type);
  }
}

/** A room as the rooms API lists it: public, the user a member, nothing unread, no message yet. */
export function roomView(id: string, extra: Partial<RoomView> = {}): RoomView {
  return {
    id,
    kind: 'public',
    name: id,
    topic: '',
    created_by: 'u1',
    created_at: '2024-06-01T00:00:00Z',
    archived: false,
    member_count: 2,
    last_message: null,
    last_activity: null,
    role: 'member',
    unread: 0,
    unread_capped: false,
    read_id: null,
    dm_user: null,
    ...extra,
  };
}

/** A started client whose socket is open, with the given room list. */
export async function fakeChat(me: UserRef, rooms: RoomView[] = []) {
  const socket = new FakeSocket();
  const fetchRooms = vi.fn(async () => rooms);
  const client = new ChatClient({
    me,
    url: () => 'ws://test/ws',
    createSocket: () => socket,
    fetchHistory: async () => ({ messages: [], has_more: false }),
    fetchRooms,
    readDelayMs: 0,
  });
  client.start();
  socket.open();
  await vi.waitFor(() => {
    if (!client.getSnapshot().list.loaded) throw new Error('list not loaded');
  });
  return { client, socket, fetchRooms };
}
