import { useEffect, useState } from 'preact/hooks';
import {
  AUDIO_KINDS,
  PLAYABLE,
  VIDEO_KINDS,
  api,
  query,
  settleProgress,
  type Item,
  type ItemPage,
  type UserData,
} from '../api';
import { ErrorBox, FavoriteButton, Loading, Poster, ProgressBar } from '../components';
import { bytes, clock, durationMs } from '../format';
import { playQueue } from '../music';
import { AddToPlaylist } from '../playlists';
import { Link, navigate } from '../router';

const PARENT_KINDS = ['series', 'season', 'artist', 'album'];

function play(item: Item, startSeconds: number, siblings?: Item[]) {
  if (VIDEO_KINDS.includes(item.type)) {
    navigate(`/play/${item.id}${startSeconds > 0 ? `?t=${Math.floor(startSeconds)}` : ''}`);
  } else if (AUDIO_KINDS.includes(item.type)) {
    if (siblings && siblings.length > 0) {
      const index = siblings.findIndex((sibling) => sibling.id === item.id);
      playQueue(siblings.slice(Math.max(0, index)), 0, startSeconds);
    } else playQueue([item], 0, startSeconds);
  }
}

function childLabel(item: Item): string {
  if (item.type === 'episode' && item.index != null) return `${item.index}. ${item.title}`;
  if (item.type === 'track' && item.index != null) return `${item.index}. ${item.title}`;
  return item.title;
}

export function ItemPage({ id }: { id: number }) {
  const [item, setItem] = useState<Item | null>(null);
  const [children, setChildren] = useState<Item[]>([]);
  const [parent, setParent] = useState<Item | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [actionError, setActionError] = useState<unknown>(null);

  useEffect(() => {
    let cancelled = false;
    setItem(null);
    setChildren([]);
    setParent(null);
    setError(null);
    setActionError(null);
    settleProgress()
      .then(() => api<Item>(`/items/${id}`))
      .then(async (loaded) => {
        if (cancelled) return;
        setItem(loaded);
        if (PARENT_KINDS.includes(loaded.type)) {
          const page = await api<ItemPage>(`/items/${id}/children?limit=500`);
          if (!cancelled) setChildren(page.items);
        }
        if (loaded.parent != null) {
          const up = await api<Item>(`/items/${loaded.parent}`).catch(() => null);
          if (!cancelled) setParent(up);
        }
      })
      .catch((failure) => {
        if (!cancelled) setError(failure);
      });
    return () => {
      cancelled = true;
    };
  }, [id]);

  if (error) {
    return (
      <main class="page">
        <ErrorBox error={error} testid="item-error" />
      </main>
    );
  }
  if (!item) {
    return (
      <main class="page">
        <Loading />
      </main>
    );
  }

  const position = item.user_data?.position_ms ?? 0;
  const played = item.user_data?.played ?? false;
  const duration = durationMs(item);
  const overview = item.metadata.overview;
  const playable = PLAYABLE.includes(item.type);

  const togglePlayed = async () => {
    setActionError(null);
    try {
      const data = await api<UserData>(`/items/${item.id}/played`, { method: played ? 'DELETE' : 'POST' });
      setItem({
        ...item,
        user_data: data ?? { position_ms: 0, played: !played, play_count: 0, favorite: item.user_data?.favorite },
      });
    } catch (failure) {
      setActionError(failure);
    }
  };

  const playSelf = async (startSeconds: number) => {
    if (AUDIO_KINDS.includes(item.type) && item.type === 'track' && item.parent != null) {
      try {
        const page = await api<ItemPage>(`/items/${item.parent}/children?limit=500`);
        const tracks = page.items.filter((child) => child.type === 'track');
        play(item, startSeconds, tracks.length ? tracks : undefined);
        return;
      } catch {
        /* play it alone */
      }
    }
    play(item, startSeconds);
  };

  const tracks = children.filter((child) => child.type === 'track');

  return (
    <main class="page item-page">
      {parent ? (
        <nav class="crumbs" aria-label="Up">
          <Link href={`/item/${parent.id}`} data-testid="item-parent">
            ← {parent.title}
          </Link>
        </nav>
      ) : null}
      <div class="item-head">
        {item.type === 'photo' ? null : (
          <div class="item-art">
            <Poster item={item} large />
          </div>
        )}
        <div class="item-info">
          <h1 data-testid="item-title">{item.title}</h1>
          <p class="meta">
            {item.year ? <span data-testid="item-year">{item.year}</span> : null}
            {duration ? <span data-testid="item-duration">{clock(duration / 1000)}</span> : null}
            {item.index != null && item.type === 'episode' ? <span>Episode {item.index}</span> : null}
            {item.index != null && item.type === 'season' ? <span>Season {item.index}</span> : null}
            {played ? <span class="ok">Played</span> : null}
          </p>
          <ProgressBar item={item} />
          {overview ? (
            <p class="overview" data-testid="item-overview">
              {overview}
            </p>
          ) : null}
          <div class="actions">
            {playable ? (
              <button type="button" class="primary" data-testid="play-button" onClick={() => playSelf(0)}>
                ▶ {position > 0 ? 'Play from start' : 'Play'}
              </button>
            ) : null}
            {playable && position > 0 ? (
              <button type="button" class="primary" data-testid="resume-button" onClick={() => playSelf(position / 1000)}>
                Resume from {clock(position / 1000)}
              </button>
            ) : null}
            {item.type === 'book' ? <BookDownload item={item} /> : null}
            <button
              type="button"
              data-testid="played-toggle"
              aria-pressed={played}
              onClick={togglePlayed}
            >
              {played ? '✓ Played' : 'Mark played'}
            </button>
            <FavoriteButton item={item} onChange={(data) => setItem({ ...item, user_data: data })} />
            {playable ? <AddToPlaylist item={item} /> : null}
          </div>
          <ErrorBox error={actionError} />
          <Details item={item} />
        </div>
      </div>
      {item.type === 'photo' ? <PhotoViewer item={item} /> : null}
      {item.chapters && item.chapters.length > 0 ? (
        <section aria-labelledby="chapters-heading">
          <h2 id="chapters-heading">Chapters</h2>
          <ol class="chapters" data-testid="chapters">
            {item.chapters.map((chapter, index) => (
              <li key={index}>
                <button
                  type="button"
                  class="chapter"
                  data-testid="chapter"
                  data-start-ms={String(chapter.start_ms)}
                  disabled={!playable}
                  onClick={() => playSelf(chapter.start_ms / 1000)}
                >
                  <span class="chapter-time">{clock(chapter.start_ms / 1000)}</span> {chapter.title}
                </button>
              </li>
            ))}
          </ol>
        </section>
      ) : null}
      {children.length > 0 ? (
        <section aria-labelledby="children-heading">
          <h2 id="children-heading">
            {item.type === 'series' ? 'Seasons' : item.type === 'season' ? 'Episodes' : item.type === 'artist' ? 'Albums' : 'Tracks'}
          </h2>
          <ul class={children.some((child) => child.type === 'track' || child.type === 'episode') ? 'children list' : 'children grid'}>
            {children.map((child) => (
              <li
                key={child.id}
                class="child"
                data-testid="child-item"
                data-item-id={String(child.id)}
                onClick={(event) => {
                  // A click beside the link (on the row's padding) opens it too.
                  const target = event.target as HTMLElement;
                  if (!target.closest('a, button')) navigate(`/item/${child.id}`);
                }}
              >
                {child.type === 'track' ? (
                  <button
                    type="button"
                    class="track-play"
                    data-testid="track-play"
                    aria-label={`Play ${child.title}`}
                    onClick={() => play(child, 0, tracks)}
                  >
                    ▶
                  </button>
                ) : null}
                <Link href={`/item/${child.id}`} class="child-link">
                  {child.type === 'track' || child.type === 'episode' ? null : <Poster item={child} />}
                  <span class="child-title">{childLabel(child)}</span>
                  {durationMs(child) ? <span class="muted">{clock(durationMs(child)! / 1000)}</span> : null}
                  {child.user_data?.played ? <span class="ok" aria-label="Played">✓</span> : null}
                </Link>
                {child.type === 'track' ? (
                  <FavoriteButton
                    item={child}
                    testid="track-favorite"
                    compact
                    onChange={(data) =>
                      setChildren((list) =>
                        list.map((entry) => (entry.id === child.id ? { ...entry, user_data: data } : entry)),
                      )
                    }
                  />
                ) : null}
                {child.type === 'track' ? <AddToPlaylist item={child} compact /> : null}
                {child.type === 'episode' ? <ProgressBar item={child} /> : null}
              </li>
            ))}
          </ul>
        </section>
      ) : null}
    </main>
  );
}

function Details({ item }: { item: Item }) {
  const shown: [string, string][] = [];
  const keys: [string, string][] = [
    ['video_codec', 'Video'],
    ['width', 'Width'],
    ['height', 'Height'],
    ['audio_codecs', 'Audio'],
    ['audio_languages', 'Audio languages'],
    ['subtitle_languages', 'Subtitles'],
    ['format', 'Format'],
    ['camera_make', 'Camera'],
    ['camera_model', 'Model'],
    ['taken_at', 'Taken'],
  ];
  for (const [key, label] of keys) {
    const value = item.metadata[key];
    if (value) shown.push([label, value]);
  }
  const media = item.media[0];
  if (media) {
    if (media.container) shown.push(['Container', media.container]);
    shown.push(['Size', bytes(media.size)]);
  }
  if (shown.length === 0) return null;
  return (
    <dl class="details">
      {shown.map(([label, value]) => (
        <div key={label}>
          <dt>{label}</dt>
          <dd>{value}</dd>
        </div>
      ))}
    </dl>
  );
}

function BookDownload({ item }: { item: Item }) {
  const extension = item.media[0]?.container ? `.${item.media[0].container}` : '';
  if (!item.stream_url) return <span class="error-text">This book has no file.</span>;
  return (
    <a class="button" data-testid="book-download" href={item.stream_url} download={`${item.title}${extension}`}>
      ⬇ Download
    </a>
  );
}

function PhotoViewer({ item }: { item: Item }) {
  const [siblings, setSiblings] = useState<Item[]>([]);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    let cancelled = false;
    setFailed(false);
    api<ItemPage>(`/items${query({ type: 'photo', library: item.library, sort: 'title', limit: 500 })}`)
      .then((page) => {
        if (!cancelled) setSiblings(page.items);
      })
      .catch(() => {
        /* no prev/next then */
      });
    return () => {
      cancelled = true;
    };
  }, [item.id, item.library]);
  const index = siblings.findIndex((sibling) => sibling.id === item.id);
  const previous = index > 0 ? siblings[index - 1] : null;
  const next = index >= 0 && index + 1 < siblings.length ? siblings[index + 1] : null;

  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      const target = event.target as HTMLElement | null;
      if (target && ['INPUT', 'SELECT', 'TEXTAREA'].includes(target.tagName)) return;
      if (event.key === 'ArrowLeft' && previous) navigate(`/item/${previous.id}`, true);
      if (event.key === 'ArrowRight' && next) navigate(`/item/${next.id}`, true);
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [previous?.id, next?.id]);

  return (
    <section class="photo-viewer" data-testid="photo-viewer" aria-label="Photo">
      {item.image && !failed ? (
        <img src={item.image} alt={item.title} onError={() => setFailed(true)} />
      ) : (
        <div class="placeholder photo-placeholder">{item.title}</div>
      )}
      <div class="photo-nav">
        <button
          type="button"
          data-testid="photo-prev"
          disabled={!previous}
          onClick={() => previous && navigate(`/item/${previous.id}`, true)}
        >
          ← Previous
        </button>
        <span class="muted">{index >= 0 ? `${index + 1} / ${siblings.length}` : ''}</span>
        <button type="button" data-testid="photo-next" disabled={!next} onClick={() => next && navigate(`/item/${next.id}`, true)}>
          Next →
        </button>
      </div>
    </section>
  );
}
