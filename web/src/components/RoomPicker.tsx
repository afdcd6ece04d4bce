/** The home screen: enter a room by its id (a public room is joined, an unknown id creates one). */
import { useState, type FormEvent } from 'react';
import { isValidRoomId } from '../protocol';
import { linkTo } from '../routes';
import { Field } from './Field';

interface RoomPickerProps {
  onOpen: (room: string) => void;
}

export function RoomPicker({ onOpen }: RoomPickerProps) {
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
          autoFocus
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
      <p className="muted picker-more">
        Or <a {...linkTo('/browse')}>browse public ones</a>, <a {...linkTo('/new')}>create one</a>, or{' '}
        <a {...linkTo('/dm')}>message someone</a>.
      </p>
    </div>
  );
}
