/**
 * The user's rooms and direct messages, most recently active first, with
 * unread badges and the last message of each; and the ways to find more
 * (browse public rooms, create one, message someone); and the switch for desktop
 * notifications.
 */
import { useEffect, useSyncExternalStore } from 'react';
import type { ChatClient } from '../connection';
import type { NotificationApi } from '../notifications';
import type { RoomView } from '../protocol';
import { linkTo, roomHref } from '../routes';
import { displayName, sortedRooms, titleWithUnread, unreadBadge } from '../store';
import { NotificationToggle } from './NotificationToggle';

interface SidebarProps {
  client: ChatClient;
  /** The room on screen, highlighted. */
  current: string | null;
  meId: string;
  /** The browser's notifications (a fake in tests). */
  notifications?: NotificationApi;
}

export function Sidebar({ client, current, meId, notifications }: SidebarProps) {
  const state = useSyncExternalStore(client.subscribe, client.getSnapshot);
  const { list } = state;
  const rooms = sortedRooms(list, ['public', 'private']);
  const dms = sortedRooms(list, ['dm']);
  // The unread count in the window title, for a tab in the background.
  const title = titleWithUnread(list);
  useEffect(() => {
    document.title = title;
  }, [title]);
  useEffect(
    () => () => {
      document.title = titleWithUnread({ rooms: {}, loaded: false, error: null });
    },
    [],
  );
  return (
    <nav className="sidebar" aria-label="Conversations" data-testid="sidebar">
      <div className="sidebar-actions">
        <a className="button-link" {...linkTo('/browse')}>
          Browse
        </a>
        <a className="button-link" {...linkTo('/new')}>
          New room
        </a>
        <a className="button-link" {...linkTo('/dm')}>
          New message
        </a>
      </div>
      {list.error !== null && (
        <div className="sidebar-error" role="alert">
          {list.error}{' '}
          <button type="button" className="link" onClick={() => void client.refreshRooms()}>
            Retry
          </button>
        </div>
      )}
      {/* No aria-labelledby here: the heading says it, and a labelled region named "Rooms" would
          also answer to the label of the home screen's "Room" field. */}
      <section>
        <h2>Rooms</h2>
        {rooms.length === 0 && list.loaded && <p className="muted sidebar-empty">You are not in any room yet.</p>}
        {rooms.length === 0 && !list.loaded && list.error === null && (
          <div className="skeleton" role="status" data-testid="rooms-loading">
            <span className="visually-hidden">Loading your rooms…</span>
            {[0, 1, 2].map((i) => (
              <div key={i} className="skeleton-message" aria-hidden="true">
                <span className={i === 1 ? 'skeleton-line medium' : 'skeleton-line'} />
              </div>
            ))}
          </div>
        )}
        <ul className="room-links">
          {rooms.map((r) => (
            <RoomLink key={r.id} view={r} current={current === r.id} meId={meId} />
          ))}
        </ul>
      </section>
      <section>
        <h2>Direct messages</h2>
        {dms.length === 0 && list.loaded && <p className="muted sidebar-empty">No conversations yet.</p>}
        <ul className="room-links">
          {dms.map((r) => (
            <RoomLink key={r.id} view={r} current={current === r.id} meId={meId} />
          ))}
        </ul>
      </section>
      <div className="sidebar-footer">
        <NotificationToggle api={notifications} />
      </div>
    </nav>
  );
}

function RoomLink({ view, current, meId }: { view: RoomView; current: boolean; meId: string }) {
  const badge = unreadBadge(view);
  const last = view.last_message;
  const sigil = view.kind === 'dm' ? '@' : '#';
  return (
    <li>
      <a
        {...linkTo(roomHref(view.id))}
        className={badge !== null ? 'room-link unread' : 'room-link'}
        aria-current={current ? 'page' : undefined}
        data-testid="room-link"
        data-room={view.id}
      >
        <span className="room-link-title">
          <span className="room-link-name">
            {sigil}
            {displayName(view)}
          </span>
          {view.kind === 'private' && <span className="tag">private</span>}
          {badge !== null && (
            <span className="badge" data-testid="unread-badge">
              {badge}
              <span className="visually-hidden"> unread</span>
            </span>
          )}
        </span>
        {last !== null && (
          <span className="room-link-preview" data-testid="room-preview">
            {last.author.id === meId ? 'You' : last.author.username}: {last.preview.length > 0 ? last.preview : 'Message deleted'}
          </span>
        )}
      </a>
    </li>
  );
}
