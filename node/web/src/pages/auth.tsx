import { useEffect, useState } from 'preact/hooks';
import { ApiError, api, errorText, librariesStore, setSession, sessionStore, type Library, type Session } from '../api';
import { AddLibraryForm, ErrorBox, ScanProgress } from '../components';
import { navigate } from '../router';
import { useStore } from '../store';

export function LoginPage() {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [totp, setTotp] = useState('');
  const [needTotp, setNeedTotp] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event: Event) => {
    event.preventDefault();
    setError(null);
    setBusy(true);
    try {
      const body: Record<string, string> = { username, password };
      if (needTotp && totp.trim()) body.totp = totp.trim();
      const session = await api<Session>('/auth/login', { method: 'POST', body, anonymous: true });
      setSession(session);
      const next = new URLSearchParams(location.search).get('next');
      navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : '/', true);
    } catch (failure) {
      if (failure instanceof ApiError && failure.body && failure.body.totp_required === true) {
        const wasNeeded = needTotp;
        setNeedTotp(true);
        setError(wasNeeded ? errorText(failure) : 'Enter the code from your authenticator app.');
      } else if (failure instanceof ApiError && failure.status === 429) {
        setError('Too many failed attempts: try again later.');
      } else {
        setError(errorText(failure));
      }
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="auth-page">
      <form class="panel auth-form" onSubmit={submit} aria-labelledby="login-heading">
        <h1 id="login-heading">Sign in to Omega</h1>
        <label class="field">
          <span>User name</span>
          <input
            data-testid="login-username"
            autocomplete="username"
            autofocus
            required
            value={username}
            onInput={(event) => setUsername(event.currentTarget.value)}
          />
        </label>
        <label class="field">
          <span>Password</span>
          <input
            data-testid="login-password"
            type="password"
            autocomplete="current-password"
            required
            value={password}
            onInput={(event) => setPassword(event.currentTarget.value)}
          />
        </label>
        {needTotp ? (
          <label class="field">
            <span>Authenticator code</span>
            <input
              data-testid="login-totp"
              inputMode="numeric"
              autocomplete="one-time-code"
              pattern="[0-9]*"
              autofocus
              value={totp}
              onInput={(event) => setTotp(event.currentTarget.value)}
            />
          </label>
        ) : null}
        {error ? (
          <p class="error" role="alert" data-testid="login-error">
            {error}
          </p>
        ) : null}
        <button type="submit" class="primary" data-testid="login-submit" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}

export function SetupPage() {
  const session = useStore(sessionStore);
  const [step, setStep] = useState<1 | 2 | null>(null);
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [added, setAdded] = useState<Library[]>([]);

  useEffect(() => {
    let cancelled = false;
    api<{ needed: boolean }>('/setup', { anonymous: true })
      .then((state) => {
        if (cancelled) return;
        if (state.needed) setStep(1);
        else if (session?.user.admin) setStep(2);
        else navigate(session ? '/' : '/login', true);
      })
      .catch((failure) => {
        if (!cancelled) {
          setError(failure);
          setStep(1);
        }
      });
    return () => {
      cancelled = true;
    };
  }, []);

  const createAdmin = async (event: Event) => {
    event.preventDefault();
    setError(null);
    setBusy(true);
    try {
      const created = await api<Session>('/setup', {
        method: 'POST',
        body: { username: username.trim(), password },
        anonymous: true,
      });
      setSession(created);
      setStep(2);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  if (step === null) return <main class="auth-page"><p class="muted">Loading…</p></main>;

  if (step === 1) {
    return (
      <main class="auth-page">
        <form class="panel auth-form" onSubmit={createAdmin} aria-labelledby="setup-heading">
          <p class="step">Step 1 of 2</p>
          <h1 id="setup-heading">Welcome to Omega</h1>
          <p class="muted">Create the administrator account.</p>
          <label class="field">
            <span>User name</span>
            <input
              data-testid="setup-username"
              autocomplete="username"
              autofocus
              required
              value={username}
              onInput={(event) => setUsername(event.currentTarget.value)}
            />
          </label>
          <label class="field">
            <span>Password</span>
            <input
              data-testid="setup-password"
              type="password"
              autocomplete="new-password"
              required
              value={password}
              onInput={(event) => setPassword(event.currentTarget.value)}
            />
          </label>
          <ErrorBox error={error} testid="setup-error" />
          <button type="submit" class="primary" data-testid="setup-submit" disabled={busy}>
            {busy ? 'Creating…' : 'Create administrator'}
          </button>
        </form>
      </main>
    );
  }

  return (
    <main class="setup-page">
      <p class="step">Step 2 of 2</p>
      <h1>Add your libraries</h1>
      <p class="muted">Pick a type, browse to a folder on this server, and add it. Scans start at once.</p>
      <AddLibraryForm
        onAdded={(library) => {
          setAdded((list) => [...list, library]);
          librariesStore.update((list) => [...list.filter((known) => known.id !== library.id), library]);
        }}
      />
      {added.length > 0 ? (
        <section class="panel">
          <h2>Added</h2>
          <ul class="added-libraries">
            {added.map((library) => (
              <li key={library.id} data-testid="added-library" data-library-id={String(library.id)}>
                <strong>{library.name}</strong> <span class="muted">({library.type})</span>
                <ScanProgress library={library.id} />
              </li>
            ))}
          </ul>
        </section>
      ) : null}
      <button type="button" class="primary" data-testid="setup-finish" onClick={() => navigate('/')}>
        Finish
      </button>
    </main>
  );
}
