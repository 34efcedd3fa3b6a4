// A tiny History-API router.
import type { AnchorHTMLAttributes, ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';

const listeners = new Set<() => void>();

function notify() {
  for (const listener of [...listeners]) listener();
}

window.addEventListener('popstate', notify);

export function navigate(to: string, replace = false) {
  const current = location.pathname + location.search;
  if (to === current && !replace) return;
  if (replace) history.replaceState(null, '', to);
  else history.pushState(null, '', to);
  notify();
  if (!replace) window.scrollTo(0, 0);
}

export interface Location {
  path: string;
  query: URLSearchParams;
}

export function useLocation(): Location {
  const [, setTick] = useState(0);
  useEffect(() => {
    const listener = () => setTick((tick) => tick + 1);
    listeners.add(listener);
    return () => listeners.delete(listener);
  }, []);
  return { path: location.pathname, query: new URLSearchParams(location.search) };
}

/** Matches `/item/:id` style patterns; the params, or null. */
export function match(pattern: string, path: string): Record<string, string> | null {
  const want = pattern.split('/').filter(Boolean);
  const have = path.split('/').filter(Boolean);
  if (want.length !== have.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < want.length; i++) {
    if (want[i].startsWith(':')) params[want[i].slice(1)] = decodeURIComponent(have[i]);
    else if (want[i] !== have[i]) return null;
  }
  return params;
}

type AnchorProps = AnchorHTMLAttributes<HTMLAnchorElement> & { href: string; children?: ComponentChildren; 'data-testid'?: string; [data: `data-${string}`]: string | undefined };

export function Link({ href, onClick, ...props }: AnchorProps) {
  return (
    <a
      href={href}
      onClick={(event) => {
        if (onClick) (onClick as (event: MouseEvent) => void)(event as unknown as MouseEvent);
        if (event.defaultPrevented) return;
        if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
        event.preventDefault();
        navigate(href);
      }}
      {...props}
    />
  );
}
