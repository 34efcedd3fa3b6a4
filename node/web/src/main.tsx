import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, librariesStore, logout, reloadLibraries, sessionStore, setSession, type User } from './api';
import { ErrorBox, Loading } from './components';
import { startEvents } from './events';
import { MusicBar } from './music';
import { AdminPage } from './pages/admin';
import { LoginPage, SetupPage } from './pages/auth';
import { HomePage, LibraryPage, SearchPage } from './pages/browse';
import { ItemPage } from './pages/item';
import { PlayPage } from './pages/play';
import { PlaylistPage, PlaylistsPage } from './pages/playlists';
import { SettingsPage } from './pages/settings';
import { Link, match, navigate, useLocation } from './router';
import { useStore } from './store';
import './style.css';

function Nav({ user }: { user: User }) {
  const libraries = useStore(librariesStore);
  const location = useLocation();
  const [text, setText] = useState(location.path === '/search' ? (location.query.get('q') ?? '') : '');
  const libraryMatch = match('/library/:id', location.path);
  return (
    <header class="topbar">
      <a class="skip" href="#content">
        Skip to content
      </a>
      <nav class="nav" aria-label="Main">
        <Link href="/" class="brand" data-testid="nav-home" aria-current={location.path === '/' ? 'page' : undefined}>
          Ω Omega
        </Link>
        <ul class="nav-libraries">
          {libraries.map((library) => (
            <li key={library.id}>
              <Link
                href={`/library/${library.id}`}
                data-testid="nav-library"
                data-library-id={String(library.id)}
                aria-current={libraryMatch?.id === String(library.id) ? 'page' : undefined}
              >
                {library.name}
              </Link>
            </li>
          ))}
          <li>
            <Link
              href="/playlists"
              data-testid="nav-playlists"
              aria-current={location.path === '/playlists' || location.path.startsWith('/playlist/') ? 'page' : undefined}
            >
              Playlists
            </Link>
          </li>
        </ul>
        <form
          class="nav-search"
          role="search"
          onSubmit={(event) => {
            event.preventDefault();
            const q = text.trim();
            if (q) navigate(`/search?q=${encodeURIComponent(q)}`);
          }}
        >
          <input
            type="search"
            data-testid="nav-search"
            aria-label="Search everything"
            placeholder="Search"
            value={text}
            onInput={(event) => setText(event.currentTarget.value)}
          />
        </form>
        <div class="nav-user">
          {user.admin ? (
            <Link
              href="/admin/users"
              data-testid="nav-admin"
              aria-current={location.path.startsWith('/admin') ? 'page' : undefined}
            >
              Admin
            </Link>
          ) : null}
          <Link href="/settings" data-testid="nav-settings" aria-current={location.path === '/settings' ? 'page' : undefined}>
            Settings
          </Link>
          <button type="button" class="ghost" data-testid="nav-logout" onClick={() => void logout()}>
            Sign out <span class="muted">({user.name})</span>
          </button>
        </div>
      </nav>
    </header>
  );
}

function Routes({ user }: { user: User }) {
  const { path, query } = useLocation();
  let params: Record<string, string> | null;
  if (path === '/' || path === '') return <HomePage />;
  if ((params = match('/library/:id', path))) return <LibraryPage key={params.id} id={Number(params.id)} />;
  if ((params = match('/item/:id', path))) return <ItemPage id={Number(params.id)} />;
  if ((params = match('/play/:id', path))) {
    const t = query.get('t');
    const start = t !== null && t !== '' && Number.isFinite(Number(t)) ? Number(t) : null;
    return <PlayPage key={params.id} id={Number(params.id)} startAt={start} />;
  }
  if (path === '/playlists') return <PlaylistsPage />;
  if ((params = match('/playlist/:id', path))) return <PlaylistPage key={params.id} id={Number(params.id)} />;
  if (path === '/settings') return <SettingsPage />;
  if (path === '/search') return <SearchPage text={query.get('q') ?? ''} />;
  if (path === '/admin' || path.startsWith('/admin/')) {
    if (!user.admin) {
      return <Redirect to="/" />;
    }
    const tab = path.split('/')[2] || 'users';
    if (path === '/admin' || path === '/admin/') return <Redirect to="/admin/users" />;
    return <AdminPage tab={tab} />;
  }
  return (
    <main class="page">
      <h1>Not found</h1>
      <p>
        Nothing lives at this address. <Link href="/">Go home</Link>.
      </p>
    </main>
  );
}

function Redirect({ to }: { to: string }) {
  useEffect(() => navigate(to, true), [to]);
  return null;
}

function App() {
  const location = useLocation();
  const session = useStore(sessionStore);
  const [setupNeeded, setSetupNeeded] = useState<boolean | null>(null);
  const [bootError, setBootError] = useState<unknown>(null);
  const [verified, setVerified] = useState(false);

  useEffect(() => {
    api<{ needed: boolean }>('/setup', { anonymous: true })
      .then((state) => {
        const needed = Boolean(state?.needed);
        // A session kept from before the server was reset means nothing now.
        if (needed && sessionStore.get()) setSession(null);
        setSetupNeeded(needed);
      })
      .catch((failure) => {
        setBootError(failure);
        setSetupNeeded(false);
      });
  }, []);

  // Who is signed in (the stored user may be stale); the libraries for the nav.
  useEffect(() => {
    if (!session) {
      setVerified(false);
      return;
    }
    let cancelled = false;
    api<User>('/auth/me')
      .then((user) => {
        if (cancelled || !user) return;
        const current = sessionStore.get();
        if (current && JSON.stringify(current.user) !== JSON.stringify(user)) setSession({ ...current, user });
        setVerified(true);
      })
      .catch(() => {
        if (!cancelled) setVerified(true);
      });
    reloadLibraries().catch(() => {
      /* the nav shows none */
    });
    return () => {
      cancelled = true;
    };
  }, [session?.refresh_token]);

  const path = location.path;
  const onSetup = path === '/setup';
  const onLogin = path === '/login';

  useEffect(() => {
    if (setupNeeded === null) return;
    if (setupNeeded && !onSetup && !session) navigate('/setup', true);
    else if (!setupNeeded && !session && !onLogin && !onSetup) {
      const search = location.query.toString();
      const here = path + (search ? `?${search}` : '');
      navigate(path === '/' ? '/login' : `/login?next=${encodeURIComponent(here)}`, true);
    } else if (session && onLogin) navigate('/', true);
  }, [setupNeeded, session, path]);

  if (setupNeeded === null) {
    return (
      <main class="auth-page">
        <Loading />
      </main>
    );
  }
  if (onSetup) return <SetupPage />;
  if (onLogin || !session) {
    return (
      <>
        {bootError ? <ErrorBox error={bootError} /> : null}
        {onLogin ? <LoginPage /> : null}
      </>
    );
  }
  return (
    <div class={verified ? 'shell' : 'shell verifying'}>
      <Nav user={session.user} />
      <div id="content" tabIndex={-1}>
        <Routes user={session.user} />
      </div>
      <MusicBar />
    </div>
  );
}

startEvents();
render(<App />, document.getElementById('app')!);
