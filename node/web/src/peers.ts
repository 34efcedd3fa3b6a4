// Segments from several nodes. A browser cannot join the cluster's libp2p
// swarm, so this hls.js fragment loader asks the node making the rendition
// which members hold its segments (`segments.json`: each segment's BLAKE3
// hash, and the members' URLs), fetches each segment by hash from them in
// turn, and checks the hash before the player gets a byte. A segment not
// made yet, or one no member delivers intact, comes through the ordinary
// playlist URL from the origin. Bytes per source feed the player's stats.
import { blake3 } from '@noble/hashes/blake3.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import type {
  HlsConfig,
  Loader,
  LoaderCallbacks,
  LoaderConfiguration,
  LoaderContext,
  LoaderStats,
} from 'hls.js';

/** What one source has delivered. */
export interface SourceStats {
  label: string;
  bytes: number;
  segments: number;
  /** Segments whose bytes failed their hash (never played). */
  failures: number;
  /** True where every byte was checked against a hash. */
  verified: boolean;
}

interface Listing {
  set: string;
  segments: { name: string; hash: string | null; size: number }[];
  sources: { url: string; node: number; origin: boolean }[];
}

interface Target {
  /** The origin's URL up to `/api/v1`. */
  base: string;
  item: string;
  rendition: string;
  file: string;
  token: string;
}

/** A listing is asked for again after this long when it lacks a segment. */
const LISTING_STALE_MS = 3000;
/** Listings kept (one per rendition played). */
const LISTINGS_MAX = 16;
/** A source that has not delivered a segment within this long is left
 * for the next: a member that hangs must not stall playback. */
const SOURCE_TIMEOUT_MS = 4000;

const stats = new Map<string, SourceStats>();
const listeners = new Set<() => void>();
const listings = new Map<string, { at: number; listing: Promise<Listing | null> }>();
let turn = 0;

/** Bytes per source so far, most first. */
export function sourceStats(): SourceStats[] {
  return [...stats.values()].sort((a, b) => b.bytes - a.bytes);
}

/** Calls `listener` whenever the stats change; returns the unsubscribe. */
export function onSourceStats(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function resetSourceStats(): void {
  stats.clear();
  notify();
}

function notify(): void {
  for (const listener of listeners) listener();
}

function record(label: string, verified: boolean, bytes: number, failed: boolean): void {
  const entry = stats.get(label) ?? { label, bytes: 0, segments: 0, failures: 0, verified };
  if (failed) entry.failures += 1;
  else {
    entry.bytes += bytes;
    entry.segments += 1;
  }
  stats.set(label, entry);
  notify();
}

const SEGMENT_PATH = /^(.*)\/api\/v1\/items\/(\d+)\/hls\/([A-Za-z0-9_-]+)\/(init\.mp4|\d+\.m4s)$/;

export function parseSegmentUrl(url: string): Target | null {
  let parsed: URL;
  try {
    parsed = new URL(url, window.location.href);
  } catch {
    return null;
  }
  const match = SEGMENT_PATH.exec(parsed.pathname);
  const token = parsed.searchParams.get('t');
  if (!match || !token) return null;
  return { base: `${parsed.origin}${match[1]}`, item: match[2], rendition: match[3], file: match[4], token };
}

function listing(target: Target, wanted: string): Promise<Listing | null> {
  const key = `${target.base}|${target.item}|${target.rendition}`;
  const known = listings.get(key);
  const fresh = known && Date.now() - known.at < LISTING_STALE_MS;
  if (known && fresh) return known.listing;
  if (known) {
    // Keep a listing that already has the segment; ask again otherwise.
    return known.listing.then((found) =>
      found?.segments.some((segment) => segment.name === wanted && segment.hash) ? found : refresh(key, target),
    );
  }
  return refresh(key, target);
}

function refresh(key: string, target: Target): Promise<Listing | null> {
  const url = `${target.base}/api/v1/items/${target.item}/hls/${target.rendition}/segments.json?t=${encodeURIComponent(target.token)}`;
  const promise = fetch(url, { credentials: 'omit' })
    .then((response) => (response.ok ? (response.json() as Promise<Listing>) : null))
    .catch(() => null);
  if (listings.size >= LISTINGS_MAX) listings.clear();
  listings.set(key, { at: Date.now(), listing: promise });
  return promise;
}

function labelOf(source: Listing['sources'][number]): string {
  if (source.origin) return `origin (node ${source.node})`;
  try {
    return `node ${source.node} (${new URL(source.url).host})`;
  } catch {
    return `node ${source.node}`;
  }
}

/** The segment from the members holding it, verified; null when none
 * delivers it (the caller then asks the origin's playlist URL). */
async function fromSources(target: Target, signal: AbortSignal): Promise<ArrayBuffer | null> {
  const found = await listing(target, target.file);
  const entry = found?.segments.find((segment) => segment.name === target.file && segment.hash);
  if (!found || !entry?.hash || found.sources.length === 0) return null;
  const start = turn++;
  for (let i = 0; i < found.sources.length; i++) {
    const source = found.sources[(start + i) % found.sources.length];
    const base = source.url || target.base;
    const url = `${base}/api/v1/items/${target.item}/segments/${target.rendition}/${entry.hash}?t=${encodeURIComponent(target.token)}`;
    const bytes = await fromSource(url, entry.size, signal);
    if (!bytes) continue;
    if (bytes.byteLength !== entry.size || bytesToHex(blake3(new Uint8Array(bytes))) !== entry.hash) {
      record(labelOf(source), true, 0, true);
      continue;
    }
    record(labelOf(source), true, bytes.byteLength, false);
    return bytes;
  }
  return null;
}

/** One source's answer: null when it fails, hangs past
 * `SOURCE_TIMEOUT_MS` or sends more than `size` bytes (read no further). */
async function fromSource(url: string, size: number, signal: AbortSignal): Promise<ArrayBuffer | null> {
  if (signal.aborted) throw signal.reason;
  const attempt = new AbortController();
  const timer = setTimeout(() => attempt.abort(), SOURCE_TIMEOUT_MS);
  const stop = () => attempt.abort();
  signal.addEventListener('abort', stop);
  try {
    const response = await fetch(url, { signal: attempt.signal, credentials: 'omit' });
    if (!response.ok || !response.body) {
      attempt.abort();
      return null;
    }
    const bytes = new Uint8Array(size);
    let filled = 0;
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (filled + value.byteLength > size) {
        attempt.abort();
        return null;
      }
      bytes.set(value, filled);
      filled += value.byteLength;
    }
    return filled === size ? bytes.buffer : null;
  } catch (error) {
    if (signal.aborted) throw error;
    return null;
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', stop);
  }
}

type LoaderClass = new (config: HlsConfig) => Loader<LoaderContext> & { stats: LoaderStats };

/** An hls.js fragment loader over `Base` (hls.js's default loader). */
export function sourcesLoader(Base: LoaderClass): LoaderClass {
  return class SourcesLoader extends Base {
    private controller: AbortController | null = null;

    load(context: LoaderContext, config: LoaderConfiguration, callbacks: LoaderCallbacks<LoaderContext>): void {
      const target = parseSegmentUrl(context.url);
      const viaOrigin = () => {
        const onSuccess = callbacks.onSuccess;
        super.load(context, config, {
          ...callbacks,
          onSuccess: (response, loaded, ...rest) => {
            const size = response.data instanceof ArrayBuffer ? response.data.byteLength : loaded.loaded;
            record('origin (playlist URL, not yet hashed)', false, size, false);
            onSuccess(response, loaded, ...rest);
          },
        });
      };
      if (!target || context.rangeStart || context.rangeEnd) {
        super.load(context, config, callbacks);
        return;
      }
      const controller = new AbortController();
      this.controller = controller;
      const started = performance.now();
      fromSources(target, controller.signal).then(
        (bytes) => {
          if (controller.signal.aborted) return;
          if (!bytes) {
            viaOrigin();
            return;
          }
          const now = performance.now();
          this.context = context;
          this.stats.loading.start = started;
          this.stats.loading.first = now;
          this.stats.loading.end = now;
          this.stats.loaded = bytes.byteLength;
          this.stats.total = bytes.byteLength;
          callbacks.onSuccess({ url: context.url, data: bytes }, this.stats, context, null);
        },
        () => {
          if (!controller.signal.aborted) viaOrigin();
        },
      );
    }

    abort(): void {
      this.controller?.abort();
      super.abort();
    }

    destroy(): void {
      this.controller?.abort();
      super.destroy();
    }
  };
}
