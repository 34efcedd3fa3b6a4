import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, errorText, setFavorite, type Item, type Library, type UserData } from './api';
import { loadScan, scansStore } from './events';
import { clock, durationMs, phaseLabel } from './format';
import { Link } from './router';
import { useStore } from './store';

export function ErrorBox({ error, testid }: { error: unknown; testid?: string }) {
  if (!error) return null;
  return (
    <p class="error" role="alert" data-testid={testid}>
      {errorText(error)}
    </p>
  );
}

/** A ☆/★ toggle for the caller's favourites; reports the new user data. */
export function FavoriteButton({
  item,
  onChange,
  testid = 'favorite-toggle',
  compact = false,
}: {
  item: Item;
  onChange: (data: UserData) => void;
  testid?: string;
  compact?: boolean;
}) {
  const favorite = item.user_data?.favorite ?? false;
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const toggle = async () => {
    setBusy(true);
    setError(null);
    try {
      const data = await setFavorite(item.id, !favorite);
      const before: UserData = item.user_data ?? { position_ms: 0, played: false, play_count: 0 };
      onChange({ ...before, ...(data ?? {}), favorite: data?.favorite ?? !favorite });
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };
  return (
    <button
      type="button"
      class={compact ? 'favorite compact' : 'favorite'}
      data-testid={testid}
      aria-pressed={favorite}
      aria-busy={busy}
      aria-label={compact ? `Favourite: ${item.title}` : undefined}
      title={error ? errorText(error) : favorite ? 'Remove from favourites' : 'Add to favourites'}
      onClick={() => {
        if (!busy) void toggle();
      }}
    >
      <span class="star" aria-hidden="true">
        {favorite ? '★' : '☆'}
      </span>
      {compact ? null : 'Favourite'}
      {error && !compact ? <span class="error-text">({errorText(error)})</span> : null}
    </button>
  );
}

export function Loading({ label = 'Loading…' }: { label?: string }) {
  return (
    <p class="muted" aria-live="polite">
      {label}
    </p>
  );
}

export function Poster({ item, large = false }: { item: Item; large?: boolean }) {
  const [failed, setFailed] = useState(false);
  useEffect(() => setFailed(false), [item.image]);
  if (item.image && !failed) {
    return (
      <img
        class={large ? 'poster poster-large' : 'poster'}
        src={item.image}
        alt=""
        loading="lazy"
        decoding="async"
        onError={() => setFailed(true)}
      />
    );
  }
  return (
    <div class={large ? 'poster poster-large placeholder' : 'poster placeholder'} aria-hidden="true">
      <span>{item.title}</span>
    </div>
  );
}

export function ProgressBar({ item }: { item: Item }) {
  const position = item.user_data?.position_ms ?? 0;
  if (position <= 0) return null;
  const duration = durationMs(item);
  const percent = duration ? Math.min(100, Math.max(2, (position / duration) * 100)) : 50;
  return (
    <div
      class="progress"
      data-testid="item-progress"
      role="progressbar"
      aria-label={`Watched ${clock(position / 1000)}`}
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={Math.round(percent)}
    >
      <div class="progress-fill" style={{ width: `${percent}%` }} />
    </div>
  );
}

export function ItemCard({ item }: { item: Item }) {
  const subtitle = [item.year, item.type === 'series' ? 'Show' : null].filter(Boolean).join(' · ');
  return (
    <Link href={`/item/${item.id}`} class="card" data-testid="item-card" data-item-id={String(item.id)}>
      <div class="card-art">
        <Poster item={item} />
        {item.user_data?.played ? (
          <span class="badge played-badge" title="Played">
            ✓
          </span>
        ) : null}
      </div>
      <ProgressBar item={item} />
      <span class="card-title">{item.title}</span>
      {subtitle ? <span class="card-sub">{subtitle}</span> : null}
    </Link>
  );
}

export function Grid({ items }: { items: Item[] }) {
  return (
    <div class="grid">
      {items.map((item) => (
        <ItemCard key={item.id} item={item} />
      ))}
    </div>
  );
}

/** A library's scan, live from events (and a poll while it runs). */
export function ScanProgress({ library }: { library: number }) {
  const scans = useStore(scansStore);
  const scan = scans[library];
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | null = null;
    // `timer` is set only while a poll is pending or in flight, so that an
    // event saying "running" after a poll saw the scan finish (events and
    // answers can cross) always starts polling again rather than leaving a
    // stale "running" on screen.
    const poll = async () => {
      const view = await loadScan(library);
      timer = null;
      if (stopped) return;
      const current = scansStore.get()[library] ?? view;
      if (!current || current.state === 'running' || current.state === 'idle') {
        timer = setTimeout(poll, current?.state === 'idle' ? 4000 : 1500);
      }
    };
    timer = setTimeout(poll, 0);
    const unsubscribe = scansStore.subscribe((all) => {
      const view = all[library];
      if (view && view.state === 'running' && !timer && !stopped) timer = setTimeout(poll, 1500);
    });
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      unsubscribe();
    };
  }, [library]);
  let body: ComponentChildren;
  if (!scan) body = <span class="muted">Checking…</span>;
  else if (scan.state === 'running') {
    const total = scan.total ?? 0;
    const done = scan.done ?? 0;
    body = (
      <>
        <span>
          {phaseLabel(scan.phase)} {done}/{total}
        </span>
        <progress max={total || 1} value={total ? done : undefined} aria-label="Scan progress" />
      </>
    );
  } else if (scan.state === 'done') {
    const skipped = scan.skipped ?? [];
    body = (
      <>
        <span class="ok">
          Finished{typeof scan.items === 'number' ? ` · ${scan.items} ${scan.items === 1 ? 'item' : 'items'}` : ''}
        </span>
        {skipped.length > 0 ? (
          <details class="skipped" data-testid="scan-skipped">
            <summary>
              {skipped.length} {skipped.length === 1 ? 'file' : 'files'} skipped
            </summary>
            <ul>
              {skipped.map((file) => (
                <li key={file.path}>
                  <code>{file.path}</code>: {file.reason}
                </li>
              ))}
            </ul>
          </details>
        ) : null}
      </>
    );
  }
  else if (scan.state === 'failed') body = <span class="error-text">Failed: {scan.error}</span>;
  else body = <span class="muted">Idle</span>;
  return (
    <div class="scan-progress" data-testid="scan-progress" data-state={scan?.state ?? 'unknown'} aria-live="polite">
      {body}
    </div>
  );
}

interface FolderListing {
  path: string;
  parent: string | null;
  folders: { name: string; path: string }[];
  truncated: boolean;
}

export const LIBRARY_TYPES: [string, string][] = [
  ['movies', 'Movies'],
  ['shows', 'Shows'],
  ['music', 'Music'],
  ['audiobooks', 'Audiobooks'],
  ['books', 'Books'],
  ['photos', 'Photos'],
];

/** Name, type and a folder browser; adds a library at the folder shown. */
export function AddLibraryForm({ onAdded }: { onAdded: (library: Library) => void }) {
  const [name, setName] = useState('');
  const [kind, setKind] = useState('movies');
  const [listing, setListing] = useState<FolderListing | null>(null);
  const [typed, setTyped] = useState('/');
  const [browseError, setBrowseError] = useState<unknown>(null);
  const [addError, setAddError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  const browse = async (path: string) => {
    setBrowseError(null);
    try {
      const next = await api<FolderListing>(`/folders?path=${encodeURIComponent(path || '/')}`);
      setListing(next);
      setTyped(next.path);
    } catch (error) {
      setBrowseError(error);
    }
  };

  useEffect(() => {
    void browse('/');
  }, []);

  const add = async (event: Event) => {
    event.preventDefault();
    setAddError(null);
    const path = (typed || listing?.path || '').trim();
    if (!name.trim()) {
      setAddError(new Error('Give the library a name.'));
      return;
    }
    if (!path) {
      setAddError(new Error('Choose a folder.'));
      return;
    }
    setBusy(true);
    try {
      const library = await api<Library>('/libraries', {
        method: 'POST',
        body: { name: name.trim(), type: kind, paths: [path] },
      });
      setName('');
      onAdded(library);
    } catch (error) {
      setAddError(error);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form class="panel add-library" onSubmit={add}>
      <div class="row wrap">
        <label class="field">
          <span>Name</span>
          <input
            data-testid="library-name"
            value={name}
            onInput={(event) => setName(event.currentTarget.value)}
            placeholder="Movies"
          />
        </label>
        <label class="field">
          <span>Type</span>
          <select data-testid="library-type" value={kind} onChange={(event) => setKind(event.currentTarget.value)}>
            {LIBRARY_TYPES.map(([value, label]) => (
              <option key={value} value={value}>
                {label}
              </option>
            ))}
          </select>
        </label>
      </div>
      <div class="folder-browser" data-testid="folder-browser">
        <label class="field">
          <span>Folder</span>
          <input
            data-testid="folder-path"
            value={typed}
            spellcheck={false}
            autocomplete="off"
            onInput={(event) => setTyped(event.currentTarget.value)}
            onKeyDown={(event) => {
              if (event.key === 'Enter') {
                event.preventDefault();
                void browse(event.currentTarget.value.trim());
              }
            }}
          />
        </label>
        <ErrorBox error={browseError} />
        <ul class="folders">
          {listing?.parent ? (
            <li>
              <button type="button" class="folder" data-testid="folder-up" onClick={() => browse(listing.parent!)}>
                ⬑ ..
              </button>
            </li>
          ) : null}
          {listing?.folders.map((folder) => (
            <li key={folder.path}>
              <button
                type="button"
                class="folder"
                data-testid="folder-entry"
                data-path={folder.path}
                onClick={() => browse(folder.path)}
              >
                📁 {folder.name}
              </button>
            </li>
          ))}
          {listing && listing.folders.length === 0 ? <li class="muted">No sub-folders</li> : null}
          {listing?.truncated ? <li class="muted">More folders than shown: type a path.</li> : null}
        </ul>
      </div>
      <ErrorBox error={addError} testid="library-error" />
      <button type="submit" class="primary" data-testid="library-add" disabled={busy}>
        {busy ? 'Adding…' : 'Add library here'}
      </button>
    </form>
  );
}
