export function clock(seconds: number): string {
  const total = Math.max(0, Math.floor(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const ss = String(s).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

export function durationMs(item: { metadata?: Record<string, string> }): number | null {
  const raw = item.metadata?.duration_ms;
  const value = raw ? Number(raw) : NaN;
  return Number.isFinite(value) && value > 0 ? value : null;
}

export function bytes(value: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let n = value;
  let unit = 0;
  while (Math.abs(n) >= 1024 && unit < units.length - 1) {
    n /= 1024;
    unit++;
  }
  return `${unit === 0 ? n : n.toFixed(1)} ${units[unit]}`;
}

const KIND_LABELS: Record<string, string> = {
  movie: 'Movies',
  series: 'Shows',
  show: 'Shows',
  season: 'Seasons',
  episode: 'Episodes',
  artist: 'Artists',
  album: 'Albums',
  track: 'Tracks',
  audiobook: 'Audiobooks',
  book: 'Books',
  photo: 'Photos',
};

export function kindLabel(kind: string): string {
  return KIND_LABELS[kind] ?? kind;
}

export function phaseLabel(phase: string | undefined): string {
  if (!phase) return 'Scanning';
  return phase.charAt(0).toUpperCase() + phase.slice(1);
}
