import { useEffect, useState } from 'preact/hooks';
import {
  AUDIO_KINDS,
  VIDEO_KINDS,
  createPlaylist,
  deletePlaylist,
  listPlaylists,
  loadPlaylist,
  sessionStore,
  updatePlaylist,
  type Item,
  type Playlist,
  type PlaylistDetail,
} from '../api';
import { ErrorBox, Loading } from '../components';
import { clock, durationMs } from '../format';
import { playQueue } from '../music';
import { Link, navigate } from '../router';
import { useStore } from '../store';

function itemCount(count: number): string {
  return count === 1 ? '1 item' : `${count} items`;
}

/** "3 items · 12:04", and the owner when it is not the caller. */
function Summary({ playlist, me }: { playlist: Playlist; me: number | undefined }) {
  return (
    <span class="muted playlist-summary">
      {playlist.owner !== me ? <span data-testid="playlist-owner">by {playlist.owner_name} · </span> : null}
      <span data-testid="playlist-count">{itemCount(playlist.item_count)}</span>
      {playlist.duration_ms > 0 ? <span> · {clock(playlist.duration_ms / 1000)}</span> : null}
      {playlist.public ? <span> · Public</span> : null}
    </span>
  );
}

export function PlaylistsPage() {
  const session = useStore(sessionStore);
  const me = session?.user.id;
  const [playlists, setPlaylists] = useState<Playlist[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [name, setName] = useState('');
  const [createError, setCreateError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  const reload = () =>
    listPlaylists()
      .then((list) => {
        setPlaylists(list);
        setError(null);
      })
      .catch((failure) => {
        setError(failure);
        setPlaylists((list) => list ?? []);
      });

  useEffect(() => {
    void reload();
  }, []);

  const create = async (event: Event) => {
    event.preventDefault();
    const wanted = name.trim();
    if (!wanted) {
      setCreateError(new Error('Give the playlist a name.'));
      return;
    }
    setBusy(true);
    setCreateError(null);
    try {
      await createPlaylist(wanted);
      setName('');
      await reload();
    } catch (failure) {
      setCreateError(failure);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="page playlists-page">
      <h1>Playlists</h1>
      <form class="panel row wrap" onSubmit={create}>
        <label class="field">
          <span>New playlist</span>
          <input
            data-testid="playlist-name"
            value={name}
            maxLength={200}
            placeholder="Name"
            onInput={(event) => setName(event.currentTarget.value)}
          />
        </label>
        <button type="submit" class="primary field-button" data-testid="playlist-create" disabled={busy}>
          {busy ? 'Creating…' : 'Create'}
        </button>
        <ErrorBox error={createError} testid="playlist-create-error" />
      </form>
      <ErrorBox error={error} />
      {playlists === null ? (
        <Loading />
      ) : playlists.length === 0 ? (
        <p class="muted" data-testid="playlists-empty">
          No playlists yet. Create one here, or add a track to a new one from its album.
        </p>
      ) : (
        <ul class="key-list playlist-list" data-testid="playlist-list">
          {playlists.map((playlist) => (
            <li key={playlist.id} data-testid="playlist-row" data-playlist-id={String(playlist.id)}>
              <Link href={`/playlist/${playlist.id}`} class="key-name" data-testid="playlist-link">
                {playlist.name}
              </Link>
              <Summary playlist={playlist} me={me} />
            </li>
          ))}
        </ul>
      )}
    </main>
  );
}

function playAll(items: Item[], from = 0) {
  const chosen = items[from];
  if (chosen && VIDEO_KINDS.includes(chosen.type)) {
    navigate(`/play/${chosen.id}`);
    return;
  }
  const rest = items.slice(from);
  const audio = rest.filter((entry) => AUDIO_KINDS.includes(entry.type));
  if (audio.length > 0) {
    playQueue(audio, 0, 0);
    return;
  }
  const video = rest.find((entry) => VIDEO_KINDS.includes(entry.type));
  if (video) navigate(`/play/${video.id}`);
}

export function PlaylistPage({ id }: { id: number }) {
  const session = useStore(sessionStore);
  const me = session?.user.id;
  const [playlist, setPlaylist] = useState<PlaylistDetail | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [actionError, setActionError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  /** After a move, focus this button (by its test id) at this index. */
  const [focusAfter, setFocusAfter] = useState<{ index: number; testid: string } | null>(null);

  useEffect(() => {
    let cancelled = false;
    setPlaylist(null);
    setError(null);
    setActionError(null);
    loadPlaylist(id)
      .then((loaded) => {
        if (!cancelled) setPlaylist({ ...loaded, items: Array.isArray(loaded.items) ? loaded.items : [] });
      })
      .catch((failure) => {
        if (!cancelled) setError(failure);
      });
    return () => {
      cancelled = true;
    };
  }, [id]);

  useEffect(() => {
    if (!focusAfter || busy) return;
    const row = document.querySelector(`[data-testid="playlist-item"][data-index="${focusAfter.index}"]`);
    const target =
      row?.querySelector<HTMLButtonElement>(`[data-testid="${focusAfter.testid}"]:not(:disabled)`) ??
      row?.querySelector<HTMLButtonElement>('button:not(:disabled)');
    target?.focus();
    setFocusAfter(null);
  }, [focusAfter, playlist, busy]);

  if (error) {
    return (
      <main class="page">
        <ErrorBox error={error} testid="playlist-error" />
        <p>
          <Link href="/playlists">← Playlists</Link>
        </p>
      </main>
    );
  }
  if (!playlist) {
    return (
      <main class="page">
        <Loading />
      </main>
    );
  }

  const owner = playlist.owner === me;
  const items = playlist.items;

  /** Saves a change; shows it at once and takes it back if it fails. */
  const save = async (change: { items?: Item[]; public?: boolean }) => {
    const before = playlist;
    const next: PlaylistDetail = {
      ...playlist,
      ...(change.items ? { items: change.items, item_count: change.items.length } : {}),
      ...(change.public !== undefined ? { public: change.public } : {}),
    };
    setPlaylist(next);
    setBusy(true);
    setActionError(null);
    try {
      const view = await updatePlaylist(playlist.id, {
        items: change.items?.map((entry) => entry.id),
        public: change.public,
      });
      setPlaylist((current) => (current ? { ...current, ...view } : current));
    } catch (failure) {
      setPlaylist(before);
      setActionError(failure);
    } finally {
      setBusy(false);
    }
  };

  const move = (index: number, by: number, testid: string) => {
    const to = index + by;
    if (to < 0 || to >= items.length) return;
    const next = [...items];
    [next[index], next[to]] = [next[to], next[index]];
    setFocusAfter({ index: to, testid });
    void save({ items: next });
  };

  const remove = (index: number) => {
    setFocusAfter({ index: Math.min(index, items.length - 2), testid: 'playlist-item-remove' });
    void save({ items: items.filter((_, at) => at !== index) });
  };

  const destroy = async () => {
    setBusy(true);
    setActionError(null);
    try {
      await deletePlaylist(playlist.id);
      navigate('/playlists');
    } catch (failure) {
      setActionError(failure);
      setBusy(false);
    }
  };

  return (
    <main class="page playlist-page">
      <nav class="crumbs" aria-label="Up">
        <Link href="/playlists" data-testid="playlist-back">
          ← Playlists
        </Link>
      </nav>
      <h1 data-testid="playlist-title">{playlist.name}</h1>
      <p class="meta">
        <Summary playlist={playlist} me={me} />
      </p>
      <div class="actions">
        <button
          type="button"
          class="primary"
          data-testid="playlist-play"
          disabled={items.length === 0}
          onClick={() => playAll(items)}
        >
          ▶ Play
        </button>
        {owner ? (
          <label class="check playlist-public">
            <input
              type="checkbox"
              data-testid="playlist-public"
              checked={playlist.public}
              disabled={busy}
              onChange={(event) => void save({ public: event.currentTarget.checked })}
            />
            Public: other users may see it
          </label>
        ) : null}
        {owner ? (
          <button type="button" class="danger" data-testid="playlist-delete" disabled={busy} onClick={() => void destroy()}>
            Delete playlist
          </button>
        ) : null}
      </div>
      <ErrorBox error={actionError} testid="playlist-action-error" />
      {items.length === 0 ? (
        <p class="muted" data-testid="playlist-empty">
          Nothing in it yet: use “+” on an album’s track, or “+ Playlist” on an item’s page.
        </p>
      ) : (
        <ol class="children list playlist-items" data-testid="playlist-items">
          {items.map((entry, index) => (
            <li
              key={`${entry.id}-${index}`}
              class="child"
              data-testid="playlist-item"
              data-item-id={String(entry.id)}
              data-index={String(index)}
            >
              <button
                type="button"
                class="track-play"
                data-testid="playlist-item-play"
                aria-label={`Play ${entry.title}`}
                onClick={() => playAll(items, index)}
              >
                ▶
              </button>
              <Link href={`/item/${entry.id}`} class="child-link">
                <span class="playlist-index muted">{index + 1}</span>
                <span class="child-title">{entry.title}</span>
                {durationMs(entry) ? <span class="muted">{clock(durationMs(entry)! / 1000)}</span> : null}
              </Link>
              {owner ? (
                <span class="playlist-item-tools">
                  <button
                    type="button"
                    class="ghost icon"
                    data-testid="playlist-item-up"
                    aria-label={`Move ${entry.title} up`}
                    title="Move up"
                    disabled={busy || index === 0}
                    onClick={() => move(index, -1, 'playlist-item-up')}
                  >
                    ↑
                  </button>
                  <button
                    type="button"
                    class="ghost icon"
                    data-testid="playlist-item-down"
                    aria-label={`Move ${entry.title} down`}
                    title="Move down"
                    disabled={busy || index === items.length - 1}
                    onClick={() => move(index, 1, 'playlist-item-down')}
                  >
                    ↓
                  </button>
                  <button
                    type="button"
                    class="ghost icon danger"
                    data-testid="playlist-item-remove"
                    aria-label={`Remove ${entry.title} from the playlist`}
                    title="Remove"
                    disabled={busy}
                    onClick={() => remove(index)}
                  >
                    ✕
                  </button>
                </span>
              ) : null}
            </li>
          ))}
        </ol>
      )}
    </main>
  );
}
