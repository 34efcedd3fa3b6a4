import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, isNotFound, librariesStore, reloadLibraries, sessionStore, type Library, type ScanStatus, type User } from '../api';
import { AddLibraryForm, ErrorBox, Loading, ScanProgress } from '../components';
import { onEvent, scanFromStatus, scansStore } from '../events';
import { bytes } from '../format';
import { Link } from '../router';
import { useStore } from '../store';

const TABS: [string, string][] = [
  ['users', 'Users'],
  ['libraries', 'Libraries'],
  ['jobs', 'Jobs'],
  ['cluster', 'Cluster'],
  ['store', 'Store'],
  ['p2p', 'P2P'],
];

export function AdminPage({ tab }: { tab: string }) {
  const current = TABS.some(([name]) => name === tab) ? tab : 'users';
  return (
    <main class="page admin-page">
      <h1>Administration</h1>
      <nav class="tabs" aria-label="Administration">
        {TABS.map(([name, label]) => (
          <Link
            key={name}
            href={`/admin/${name}`}
            class={name === current ? 'tab active' : 'tab'}
            data-testid={`admin-${name}`}
            aria-current={name === current ? 'page' : undefined}
          >
            {label}
          </Link>
        ))}
      </nav>
      <section class="tab-panel" aria-label={TABS.find(([name]) => name === current)?.[1]}>
        {current === 'users' ? <UsersTab /> : null}
        {current === 'libraries' ? <LibrariesTab /> : null}
        {current === 'jobs' ? <JobsTab /> : null}
        {current === 'cluster' ? <ClusterTab /> : null}
        {current === 'store' ? <StoreTab /> : null}
        {current === 'p2p' ? <P2pTab /> : null}
      </section>
    </main>
  );
}

/** Which libraries a user may see: all of them (null), or those checked. */
function LibraryChoice({
  libraries,
  chosen,
  onChange,
}: {
  libraries: Library[];
  chosen: number[] | null;
  onChange: (chosen: number[] | null) => void;
}) {
  const toggle = (id: number, on: boolean) => {
    const current = chosen ?? [];
    onChange(on ? [...current.filter((other) => other !== id), id] : current.filter((other) => other !== id));
  };
  return (
    <div class="row wrap">
      <label class="check">
        <input
          type="checkbox"
          data-testid="access-all"
          checked={chosen === null}
          onChange={(event) => onChange(event.currentTarget.checked ? null : [])}
        />
        <span>All libraries</span>
      </label>
      {chosen === null
        ? null
        : libraries.map((library) => (
            <label class="check" key={library.id}>
              <input
                type="checkbox"
                data-testid="access-library"
                data-library-name={library.name}
                checked={chosen.includes(library.id)}
                onChange={(event) => toggle(library.id, event.currentTarget.checked)}
              />
              <span>{library.name}</span>
            </label>
          ))}
    </div>
  );
}

function UsersTab() {
  const me = useStore(sessionStore)?.user;
  const [users, setUsers] = useState<User[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [admin, setAdmin] = useState(false);
  // Libraries a new user may see: null for all.
  const [access, setAccess] = useState<number[] | null>(null);
  // The user whose libraries are being edited, and the choice so far.
  const [editing, setEditing] = useState<{ user: number; libraries: number[] | null } | null>(null);
  const [busy, setBusy] = useState(false);
  const libraries = useStore(librariesStore);
  const libraryNames = (ids: number[] | null) =>
    ids === null
      ? 'All'
      : ids.map((id) => libraries.find((library) => library.id === id)?.name ?? `#${id}`).join(', ') || 'None';

  const load = () =>
    api<User[]>('/users')
      .then((list) => setUsers(list))
      .catch((failure) => {
        setError(failure);
        setUsers([]);
      });

  useEffect(() => {
    void load();
  }, []);

  const create = async (event: Event) => {
    event.preventDefault();
    setError(null);
    setBusy(true);
    try {
      await api('/users', {
        method: 'POST',
        body: { username: name.trim(), password, admin, libraries: admin ? null : access },
      });
      setName('');
      setPassword('');
      setAdmin(false);
      setAccess(null);
      await load();
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  const resetPassword = async (user: User) => {
    const password = window.prompt(`New password for ${user.name} (at least 8 characters). Every sign-in of ${user.name} ends.`);
    if (password === null) return;
    setError(null);
    if (password.length < 8) {
      setError('A password needs at least 8 characters.');
      return;
    }
    try {
      await api(`/users/${user.id}/password`, { method: 'PUT', body: { password } });
    } catch (failure) {
      setError(failure);
    }
  };

  const saveAccess = async () => {
    if (editing === null) return;
    setError(null);
    try {
      await api(`/users/${editing.user}/access`, { method: 'PUT', body: { libraries: editing.libraries } });
      setEditing(null);
      await load();
    } catch (failure) {
      setError(failure);
    }
  };

  const remove = async (user: User) => {
    setError(null);
    try {
      await api(`/users/${user.id}`, { method: 'DELETE' });
      await load();
    } catch (failure) {
      setError(failure);
    }
  };

  return (
    <>
      <ErrorBox error={error} testid="admin-error" />
      {users === null ? (
        <Loading />
      ) : (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Role</th>
                <th scope="col">Libraries</th>
                <th scope="col">2FA</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {users.map((user) => (
                <tr key={user.id} data-testid="user-row" data-user-id={String(user.id)}>
                  <td>{user.name}</td>
                  <td>{user.admin ? 'Administrator' : 'Viewer'}</td>
                  <td data-testid="user-libraries">
                    {editing?.user === user.id ? (
                      <fieldset class="access" data-testid="user-access-editor">
                        <legend class="sr-only">Libraries {user.name} may see</legend>
                        <LibraryChoice
                          libraries={libraries}
                          chosen={editing.libraries}
                          onChange={(chosen) => setEditing({ user: user.id, libraries: chosen })}
                        />
                        <button type="button" class="primary" data-testid="user-access-save" onClick={() => void saveAccess()}>
                          Save
                        </button>{' '}
                        <button type="button" onClick={() => setEditing(null)}>
                          Cancel
                        </button>
                      </fieldset>
                    ) : (
                      libraryNames(user.libraries)
                    )}
                  </td>
                  <td>{user.totp ? 'Yes' : 'No'}</td>
                  <td>
                    {me && me.id === user.id ? (
                      <span class="muted">You</span>
                    ) : (
                      <>
                        {user.admin ? null : (
                          <>
                            <button
                              type="button"
                              data-testid="user-access"
                              onClick={() => setEditing({ user: user.id, libraries: user.libraries })}
                            >
                              Libraries
                            </button>{' '}
                          </>
                        )}
                        <button type="button" data-testid="user-reset-password" onClick={() => void resetPassword(user)}>
                          Reset password
                        </button>{' '}
                        <button type="button" class="danger" data-testid="user-delete" onClick={() => remove(user)}>
                          Delete
                        </button>
                      </>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <form class="panel" onSubmit={create} aria-labelledby="new-user-heading">
        <h2 id="new-user-heading">New user</h2>
        <div class="row wrap">
          <label class="field">
            <span>Name</span>
            <input data-testid="user-name" required value={name} onInput={(event) => setName(event.currentTarget.value)} />
          </label>
          <label class="field">
            <span>Password</span>
            <input
              data-testid="user-password"
              type="password"
              autocomplete="new-password"
              required
              value={password}
              onInput={(event) => setPassword(event.currentTarget.value)}
            />
          </label>
          <label class="check">
            <input
              type="checkbox"
              data-testid="user-admin"
              checked={admin}
              onChange={(event) => setAdmin(event.currentTarget.checked)}
            />
            <span>Administrator</span>
          </label>
        </div>
        {admin ? null : (
          <fieldset class="access" data-testid="user-new-access">
            <legend>Libraries</legend>
            <LibraryChoice libraries={libraries} chosen={access} onChange={setAccess} />
          </fieldset>
        )}
        <button type="submit" class="primary" data-testid="user-create" disabled={busy}>
          Create user
        </button>
      </form>
    </>
  );
}

function LibrariesTab() {
  const libraries = useStore(librariesStore);
  const [error, setError] = useState<unknown>(null);
  const [loaded, setLoaded] = useState(false);

  useEffect(() => {
    reloadLibraries()
      .catch((failure) => setError(failure))
      .finally(() => setLoaded(true));
  }, []);

  const scan = async (library: Library) => {
    setError(null);
    try {
      // The answer is where the scan stands now (it may already have ended).
      const status = await api<ScanStatus>(`/libraries/${library.id}/scan`, { method: 'POST' });
      scansStore.update((scans) => ({ ...scans, [library.id]: scanFromStatus(status) }));
    } catch (failure) {
      setError(failure);
    }
  };

  const remove = async (library: Library) => {
    setError(null);
    try {
      await api(`/libraries/${library.id}`, { method: 'DELETE' });
      await reloadLibraries();
    } catch (failure) {
      setError(failure);
    }
  };

  return (
    <>
      <ErrorBox error={error} testid="admin-error" />
      {!loaded ? (
        <Loading />
      ) : libraries.length === 0 ? (
        <p class="muted">No libraries yet.</p>
      ) : (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Type</th>
                <th scope="col">Folders</th>
                <th scope="col">Scan</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {libraries.map((library) => (
                <tr key={library.id} data-testid="library-row" data-library-id={String(library.id)}>
                  <td>
                    <Link href={`/library/${library.id}`}>{library.name}</Link>
                    {library.offline ? (
                      <span
                        class="badge offline-badge"
                        data-testid="library-offline"
                        title={(library.offline_folders ?? []).map((folder) => `${folder.path}: ${folder.reason}`).join('\n')}
                      >
                        Offline
                      </span>
                    ) : null}
                  </td>
                  <td>{library.type}</td>
                  <td class="paths">{(library.paths ?? []).join(', ')}</td>
                  <td>
                    <ScanProgress library={library.id} />
                  </td>
                  <td class="row">
                    <button type="button" data-testid="scan-button" onClick={() => scan(library)}>
                      Scan
                    </button>
                    <button type="button" class="danger" data-testid="library-delete" onClick={() => remove(library)}>
                      Delete
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <h2>Add a library</h2>
      <AddLibraryForm
        onAdded={() => {
          reloadLibraries().catch((failure) => setError(failure));
        }}
      />
    </>
  );
}

interface Job {
  id: number;
  item: number;
  profile: string;
  state: string;
  node: number | null;
  attempts: number;
  error: string | null;
  created_ms: number;
  progress: { done_s: number; total_s: number } | null;
}

function JobsTab() {
  const [jobs, setJobs] = useState<Job[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [item, setItem] = useState('');
  const [profile, setProfile] = useState('720p');
  const [chunks, setChunks] = useState('');

  const load = () =>
    api<Job[]>('/jobs')
      .then((list) => setJobs(Array.isArray(list) ? list : []))
      .catch((failure) => {
        setError(failure);
        setJobs((current) => current ?? []);
      });

  useEffect(() => {
    void load();
    const timer = setInterval(() => void load(), 3000);
    const off = onEvent((event) => {
      if (event.type === 'job') void load();
    });
    return () => {
      clearInterval(timer);
      off();
    };
  }, []);

  const create = async (event: Event) => {
    event.preventDefault();
    setError(null);
    try {
      const body: Record<string, unknown> = { item: Number(item), profile };
      if (chunks.trim()) body.chunks = Number(chunks);
      await api('/jobs', { method: 'POST', body });
      setItem('');
      await load();
    } catch (failure) {
      setError(failure);
    }
  };

  return (
    <>
      <ErrorBox error={error} testid="admin-error" />
      {jobs === null ? (
        <Loading />
      ) : jobs.length === 0 ? (
        <p class="muted">No jobs.</p>
      ) : (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Job</th>
                <th scope="col">Item</th>
                <th scope="col">Profile</th>
                <th scope="col">State</th>
                <th scope="col">Node</th>
                <th scope="col">Progress</th>
              </tr>
            </thead>
            <tbody>
              {jobs.map((job) => {
                const percent =
                  job.state === 'done'
                    ? 100
                    : job.progress && job.progress.total_s > 0
                      ? Math.min(100, (job.progress.done_s / job.progress.total_s) * 100)
                      : null;
                return (
                  <tr key={job.id} data-testid="job-row" data-job-id={String(job.id)} data-state={job.state}>
                    <td>#{job.id}</td>
                    <td>
                      <Link href={`/item/${job.item}`}>{job.item}</Link>
                    </td>
                    <td>{job.profile}</td>
                    <td data-testid="job-state">
                      {job.state}
                      {job.error ? <span class="error-text"> — {job.error}</span> : null}
                    </td>
                    <td>{job.node ?? '—'}</td>
                    <td data-testid="job-progress">
                      {percent === null ? (
                        '—'
                      ) : (
                        <>
                          <progress max={100} value={percent} aria-label={`Job ${job.id} progress`} /> {Math.round(percent)}%
                        </>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      <form class="panel" onSubmit={create} aria-labelledby="new-job-heading">
        <h2 id="new-job-heading">New transcode job</h2>
        <div class="row wrap">
          <label class="field">
            <span>Item id</span>
            <input data-testid="job-item" inputMode="numeric" required value={item} onInput={(event) => setItem(event.currentTarget.value)} />
          </label>
          <label class="field">
            <span>Profile</span>
            <select data-testid="job-profile" value={profile} onChange={(event) => setProfile(event.currentTarget.value)}>
              {['1080p', '720p', '480p', '360p', 'audio', '1080p-hevc', '720p-hevc', '720p-vp9'].map((name) => (
                <option key={name} value={name}>
                  {name}
                </option>
              ))}
            </select>
          </label>
          <label class="field">
            <span>Chunks (optional)</span>
            <input data-testid="job-chunks" inputMode="numeric" value={chunks} onInput={(event) => setChunks(event.currentTarget.value)} />
          </label>
        </div>
        <button type="submit" class="primary" data-testid="job-create">
          Queue job
        </button>
      </form>
    </>
  );
}

function scalar(value: unknown): string {
  if (value === null || value === undefined) return '—';
  if (typeof value === 'number') return Number.isInteger(value) ? value.toLocaleString() : value.toFixed(3);
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

function humanize(key: string): string {
  return key.replace(/_/g, ' ').replace(/^./, (first) => first.toUpperCase());
}

function Unavailable({ error }: { error: unknown }) {
  if (isNotFound(error)) return <p class="muted">This server does not report this yet.</p>;
  return <ErrorBox error={error} testid="admin-error" />;
}

function ClusterTab() {
  const [status, setStatus] = useState<Record<string, unknown> | null>(null);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    let cancelled = false;
    const load = () =>
      api<Record<string, unknown>>('/cluster')
        .then((value) => {
          if (!cancelled) {
            setStatus(value && typeof value === 'object' ? value : {});
            setError(null);
          }
        })
        .catch((failure) => {
          if (!cancelled) setError(failure);
        });
    void load();
    const timer = setInterval(load, 5000);
    const off = onEvent((event) => {
      if (event.type === 'cluster') void load();
    });
    return () => {
      cancelled = true;
      clearInterval(timer);
      off();
    };
  }, []);

  if (error && !status) return <Unavailable error={error} />;
  if (!status) return <Loading />;

  const membersKey = Object.keys(status).find(
    (key) => Array.isArray(status[key]) && (status[key] as unknown[]).every((entry) => entry && typeof entry === 'object'),
  );
  const members = membersKey ? (status[membersKey] as Record<string, unknown>[]) : [];
  const columns: string[] = [];
  for (const member of members) for (const key of Object.keys(member)) if (!columns.includes(key)) columns.push(key);
  columns.sort((a, b) => (a === 'id' ? -1 : b === 'id' ? 1 : 0));
  const leader = status.leader ?? status.leader_id;
  const isLeader = (member: Record<string, unknown>) =>
    (leader !== undefined && leader !== null && member.id === leader) ||
    member.leader === true ||
    member.role === 'leader' ||
    member.state === 'leader';
  const others = Object.entries(status).filter(([key]) => key !== membersKey);

  return (
    <>
      {error ? <ErrorBox error={error} /> : null}
      <dl class="stats" data-testid="cluster-status">
        {others.map(([key, value]) => (
          <div key={key}>
            <dt>{humanize(key)}</dt>
            <dd>{scalar(value)}</dd>
          </div>
        ))}
      </dl>
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              {columns.map((column) => (
                <th key={column} scope="col">
                  {humanize(column)}
                </th>
              ))}
              <th scope="col">Leader</th>
            </tr>
          </thead>
          <tbody>
            {members.map((member, index) => (
              <tr
                key={String(member.id ?? index)}
                data-testid="member-row"
                data-member-id={String(member.id ?? '')}
                data-leader={isLeader(member) ? 'true' : 'false'}
                class={isLeader(member) ? 'leader-row' : undefined}
              >
                {columns.map((column) => (
                  <td key={column}>{scalar(member[column])}</td>
                ))}
                <td>
                  {isLeader(member) ? (
                    <span class="badge leader" data-testid="leader">
                      leader
                    </span>
                  ) : null}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </>
  );
}

function flatten(value: unknown, prefix: string, out: [string, unknown][]) {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    for (const [key, inner] of Object.entries(value as Record<string, unknown>))
      flatten(inner, prefix ? `${prefix}.${key}` : key, out);
  } else out.push([prefix, value]);
}

function StoreTab() {
  const [stats, setStats] = useState<unknown>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    api('/store')
      .then((value) => setStats(value ?? {}))
      .catch((failure) => setError(failure));
  }, []);
  if (error) return <Unavailable error={error} />;
  if (stats === null) return <Loading />;
  const entries: [string, unknown][] = [];
  flatten(stats, '', entries);
  const show = (key: string, value: unknown): ComponentChildren => {
    if (typeof value === 'number' && /bytes/.test(key) && Number.isInteger(value))
      return (
        <>
          {bytes(value)} <span class="muted">({value.toLocaleString()})</span>
        </>
      );
    if (typeof value === 'number' && /ratio/.test(key)) return `${value.toFixed(2)}×`;
    return scalar(value);
  };
  return (
    <dl class="stats" data-testid="store-stats">
      {entries.map(([key, value]) => (
        <div key={key}>
          <dt>{humanize(key)}</dt>
          <dd>{show(key, value)}</dd>
        </div>
      ))}
    </dl>
  );
}

interface P2pFigures {
  peer_id: string;
  listen_addrs: string[];
  peers: { peer: string; bytes_in: number; bytes_out: number }[];
  served: { origin_bytes: number; relayed_bytes: number };
  clients: { from_origin_bytes: number; from_peers_bytes: number; offload_ratio: number | null };
  relay: { kept_blobs: number; cache_max_bytes: number };
}

/** This node on the P2P data plane: offload, what it served, its peers. */
function P2pTab() {
  const [figures, setFigures] = useState<P2pFigures | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    const load = () =>
      api<P2pFigures>('/p2p')
        .then((value) => setFigures(value))
        .catch((failure) => setError(failure));
    load();
    const timer = window.setInterval(load, 5000);
    return () => window.clearInterval(timer);
  }, []);
  if (error) return <Unavailable error={error} />;
  if (figures === null) return <Loading />;
  const ratio = figures.clients.offload_ratio;
  return (
    <>
      <dl class="stats" data-testid="p2p-stats">
        <div>
          <dt>Offload (clients' bytes not from the origin)</dt>
          <dd data-testid="p2p-offload">{ratio === null ? 'no reports yet' : `${(ratio * 100).toFixed(0)} %`}</dd>
        </div>
        <div>
          <dt>Clients got from the origin / from peers</dt>
          <dd>
            {bytes(figures.clients.from_origin_bytes)} / {bytes(figures.clients.from_peers_bytes)}
          </dd>
        </div>
        <div>
          <dt>Served as origin / as relay</dt>
          <dd>
            {bytes(figures.served.origin_bytes)} / {bytes(figures.served.relayed_bytes)}
          </dd>
        </div>
        <div>
          <dt>Relay cache</dt>
          <dd>
            {figures.relay.kept_blobs} blobs, at most {bytes(figures.relay.cache_max_bytes)}
          </dd>
        </div>
        <div>
          <dt>Peer id</dt>
          <dd class="mono">{figures.peer_id}</dd>
        </div>
        <div>
          <dt>Listening</dt>
          <dd class="mono">{figures.listen_addrs.join(', ')}</dd>
        </div>
      </dl>
      <table class="source-stats" data-testid="p2p-peers">
        <thead>
          <tr>
            <th>Peer</th>
            <th>In</th>
            <th>Out</th>
          </tr>
        </thead>
        <tbody>
          {figures.peers.length === 0 ? (
            <tr>
              <td colSpan={3} class="muted">
                No traffic yet.
              </td>
            </tr>
          ) : (
            figures.peers.map((peer) => (
              <tr key={peer.peer}>
                <td class="mono">{peer.peer}</td>
                <td>{bytes(peer.bytes_in)}</td>
                <td>{bytes(peer.bytes_out)}</td>
              </tr>
            ))
          )}
        </tbody>
      </table>
    </>
  );
}
