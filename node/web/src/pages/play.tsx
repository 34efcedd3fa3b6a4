import { useEffect, useRef, useState } from 'preact/hooks';
import { api, reportProgress, startPlayback, type Item, type ItemPage, type Playback, type SubtitleChoice } from '../api';
import { ErrorBox } from '../components';
import { type Hls, loadHls, makeHls, preferNative } from '../hls';
import { type SourceStats, onSourceStats, resetSourceStats, sourceStats } from '../peers';
import { bytes } from '../format';
import { navigate } from '../router';

interface Level {
  index: number;
  label: string;
}

interface TextTrackChoice {
  index: number;
  label: string;
}

/** "English", "French (file)": a language's name where the browser knows
 * its tag, else `fallback`. */
function trackLabel(language: string, fallback: string, fromFile: boolean): string {
  try {
    const names = new Intl.DisplayNames(undefined, { type: 'language' });
    const name = language && language !== 'und' ? names.of(language) : undefined;
    if (name && name !== language) return fromFile ? `${name} (file)` : name;
  } catch {
    /* an unknown tag: the server's name */
  }
  return fallback;
}

function subtitleLabel(choice: SubtitleChoice): string {
  return trackLabel(choice.language, choice.name, choice.id.startsWith('x'));
}

export function PlayPage({ id, startAt }: { id: number; startAt: number | null }) {
  const video = useRef<HTMLVideoElement>(null);
  const hls = useRef<Hls | null>(null);
  const [item, setItem] = useState<Item | null>(null);
  const [playback, setPlayback] = useState<Playback | null>(null);
  const [nextEpisode, setNextEpisode] = useState<Item | null>(null);
  const [levels, setLevels] = useState<Level[]>([]);
  const [level, setLevel] = useState(-1);
  const [subtitles, setSubtitles] = useState<TextTrackChoice[]>([]);
  const [subtitle, setSubtitle] = useState(-1);
  const [error, setError] = useState<unknown>(null);
  const [usingHlsJs, setUsingHlsJs] = useState(false);
  const [showSources, setShowSources] = useState(false);
  const [sources, setSources] = useState<SourceStats[]>([]);
  const leftAt = useRef<number | null>(null);
  const itemRef = useRef<number>(id);
  itemRef.current = id;

  // Bytes per source, for the stats panel (counted from this page on).
  useEffect(() => {
    resetSourceStats();
    setSources([]);
    return onSourceStats(() => setSources(sourceStats()));
  }, [id]);

  // Load the item, its next episode, and a playback decision.
  useEffect(() => {
    let cancelled = false;
    setItem(null);
    setPlayback(null);
    setNextEpisode(null);
    setError(null);
    setLevels([]);
    setLevel(-1);
    setSubtitles([]);
    setSubtitle(-1);
    (async () => {
      try {
        const loaded = await api<Item>(`/items/${id}`);
        if (cancelled) return;
        setItem(loaded);
        const decided = await startPlayback(id);
        if (cancelled) return;
        setPlayback(decided);
        if (loaded.type === 'episode' && loaded.parent != null) {
          const siblings = await api<ItemPage>(`/items/${loaded.parent}/children?limit=500`).catch(() => null);
          if (cancelled || !siblings) return;
          const episodes = siblings.items.filter((sibling) => sibling.type === 'episode');
          const index = episodes.findIndex((episode) => episode.id === id);
          setNextEpisode(index >= 0 && index + 1 < episodes.length ? episodes[index + 1] : null);
        }
      } catch (failure) {
        if (!cancelled) setError(failure);
      }
    })();
    return () => {
      cancelled = true;
    };
  }, [id]);

  // Attach the source.
  useEffect(() => {
    const element = video.current;
    if (!element || !item || !playback) return;
    const resumeMs = item.user_data?.played ? 0 : (item.user_data?.position_ms ?? 0);
    const start = startAt !== null && Number.isFinite(startAt) ? startAt : resumeMs / 1000;
    const useHls = playback.decision.method !== 'direct_play';
    let player: Hls | null = null;
    let disposed = false;
    const syncTextTracks = () => {
      const tracks: TextTrackChoice[] = [];
      for (let i = 0; i < element.textTracks.length; i++) {
        const track = element.textTracks[i];
        if (track.kind === 'subtitles' || track.kind === 'captions')
          tracks.push({ index: i, label: track.label || track.language || `Track ${i + 1}` });
      }
      setSubtitles(tracks);
    };
    const cleanup = () => {
      disposed = true;
      element.textTracks.removeEventListener('addtrack', syncTextTracks);
      element.textTracks.removeEventListener('removetrack', syncTextTracks);
      element.querySelectorAll('track').forEach((track) => track.remove());
      if (element.currentTime > 0 && !element.ended && leftAt.current !== element.currentTime)
        reportProgress(item.id, element.currentTime * 1000);
      if (player) {
        player.destroy();
        if (hls.current === player) hls.current = null;
      }
      element.removeAttribute('src');
      try {
        element.load();
      } catch {
        /* nothing loaded */
      }
    };

    if (!useHls || preferNative(element)) {
      setUsingHlsJs(false);
      element.src = useHls ? playback.hls_url : playback.stream_url;
      if (start > 0) {
        element.addEventListener(
          'loadedmetadata',
          () => {
            element.currentTime = start;
          },
          { once: true },
        );
      }
      element.textTracks.addEventListener('addtrack', syncTextTracks);
      element.textTracks.addEventListener('removetrack', syncTextTracks);
      // A file played as it is shows its subtitles from the WebVTT route
      // (browsers read no subtitles out of the file itself).
      if (!useHls) {
        for (const choice of playback.subtitles ?? []) {
          const track = document.createElement('track');
          track.kind = 'subtitles';
          track.src = choice.url;
          track.srclang = choice.language;
          track.label = subtitleLabel(choice);
          element.appendChild(track);
        }
      }
    } else {
      void (async () => {
        let HlsCtor;
        try {
          HlsCtor = await loadHls();
        } catch {
          if (!disposed) setError(new Error('The HLS player could not be loaded.'));
          return;
        }
        if (disposed) return;
        const current = makeHls(HlsCtor, start);
        if (!current) {
          setError(new Error('This browser cannot play HLS streams.'));
          return;
        }
        player = current;
        setUsingHlsJs(true);
        hls.current = current;
        current.on(HlsCtor.Events.MANIFEST_PARSED, () => {
          const seen = new Set<string>();
          const list: Level[] = [];
          current.levels.forEach((entry, index) => {
            const label = entry.height ? `${entry.height}p` : entry.name || `Level ${index + 1}`;
            const unique = seen.has(label) ? `${label} (${Math.round((entry.bitrate || 0) / 1000)} kb/s)` : label;
            seen.add(label);
            list.push({ index, label: unique });
          });
          list.sort((a, b) => (current.levels[b.index].height || 0) - (current.levels[a.index].height || 0));
          setLevels(list);
        });
        current.on(HlsCtor.Events.SUBTITLE_TRACKS_UPDATED, () => {
          setSubtitles(
            current.subtitleTracks.map((track, index) => ({
              index,
              label: trackLabel(
                track.lang ?? '',
                track.name || track.lang || `Track ${index + 1}`,
                (track.name ?? '').endsWith('(file)'),
              ),
            })),
          );
        });
        current.on(HlsCtor.Events.ERROR, (_event, data) => {
          if (!data.fatal) return;
          if (data.type === HlsCtor.ErrorTypes.NETWORK_ERROR) {
            setError(new Error(`Network error while streaming (${data.details}).`));
          } else if (data.type === HlsCtor.ErrorTypes.MEDIA_ERROR) {
            current.recoverMediaError();
          } else {
            setError(new Error(`Playback failed (${data.details}).`));
          }
        });
        current.subtitleDisplay = true;
        current.subtitleTrack = -1;
        current.loadSource(playback.hls_url);
        current.attachMedia(element);
        element.play().catch(() => {
          /* autoplay may be refused: the controls work */
        });
      })();
      return cleanup;
    }
    element.play().catch(() => {
      /* autoplay may be refused: the controls work */
    });
    return cleanup;
  }, [item?.id, playback]);

  // Progress every 10 seconds while playing.
  useEffect(() => {
    const timer = setInterval(() => {
      const element = video.current;
      if (element && !element.paused && !element.ended && element.currentTime > 0)
        reportProgress(itemRef.current, element.currentTime * 1000);
    }, 10_000);
    return () => clearInterval(timer);
  }, []);

  const chooseLevel = (value: number) => {
    setLevel(value);
    if (hls.current) hls.current.currentLevel = value;
  };

  const chooseSubtitle = (value: number) => {
    setSubtitle(value);
    if (hls.current) {
      hls.current.subtitleDisplay = value >= 0;
      hls.current.subtitleTrack = value;
      return;
    }
    const element = video.current;
    if (!element) return;
    for (let i = 0; i < element.textTracks.length; i++) {
      element.textTracks[i].mode = i === value ? 'showing' : 'disabled';
    }
  };

  const back = async () => {
    // Save where playback is before the item page reads it.
    const element = video.current;
    if (element && element.currentTime > 0 && !element.ended) {
      element.pause();
      leftAt.current = element.currentTime;
      await reportProgress(id, element.currentTime * 1000);
    }
    navigate(`/item/${id}`);
  };

  return (
    <main class="page player-page">
      <div class="player-top">
        <button type="button" data-testid="player-back" onClick={back}>
          ← Back
        </button>
        <h1 class="player-title">{item?.title ?? ''}</h1>
      </div>
      <ErrorBox error={error} testid="player-error" />
      <div class="video-wrap">
        <video
          ref={video}
          data-testid="video-player"
          controls
          playsInline
          preload="metadata"
          onPause={(event) => {
            const element = event.currentTarget;
            if (!element.ended && element.currentTime > 0) reportProgress(id, element.currentTime * 1000);
          }}
          onEnded={() => reportProgress(id, 0, true)}
          onError={(event) => {
            const failure = event.currentTarget.error;
            if (failure && !usingHlsJs) setError(new Error(`The video cannot play: ${failure.message || `error ${failure.code}`}`));
          }}
        />
      </div>
      <div class="player-controls">
        <label class="field inline">
          <span>Quality</span>
          <select
            data-testid="quality-select"
            value={String(level)}
            onChange={(event) => chooseLevel(Number(event.currentTarget.value))}
          >
            <option value="-1">Auto</option>
            {levels.map((entry) => (
              <option key={entry.index} value={String(entry.index)}>
                {entry.label}
              </option>
            ))}
          </select>
        </label>
        <label class="field inline">
          <span>Subtitles</span>
          <select
            data-testid="subtitle-select"
            value={String(subtitle)}
            onChange={(event) => chooseSubtitle(Number(event.currentTarget.value))}
          >
            <option value="-1">Off</option>
            {subtitles.map((track) => (
              <option key={track.index} value={String(track.index)}>
                {track.label}
              </option>
            ))}
          </select>
        </label>
        {nextEpisode ? (
          <button type="button" class="primary" data-testid="next-episode" onClick={() => navigate(`/play/${nextEpisode.id}`, true)}>
            Next: {nextEpisode.title} →
          </button>
        ) : null}
        {playback ? (
          <span class="muted decision" data-testid="playback-method">
            {playback.decision.method.replace('_', ' ')}
          </span>
        ) : null}
        {usingHlsJs ? (
          <button type="button" data-testid="sources-toggle" onClick={() => setShowSources(!showSources)}>
            {showSources ? 'Hide sources' : 'Sources'}
          </button>
        ) : null}
      </div>
      {showSources ? (
        <table class="source-stats" data-testid="source-stats">
          <thead>
            <tr>
              <th>Source</th>
              <th>Segments</th>
              <th>Bytes</th>
              <th>Checked</th>
              <th>Bad</th>
            </tr>
          </thead>
          <tbody>
            {sources.length === 0 ? (
              <tr>
                <td colSpan={5} class="muted">
                  No segments yet.
                </td>
              </tr>
            ) : (
              sources.map((source) => (
                <tr key={source.label} data-testid="source-stat" data-verified={String(source.verified)}>
                  <td>{source.label}</td>
                  <td>{source.segments}</td>
                  <td>{bytes(source.bytes)}</td>
                  <td>{source.verified ? 'BLAKE3' : 'no'}</td>
                  <td>{source.failures}</td>
                </tr>
              ))
            )}
          </tbody>
        </table>
      ) : null}
      {error ? null : item && !playback ? <p class="muted">Preparing playback…</p> : null}
    </main>
  );
}
