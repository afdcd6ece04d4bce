/** The sign-up screen; a successful sign-up logs the new user straight in. */
import { useState, type FormEvent } from 'react';
import { checkSignup, describeAuthError, signIn, type FormProblem } from '../auth';
import { signup } from '../api';
import type { Session } from '../session';
import { linkTo } from '../routes';
import { Field } from './Field';

interface SignupFormProps {
  onSignedIn: (session: Session) => void;
}

export function SignupForm({ onSignedIn }: SignupFormProps) {
  const [username, setUsername] = useState('');
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [problem, setProblem] = useState<FormProblem | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    if (busy) return;
    const fields = checkSignup(username, email.trim(), password);
    if (Object.keys(fields).length > 0) {
      setProblem({ summary: 'Please correct the highlighted fields.', fields });
      return;
    }
    setBusy(true);
    setProblem(null);
    try {
      await signup(username, email.trim(), password);
      onSignedIn(await signIn(username, password));
    } catch (err) {
      setProblem(describeAuthError(err));
      setBusy(false);
    }
  }

  return (
    <form className="card auth-form" onSubmit={submit} noValidate aria-labelledby="signup-title">
      <h1 id="signup-title">Create an account</h1>
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
        hint="3 to 32 letters, digits, dots, dashes or underscores."
        value={username}
        onChange={(e) => setUsername(e.target.value)}
        error={problem?.fields.username}
        required
      />
      <Field
        label="Email"
        name="email"
        type="email"
        autoComplete="email"
        value={email}
        onChange={(e) => setEmail(e.target.value)}
        error={problem?.fields.email}
        required
      />
      <Field
        label="Password"
        name="password"
        type="password"
        autoComplete="new-password"
        hint="At least 8 characters."
        value={password}
        onChange={(e) => setPassword(e.target.value)}
        error={problem?.fields.password}
        required
      />
      <button type="submit" className="primary" disabled={busy}>
        {busy ? 'Creating account…' : 'Sign up'}
      </button>
      <p className="switch">
        Already have an account? <a {...linkTo('/login')}>Log in</a>
      </p>
    </form>
  );
}
