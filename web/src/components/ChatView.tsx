/**
 * One room: its name and topic, connection banner, conversation, typing line,
 * send box and members; settings and leaving for those allowed. A room the
 * user may not enter, or was taken out of, says so in place of the
 * conversation.
 */
import { useCallback, useEffect, useState, useSyncExternalStore } from 'react';
import { removeMember } from '../api';
import type { ChatClient } from '../connection';
import { can, canDeleteOthers } from '../permissions';
import type { RemovalReason, ReplyRef, UserRef, WireMessage } from '../protocol';
import { linkTo, navigate } from '../routes';
import { displayName, previewOf, typingNames, unreadDividerId, type RoomDenial } from '../store';
import { problemText, useApi } from './ApiContext';
import { Composer } from './Composer';
import { ConnectionBanner } from './ConnectionBanner';
import { MemberList } from './MemberList';
import { MessageList, type MessageActions } from './MessageList';
import { RoomSettings } from './RoomSettings';
import { TypingIndicator } from './TypingIndicator';

interface ChatViewProps {
  client: ChatClient;
  room: string;
  me: UserRef;
}

export const REMOVAL_NOTICES: Record<RemovalReason, string> = {
  kicked: 'You were removed from this room.',
  banned: 'You were banned from this room.',
  left: 'You left this room.',
  archived: 'This room was archived. It is read-only now.',
};

/** What a refused join means for the user; the server's message for codes this client does not know. */
export function denialText(denial: RoomDenial): string {
  switch (denial.code) {
    case 'not_found':
      return 'This room does not exist, or it is private and you are not a member.';
    case 'forbidden':
      return 'You are not allowed to enter this room.';
    case 'banned':
      return 'You are banned from this room.';
    case 'archived':
      return 'This room is archived: it can no longer be joined.';
    default:
      return denial.message;
  }
}

export function ChatView({ client, room, me }: ChatViewProps) {
  const state = useSyncExternalStore(client.subscribe, client.getSnapshot);
  const api = useApi();
  const [showMembers, setShowMembers] = useState(false);
  const [showSettings, setShowSettings] = useState(false);
  const [confirmLeave, setConfirmLeave] = useState(false);
  const [problem, setProblem] = useState<string | null>(null);
  /** The room's members as the members panel last loaded them, offered after `@`. */
  const [listed, setListed] = useState<UserRef[]>([]);

  useEffect(() => {
    client.open(room);
    return () => client.close(room);
  }, [client, room]);

  const onLoadOlder = useCallback(() => void client.loadOlder(room), [client, room]);
  const onRetry = useCallback((clientId: string) => client.retry(clientId), [client]);
  const [replyTo, setReplyTo] = useState<ReplyRef | null>(null);
  const [editing, setEditing] = useState<string | null>(null);
  useEffect(() => {
    setReplyTo(null);
    setEditing(null);
  }, [room]);
  const onSend = useCallback(
    (body: string) => {
      void client.send(room, body, replyTo ?? undefined);
      setReplyTo(null);
    },
    [client, room, replyTo],
  );
  const onTyping = useCallback(() => client.typing(room), [client, room]);
  const onReloadLatest = useCallback(() => client.reloadLatest(room), [client, room]);

  const r = state.rooms[room];
  const view = state.list.rooms[room];
  const members = r?.members ?? [];
  const name = view !== undefined ? displayName(view) : room;
  const kind = view?.kind ?? 'public';
  const role = view?.role ?? null;
  const sigil = kind === 'dm' ? '@' : '#';
  const blocked = r?.denied != null || r?.removed != null;
  // Members listed, and anyone online the list did not have yet (they just joined a public room).
  const mentionable = [...listed, ...members];

  const focusComposer = () => document.querySelector<HTMLTextAreaElement>('[data-testid="composer"] textarea')?.focus();
  const actions: MessageActions = {
    deleteOthers: canDeleteOthers(kind, role),
    editing,
    onStartEdit: (id) => {
      setEditing(id);
      if (id === null) setTimeout(focusComposer, 0);
    },
    onEdit: (id, body) => void client.edit(room, id, body),
    onDelete: (id) => void client.remove(room, id),
    onReact: (id, emoji, on) => void client.react(room, id, emoji, on),
    onReply: (m: WireMessage) => {
      setReplyTo({ id: m.id, author: m.author, excerpt: previewOf(m.body) });
      setTimeout(focusComposer, 0);
    },
    onDismissChange: (clientId) => client.dismissChange(clientId),
  };
  /** ↑ in an empty composer: the user's last message that is not deleted. */
  const onEditLast = () => {
    const last = [...(r?.messages ?? [])].reverse().find((m) => m.author.id === me.id && m.deleted !== true);
    if (last === undefined) return false;
    setEditing(last.id);
    return true;
  };

  const leave = async () => {
    setProblem(null);
    try {
      await api((t) => removeMember(t, room, me.id));
      client.forget(room);
      navigate('/');
    } catch (e) {
      setProblem(problemText(e));
      setConfirmLeave(false);
    }
  };

  return (
    <div className="chat">
      <div className="chat-header">
        <div className="chat-title">
          <h1>
            <span aria-hidden="true">{sigil}</span>
            {name}
          </h1>
          {view !== undefined && view.topic.length > 0 && (
            <p className="topic muted" data-testid="room-topic">
              {view.topic}
            </p>
          )}
        </div>
        {!blocked && (
          <div className="chat-actions">
            {view !== undefined && can('edit', kind, role) && (
              <button type="button" className="secondary" aria-expanded={showSettings} onClick={() => setShowSettings((v) => !v)}>
                Settings
              </button>
            )}
            {view !== undefined && can('leave', kind, role) && (
              <button type="button" className="secondary" onClick={() => setConfirmLeave(true)}>
                {kind === 'dm' ? 'Hide' : 'Leave'}
              </button>
            )}
            <button
              type="button"
              className="members-toggle"
              aria-expanded={showMembers}
              aria-controls="room-members"
              onClick={() => setShowMembers((v) => !v)}
            >
              Members
            </button>
          </div>
        )}
      </div>
      <ConnectionBanner connection={state.connection} onRetryNow={() => client.reconnectNow()} />
      {r?.catchingUp === true && state.connection.status === 'open' && !blocked && (
        <div className="banner banner-info" role="status" data-testid="catching-up">
          Catching up…
        </div>
      )}
      {confirmLeave && (
        <div className="banner banner-confirm" role="alertdialog" aria-label="Confirm">
          {kind === 'dm'
            ? 'Hide this conversation from your list? It comes back when either of you writes a new direct message.'
            : role === 'owner'
              ? 'Leave this room? As its owner, hand the ownership to someone else first.'
              : 'Leave this room? You will need an invitation or the directory to come back.'}{' '}
          <button type="button" className="danger" onClick={() => void leave()}>
            {kind === 'dm' ? 'Hide conversation' : 'Leave room'}
          </button>{' '}
          <button type="button" className="link" onClick={() => setConfirmLeave(false)}>
            Cancel
          </button>
        </div>
      )}
      {problem !== null && (
        <div className="banner banner-error" role="alert">
          {problem}
        </div>
      )}
      {r?.error != null && !blocked && (
        <div className="banner banner-error" role="alert">
          {r.error}
        </div>
      )}
      {showSettings && view !== undefined && !blocked && (
        <RoomSettings view={view} onSaved={(v) => client.addRoom(v)} onClose={() => setShowSettings(false)} />
      )}
      {r?.denied != null ? (
        <div className="room-notice" role="alert" data-testid="room-denied" data-code={r.denied.code}>
          <p>{denialText(r.denied)}</p>
          <a {...linkTo('/')}>Back to your rooms</a>
        </div>
      ) : (
        <div className={showMembers ? 'chat-body members-open' : 'chat-body'}>
          <div className="conversation">
            {r === undefined ? null : (
              <MessageList
                room={r}
                title={name}
                connected={state.connection.status === 'open'}
                meId={me.id}
                meName={me.username}
                onLoadOlder={onLoadOlder}
                onRetry={onRetry}
                onReloadLatest={onReloadLatest}
                actions={actions}
                unreadFrom={unreadDividerId(state, room, me.id)}
              />
            )}
            {r?.removed != null ? (
              <div className="room-notice" role="alert" data-testid="room-removed" data-reason={r.removed}>
                <p>{REMOVAL_NOTICES[r.removed]}</p>
              </div>
            ) : (
              <>
                <TypingIndicator names={typingNames(r, me.id)} />
                {view?.archived === true ? (
                  <p className="room-notice muted">{REMOVAL_NOTICES.archived}</p>
                ) : (
                  <Composer
                    room={name}
                    sigil={sigil}
                    onSend={onSend}
                    onTyping={onTyping}
                    draftKey={room}
                    replyTo={replyTo}
                    onCancelReply={() => {
                      setReplyTo(null);
                      focusComposer();
                    }}
                    onEditLast={onEditLast}
                    members={mentionable}
                    meId={me.id}
                  />
                )}
              </>
            )}
          </div>
          {r?.removed == null && (
            <MemberList
              id="room-members"
              room={room}
              kind={kind}
              myRole={role}
              online={members}
              live={r?.joined === true}
              // Online state comes only from this connection's join of the room (`joined`, then
              // `presence`): unknown while offline and until a reconnect has joined again.
              presenceKnown={state.connection.status === 'open' && r?.joined === true}
              meId={me.id}
              version={view?.member_count ?? 0}
              onMembers={setListed}
            />
          )}
        </div>
      )}
    </div>
  );
}
