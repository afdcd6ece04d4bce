/** The log-in screen. */
import { useState, type FormEvent } from 'react';
import { describeAuthError, signIn, type FormProblem } from '../auth';
import type { Session } from '../session';
import { linkTo } from '../routes';
import { Field } from './Field';

interface LoginFormProps {
  onSignedIn: (session: Session) => void;
  /** Shown above the form, e.g. after a session expired. */
  notice?: string | null;
}

export function LoginForm({ onSignedIn, notice }: LoginFormProps) {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [problem, setProblem] = useState<FormProblem | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (busy) return;
    if (username.trim() === '' || password === '') {
      setProblem({ summary: 'Enter your username and password.', fields: {} });
      return;
    }
    setBusy(true);
    setProblem(null);
    try {
      onSignedIn(await signIn(username.trim(), password));
    } catch (err) {
      setProblem(describeAuthError(err));
      setBusy(false);
    }
  }

  return (
    <form className="card auth-form" onSubmit={submit} noValidate aria-labelledby="login-title">
      <h1 id="login-title">Log in</h1>
      {notice != null && problem === null && (
        <p className="notice" role="status">
          {notice}
        </p>
      )}
      {problem !== null && (
        <p className="form-error" role="alert" data-testid="form-error">
          {problem.summary}
        </p>
      )}
      <Field
        label="Username"
        name="username"
        autoFocus
        autoComplete="username"
        autoCapitalize="none"
        spellCheck={false}
        value={username}
        onChange={(e) => setUsername(e.target.value)}
        error={problem?.fields.username}
        required
      />
      <Field
        label="Password"
        name="password"
        type="password"
        autoComplete="current-password"
        value={password}
        onChange={(e) => setPassword(e.target.value)}
        error={problem?.fields.password}
        required
      />
      <button type="submit" className="primary" disabled={busy}>
        {busy ? 'Logging in…' : 'Log in'}
      </button>
      <p className="switch">
        No account yet? <a {...linkTo('/signup')}>Sign up</a>
      </p>
    </form>
  );
}
