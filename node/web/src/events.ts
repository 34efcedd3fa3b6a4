// The events WebSocket: one connection while signed in, reconnecting with
// backoff; listeners get each JSON event.
import { API, accessToken, api, refreshSession, sessionStore, type ScanStatus, type SkippedFile } from './api';
import { createStore } from './store';

export interface ServerEvent {
  type: string;
  [key: string]: unknown;
}

type Listener = (event: ServerEvent) => void;

const listeners = new Set<Listener>();
let socket: WebSocket | null = null;
let retryTimer: ReturnType<typeof setTimeout> | null = null;
let backoff = 1000;
let currentToken: string | null = null;
let failures = 0;

export const connectedStore = createStore(false);

export function onEvent(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function schedule() {
  if (retryTimer) return;
  const delay = backoff + Math.floor(Math.random() * 250);
  backoff = Math.min(backoff * 2, 30_000);
  retryTimer = setTimeout(() => {
    retryTimer = null;
    connect();
  }, delay);
}

function close() {
  if (retryTimer) {
    clearTimeout(retryTimer);
    retryTimer = null;
  }
  if (socket) {
    const old = socket;
    socket = null;
    old.onclose = null;
    old.onerror = null;
    old.onmessage = null;
    try {
      old.close();
    } catch {
      /* already closed */
    }
  }
  connectedStore.set(false);
}

function connect() {
  const token = accessToken();
  currentToken = token;
  if (!token) return;
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  let ws: WebSocket;
  try {
    ws = new WebSocket(`${scheme}//${location.host}${API}/events?token=${encodeURIComponent(token)}`);
  } catch {
    schedule();
    return;
  }
  socket = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
    backoff = 1000;
    failures = 0;
    connectedStore.set(true);
  };
  ws.onmessage = (message) => {
    let event: ServerEvent;
    try {
      event = JSON.parse(String(message.data)) as ServerEvent;
    } catch {
      return;
    }
    if (!event || typeof event.type !== 'string') return;
    for (const listener of [...listeners]) {
      try {
        listener(event);
      } catch {
        /* a listener's bug must not stop the others */
      }
    }
  };
  ws.onerror = () => {
    /* onclose follows */
  };
  ws.onclose = (closed) => {
    if (socket !== ws) return;
    socket = null;
    connectedStore.set(false);
    // 4001: the server closed it because the access token expired.
    if (closed.code === 4001) void refreshSession();
    if (!opened) {
      failures += 1;
      // The token may have expired: refresh it before trying again.
      if (failures % 2 === 0) void refreshSession();
    }
    schedule();
  };
}

/** Keeps the socket in line with the session. */
export function startEvents() {
  sessionStore.subscribe((session) => {
    const token = session?.access_token ?? null;
    if (token === currentToken) return;
    // A refreshed token needs no new socket while one is open.
    if (token && socket && socket.readyState <= 1) {
      currentToken = token;
      return;
    }
    close();
    backoff = 1000;
    if (token) connect();
  });
  if (accessToken()) connect();
}

// Scan states by library, fed by events and by polling.
export interface ScanView {
  state: 'idle' | 'running' | 'done' | 'failed';
  phase?: string;
  done?: number;
  total?: number;
  items?: number;
  /** Files the finished scan passed over, with why (from its report). */
  skipped?: SkippedFile[];
  error?: string | null;
}

export const scansStore = createStore<Record<number, ScanView>>({});

function setScan(library: number, view: ScanView) {
  scansStore.update((scans) => ({ ...scans, [library]: view }));
}

export function scanFromStatus(status: ScanStatus): ScanView {
  switch (status.state) {
    case 'running':
      return { state: 'running', ...(status.progress ?? {}) };
    case 'done':
      return { state: 'done', items: status.report?.items, skipped: status.report?.skipped ?? [] };
    case 'failed':
      return { state: 'failed', error: status.error ?? 'failed' };
    default:
      return { state: 'idle' };
  }
}

export async function loadScan(library: number): Promise<ScanView | null> {
  try {
    const status = await api<ScanStatus>(`/libraries/${library}/scan`);
    const view = scanFromStatus(status);
    const known = scansStore.get()[library];
    // An event may already have said more than this answer.
    if (!(known && known.state === 'done' && view.state === 'running')) setScan(library, view);
    return view;
  } catch {
    return null;
  }
}

onEvent((event) => {
  const library = typeof event.library === 'number' ? event.library : null;
  if (library === null) return;
  if (event.type === 'scan_progress') {
    setScan(library, {
      state: 'running',
      phase: String(event.phase ?? ''),
      done: Number(event.done ?? 0),
      total: Number(event.total ?? 0),
    });
  } else if (event.type === 'scan_finished') {
    const error = typeof event.error === 'string' ? event.error : null;
    setScan(library, error ? { state: 'failed', error } : { state: 'done', items: Number(event.items ?? 0) });
    // The event counts skipped files; the report names them.
    if (!error && Number(event.skipped ?? 0) > 0) void loadScan(library);
  }
});
