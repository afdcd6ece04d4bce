/** The directory: public rooms found by id or name, most members first; join one, or open one already joined. */
import { useEffect, useState } from 'react';
import { joinRoom, searchDirectory } from '../api';
import type { RoomView } from '../protocol';
import { problemText, useApi } from './ApiContext';

interface BrowseRoomsProps {
  /** Rooms the user is in already, which open rather than join. */
  isMember: (room: string) => boolean;
  onJoined: (view: RoomView) => void;
  onOpen: (room: string) => void;
}

/** Waits this long after the last keystroke before searching. */
const SEARCH_DELAY_MS = 250;

export function BrowseRooms({ isMember, onJoined, onOpen }: BrowseRoomsProps) {
  const api = useApi();
  const [query, setQuery] = useState('');
  const [rooms, setRooms] = useState<RoomView[] | null>(null);
  const [nextCursor, setNextCursor] = useState<string | null>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const [joining, setJoining] = useState<string | null>(null);

  useEffect(() => {
    let active = true;
    const t = setTimeout(() => {
      api((token) => searchDirectory(token, query.trim())).then(
        (page) => {
          if (!active) return;
          setRooms(page.rooms);
          setNextCursor(page.nextCursor);
          setProblem(null);
        },
        (e: unknown) => {
          if (active) setProblem(problemText(e, 'Could not search the directory'));
        },
      );
    }, SEARCH_DELAY_MS);
    return () => {
      active = false;
      clearTimeout(t);
    };
  }, [api, query]);

  const more = async () => {
    if (nextCursor === null) return;
    try {
      const page = await api((token) => searchDirectory(token, query.trim(), nextCursor));
      setRooms((r) => [...(r ?? []), ...page.rooms]);
      setNextCursor(page.nextCursor);
    } catch (e) {
      setProblem(problemText(e));
    }
  };

  const join = async (room: RoomView) => {
    setJoining(room.id);
    setProblem(null);
    try {
      onJoined(await api((token) => joinRoom(token, room.id)));
    } catch (e) {
      setProblem(problemText(e));
    } finally {
      setJoining(null);
    }
  };

  return (
    <div className="card browse">
      <h1>Public rooms</h1>
      <label className="field">
        <span>Search by name</span>
        <input type="search" value={query} onChange={(e) => setQuery(e.target.value)} autoCapitalize="none" spellCheck={false} />
      </label>
      {problem !== null && (
        <p className="field-error" role="alert">
          {problem}
        </p>
      )}
      {rooms !== null && rooms.length === 0 && <p className="muted">Nothing found.</p>}
      <ul className="directory" data-testid="directory">
        {(rooms ?? []).map((r) => (
          <li key={r.id} data-room={r.id}>
            <div className="directory-room">
              <span className="directory-name">#{r.name}</span>
              <span className="muted">
                {r.member_count} {r.member_count === 1 ? 'member' : 'members'}
              </span>
              {r.topic.length > 0 && <span className="muted directory-topic">{r.topic}</span>}
            </div>
            {isMember(r.id) ? (
              <button type="button" className="secondary" onClick={() => onOpen(r.id)} aria-label={`Open ${r.name}`}>
                Open
              </button>
            ) : (
              <button
                type="button"
                className="primary"
                disabled={joining !== null}
                onClick={() => void join(r)}
                aria-label={`Join ${r.name}`}
              >
                Join
              </button>
            )}
          </li>
        ))}
      </ul>
      {nextCursor !== null && (
        <button type="button" className="link" onClick={() => void more()}>
          More
        </button>
      )}
    </div>
  );
}
