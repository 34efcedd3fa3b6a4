// API client: session in localStorage, bearer auth, one refresh on 401.
import { navigate } from './router';
import { createStore } from './store';

export const API = '/api/v1';
const SESSION_KEY = 'omega.session';

export interface User {
  id: number;
  name: string;
  admin: boolean;
  totp: boolean;
  libraries: number[] | null;
}

export interface Session {
  access_token: string;
  refresh_token: string;
  user: User;
}

export interface Chapter {
  start_ms: number;
  end_ms: number;
  title: string;
}

export interface Media {
  size: number;
  container: string | null;
  path?: string;
  node: number;
  blob: string | null;
}

export interface UserData {
  position_ms: number;
  played: boolean;
  play_count: number;
  favorite?: boolean;
}

export interface Item {
  id: number;
  type: string;
  title: string;
  sort_title?: string;
  year: number | null;
  index: number | null;
  parent: number | null;
  library: number;
  metadata: Record<string, string>;
  chapters: Chapter[];
  image: string | null;
  /** The file, signed: usable without headers. */
  stream_url: string | null;
  media: Media[];
  added_ms: number;
  user_data?: UserData;
}

export interface ItemPage {
  items: Item[];
  total: number;
}

export interface Library {
  id: number;
  name: string;
  type: string;
  paths?: string[];
  node: number;
  /** A folder could not be listed at the last scan; its items are kept. */
  offline: boolean;
  offline_folders?: { path: string; reason: string }[];
}

export interface Playback {
  decision: { method: 'direct_play' | 'remux' | 'transcode'; reasons?: string[] };
  stream_url: string;
  hls_url: string;
  duration_s: number;
  /** Text subtitles as WebVTT (a `<track>` each in direct play). */
  subtitles: SubtitleChoice[];
}

/** A subtitle track of an item, as WebVTT. */
export interface SubtitleChoice {
  id: string;
  language: string;
  name: string;
  url: string;
}

/** A file a scan passed over, and why. */
export interface SkippedFile {
  path: string;
  reason: string;
}

export interface ScanStatus {
  state: 'idle' | 'running' | 'done' | 'failed';
  progress?: { phase: string; done: number; total: number };
  report?: { items: number; files: number; removed: number; skipped: SkippedFile[] };
  error?: string;
}

export class ApiError extends Error {
  status: number;
  body: Record<string, unknown> | null;
  constructor(status: number, message: string, body: Record<string, unknown> | null) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function loadSession(): Session | null {
  try {
    const raw = localStorage.getItem(SESSION_KEY);
    if (!raw) return null;
    const parsed = JSON.parse(raw) as Session;
    return parsed && typeof parsed.access_token === 'string' ? parsed : null;
  } catch {
    return null;
  }
}

export const sessionStore = createStore<Session | null>(loadSession());

export function setSession(session: Session | null) {
  try {
    if (session) localStorage.setItem(SESSION_KEY, JSON.stringify(session));
    else localStorage.removeItem(SESSION_KEY);
  } catch {
    /* storage unavailable: keep it in memory */
  }
  sessionStore.set(session);
}

export function accessToken(): string | null {
  return sessionStore.get()?.access_token ?? null;
}

let refreshing: Promise<boolean> | null = null;

/** Trades the refresh token for a new pair; false when that fails. */
export function refreshSession(): Promise<boolean> {
  if (refreshing) return refreshing;
  const seen = sessionStore.get();
  if (!seen) return Promise.resolve(false);
  // A refresh token works once, and presenting it twice revokes the sign-in:
  // tabs take turns (a Web Lock), and a tab that finds the stored session
  // already refreshed by another uses that one instead.
  const trade = async (): Promise<boolean> => {
    const stored = loadSession();
    if (stored && stored.refresh_token !== seen.refresh_token) {
      setSession(stored);
      return true;
    }
    const session = stored ?? seen;
    try {
      const response = await fetch(`${API}/auth/refresh`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ refresh_token: session.refresh_token }),
      });
      if (!response.ok) return false;
      const next = (await response.json()) as Session;
      setSession({ ...next, user: next.user ?? session.user });
      return true;
    } catch {
      return false;
    }
  };
  refreshing = (async () => {
    try {
      const locks = typeof navigator !== 'undefined' ? navigator.locks : undefined;
      return locks ? await locks.request('omega-refresh', trade) : await trade();
    } finally {
      setTimeout(() => (refreshing = null), 0);
    }
  })();
  return refreshing;
}

export interface RequestOptions {
  method?: string;
  body?: unknown;
  /** Send no bearer token and never refresh (login, setup). */
  anonymous?: boolean;
  signal?: AbortSignal;
  /** Let the request outlive the page (progress reports). */
  keepalive?: boolean;
}

async function send(path: string, options: RequestOptions): Promise<Response> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  const token = options.anonymous ? null : accessToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let body: string | undefined;
  if (options.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(options.body);
  }
  return fetch(API + path, {
    method: options.method ?? 'GET',
    headers,
    body,
    signal: options.signal,
    keepalive: options.keepalive,
  });
}

function signOutLocally() {
  setSession(null);
  if (!location.pathname.startsWith('/login') && !location.pathname.startsWith('/setup')) navigate('/login');
}

/** Calls the API; resolves to the parsed JSON (null for no content). */
export async function api<T = unknown>(path: string, options: RequestOptions = {}): Promise<T> {
  let response: Response;
  try {
    response = await send(path, options);
    if (response.status === 401 && !options.anonymous && sessionStore.get()) {
      if (await refreshSession()) response = await send(path, options);
      else {
        signOutLocally();
        throw new ApiError(401, 'Your session has ended: sign in again.', null);
      }
      if (response.status === 401) {
        signOutLocally();
      }
    }
  } catch (error) {
    if (error instanceof ApiError) throw error;
    if (error instanceof DOMException && error.name === 'AbortError') throw error;
    throw new ApiError(0, 'The server cannot be reached.', null);
  }
  const text = await response.text().catch(() => '');
  let json: unknown = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
  }
  if (!response.ok) {
    const body = json && typeof json === 'object' ? (json as Record<string, unknown>) : null;
    const message =
      body && typeof body.error === 'string' ? body.error : `${response.status} ${response.statusText || 'error'}`;
    throw new ApiError(response.status, message, body);
  }
  return json as T;
}

export function errorText(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return String(error);
}

export function isNotFound(error: unknown): boolean {
  return error instanceof ApiError && (error.status === 404 || error.status === 405);
}

export async function logout() {
  const session = sessionStore.get();
  if (session) {
    try {
      await fetch(`${API}/auth/logout`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ refresh_token: session.refresh_token }),
      });
    } catch {
      /* signed out locally anyway */
    }
  }
  setSession(null);
  navigate('/login');
}

export function query(params: Record<string, string | number | undefined | null>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

// Libraries, shared by the nav and the admin pages.
export const librariesStore = createStore<Library[]>([]);

// Reloads can overlap (a scan ending while a library is added): only the
// answer to the latest request is kept, so an older, slower one cannot
// bring back a list without the newest library.
let librariesGeneration = 0;

export async function reloadLibraries(): Promise<Library[]> {
  const generation = ++librariesGeneration;
  const libraries = await api<Library[]>('/libraries');
  if (generation === librariesGeneration) librariesStore.set(Array.isArray(libraries) ? libraries : []);
  return librariesStore.get();
}

/** Starts playback of an item: how, and where from. */
export function startPlayback(id: number): Promise<Playback> {
  return api<Playback>(`/items/${id}/playback`, { method: 'POST', body: {} });
}

/** Marks (or unmarks) an item as one of the caller's favourites. */
export function setFavorite(id: number, favorite: boolean): Promise<UserData> {
  return api<UserData>(`/items/${id}/favorite`, { method: favorite ? 'POST' : 'DELETE' });
}

/** An app password as listed (its secret is shown once, at creation). */
export interface AppPassword {
  id: number;
  name: string;
  created_ms: number;
}

export interface NewAppPassword extends AppPassword {
  password: string;
}

const pendingProgress = new Set<Promise<unknown>>();

export function reportProgress(id: number, positionMs: number, played = false): Promise<void> {
  if (!sessionStore.get()) return Promise.resolve();
  const request = api(`/items/${id}/progress`, {
    method: 'POST',
    body: { position_ms: Math.max(0, Math.floor(positionMs)), played },
    keepalive: true,
  })
    .then(() => undefined)
    .catch(() => {
      /* progress is best effort */
    });
  pendingProgress.add(request);
  void request.finally(() => pendingProgress.delete(request));
  return request;
}

/** Waits for progress reports in flight, so that what loads next sees them. */
export function settleProgress(): Promise<void> {
  return Promise.all([...pendingProgress]).then(() => undefined);
}

export const PLAYABLE = ['movie', 'episode', 'track', 'audiobook'];
export const VIDEO_KINDS = ['movie', 'episode'];
export const AUDIO_KINDS = ['track', 'audiobook'];

/** A playlist as listed: the caller's own, or someone's public one. */
export interface Playlist {
  id: number;
  name: string;
  owner: number;
  owner_name: string;
  public: boolean;
  item_count: number;
  duration_ms: number;
  created_ms: number;
  updated_ms: number;
}

/** A playlist with the items the caller may see, in order. */
export interface PlaylistDetail extends Playlist {
  items: Item[];
}

export function listPlaylists(): Promise<Playlist[]> {
  return api<Playlist[]>('/playlists').then((list) => (Array.isArray(list) ? list : []));
}

export function loadPlaylist(id: number): Promise<PlaylistDetail> {
  return api<PlaylistDetail>(`/playlists/${id}`);
}

export function createPlaylist(name: string, items: number[] = [], isPublic = false): Promise<Playlist> {
  return api<Playlist>('/playlists', { method: 'POST', body: { name, items, public: isPublic } });
}

/** Replaces what is given (owner only). */
export function updatePlaylist(
  id: number,
  change: { name?: string; items?: number[]; public?: boolean },
): Promise<Playlist> {
  return api<Playlist>(`/playlists/${id}`, { method: 'PUT', body: change });
}

export function deletePlaylist(id: number): Promise<void> {
  return api(`/playlists/${id}`, { method: 'DELETE' }).then(() => undefined);
}

/** Appends an item to one of the caller's playlists. */
export async function appendToPlaylist(id: number, item: number): Promise<Playlist> {
  const detail = await loadPlaylist(id);
  return updatePlaylist(id, { items: [...detail.items.map((entry) => entry.id), item] });
}
