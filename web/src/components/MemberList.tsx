/**
 * The room's members with their role and whether they are online, and, for
 * those the permission table allows, the controls to add, kick, ban and
 * change roles. Online state comes from the live presence events while the
 * room is joined (the members API's `online` before that); someone who comes
 * online and is not listed yet (they just joined a public room) is shown
 * from the presence event until the list is loaded again.
 */
import { useCallback, useEffect, useState, type FormEvent } from 'react';
import { addMember, banMember, listMembers, removeMember, setRole } from '../api';
import { can, memberControls } from '../permissions';
import type { Member, Role, RoomKind, UserRef } from '../protocol';
import { problemText, useApi } from './ApiContext';

interface MemberListProps {
  room: string;
  kind: RoomKind;
  /** The user's role in the room, `null` while unknown or when not a member. */
  myRole: Role | null;
  /** Users online in the room (presence), sorted by username. */
  online: UserRef[];
  /** Whether `online` is live (the room is joined). */
  live: boolean;
  /** False while disconnected: nobody's presence is known then, so none is shown. */
  presenceKnown?: boolean;
  meId: string;
  id?: string;
  /** Changes when the room's membership may have changed (e.g. its member count), to load the list again. */
  version?: number;
  /** Told the members listed each time the list is loaded (the composer offers them after `@`). */
  onMembers?: (members: UserRef[]) => void;
}

const ROLE_ORDER: Record<Role, number> = { owner: 0, admin: 1, member: 2 };

export function MemberList({ room, kind, myRole, online, live, presenceKnown = true, meId, id, version = 0, onMembers }: MemberListProps) {
  const api = useApi();
  const [members, setMembers] = useState<Member[] | null>(null);
  const [nextCursor, setNextCursor] = useState<string | null>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const [reloads, setReloads] = useState(0);
  const reload = useCallback(() => setReloads((n) => n + 1), []);

  useEffect(() => {
    let active = true;
    api((t) => listMembers(t, room)).then(
      (page) => {
        if (!active) return;
        setMembers(page.members);
        setNextCursor(page.nextCursor);
        // A list refused before the join made the user a member is loaded again then: the refusal no longer holds.
        setProblem(null);
      },
      (e: unknown) => {
        // Without the list, the panel still shows who is online.
        if (active) setProblem(problemText(e, 'Could not load the members'));
      },
    );
    return () => {
      active = false;
    };
  }, [api, room, version, reloads]);

  useEffect(() => {
    if (members !== null) onMembers?.(members.map((m) => m.user));
  }, [members, onMembers]);

  const loadMore = async () => {
    if (nextCursor === null) return;
    try {
      const page = await api((t) => listMembers(t, room, nextCursor));
      setMembers((m) => [...(m ?? []), ...page.members]);
      setNextCursor(page.nextCursor);
    } catch (e) {
      setProblem(problemText(e));
    }
  };

  const act = async (call: (token: string) => Promise<void>): Promise<boolean> => {
    setProblem(null);
    try {
      await api(call);
      reload();
      return true;
    } catch (e) {
      setProblem(problemText(e));
      return false;
    }
  };

  const onlineIds = new Set(online.map((u) => u.id));
  const isOnline = (m: Member) => presenceKnown && (live ? onlineIds.has(m.user.id) : m.online);
  const presence = (m: Member) => (!presenceKnown ? 'unknown' : isOnline(m) ? 'online' : 'offline');
  const listed = members ?? [];
  const known = new Set(listed.map((m) => m.user.id));
  const shown: Member[] = [
    ...listed,
    ...online.filter((u) => !known.has(u.id)).map((user): Member => ({ user, role: 'member', joined_at: null, online: true })),
  ].sort(
    (a, b) =>
      Number(isOnline(b)) - Number(isOnline(a)) ||
      ROLE_ORDER[a.role] - ROLE_ORDER[b.role] ||
      a.user.username.localeCompare(b.user.username),
  );
  const onlineCount = shown.filter(isOnline).length;

  return (
    <section className="members" id={id} aria-labelledby="members-title" data-testid="member-list">
      <h2 id="members-title">
        Members ({shown.length}) · {presenceKnown ? `${onlineCount} online` : 'presence unknown until connected'}
      </h2>
      {can('invite', kind, myRole) && <AddMember onAdd={(username) => act((t) => addMember(t, room, username))} />}
      {problem !== null && (
        <p className="field-error" role="alert">
          {problem}
        </p>
      )}
      <ul>
        {shown.map((m) => {
          const controls = memberControls(kind, myRole, meId, { id: m.user.id, role: m.role });
          const name = m.user.username;
          return (
            <li key={m.user.id} data-testid="member" data-user={name} data-online={isOnline(m)} data-presence={presence(m)}>
              <span className={presence(m) === 'online' ? 'presence-dot' : `presence-dot ${presence(m)}`} aria-hidden="true" />
              <span className="member-name">{name}</span>
              <span className="visually-hidden">{`, ${presence(m) === 'unknown' ? 'presence unknown' : presence(m)}`}</span>
              {m.user.id === meId && <span className="muted member-you">(you)</span>}
              {kind !== 'dm' && m.role !== 'member' && (
                <span className="tag" data-testid="member-role">
                  {m.role}
                </span>
              )}
              {(controls.changeRole || controls.kick || controls.ban) && (
                <span className="member-controls">
                  {controls.changeRole && (
                    <select
                      aria-label={`Role of ${name}`}
                      value={m.role}
                      onChange={(e) => void act((t) => setRole(t, room, m.user.id, e.target.value as Role))}
                    >
                      <option value="member">member</option>
                      <option value="admin">admin</option>
                      <option value="owner">owner</option>
                    </select>
                  )}
                  {controls.kick && (
                    <button type="button" className="link" aria-label={`Kick ${name}`} onClick={() => void act((t) => removeMember(t, room, m.user.id))}>
                      Kick
                    </button>
                  )}
                  {controls.ban && (
                    <button type="button" className="link danger" aria-label={`Ban ${name}`} onClick={() => void act((t) => banMember(t, room, m.user.id))}>
                      Ban
                    </button>
                  )}
                </span>
              )}
            </li>
          );
        })}
      </ul>
      {nextCursor !== null && (
        <button type="button" className="link" onClick={() => void loadMore()}>
          More members
        </button>
      )}
    </section>
  );
}

function AddMember({ onAdd }: { onAdd: (username: string) => Promise<boolean> }) {
  const [username, setUsername] = useState('');
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const name = username.trim();
    if (name.length === 0) return;
    setBusy(true);
    const added = await onAdd(name);
    setBusy(false);
    if (added) setUsername('');
  };
  return (
    <form className="add-member" onSubmit={(e) => void submit(e)}>
      <label>
        <span className="visually-hidden">Add a member by username</span>
        <input
          value={username}
          onChange={(e) => setUsername(e.target.value)}
          placeholder="Add by username"
          autoCapitalize="none"
          spellCheck={false}
        />
      </label>
      <button type="submit" className="secondary" disabled={busy || username.trim().length === 0}>
        Add
      </button>
    </form>
  );
}
