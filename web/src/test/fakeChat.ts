/** A `ChatClient` on a fake socket, for component tests that need live frames. */
import { vi } from 'vitest';
import { ChatClient, type SocketLike } from '../connection';
import type { ClientFrame, RoomView, UserRef } from '../protocol';

export class FakeSocket implements SocketLike {
  readyState = 0;
  sent: ClientFrame[] = [];
  onopen: ((ev: Event) => void) | null = null;
  onclose: ((ev: CloseEvent) => void) | null = null;
  onmessage: ((ev: MessageEvent) => void) | null = null;
  onerror: ((ev: Event) => void) | null = null;

  send(data: string): void {
    this.sent.push(JSON.parse(data) as ClientFrame);
  }
  close(): void {
    this.readyState = 3;
  }
  open(): void {
    this.readyState = 1;
    this.onopen?.(new Event('open'));
  }
  receive(event: object): void {
    this.onmessage?.(new MessageEvent('message', { data: JSON.stringify(event) }));
  }
}

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
