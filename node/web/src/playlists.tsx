// "Add to playlist": a button and a compact menu of the caller's playlists.
import { useEffect, useLayoutEffect, useRef, useState } from 'preact/hooks';
import {
  appendToPlaylist,
  createPlaylist,
  errorText,
  listPlaylists,
  sessionStore,
  type Item,
  type Playlist,
} from './api';

interface Place {
  top: number;
  left: number;
  width: number;
}

const MENU_WIDTH = 272;
const MARGIN = 8;

/** Where the menu goes: below the button, or above when it would not fit. */
function placeMenu(button: HTMLElement, menu: HTMLElement | null): Place {
  const rect = button.getBoundingClientRect();
  const width = Math.min(MENU_WIDTH, window.innerWidth - 2 * MARGIN);
  const left = Math.max(MARGIN, Math.min(rect.right - width, window.innerWidth - width - MARGIN));
  const height = menu?.offsetHeight ?? 200;
  // The music bar covers the bottom of the window.
  const bar = document.querySelector('.music-bar') as HTMLElement | null;
  const bottom = bar ? bar.getBoundingClientRect().top : window.innerHeight;
  let top = rect.bottom + 4;
  if (top + height > bottom - MARGIN && rect.top - 4 - height >= MARGIN) top = rect.top - 4 - height;
  return { top, left, width };
}

export function AddToPlaylist({ item, compact = false }: { item: Item; compact?: boolean }) {
  const [open, setOpen] = useState(false);
  const [playlists, setPlaylists] = useState<Playlist[] | null>(null);
  const [naming, setNaming] = useState(false);
  const [name, setName] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [done, setDone] = useState<string | null>(null);
  const [place, setPlace] = useState<Place | null>(null);
  const wrapper = useRef<HTMLSpanElement>(null);
  const button = useRef<HTMLButtonElement>(null);
  const menu = useRef<HTMLDivElement>(null);
  const me = sessionStore.get()?.user.id;

  const close = (refocus = true) => {
    setOpen(false);
    setNaming(false);
    setName('');
    setError(null);
    if (refocus) button.current?.focus();
  };

  // The caller's own playlists, each time the menu opens.
  useEffect(() => {
    if (!open) return;
    let cancelled = false;
    setPlaylists(null);
    listPlaylists()
      .then((all) => {
        if (!cancelled) setPlaylists(all.filter((playlist) => playlist.owner === me));
      })
      .catch((failure) => {
        if (!cancelled) {
          setError(failure);
          setPlaylists([]);
        }
      });
    return () => {
      cancelled = true;
    };
  }, [open]);

  // Placed beside its button, kept there on scroll and resize.
  useLayoutEffect(() => {
    if (!open || !button.current) return;
    const update = () => button.current && setPlace(placeMenu(button.current, menu.current));
    update();
    window.addEventListener('resize', update);
    window.addEventListener('scroll', update, true);
    return () => {
      window.removeEventListener('resize', update);
      window.removeEventListener('scroll', update, true);
    };
  }, [open, playlists, naming, error]);

  // Focus its first entry once loaded; the name field when naming.
  useEffect(() => {
    if (!open || !menu.current) return;
    const target = menu.current.querySelector<HTMLElement>(naming ? 'input' : 'button:not(:disabled)');
    target?.focus();
  }, [open, playlists !== null, naming]);

  // A click elsewhere closes it.
  useEffect(() => {
    if (!open) return;
    const onDown = (event: PointerEvent) => {
      if (wrapper.current && !wrapper.current.contains(event.target as Node)) close(false);
    };
    document.addEventListener('pointerdown', onDown);
    return () => document.removeEventListener('pointerdown', onDown);
  }, [open]);

  useEffect(() => {
    if (!done) return;
    const timer = setTimeout(() => setDone(null), 4000);
    return () => clearTimeout(timer);
  }, [done]);

  const add = async (playlist: Playlist) => {
    setBusy(true);
    setError(null);
    try {
      await appendToPlaylist(playlist.id, item.id);
      setDone(`Added to ${playlist.name}`);
      close();
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  const create = async (event: Event) => {
    event.preventDefault();
    const wanted = name.trim();
    if (!wanted) {
      setError(new Error('Give the playlist a name.'));
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const playlist = await createPlaylist(wanted, [item.id]);
      setDone(`Added to ${playlist.name}`);
      close();
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  const onKeyDown = (event: KeyboardEvent) => {
    if (event.key === 'Escape') {
      event.preventDefault();
      event.stopPropagation();
      if (naming) {
        setNaming(false);
        setError(null);
      } else close();
      return;
    }
    if ((event.key === 'ArrowDown' || event.key === 'ArrowUp') && menu.current) {
      const entries = [...menu.current.querySelectorAll<HTMLElement>('button.menu-entry:not(:disabled)')];
      if (entries.length === 0) return;
      event.preventDefault();
      const at = entries.indexOf(document.activeElement as HTMLElement);
      const next = event.key === 'ArrowDown' ? (at + 1) % entries.length : (at - 1 + entries.length) % entries.length;
      entries[at < 0 ? 0 : next].focus();
    }
  };

  const label = `Add ${item.title} to a playlist`;
  return (
    <span
      class="add-to-playlist"
      ref={wrapper}
      // Rows open their item on a click beside their links: not on this.
      onClick={(event) => event.stopPropagation()}
      onFocusOut={(event) => {
        const next = event.relatedTarget as Node | null;
        if (open && next && wrapper.current && !wrapper.current.contains(next)) close(false);
      }}
    >
      <button
        type="button"
        ref={button}
        class={compact ? 'add-button compact' : 'add-button'}
        data-testid="add-to-playlist"
        aria-haspopup="dialog"
        aria-expanded={open}
        aria-label={compact ? label : undefined}
        title={label}
        onClick={() => (open ? close() : setOpen(true))}
      >
        <svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true" focusable="false">
          <path d="M11 5h2v6h6v2h-6v6h-2v-6H5v-2h6z" fill="currentColor" />
        </svg>
        {compact ? null : 'Playlist'}
      </button>
      {done ? (
        <span class="ok add-done" role="status" data-testid="add-to-playlist-done">
          {compact ? '✓' : done}
          {compact ? <span class="sr-only">{done}</span> : null}
        </span>
      ) : null}
      {open ? (
        <div
          ref={menu}
          class="playlist-menu"
          role="dialog"
          aria-label={`Add ${item.title} to a playlist`}
          data-testid="add-to-playlist-menu"
          style={place ? { top: `${place.top}px`, left: `${place.left}px`, width: `${place.width}px` } : { visibility: 'hidden' }}
          onKeyDown={onKeyDown}
        >
          <p class="menu-head muted">Add to playlist</p>
          {playlists === null ? (
            <p class="muted menu-note" aria-live="polite">
              Loading…
            </p>
          ) : (
            <ul class="menu-list">
              {playlists.map((playlist) => (
                <li key={playlist.id}>
                  <button
                    type="button"
                    class="menu-entry"
                    data-testid="add-to-playlist-option"
                    data-playlist-id={String(playlist.id)}
                    disabled={busy}
                    onClick={() => void add(playlist)}
                  >
                    <span class="menu-name">{playlist.name}</span>
                    <span class="muted">{playlist.item_count}</span>
                  </button>
                </li>
              ))}
              <li>
                {naming ? (
                  <form class="menu-new" onSubmit={create}>
                    <input
                      data-testid="new-playlist-name"
                      aria-label="New playlist name"
                      placeholder="Playlist name"
                      value={name}
                      maxLength={200}
                      onInput={(event) => setName(event.currentTarget.value)}
                    />
                    <button type="submit" class="primary" data-testid="new-playlist-create" disabled={busy}>
                      Create
                    </button>
                  </form>
                ) : (
                  <button
                    type="button"
                    class="menu-entry"
                    data-testid="add-to-new-playlist"
                    disabled={busy}
                    onClick={() => {
                      setError(null);
                      setNaming(true);
                    }}
                  >
                    New playlist…
                  </button>
                )}
              </li>
            </ul>
          )}
          {error ? (
            <p class="error-text menu-note" role="alert">
              {errorText(error)}
            </p>
          ) : null}
        </div>
      ) : null}
    </span>
  );
}
