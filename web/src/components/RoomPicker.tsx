/** Choosing a room: type a room id, or pick one of the recently used rooms. */
import { useState, type FormEvent } from 'react';
import { isValidRoomId } from '../protocol';
import { roomHref } from '../routes';
import { Field } from './Field';

interface RoomPickerProps {
  recent: string[];
  onOpen: (room: string) => void;
  onForget: (room: string) => void;
}

export function RoomPicker({ recent, onOpen, onForget }: RoomPickerProps) {
  const [room, setRoom] = useState('');
  const [error, setError] = useState<string | undefined>(undefined);

  function submit(e: FormEvent) {
    e.preventDefault();
    const name = room.trim();
    if (!isValidRoomId(name)) {
      setError('Use 1 to 64 letters, digits, dashes or underscores.');
      return;
    }
    onOpen(name);
  }

  return (
    <div className="card room-picker">
      <h1>Join a room</h1>
      <form onSubmit={submit} noValidate className="room-form">
        <Field
          label="Room"
          name="room"
          autoCapitalize="none"
          spellCheck={false}
          placeholder="e.g. general"
          value={room}
          onChange={(e) => {
            setRoom(e.target.value);
            setError(undefined);
          }}
          error={error}
        />
        <button type="submit" className="primary">
          Join
        </button>
      </form>
      {recent.length > 0 && (
        <section aria-labelledby="recent-title">
          <h2 id="recent-title">Recent rooms</h2>
          <ul className="recent-rooms">
            {recent.map((r) => (
              <li key={r}>
                <a href={roomHref(r)}>#{r}</a>
                <button type="button" className="link" aria-label={`Forget room ${r}`} onClick={() => onForget(r)}>
                  Forget
                </button>
              </li>
            ))}
          </ul>
        </section>
      )}
    </div>
  );
}
