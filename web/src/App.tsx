/**
 * The application shell: signed out it shows log-in or sign-up; signed in it
 * owns the session's `TokenManager` and the user's `ChatClient` for as long
 * as the session lasts, and shows the room picker or a room.
 */
import { useCallback, useEffect, useState } from 'react';
import { ApiError, fetchHistory, logout, me, refresh, webSocketUrl } from './api';
import { ChatClient } from './connection';
import { ChatView } from './components/ChatView';
import { LoginForm } from './components/LoginForm';
import { RoomPicker } from './components/RoomPicker';
import { SignupForm } from './components/SignupForm';
import { navigate, roomHref, useRoute } from './routes';
import { clearSession, forgetRoom, loadSession, recentRooms, rememberRoom, saveSession, type Session } from './session';
import { claimSession, TokenManager, type SessionEnd } from './tokens';

export const ENDED_NOTICE = 'Your session has ended. Please log in again.';
export const TAKEN_NOTICE =
  'This tab was copied from another tab that is signed in. Each tab keeps its own session: log in to use this one.';

function endNotice(why: SessionEnd): string {
  return why === 'taken' ? TAKEN_NOTICE : ENDED_NOTICE;
}

export function App() {
  const [session, setSession] = useState<Session | null>(() => loadSession());
  const [notice, setNotice] = useState<string | null>(null);
  const route = useRoute();

  const signedIn = useCallback((s: Session) => {
    saveSession(s);
    setNotice(null);
    setSession(s);
    navigate('#/');
  }, []);

  const signOut = useCallback((why: string | null) => {
    clearSession();
    setNotice(why);
    setSession(null);
    navigate('#/login');
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
  const [recent, setRecent] = useState(() => recentRooms(user.id));
  const [tokens] = useState(
    () =>
      new TokenManager({
        tokens: session.tokens,
        refresh,
        logout,
        claim: () => claimSession(session.id),
        onEnded: (why) => onSignOut(endNotice(why)),
      }),
  );
  const [client] = useState(
    () =>
      new ChatClient({
        me: { id: user.id, username: user.username },
        url: () => webSocketUrl(tokens.accessToken),
        fetchHistory: (room, cursor, limit) => tokens.withToken((token) => fetchHistory(token, room, cursor, limit)),
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
      }),
  );

  useEffect(() => {
    let active = true;
    const unsubscribe = tokens.subscribe((fresh) => {
      saveSession({ ...session, tokens: fresh });
      client.authenticate(fresh.accessToken);
    });
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
    const wake = () => {
      if (document.visibilityState === 'visible') tokens.wake();
    };
    const online = () => {
      tokens.wake();
      client.reconnectNow();
    };
    document.addEventListener('visibilitychange', wake);
    window.addEventListener('online', online);
    return () => {
      active = false;
      document.removeEventListener('visibilitychange', wake);
      window.removeEventListener('online', online);
      unsubscribe();
      client.stop();
      tokens.stop();
    };
  }, [client, tokens, session, onSignOut]);

  const logOut = useCallback(() => {
    // Revokes the session on the server in the background; the screen changes at once.
    void tokens.logout();
    onSignOut(null);
  }, [tokens, onSignOut]);

  const room = route.screen === 'room' ? route.room : null;
  useEffect(() => {
    if (room !== null) setRecent(rememberRoom(user.id, room));
  }, [room, user.id]);

  const onAuthScreen = route.screen === 'login' || route.screen === 'signup';
  useEffect(() => {
    if (onAuthScreen) navigate('#/');
  }, [onAuthScreen]);

  return (
    <div className="app signed-in">
      <header className="topbar">
        {room !== null ? (
          <a className="back" href="#/">
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
      <main className={room !== null ? 'chat-main' : 'picker-main'}>
        {room !== null ? (
          <ChatView key={room} client={client} room={room} me={user} />
        ) : (
          <RoomPicker
            recent={recent}
            onOpen={(r) => navigate(roomHref(r))}
            onForget={(r) => setRecent(forgetRoom(user.id, r))}
          />
        )}
      </main>
    </div>
  );
}
