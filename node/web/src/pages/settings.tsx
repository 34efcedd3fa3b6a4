import { useEffect, useRef, useState } from 'preact/hooks';
import {
  api,
  sessionStore,
  setSession,
  type AppPassword,
  type NewAppPassword,
  type Session,
  type User,
} from '../api';
import { ErrorBox, Loading } from '../components';
import { navigate } from '../router';
import { useStore } from '../store';

function when(ms: number): string {
  try {
    return new Date(ms).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  } catch {
    return new Date(ms).toISOString();
  }
}

/** Re-reads the signed-in user (after a change to their second factor). */
async function reloadMe() {
  const user = await api<User>('/auth/me');
  const current = sessionStore.get();
  if (current && user) setSession({ ...current, user });
}

export function SettingsPage() {
  const user = useStore(sessionStore)?.user;
  if (!user) return null;
  return (
    <main class="page settings-page">
      <h1>Settings</h1>
      <section class="panel" aria-labelledby="account-heading" data-testid="settings-account">
        <h2 id="account-heading">Account</h2>
        <dl class="details">
          <div>
            <dt>User name</dt>
            <dd data-testid="settings-username">{user.name}</dd>
          </div>
          <div>
            <dt>Role</dt>
            <dd>{user.admin ? 'Administrator' : 'Viewer'}</dd>
          </div>
          <div>
            <dt>Two-factor sign-in</dt>
            <dd>{user.totp ? 'On' : 'Off'}</dd>
          </div>
        </dl>
      </section>
      <Password />
      <AppPasswords user={user} />
      <TwoFactor user={user} />
    </main>
  );
}

/** Shortest password the form accepts (the server refuses only empty ones). */
const PASSWORD_MIN = 8;

/**
 * Changing the password ends every other sign-in (browsers, apps, Jellyfin
 * clients); this browser gets new tokens. "Sign out everywhere" ends them
 * all, this one included.
 */
function Password() {
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');
  const [confirmation, setConfirmation] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const change = async (event: Event) => {
    event.preventDefault();
    setError(null);
    setNotice(null);
    if (next.length < PASSWORD_MIN) {
      setError(`The new password needs at least ${PASSWORD_MIN} characters.`);
      return;
    }
    if (next !== confirmation) {
      setError('The two new passwords differ.');
      return;
    }
    setBusy(true);
    try {
      const session = await api<Session>('/auth/password', {
        method: 'POST',
        body: { current_password: current, new_password: next },
      });
      setSession(session);
      setCurrent('');
      setNext('');
      setConfirmation('');
      setNotice('Password changed. Every other sign-in has ended.');
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  const signOutEverywhere = async () => {
    setError(null);
    setBusy(true);
    try {
      await api('/auth/sign-out-everywhere', { method: 'POST' });
      setSession(null);
      navigate('/login');
    } catch (failure) {
      setError(failure);
      setBusy(false);
    }
  };

  const field = (label: string, testid: string, value: string, set: (value: string) => void, auto: string) => (
    <label class="field">
      <span>{label}</span>
      <input
        type="password"
        data-testid={testid}
        autocomplete={auto}
        required
        value={value}
        onInput={(event) => set(event.currentTarget.value)}
      />
    </label>
  );

  return (
    <section class="panel" aria-labelledby="password-heading" data-testid="settings-password">
      <h2 id="password-heading">Password and sign-ins</h2>
      <form onSubmit={(event) => void change(event)}>
        {field('Current password', 'password-current', current, setCurrent, 'current-password')}
        {field('New password', 'password-new', next, setNext, 'new-password')}
        {field('New password again', 'password-confirm', confirmation, setConfirmation, 'new-password')}
        <button type="submit" class="primary field-button" data-testid="password-change" disabled={busy}>
          Change password
        </button>
      </form>
      {notice && (
        <p class="ok" role="status" data-testid="password-notice">
          {notice}
        </p>
      )}
      <p class="muted">Signed in somewhere you no longer use? End every sign-in of this account, this one included.</p>
      <button
        type="button"
        class="danger"
        data-testid="sign-out-everywhere"
        disabled={busy}
        onClick={() => void signOutEverywhere()}
      >
        Sign out everywhere
      </button>
      <ErrorBox error={error} testid="password-error" />
    </section>
  );
}

/** Copies text to the clipboard; false when the browser will not. */
async function copyText(text: string, fallback: HTMLElement | null): Promise<boolean> {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    /* try the old way */
  }
  if (!fallback) return false;
  try {
    const range = document.createRange();
    range.selectNodeContents(fallback);
    const selection = window.getSelection();
    selection?.removeAllRanges();
    selection?.addRange(range);
    return document.execCommand('copy');
  } catch {
    return false;
  }
}

function AppPasswords({ user }: { user: User }) {
  const [passwords, setPasswords] = useState<AppPassword[] | null>(null);
  const [name, setName] = useState('');
  const [created, setCreated] = useState<NewAppPassword | null>(null);
  const [copied, setCopied] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const secretRef = useRef<HTMLElement>(null);
  const origin = location.origin;

  const load = () =>
    api<AppPassword[]>('/auth/app-passwords')
      .then((list) => setPasswords(Array.isArray(list) ? list : []))
      .catch((failure) => {
        setError(failure);
        setPasswords([]);
      });

  useEffect(() => {
    void load();
  }, []);

  const create = async (event: Event) => {
    event.preventDefault();
    setError(null);
    setCopied(null);
    const label = name.trim();
    if (!label) {
      setError(new Error('Give the app password a name, such as “phone”.'));
      return;
    }
    setBusy(true);
    try {
      const next = await api<NewAppPassword>('/auth/app-passwords', { method: 'POST', body: { name: label } });
      setCreated(next);
      setName('');
      await load();
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  const revoke = async (password: AppPassword) => {
    setError(null);
    try {
      await api(`/auth/app-passwords/${password.id}`, { method: 'DELETE' });
      if (created?.id === password.id) setCreated(null);
      await load();
    } catch (failure) {
      setError(failure);
    }
  };

  const copy = async () => {
    if (!created) return;
    const ok = await copyText(created.password, secretRef.current);
    setCopied(ok ? 'Copied.' : 'Select the password and copy it.');
  };

  return (
    <section class="panel" aria-labelledby="apps-heading" data-testid="settings-apps">
      <h2 id="apps-heading">Apps and devices</h2>
      <p>
        Music apps (Subsonic: Symfonium, DSub, Feishin…) and book readers (OPDS) sign in with your user name,{' '}
        <strong>{user.name}</strong>, and an app password made here — never your account password
        {user.totp ? ', and with two-factor sign-in on, only with an app password' : ''}.
      </p>
      <dl class="details server-urls">
        <div>
          <dt>Server address (music apps)</dt>
          <dd>
            <code data-testid="server-url">{origin}</code>
          </dd>
        </div>
        <div>
          <dt>Catalogue address (book readers)</dt>
          <dd>
            <code data-testid="opds-url">{`${origin}/opds`}</code>
          </dd>
        </div>
      </dl>
      <form class="row wrap" onSubmit={create}>
        <label class="field">
          <span>New app password’s name</span>
          <input
            data-testid="app-password-name"
            value={name}
            maxLength={64}
            placeholder="phone"
            autocomplete="off"
            onInput={(event) => setName(event.currentTarget.value)}
          />
        </label>
        <button type="submit" class="primary field-button" data-testid="app-password-create" disabled={busy}>
          {busy ? 'Creating…' : 'Create app password'}
        </button>
      </form>
      <ErrorBox error={error} testid="app-password-error" />
      {created ? (
        <div class="secret-box" role="status" data-testid="app-password-created">
          <p>
            App password for <strong>{created.name}</strong>:
          </p>
          <div class="row wrap secret-row">
            <code class="secret" data-testid="app-password-secret" ref={secretRef}>
              {created.password}
            </code>
            <button type="button" data-testid="app-password-copy" onClick={() => void copy()}>
              Copy
            </button>
            <button type="button" class="ghost" data-testid="app-password-done" onClick={() => setCreated(null)}>
              Done
            </button>
          </div>
          <p class="muted">
            Type it into the app now: it will not be shown again. {copied ? <span aria-live="polite">{copied}</span> : null}
          </p>
        </div>
      ) : null}
      <h3>Your app passwords</h3>
      {passwords === null ? (
        <Loading />
      ) : passwords.length === 0 ? (
        <p class="muted" data-testid="app-password-empty">
          None yet.
        </p>
      ) : (
        <ul class="key-list" data-testid="app-password-list">
          {passwords.map((password) => (
            <li key={password.id} data-testid="app-password-row" data-id={String(password.id)}>
              <span class="key-name">{password.name}</span>
              <span class="muted">
                Created <time dateTime={new Date(password.created_ms).toISOString()}>{when(password.created_ms)}</time>
              </span>
              <button
                type="button"
                class="danger"
                data-testid="app-password-revoke"
                aria-label={`Revoke ${password.name}`}
                onClick={() => void revoke(password)}
              >
                Revoke
              </button>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

interface Enrolment {
  secret: string;
  uri: string;
  ticket: string;
}

function TwoFactor({ user }: { user: User }) {
  const [enrolment, setEnrolment] = useState<Enrolment | null>(null);
  const [code, setCode] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const run = async (work: () => Promise<void>) => {
    setError(null);
    setNotice(null);
    setBusy(true);
    try {
      await work();
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  const enroll = () =>
    run(async () => {
      setEnrolment(await api<Enrolment>('/auth/totp/enroll', { method: 'POST' }));
      setCode('');
    });

  const confirm = (event: Event) => {
    event.preventDefault();
    if (!enrolment) return;
    void run(async () => {
      await api('/auth/totp/confirm', { method: 'POST', body: { ticket: enrolment.ticket, code: code.trim() } });
      setEnrolment(null);
      setCode('');
      await reloadMe();
      setNotice('Two-factor sign-in is on: signing in now asks for a code.');
    });
  };

  const disable = (event: Event) => {
    event.preventDefault();
    void run(async () => {
      await api('/auth/totp/disable', { method: 'POST', body: { code: code.trim() } });
      setCode('');
      await reloadMe();
      setNotice('Two-factor sign-in is off.');
    });
  };

  const codeField = (testid: string) => (
    <label class="field">
      <span>Code from the authenticator app</span>
      <input
        data-testid={testid}
        inputMode="numeric"
        autocomplete="one-time-code"
        pattern="[0-9]*"
        maxLength={8}
        required
        value={code}
        onInput={(event) => setCode(event.currentTarget.value)}
      />
    </label>
  );

  return (
    <section class="panel" aria-labelledby="totp-heading" data-testid="settings-totp">
      <h2 id="totp-heading">Two-factor sign-in</h2>
      {user.totp ? (
        <form class="row wrap" onSubmit={disable}>
          <p class="full">Signing in asks for a code from your authenticator app. To turn this off, enter a current code.</p>
          {codeField('totp-disable-code')}
          <button type="submit" class="danger field-button" data-testid="totp-disable" disabled={busy}>
            Turn off
          </button>
        </form>
      ) : enrolment ? (
        <form onSubmit={confirm}>
          <p>
            Add this account to an authenticator app (paste the link, or type the key), then enter the code it shows.
          </p>
          <dl class="details">
            <div>
              <dt>Key</dt>
              <dd>
                <code data-testid="totp-secret">{enrolment.secret}</code>
              </dd>
            </div>
            <div class="wide">
              <dt>Link</dt>
              <dd>
                <code data-testid="totp-uri">{enrolment.uri}</code>
              </dd>
            </div>
          </dl>
          <div class="row wrap">
            {codeField('totp-code')}
            <button type="submit" class="primary field-button" data-testid="totp-confirm" disabled={busy}>
              Turn on
            </button>
            <button type="button" class="ghost field-button" onClick={() => setEnrolment(null)}>
              Cancel
            </button>
          </div>
        </form>
      ) : (
        <>
          <p>Ask for a code from an authenticator app as well as the password when signing in to this web app.</p>
          <button type="button" data-testid="totp-enroll" disabled={busy} onClick={() => void enroll()}>
            Set up two-factor sign-in
          </button>
        </>
      )}
      {notice ? (
        <p class="ok" role="status">
          {notice}
        </p>
      ) : null}
      <ErrorBox error={error} testid="totp-error" />
    </section>
  );
}
