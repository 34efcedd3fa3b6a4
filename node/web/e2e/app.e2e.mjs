// End-to-end test of the web app in headless Chromium against a real
// `omega serve` (started by node/tests/web_app.rs, which passes its URL and
// media folders in the environment). Exits non-zero on the first failure.
//
// The path: setup wizard → add libraries (folder browser) → scan progress
// → play a video (currentTime advances, HLS segments fetched) → leave →
// reopen and resume from the saved position → play a music track → add it
// to a new playlist and open that → admin pages → settings (an app
// password, shown once) → a favourite on the home page → a non-admin sees
// no admin pages; it changes its password and signs out everywhere. No
// console errors anywhere.
// Screenshots of the main pages at desktop and phone widths go to
// $OMEGA_SCREENSHOTS.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const base = process.env.OMEGA_URL;
const films = process.env.OMEGA_FILMS;
const music = process.env.OMEGA_MUSIC;
const shots = process.env.OMEGA_SCREENSHOTS ?? 'screenshots';
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
if (!base || !films || !music) {
  throw new Error('OMEGA_URL, OMEGA_FILMS and OMEGA_MUSIC must be set');
}
mkdirSync(shots, { recursive: true });

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const consoleErrors = [];

function step(name) {
  console.log(`- ${name}`);
}

function watch(page) {
  page.on('console', (message) => {
    if (message.type() === 'error') consoleErrors.push(`${page.url()}: ${message.text()}`);
  });
  page.on('pageerror', (error) => consoleErrors.push(`${page.url()}: ${error.message}`));
}

async function shoot(page, name) {
  for (const [label, size] of [['desktop', DESKTOP], ['phone', PHONE]]) {
    await page.setViewportSize(size);
    await page.waitForTimeout(150);
    await page.screenshot({ path: join(shots, `${name}-${label}.png`), fullPage: true });
  }
  await page.setViewportSize(DESKTOP);
}

async function addLibrary(page, name, type, folder) {
  await page.getByTestId('library-name').fill(name);
  await page.getByTestId('library-type').selectOption(type);
  const path = page.getByTestId('folder-path');
  await path.fill(folder);
  await path.press('Enter');
  await page.getByTestId('folder-browser').waitFor();
  // The form resets when the library is made: wait for its row before the
  // next one is typed, or the reset can swallow what was typed.
  const rows = await page.getByTestId('scan-progress').count();
  await page.getByTestId('library-add').click();
  await page.waitForFunction(
    (before) => document.querySelectorAll('[data-testid="scan-progress"]').length > before,
    rows,
    { timeout: 30_000, polling: 100 },
  );
}

/** Turns on the first subtitle track of the player and waits until one of
 * its cues shows. */
async function showSubtitles(page, what) {
  await page.waitForFunction(
    () => document.querySelectorAll('[data-testid="subtitle-select"] option').length > 1,
    null,
    { timeout: 20_000, polling: 100 },
  );
  const select = page.getByTestId('subtitle-select');
  const value = await select.locator('option').nth(1).getAttribute('value');
  await select.selectOption(value);
  await page.waitForFunction(
    () => {
      const element = document.querySelector('[data-testid="video-player"]');
      if (!element) return false;
      if (element.paused) element.play().catch(() => {});
      for (const track of element.textTracks) {
        if (track.mode === 'showing' && track.activeCues && track.activeCues.length > 0) return true;
      }
      return false;
    },
    null,
    { timeout: 30_000, polling: 250 },
  );
  const label = (await select.locator('option').nth(1).textContent()) ?? '';
  step(`${what}: the subtitle "${label}" shows its cues`);
}

/** Plays the <video> until currentTime passes `seconds`; returns it. */
async function playUntil(page, seconds) {
  const video = page.getByTestId('video-player');
  await video.waitFor();
  await page.waitForFunction(
    (min) => {
      const element = document.querySelector('[data-testid="video-player"]');
      if (element && element.paused) element.play().catch(() => {});
      return element && element.currentTime > min;
    },
    seconds,
    { timeout: 60_000, polling: 250 },
  );
  return video.evaluate((element) => element.currentTime);
}

const browser = await chromium.launch({
  executablePath: chromiumPath,
  headless: true,
  // No background traffic: this machine's network is closed, and refused
  // connections would only slow Chromium down.
  args: [
    '--autoplay-policy=no-user-gesture-required',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
try {
  const context = await browser.newContext({ viewport: DESKTOP });
  const page = await context.newPage();
  watch(page);
  const segments = [];
  page.on('request', (request) => {
    if (/\/hls\/.+\.m4s/.test(request.url())) segments.push(request.url());
  });
  // Playback asks for nothing it is refused: no HLS answer of 4xx or 5xx
  // (hls.js used to meet 503s while it probed a second rendition on a node
  // with one transcoding slot).
  const refusedHls = [];
  page.on('response', (response) => {
    if (/\/hls\//.test(response.url()) && response.status() >= 400) {
      refusedHls.push(`${response.status()} ${response.url()}`);
    }
  });

  step('first run: the setup wizard');
  await page.goto(base);
  await page.waitForURL('**/setup');
  await shoot(page, 'setup');
  await page.getByTestId('setup-username').fill('admin');
  await page.getByTestId('setup-password').fill('admin-password-1');
  await page.getByTestId('setup-submit').click();

  step('libraries through the folder browser, with scan progress');
  await addLibrary(page, 'Films', 'movies', films);
  await addLibrary(page, 'Music', 'music', music);
  await page.getByTestId('scan-progress').first().waitFor();
  await page
    .waitForFunction(
      () => {
        const rows = [...document.querySelectorAll('[data-testid="scan-progress"]')];
        return rows.length >= 2 && rows.every((row) => /Finished/.test(row.textContent ?? ''));
      },
      null,
      { timeout: 120_000, polling: 250 },
    )
    .catch(async (error) => {
      // Say where each scan stood, so that a failure here explains itself.
      const rows = await page.getByTestId('scan-progress').allTextContents();
      throw new Error(`scans did not finish: ${JSON.stringify(rows)} (${error.message})`);
    });
  // The films folder holds an empty file: the scan says so, and why.
  const skippedList = page.getByTestId('scan-skipped');
  await skippedList.waitFor({ timeout: 15_000 });
  await skippedList.locator('summary').click();
  const skippedText = (await skippedList.textContent()) ?? '';
  if (!skippedText.includes('Empty Film (2024).mkv')) throw new Error(`the skipped files read ${skippedText}`);
  await shoot(page, 'setup-libraries');
  await page.getByTestId('setup-finish').click();

  step('home and library grid');
  await page.getByTestId('recently-added').waitFor();
  await page.getByTestId('item-card').first().waitFor();
  await shoot(page, 'home');
  const filmsLink = page.getByTestId('nav-library').filter({ hasText: 'Films' });
  await filmsLink.click();
  await page.getByTestId('item-card').first().waitFor();
  await shoot(page, 'library');

  step('item page, then play the film through HLS');
  await page.getByTestId('item-card').first().click();
  await page.getByTestId('item-title').waitFor();
  const itemUrl = page.url();
  const itemPath = new URL(itemUrl).pathname;
  await shoot(page, 'item');
  await page.getByTestId('play-button').click();
  const reached = await playUntil(page, 4);
  if (segments.length === 0) throw new Error('no HLS segment was fetched');
  await showSubtitles(page, 'HLS');
  await shoot(page, 'player');
  step(`played to ${reached.toFixed(1)} s with ${segments.length} segments; leaving`);
  await page.getByTestId('player-back').click();
  await page.waitForURL(itemUrl);

  step('reopen and resume from the saved position');
  await page.reload();
  const resume = page.getByTestId('resume-button');
  await resume.waitFor({ timeout: 15_000 });
  await resume.click();
  const resumedAt = await playUntil(page, 0.1);
  if (resumedAt < reached - 2) {
    throw new Error(`resumed at ${resumedAt} s, saved near ${reached} s`);
  }
  step(`resumed at ${resumedAt.toFixed(1)} s`);
  // Segments made during the first play are stored with their hashes now:
  // the loader fetches them by hash and checks each before playing it.
  await page.getByTestId('sources-toggle').click();
  await page.locator('[data-testid="source-stat"][data-verified="true"]').first().waitFor({ timeout: 20_000 });
  step(`sources: ${(await page.getByTestId('source-stats').innerText()).replace(/\s+/g, ' ')}`);
  await page.getByTestId('player-back').click();

  step('an MP4 film plays directly, with its sidecar subtitle');
  await page.getByTestId('nav-library').filter({ hasText: 'Films' }).click();
  await page.getByTestId('item-card').filter({ hasText: 'Voyage' }).first().click();
  await page.getByTestId('play-button').click();
  await page.getByTestId('playback-method').filter({ hasText: 'direct play' }).waitFor({ timeout: 20_000 });
  await playUntil(page, 1);
  await showSubtitles(page, 'direct play');
  await shoot(page, 'player-direct-subtitles');
  await page.getByTestId('player-back').click();

  step('a music track plays, with a queue');
  await page.getByTestId('nav-library').filter({ hasText: 'Music' }).click();
  await page.getByTestId('item-card').first().click();
  // An artist leads to albums; an album lists tracks.
  while ((await page.getByTestId('track-play').count()) === 0) {
    await page.getByTestId('child-item').first().click();
    await page.waitForTimeout(300);
  }
  await shoot(page, 'album');
  await page.getByTestId('track-play').first().click();
  await page.getByTestId('music-bar').waitFor();
  await page.waitForFunction(
    () => {
      const audio = document.querySelector('[data-testid="audio-player"]');
      return audio && audio.currentTime > 1;
    },
    null,
    { timeout: 30_000, polling: 250 },
  );
  if ((await page.getByTestId('queue-item').count()) < 2) throw new Error('the album is not queued');
  await shoot(page, 'music');

  step('a track goes into a new playlist, "Mix"');
  const firstTrack = page.getByTestId('child-item').filter({ has: page.getByTestId('track-play') }).first();
  await firstTrack.getByTestId('add-to-playlist').click();
  await page.getByTestId('add-to-playlist-menu').waitFor();
  await page.getByTestId('add-to-new-playlist').click();
  const newName = page.getByTestId('new-playlist-name');
  await newName.fill('Mix');
  await newName.press('Enter');
  await page.getByTestId('add-to-playlist-done').first().waitFor({ timeout: 10_000 });
  if ((await page.getByTestId('add-to-playlist-menu').count()) > 0) throw new Error('the playlist menu stays open');
  await page.getByTestId('nav-playlists').click();
  await page.waitForURL('**/playlists');
  const mix = page.getByTestId('playlist-row').filter({ hasText: 'Mix' });
  await mix.waitFor({ timeout: 10_000 });
  const mixCount = ((await mix.getByTestId('playlist-count').textContent()) ?? '').trim();
  if (mixCount !== '1 item') throw new Error(`the playlist "Mix" holds ${JSON.stringify(mixCount)}`);
  await mix.getByTestId('playlist-link').click();
  await page.getByTestId('playlist-title').filter({ hasText: 'Mix' }).waitFor();
  await page.getByTestId('playlist-item').first().waitFor();
  const entries = await page.getByTestId('playlist-item').count();
  if (entries !== 1) throw new Error(`the playlist holds ${entries} items, not 1`);
  await shoot(page, 'playlist');

  step('app pages load directly, as on a refresh');
  for (const path of [new URL(page.url()).pathname, '/playlists', '/settings', '/admin/users', itemPath]) {
    const response = await page.goto(`${base}${path}`);
    const type = response?.headers()['content-type'] ?? '';
    if (!response || response.status() !== 200 || !type.includes('text/html')) {
      throw new Error(`${path} does not load the app: ${response?.status()} ${type}`);
    }
    await page.getByTestId('nav-home').waitFor();
  }

  step('admin pages');
  await page.getByTestId('nav-admin').click();
  for (const tab of ['admin-users', 'admin-libraries', 'admin-jobs', 'admin-cluster', 'admin-store', 'admin-p2p']) {
    await page.getByTestId(tab).click();
    await page.waitForTimeout(300);
    await shoot(page, tab);
  }
  await page.getByTestId('admin-cluster').click();
  await page.getByTestId('member-row').first().waitFor();
  await page.getByTestId('admin-store').click();
  await page.getByTestId('store-stats').waitFor();
  await page.getByTestId('admin-p2p').click();
  await page.getByTestId('p2p-offload').waitFor();

  step('settings: an app password, shown once');
  await page.getByTestId('nav-settings').click();
  await page.waitForURL('**/settings');
  await page.getByTestId('settings-username').filter({ hasText: 'admin' }).waitFor();
  await page.getByTestId('app-password-name').fill('phone');
  await page.getByTestId('app-password-create').click();
  const secret = ((await page.getByTestId('app-password-secret').textContent({ timeout: 10_000 })) ?? '').trim();
  if (secret.length !== 24 || !/^[a-z0-9]{4}(-[a-z0-9]{4}){4}$/.test(secret)) {
    throw new Error(`the app password looks wrong: ${JSON.stringify(secret)}`);
  }
  await page.getByTestId('app-password-row').filter({ hasText: 'phone' }).waitFor();
  await shoot(page, 'settings');

  step('a favourite, on the item page and at home');
  await page.goto(itemUrl);
  const favorite = page.getByTestId('favorite-toggle');
  await favorite.waitFor();
  if ((await favorite.getAttribute('aria-pressed')) !== 'false') throw new Error('the film starts as a favourite');
  await favorite.click();
  await page.waitForSelector('[data-testid="favorite-toggle"][aria-pressed="true"]', { timeout: 10_000 });
  const filmTitle = ((await page.getByTestId('item-title').textContent()) ?? '').trim();
  await page.getByTestId('nav-home').click();
  await page.getByTestId('favorites').getByTestId('item-card').filter({ hasText: filmTitle }).waitFor({ timeout: 15_000 });
  await shoot(page, 'home-favorites');
  await page.getByTestId('nav-admin').click();

  step('an administrator adds a viewer');
  await page.getByTestId('admin-users').click();
  await page.getByTestId('user-name').fill('viewer');
  await page.getByTestId('user-password').fill('viewer-password-1');
  // Limited to the films, chosen by name.
  await page.getByTestId('user-new-access').getByTestId('access-all').uncheck();
  await page.getByTestId('user-new-access').locator('[data-testid="access-library"][data-library-name="Films"]').check();
  await page.getByTestId('user-create').click();
  const viewerRow = page.getByTestId('user-row').filter({ hasText: 'viewer' });
  await viewerRow.waitFor();
  const shown = async () => ((await viewerRow.getByTestId('user-libraries').textContent()) ?? '').trim();
  if ((await shown()) !== 'Films') throw new Error(`the viewer's libraries show as ${await shown()}`);
  step('an administrator lets the viewer see the music too');
  await viewerRow.getByTestId('user-access').click();
  await viewerRow.locator('[data-testid="access-library"][data-library-name="Music"]').check();
  await viewerRow.getByTestId('user-access-save').click();
  await page.waitForFunction(
    () =>
      [...document.querySelectorAll('[data-testid="user-row"]')].some(
        (row) => row.textContent.includes('viewer') && row.querySelector('[data-testid="user-libraries"]').textContent.trim() === 'Films, Music',
      ),
    null,
    { timeout: 10_000 },
  );
  await shoot(page, 'admin-user-access');
  await page.getByTestId('nav-logout').click();
  await page.waitForURL('**/login');

  step('a viewer sees no admin pages');
  await shoot(page, 'login');
  await page.getByTestId('login-username').fill('viewer');
  await page.getByTestId('login-password').fill('viewer-password-1');
  await page.getByTestId('login-submit').click();
  await page.getByTestId('nav-home').waitFor();
  if ((await page.getByTestId('nav-admin').count()) > 0) throw new Error('a viewer sees the admin link');
  await page.goto(`${base}/admin/users`);
  await page.waitForTimeout(1000);
  if ((await page.getByTestId('user-row').count()) > 0) throw new Error('a viewer sees the users page');
  if (new URL(page.url()).pathname.startsWith('/admin')) throw new Error(`a viewer stays on ${page.url()}`);

  step('the viewer changes its password, then signs out everywhere');
  await page.goto(`${base}/settings`);
  await page.getByTestId('password-current').fill('viewer-password-1');
  await page.getByTestId('password-new').fill('viewer-password-2');
  await page.getByTestId('password-confirm').fill('viewer-password-2');
  await page.getByTestId('password-change').click();
  await page.getByTestId('password-notice').waitFor();
  await page.getByTestId('sign-out-everywhere').click();
  await page.waitForURL('**/login');
  await page.getByTestId('login-username').fill('viewer');
  await page.getByTestId('login-password').fill('viewer-password-2');
  await page.getByTestId('login-submit').click();
  await page.getByTestId('nav-home').waitFor();

  if (refusedHls.length > 0) {
    throw new Error(`HLS requests refused during playback:\n${refusedHls.join('\n')}`);
  }
  if (consoleErrors.length > 0) {
    throw new Error(`console errors:\n${consoleErrors.join('\n')}`);
  }
  console.log('ok: the web app works end to end');
} finally {
  await browser.close();
}
