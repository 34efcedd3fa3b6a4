// hls.js, loaded on demand and attached when the browser lacks native HLS.
import type Hls from 'hls.js';
import { accessToken } from './api';
import { sourcesLoader } from './peers';

export type { Hls };
export type HlsClass = typeof Hls;

let loading: Promise<HlsClass> | null = null;

export function loadHls(): Promise<HlsClass> {
  if (!loading) {
    loading = import('hls.js').then((module) => module.default);
    loading.catch(() => {
      loading = null;
    });
  }
  return loading;
}

export function nativeHls(media: HTMLMediaElement): boolean {
  return media.canPlayType('application/vnd.apple.mpegurl') !== '';
}

/** True where Media Source Extensions let hls.js play (it offers quality
 * levels and subtitle tracks, which native HLS in most browsers hides). */
export function mseAvailable(): boolean {
  const scope = window as unknown as { MediaSource?: unknown; ManagedMediaSource?: unknown; WebKitMediaSource?: unknown };
  return Boolean(scope.MediaSource || scope.ManagedMediaSource || scope.WebKitMediaSource);
}

/** Native HLS only where hls.js cannot run. */
export function preferNative(media: HTMLMediaElement): boolean {
  return !mseAvailable() && nativeHls(media);
}

export function makeHls(HlsCtor: HlsClass, startPosition: number): Hls | null {
  if (!HlsCtor.isSupported()) return null;
  const Base = HlsCtor.DefaultConfig.loader as unknown as Parameters<typeof sourcesLoader>[0];
  return new HlsCtor({
    startPosition: startPosition > 0 ? startPosition : -1,
    debug: false,
    enableWorker: true,
    // Segments from every member holding them, each checked by its hash.
    fLoader: sourcesLoader(Base) as unknown as NonNullable<ConstructorParameters<HlsClass>[0]>['fLoader'],
    xhrSetup(xhr, url) {
      // URLs carry a stream token; a bearer header covers those that do not.
      if (!/[?&]t=/.test(url)) {
        const token = accessToken();
        if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`);
      }
    },
  });
}
