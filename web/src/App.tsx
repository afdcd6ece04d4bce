/**
 * The application shell: signed out it shows log-in or sign-up; signed in it
 * owns the session's `TokenManager` and the user's `ChatClient` for as long
 * as the session lasts, and shows the sidebar of the user's rooms next to
 * the screen the address names (a room, the directory, a form).
 */
import { useCallback, useEffect, useState, type ReactNode } from 'react';
import { ApiError, fetchChanges, fetchHistory, listRooms, logout, me, refresh, webSocketUrl } from './api';
import { ChatClient } from './connection';
import { ApiContext, type WithToken } from './components/ApiContext';
import { BrowseRooms } from './components/BrowseRooms';
import { ChatView } from './components/ChatView';
import { LoginForm } from './components/LoginForm';
import { NewDm } from './components/NewDm';
import { NewRoom } from './components/NewRoom';
import { RoomPicker } from './components/RoomPicker';
import { Sidebar } from './components/Sidebar';
import { SignupForm } from './components/SignupForm';
import type { RoomView } from './protocol';
import { linkTo, navigate, roomHref, useRoute } from './routes';
import { clearSession, loadSession, parseSession, saveSession, SESSION_KEY, sharedTokenStore, type Session } from './session';
import { Notifier, browserNotifications } from './notifications';
import { TokenManager, type SessionEnd } from './tokens';

export const ENDED_NOTICE = 'Your session has ended. Please log in again.';

function endNotice(why: SessionEnd): string | null {
  // Logged out in another tab: the user did it, nothing to explain.
  return why === 'elsewhere' ? null : ENDED_NOTICE;
}

export function App() {
  const [session, setSession] = useState<Session | null>(() => loadSession());
  const [notice, setNotice] = useState<string | null>(null);
  const route = useRoute();

  const signedIn = useCallback((s: Session) => {
    saveSession(s);
    setNotice(null);
    setSession(s);
    // Signing in from a shared room link lands in that room.
    if (window.location.pathname === '/login' || window.location.pathname === '/signup') navigate('/', { replace: true });
  }, []);

  const signOut = useCallback((why: string | null) => {
    clearSession();
    setNotice(why);
    setSession(null);
  }, []);

  // The tabs of the browser share the session: a log-in or log-out in another tab happens here too.
  useEffect(() => {
    const onStorage = (e: StorageEvent) => {
      if (e.key !== SESSION_KEY && e.key !== null) return;
      const next = parseSession(e.key === null ? null : e.newValue);
      setSession((current) => {
        if (next === null) return null;
        // The same sign-in with new tokens: its `SignedIn` takes them (`TokenManager.adopt`).
        return current !== null && current.id === next.id ? current : next;
      });
      if (next !== null) setNotice(null);
    };
    window.addEventListener('storage', onStorage);
    return () => window.removeEventListener('storage', onStorage);
  }, []);

  if (session === null) {
    return (
      <div className="app signed-out">
        <header className="topbar">
          <span className="brand">Chat</span>
        </header>
        <main className="auth-main">
          {route.screen === 'signup' ? (
            <SignupForm onSignedIn={signedIn} />
          ) : (
            <LoginForm onSignedIn={signedIn} notice={notice} />
          )}
        </main>
      </div>
    );
  }
  // Keyed by the sign-in, not the token: refreshing the token must not restart the connection.
  return <SignedIn key={session.id} session={session} onSignOut={signOut} />;
}

/** The server refused even a freshly refreshed token: give the session up there too, and sign out. */
function refused(tokens: TokenManager, onSignOut: (why: string | null) => void): void {
  void tokens.logout();
  onSignOut(ENDED_NOTICE);
}

interface SignedInProps {
  session: Session;
  onSignOut: (why: string | null) => void;
}

function SignedIn({ session, onSignOut }: SignedInProps) {
  const { user } = session;
  const route = useRoute();
  const [tokens] = useState(
    () =>
      new TokenManager({
        tokens: session.tokens,
        refresh,
        logout,
        store: sharedTokenStore(session),
        onEnded: (why) => onSignOut(endNotice(why)),
      }),
  );
  const [client] = useState(
    () =>
      new ChatClient({
        me: { id: user.id, username: user.username },
        url: () => webSocketUrl(tokens.accessToken),
        fetchHistory: (room, cursor, limit) => tokens.withToken((token) => fetchHistory(token, room, cursor, limit)),
        fetchChanges: (room, afterMs, limit) => tokens.withToken((token) => fetchChanges(token, room, afterMs, limit)),
        checkToken: async () => {
          try {
            await tokens.withToken(me);
            return true;
          } catch (e) {
            if (e instanceof ApiError && e.status === 401) return false;
            throw e;
          }
        },
        renewToken: () => tokens.ensureFresh(),
        onUnauthorized: () => refused(tokens, onSignOut),
        fetchRooms: () => tokens.withToken(listRooms),
      }),
  );
  const [api] = useState<WithToken>(
    () =>
      <T,>(call: (accessToken: string) => Promise<T>) =>
        tokens.withToken(call),
  );

  useEffect(() => {
    let active = true;
    // New tokens, refreshed here (and stored by the token manager) or in another tab.
    const unsubscribe = tokens.subscribe((fresh) => client.authenticate(fresh.accessToken));
    const onStorage = (e: StorageEvent) => {
      if (e.key !== SESSION_KEY) return;
      const stored = parseSession(e.newValue);
      if (stored !== null && stored.id === session.id) tokens.adopt(stored.tokens);
    };
    window.addEventListener('storage', onStorage);
    tokens.start();
    // An access token that expired while the tab was closed or asleep is renewed before connecting;
    // if the server cannot be reached, the client's own retries take over.
    tokens
      .ensureFresh()
      .catch(() => {})
      .finally(() => {
        if (active) client.start();
      });
    // The server may refuse a token the clock still calls valid (e.g. after a key change):
    // find out now, by the same refresh-and-retry as every other call, not on the first failure.
    tokens.withToken(me).catch((e: unknown) => {
      if (active && e instanceof ApiError && e.status === 401) refused(tokens, onSignOut);
    });
    // Timers stand still while the computer sleeps and are slowed in background tabs.
    // A hidden tab also does not mark what arrives in its open room as read.
    client.setVisible(document.visibilityState === 'visible');
    const wake = () => {
      const visible = document.visibilityState === 'visible';
      client.setVisible(visible);
      if (visible) tokens.wake();
    };
    const online = () => {
      tokens.wake();
      client.setOnline(true);
    };
    const offline = () => client.setOnline(false);
    document.addEventListener('visibilitychange', wake);
    window.addEventListener('online', online);
    window.addEventListener('offline', offline);
    return () => {
      active = false;
      document.removeEventListener('visibilitychange', wake);
      window.removeEventListener('online', online);
      window.removeEventListener('offline', offline);
      window.removeEventListener('storage', onStorage);
      unsubscribe();
      client.stop();
      tokens.stop();
    };
  }, [client, tokens, session, onSignOut]);

  // Desktop notifications for DMs and mentions (when the user turned them on).
  useEffect(() => {
    const notifier = new Notifier({
      me: { id: user.id, username: user.username },
      api: browserNotifications,
      state: client.getSnapshot,
      openRoom: (r) => navigate(roomHref(r)),
    });
    return client.onLiveMessage(notifier.message);
  }, [client, user.id, user.username]);

  const logOut = useCallback(() => {
    // Revokes the session on the server in the background; the screen changes at once.
    void tokens.logout();
    onSignOut(null);
  }, [tokens, onSignOut]);

  const room = route.screen === 'room' ? route.room : null;

  const onAuthScreen = route.screen === 'login' || route.screen === 'signup';
  useEffect(() => {
    if (onAuthScreen) navigate('/', { replace: true });
  }, [onAuthScreen]);

  const openRoom = useCallback((r: string) => navigate(roomHref(r)), []);
  const added = useCallback(
    (view: RoomView) => {
      client.addRoom(view);
      navigate(roomHref(view.id));
    },
    [client],
  );

  let screen: ReactNode;
  switch (route.screen) {
    case 'room':
      screen = <ChatView key={route.room} client={client} room={route.room} me={user} />;
      break;
    case 'browse':
      screen = (
        <BrowseRooms isMember={(r) => client.getSnapshot().list.rooms[r] !== undefined} onJoined={added} onOpen={openRoom} />
      );
      break;
    case 'newRoom':
      screen = <NewRoom onCreated={added} />;
      break;
    case 'newDm':
      screen = <NewDm meId={user.id} onOpened={added} />;
      break;
    default:
      screen = <RoomPicker onOpen={openRoom} />;
  }
  const home = route.screen === 'rooms' || onAuthScreen;

  return (
    <ApiContext.Provider value={api}>
      <div className={home ? 'app signed-in at-home' : 'app signed-in'}>
        <header className="topbar">
          {!home ? (
            <a className="back" {...linkTo('/')}>
              <span aria-hidden="true">←</span> Rooms
            </a>
          ) : (
            <span className="brand">Chat</span>
          )}
          <span className="whoami" data-testid="current-user">
            {user.username}
          </span>
          <button type="button" className="secondary" onClick={logOut}>
            Log out
          </button>
        </header>
        <div className="workspace">
          <Sidebar client={client} current={room} meId={user.id} />
          <main className={room !== null ? 'chat-main' : 'picker-main'}>{screen}</main>
        </div>
      </div>
    </ApiContext.Provider>
  );
}
