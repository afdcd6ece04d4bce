/** The people currently online in the room. */
import type { UserRef } from '../protocol';

interface MemberListProps {
  members: UserRef[];
  meId: string;
  id?: string;
}

export function MemberList({ members, meId, id }: MemberListProps) {
  return (
    <section className="members" id={id} aria-labelledby="members-title" data-testid="member-list">
      <h2 id="members-title">Online ({members.length})</h2>
      <ul>
        {members.map((m) => (
          <li key={m.id}>
            <span className="presence-dot" aria-hidden="true" />
            <span className="member-name">{m.username}</span>
            {m.id === meId && <span className="muted member-you">(you)</span>}
          </li>
        ))}
      </ul>
    </section>
  );
}
