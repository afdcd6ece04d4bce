/** Name, topic and visibility of a room, for its owners and admins; archiving, for its owners. */
import { useState, type FormEvent } from 'react';
import { archiveRoom, updateRoom, type RoomChanges } from '../api';
import { can } from '../permissions';
import type { RoomView } from '../protocol';
import { problemText, useApi } from './ApiContext';
import { Field } from './Field';

interface RoomSettingsProps {
  view: RoomView;
  onSaved: (view: RoomView) => void;
  onClose: () => void;
}

export function RoomSettings({ view, onSaved, onClose }: RoomSettingsProps) {
  const api = useApi();
  const [name, setName] = useState(view.name);
  const [topic, setTopic] = useState(view.topic);
  const [kind, setKind] = useState<'public' | 'private'>(view.kind === 'private' ? 'private' : 'public');
  const [problem, setProblem] = useState<string | null>(null);
  const [fields, setFields] = useState<Readonly<Record<string, string>>>({});
  const [busy, setBusy] = useState(false);
  const [confirmArchive, setConfirmArchive] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const changes: RoomChanges = {};
    if (name.trim() !== view.name) changes.name = name.trim();
    if (topic.trim() !== view.topic) changes.topic = topic.trim();
    if (kind !== view.kind) changes.kind = kind;
    if (Object.keys(changes).length === 0) {
      onClose();
      return;
    }
    setBusy(true);
    setProblem(null);
    setFields({});
    try {
      onSaved(await api((t) => updateRoom(t, view.id, changes)));
      onClose();
    } catch (err) {
      setProblem(problemText(err));
      if (err instanceof Error && 'fields' in err) setFields((err as { fields: Record<string, string> }).fields);
    } finally {
      setBusy(false);
    }
  };

  const archive = async () => {
    setBusy(true);
    setProblem(null);
    try {
      await api((t) => archiveRoom(t, view.id));
      onClose();
    } catch (err) {
      setProblem(problemText(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section className="card room-settings" aria-labelledby="settings-title" data-testid="room-settings">
      <h2 id="settings-title">Settings</h2>
      <form onSubmit={(e) => void submit(e)} noValidate>
        <Field label="Name" name="name" autoFocus maxLength={80} value={name} onChange={(e) => setName(e.target.value)} error={fields.name} />
        <Field label="Topic" name="topic" maxLength={250} value={topic} onChange={(e) => setTopic(e.target.value)} error={fields.topic} />
        <fieldset className="choice">
          <legend>Visibility</legend>
          <label>
            <input type="radio" name="kind" checked={kind === 'public'} onChange={() => setKind('public')} /> Public: anyone can find and join it
          </label>
          <label>
            <input type="radio" name="kind" checked={kind === 'private'} onChange={() => setKind('private')} /> Private: members only, by invitation
          </label>
        </fieldset>
        {problem !== null && (
          <p className="field-error" role="alert">
            {problem}
          </p>
        )}
        <div className="form-actions">
          <button type="submit" className="primary" disabled={busy}>
            Save
          </button>
          <button type="button" className="secondary" onClick={onClose}>
            Cancel
          </button>
        </div>
      </form>
      {can('archive', view.kind, view.role) && (
        <div className="danger-zone">
          {confirmArchive ? (
            <>
              <span>Archive it for everyone? It becomes read-only.</span>{' '}
              <button type="button" className="danger" disabled={busy} onClick={() => void archive()}>
                Archive
              </button>{' '}
              <button type="button" className="link" onClick={() => setConfirmArchive(false)}>
                Keep it
              </button>
            </>
          ) : (
            <button type="button" className="link danger" onClick={() => setConfirmArchive(true)}>
              Archive this room…
            </button>
          )}
        </div>
      )}
    </section>
  );
}
