/** One room: connection banner, conversation, typing line, send box and who is online. */
import { useCallback, useEffect, useState, useSyncExternalStore } from 'react';
import type { ChatClient } from '../connection';
import type { UserRef } from '../protocol';
import { typingNames } from '../store';
import { Composer } from './Composer';
import { ConnectionBanner } from './ConnectionBanner';
import { MemberList } from './MemberList';
import { MessageList } from './MessageList';
import { TypingIndicator } from './TypingIndicator';

interface ChatViewProps {
  client: ChatClient;
  room: string;
  me: UserRef;
}

export function ChatView({ client, room, me }: ChatViewProps) {
  const state = useSyncExternalStore(client.subscribe, client.getSnapshot);
  const [showMembers, setShowMembers] = useState(false);

  useEffect(() => {
    client.join(room);
    return () => client.leave(room);
  }, [client, room]);

  const onLoadOlder = useCallback(() => void client.loadOlder(room), [client, room]);
  const onRetry = useCallback((clientId: string) => client.retry(clientId), [client]);
  const onSend = useCallback((body: string) => void client.send(room, body), [client, room]);
  const onTyping = useCallback(() => client.typing(room), [client, room]);

  const r = state.rooms[room];
  const members = r?.members ?? [];

  return (
    <div className="chat">
      <div className="chat-header">
        <h1>
          <span aria-hidden="true">#</span>
          {room}
        </h1>
        <button
          type="button"
          className="members-toggle"
          aria-expanded={showMembers}
          aria-controls="room-members"
          onClick={() => setShowMembers((v) => !v)}
        >
          Online ({members.length})
        </button>
      </div>
      <ConnectionBanner connection={state.connection} onRetryNow={() => client.reconnectNow()} />
      {r?.error != null && (
        <div className="banner banner-error" role="alert">
          {r.error}
        </div>
      )}
      <div className={showMembers ? 'chat-body members-open' : 'chat-body'}>
        <div className="conversation">
          {r === undefined ? null : (
            <MessageList
              room={r}
              connected={state.connection.status === 'open'}
              meId={me.id}
              meName={me.username}
              onLoadOlder={onLoadOlder}
              onRetry={onRetry}
            />
          )}
          <TypingIndicator names={typingNames(r, me.id)} />
          <Composer room={room} onSend={onSend} onTyping={onTyping} />
        </div>
        <MemberList id="room-members" members={members} meId={me.id} />
      </div>
    </div>
  );
}
