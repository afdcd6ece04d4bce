/** Starting a direct message: find someone by the start of their username. */
import { useEffect, useState, type FormEvent } from 'react';
import { openDm, searchUsers } from '../api';
import type { RoomView, UserRef } from '../protocol';
import { problemText, useApi } from './ApiContext';

interface NewDmProps {
  meId: string;
  onOpened: (view: RoomView) => void;
}

const SEARCH_DELAY_MS = 250;

export function NewDm({ meId, onOpened }: NewDmProps) {
  const api = useApi();
  const [query, setQuery] = useState('');
  const [users, setUsers] = useState<UserRef[]>([]);
  const [problem, setProblem] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    const q = query.trim();
    if (q.length === 0) {
      setUsers([]);
      return;
    }
    let active = true;
    const t = setTimeout(() => {
      api((token) => searchUsers(token, q)).then(
        (found) => {
          if (active) setUsers(found.filter((u) => u.id !== meId));
        },
        (e: unknown) => {
          if (active) setProblem(problemText(e, 'Could not search for people'));
        },
      );
    }, SEARCH_DELAY_MS);
    return () => {
      active = false;
      clearTimeout(t);
    };
  }, [api, query, meId]);

  const open = async (username: string) => {
    setBusy(true);
    setProblem(null);
    try {
      onOpened(await api((token) => openDm(token, username)));
    } catch (e) {
      setProblem(problemText(e));
    } finally {
      setBusy(false);
    }
  };

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const exact = users.find((u) => u.username.toLowerCase() === query.trim().toLowerCase());
    const name = exact?.username ?? query.trim();
    if (name.length > 0) void open(name);
  };

  return (
    <div className="card new-dm">
      <h1>New message</h1>
      <form onSubmit={submit} noValidate className="room-form">
        <label className="field">
          <span>To</span>
          <input
            type="search"
            autoFocus
            value={query}
            onChange={(e) => {
              setQuery(e.target.value);
              setProblem(null);
            }}
            placeholder="Start typing a username"
            autoCapitalize="none"
            spellCheck={false}
          />
        </label>
        <button type="submit" className="primary" disabled={busy || query.trim().length === 0}>
          Open
        </button>
      </form>
      {problem !== null && (
        <p className="field-error" role="alert">
          {problem}
        </p>
      )}
      <ul className="people" data-testid="people">
        {users.map((u) => (
          <li key={u.id}>
            <button type="button" className="link" disabled={busy} onClick={() => void open(u.username)}>
              Message {u.username}
            </button>
          </li>
        ))}
      </ul>
    </div>
  );
}
