// The music player: a queue, and a persistent bar with an <audio>.
import { useEffect, useRef, useState } from 'preact/hooks';
import { errorText, reportProgress, startPlayback, type Item } from './api';
import { clock } from './format';
import { type Hls, loadHls, makeHls, preferNative } from './hls';
import { Link } from './router';
import { createStore, useStore } from './store';

interface MusicState {
  queue: Item[];
  index: number;
  /** Where to start the current entry, in seconds. */
  start: number;
  /** Bumped to restart the current entry. */
  nonce: number;
}

export const musicStore = createStore<MusicState>({ queue: [], index: 0, start: 0, nonce: 0 });

/** Plays `items[index]` and queues the rest. */
export function playQueue(items: Item[], index = 0, start = 0) {
  musicStore.update((state) => ({ queue: items, index, start, nonce: state.nonce + 1 }));
}

export function playAt(index: number) {
  musicStore.update((state) =>
    index >= 0 && index < state.queue.length ? { ...state, index, start: 0, nonce: state.nonce + 1 } : state,
  );
}

export function clearQueue() {
  musicStore.update((state) => ({ queue: [], index: 0, start: 0, nonce: state.nonce + 1 }));
}

function Icon({ name }: { name: 'prev' | 'next' | 'play' | 'pause' }) {
  const paths = {
    prev: 'M6 5h2v14H6zM20 5v14L9 12z',
    next: 'M16 5h2v14h-2zM4 5l11 7-11 7z',
    play: 'M7 4l13 8-13 8z',
    pause: 'M6 4h4v16H6zM14 4h4v16h-4z',
  };
  return (
    <svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" focusable="false">
      <path d={paths[name]} fill="currentColor" />
    </svg>
  );
}

export function MusicBar() {
  const state = useStore(musicStore);
  const audio = useRef<HTMLAudioElement>(null);
  const hls = useRef<Hls | null>(null);
  const [playing, setPlaying] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [time, setTime] = useState(0);
  const [showQueue, setShowQueue] = useState(true);
  const current = state.queue[state.index] as Item | undefined;
  const currentRef = useRef<Item | undefined>(current);
  currentRef.current = current;

  useEffect(() => {
    const element = audio.current;
    if (!element || !current) return;
    let cancelled = false;
    setError(null);
    const start = state.start;
    (async () => {
      try {
        const playback = await startPlayback(current.id);
        if (cancelled) return;
        if (hls.current) {
          hls.current.destroy();
          hls.current = null;
        }
        const useHls = playback.decision.method !== 'direct_play';
        if (!useHls || preferNative(element)) {
          element.src = useHls ? playback.hls_url : playback.stream_url;
          if (start > 0) {
            const seek = () => {
              element.currentTime = start;
            };
            element.addEventListener('loadedmetadata', seek, { once: true });
          }
        } else {
          const HlsCtor = await loadHls();
          if (cancelled) return;
          const player = makeHls(HlsCtor, start);
          if (!player) {
            setError('This browser cannot play this stream.');
            return;
          }
          hls.current = player;
          player.on(HlsCtor.Events.ERROR, (_event, data) => {
            if (data.fatal) setError(`Playback failed: ${data.details}`);
          });
          player.loadSource(playback.hls_url);
          player.attachMedia(element);
        }
        element.play().catch(() => {
          /* autoplay may be refused: the play button works */
        });
      } catch (failure) {
        if (!cancelled) setError(errorText(failure));
      }
    })();
    return () => {
      cancelled = true;
      if (element && currentRef.current && !element.paused && element.currentTime > 0) {
        reportProgress(current.id, element.currentTime * 1000);
      }
    };
  }, [current?.id, state.nonce]);

  useEffect(() => {
    const element = audio.current;
    if (!element) return;
    const timer = setInterval(() => {
      const item = currentRef.current;
      if (item && !element.paused) reportProgress(item.id, element.currentTime * 1000);
    }, 10_000);
    return () => clearInterval(timer);
  }, [current !== undefined]);

  useEffect(
    () => () => {
      hls.current?.destroy();
      hls.current = null;
    },
    [],
  );

  if (!current) return null;

  const next = () => {
    if (state.index + 1 < state.queue.length) playAt(state.index + 1);
  };
  const previous = () => {
    if (state.index > 0) playAt(state.index - 1);
  };
  const toggle = () => {
    const element = audio.current;
    if (!element) return;
    if (element.paused) element.play().catch(() => undefined);
    else element.pause();
  };

  return (
    <>
    <div class="music-spacer" aria-hidden="true" />
    <section class="music-bar" data-testid="music-bar" aria-label="Music player">
      <audio
        ref={audio}
        data-testid="audio-player"
        preload="auto"
        onPlay={() => setPlaying(true)}
        onPause={(event) => {
          setPlaying(false);
          const element = event.currentTarget;
          if (!element.ended && currentRef.current) reportProgress(currentRef.current.id, element.currentTime * 1000);
        }}
        onTimeUpdate={(event) => setTime(event.currentTarget.currentTime)}
        onEnded={() => {
          if (currentRef.current) reportProgress(currentRef.current.id, 0, true);
          next();
        }}
      />
      <div class="music-controls">
        <button type="button" onClick={previous} disabled={state.index === 0} aria-label="Previous" data-testid="music-previous">
          <Icon name="prev" />
        </button>
        <button type="button" class="primary round" onClick={toggle} aria-label={playing ? 'Pause' : 'Play'} data-testid="music-play-pause">
          <Icon name={playing ? 'pause' : 'play'} />
        </button>
        <button
          type="button"
          onClick={next}
          disabled={state.index + 1 >= state.queue.length}
          aria-label="Next"
          data-testid="music-next"
        >
          <Icon name="next" />
        </button>
      </div>
      <div class="music-now">
        <Link href={`/item/${current.id}`} class="music-title" data-testid="music-title">
          {current.title}
        </Link>
        <span class="muted">
          {clock(time)}
          {error ? <span class="error-text"> · {error}</span> : null}
        </span>
      </div>
      <button
        type="button"
        class="ghost"
        aria-expanded={showQueue}
        aria-controls="music-queue"
        onClick={() => setShowQueue(!showQueue)}
        data-testid="queue-toggle"
      >
        Queue ({state.queue.length})
      </button>
      <button type="button" class="ghost" aria-label="Close player" onClick={() => { audio.current?.pause(); clearQueue(); }}>
        ✕
      </button>
      <ol id="music-queue" class={showQueue ? 'queue open' : 'queue'} data-testid="queue">
        {state.queue.map((item, index) => (
          <li key={`${item.id}-${index}`}>
            <button
              type="button"
              data-testid="queue-item"
              data-item-id={String(item.id)}
              class={index === state.index ? 'queue-entry current' : 'queue-entry'}
              aria-current={index === state.index ? 'true' : undefined}
              onClick={() => playAt(index)}
            >
              {item.index ? `${item.index}. ` : ''}
              {item.title}
            </button>
          </li>
        ))}
      </ol>
    </section>
    </>
  );
}
