/**
 * The application shell: signed out it shows log-in or sign-up; signed in it
 * owns the user's `ChatClient` for as long as the session lasts and shows the
 * room picker or a room.
 */
import { useCallback, useEffect, useState } from 'react';
import { ApiError, fetchHistory, me, webSocketUrl } from './api';
import { ChatClient } from './connection';
import { ChatView } from './components/ChatView';
import { LoginForm } from './components/LoginForm';
import { RoomPicker } from './components/RoomPicker';
import { SignupForm } from './components/SignupForm';
import { navigate, roomHref, useRoute } from './routes';
import { clearSession, forgetRoom, loadSession, recentRooms, rememberRoom, saveSession, type Session } from './session';

const EXPIRED_NOTICE = 'Your session has expired. Please log in again.';

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
  return <SignedIn key={session.token} session={session} onSignOut={signOut} />;
}

interface SignedInProps {
  session: Session;
  onSignOut: (why: string | null) => void;
}

function SignedIn({ session, onSignOut }: SignedInProps) {
  const { token, user } = session;
  const route = useRoute();
  const [recent, setRecent] = useState(() => recentRooms(user.id));
  const [client] = useState(
    () =>
      new ChatClient({
        me: { id: user.id, username: user.username },
        url: () => webSocketUrl(token),
        fetchHistory: (room, cursor, limit) => fetchHistory(token, room, cursor, limit),
        checkToken: async () => {
          try {
            await me(token);
            return true;
          } catch (e) {
            if (e instanceof ApiError && e.status === 401) return false;
            throw e;
          }
        },
        onUnauthorized: () => onSignOut(EXPIRED_NOTICE),
      }),
  );

  useEffect(() => {
    client.start();
    const online = () => client.reconnectNow();
    window.addEventListener('online', online);
    return () => {
      window.removeEventListener('online', online);
      client.stop();
    };
  }, [client]);

  // A token that expired while the tab was closed or asleep: find out now rather than on the first failure.
  useEffect(() => {
    let cancelled = false;
    me(token).catch((e: unknown) => {
      if (!cancelled && e instanceof ApiError && e.status === 401) onSignOut(EXPIRED_NOTICE);
    });
    return () => {
      cancelled = true;
    };
  }, [token, onSignOut]);

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
        <button type="button" className="secondary" onClick={() => onSignOut(null)}>
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
