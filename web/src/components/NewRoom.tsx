/** Creating a room: public (in the directory, anyone may join) or private (by invitation). */
import { useState, type FormEvent } from 'react';
import { ApiError, createRoom } from '../api';
import type { RoomView } from '../protocol';
import { problemText, useApi } from './ApiContext';
import { Field } from './Field';

interface NewRoomProps {
  onCreated: (view: RoomView) => void;
}

export function NewRoom({ onCreated }: NewRoomProps) {
  const api = useApi();
  const [name, setName] = useState('');
  const [topic, setTopic] = useState('');
  const [kind, setKind] = useState<'public' | 'private'>('public');
  const [problem, setProblem] = useState<string | null>(null);
  const [fields, setFields] = useState<Readonly<Record<string, string>>>({});
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const trimmed = name.trim();
    if (trimmed.length === 0) {
      setFields({ name: 'Give the room a name.' });
      return;
    }
    setBusy(true);
    setProblem(null);
    setFields({});
    try {
      onCreated(await api((t) => createRoom(t, { kind, name: trimmed, topic: topic.trim() })));
    } catch (err) {
      setProblem(problemText(err));
      if (err instanceof ApiError) setFields(err.fields);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="card new-room">
      <h1>Create a room</h1>
      <form onSubmit={(e) => void submit(e)} noValidate>
        <Field label="Name" name="name" autoFocus maxLength={80} value={name} onChange={(e) => setName(e.target.value)} error={fields.name} />
        <Field
          label="Topic"
          name="topic"
          maxLength={250}
          hint="Optional: what it is about."
          value={topic}
          onChange={(e) => setTopic(e.target.value)}
          error={fields.topic}
        />
        <fieldset className="choice">
          <legend>Visibility</legend>
          <label>
            <input type="radio" name="kind" checked={kind === 'public'} onChange={() => setKind('public')} /> Public: anyone can
            find and join it
          </label>
          <label>
            <input type="radio" name="kind" checked={kind === 'private'} onChange={() => setKind('private')} /> Private: members
            only, by invitation
          </label>
        </fieldset>
        {problem !== null && (
          <p className="field-error" role="alert">
            {problem}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy}>
          Create
        </button>
      </form>
    </div>
  );
}
