//! On-demand HLS sessions: ffmpeg processes that make one rendition of one
//! source from some segment on.
//!
//! A request for segment N reuses the session of that source and rendition
//! when N is at most [`SessionConfig::reuse_ahead`] segments past what it
//! has made; otherwise (a seek far ahead or back) the old session stops
//! and a new one starts at N. At most [`SessionConfig::max_sessions`]
//! encoding sessions run at once (a remux, which copies the video, costs
//! little and is bounded by the process budget alone). At the bound, a
//! viewer's request for another rendition of the same source takes over the
//! slot of that viewer's own session: players probe every rendition of a
//! master (libavformat opens the first segment of each, hls.js switches),
//! and one viewer never needs two encodes of one film at once. Otherwise a
//! request waits up to [`SessionConfig::slot_wait`] for a slot, then gets
//! [`TranscodeError::Busy`] (HTTP 503). Sessions idle
//! for [`SessionConfig::idle`] are stopped by [`Sessions::reap`]. A session
//! whose ffmpeg fails makes every waiter fail with its error and is removed;
//! processes are killed and waited for, never left as zombies.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::process::Child;

use crate::error::{Result, TranscodeError};
use crate::ffmpeg::{SessionSpec, VideoEncoder, hls_args, init_path, piece_path};
use crate::ladder::Rendition;
use crate::probe::SourceInfo;
use crate::segments::SegmentPlan;

/// A session of the same source and rendition unused this long is stopped
/// when a request needs a new one (the viewer seeked away).
const SEEK_GRACE: Duration = Duration::from_secs(5);

/// How sessions run.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The ffmpeg binary.
    pub ffmpeg: PathBuf,
    /// Where sessions write (one folder each, removed when they end).
    pub work_dir: PathBuf,
    /// Sessions running at once.
    pub max_sessions: usize,
    /// A session unused this long is stopped.
    pub idle: Duration,
    /// How long a request waits for its segment.
    pub segment_wait: Duration,
    /// How long a request waits for a free slot before it is refused.
    pub slot_wait: Duration,
    /// A session this many segments short of a request still serves it.
    pub reuse_ahead: u32,
    /// The video encoder.
    pub encoder: VideoEncoder,
    /// Read sources at most this many times real time (`None`: no limit).
    pub read_rate: Option<f64>,
}

/// Which output a session makes: a source (by a stable id, e.g. its blob)
/// in one rendition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// The source's id.
    pub source: String,
    /// The rendition's name.
    pub rendition: String,
}

/// What a session needs to start.
#[derive(Debug, Clone, Copy)]
pub struct SessionInput<'a> {
    /// The source file.
    pub path: &'a Path,
    /// What it holds.
    pub info: &'a SourceInfo,
    /// The rendition.
    pub rendition: &'a Rendition,
    /// The rendition's segments ([`SegmentPlan::new`] for encoded ones,
    /// [`SegmentPlan::from_keyframes`] for a copy).
    pub plan: &'a SegmentPlan,
    /// Who asks (one player, e.g. by its stream token): its requests for
    /// another rendition may take over the slot of its own session.
    pub viewer: &'a str,
}

#[derive(Debug)]
struct Session {
    key: SessionKey,
    /// It copies the video (a remux): outside the bound on sessions.
    copies_video: bool,
    /// The viewer that asked it for something last.
    viewer: String,
    plan: SegmentPlan,
    /// The first segment it makes.
    start: u32,
    dir: PathBuf,
    child: Child,
    last_used: Instant,
    /// The last piece known to be written (they come in order).
    pieces_up_to: Option<u32>,
    /// The last segment all of whose pieces are written, from `start` on.
    made_up_to: Option<u32>,
    stderr: Arc<Mutex<String>>,
    /// Why it ended, once it has.
    ended: Option<std::result::Result<(), String>>,
    /// Its place in the media-process budget, given back when ffmpeg exits.
    permit: Option<crate::budget::ProcessPermit>,
}

impl Session {
    /// Refreshes what the session has made and whether it has ended.
    fn poll(&mut self) {
        // Exit first, then files: a segment written just before ffmpeg
        // exited is then always counted.
        let exited = if self.ended.is_none() {
            self.child.try_wait().ok().flatten()
        } else {
            None
        };
        let mut next = self
            .pieces_up_to
            .map_or(self.plan.pieces(self.start).start, |made| made + 1);
        while piece_path(&self.dir, next).exists() {
            self.pieces_up_to = Some(next);
            next += 1;
        }
        self.made_up_to = self
            .pieces_up_to
            .and_then(|piece| self.plan.complete_through(piece))
            .filter(|made| *made >= self.start);
        if let Some(status) = exited {
            self.permit = None;
            self.ended = Some(if status.success() {
                Ok(())
            } else {
                let stderr = self.stderr.lock().unwrap_or_else(|poison| poison.into_inner());
                Err(stderr.lines().next().unwrap_or("ffmpeg exited").trim().to_owned())
            });
        }
    }

    fn stop(mut self) {
        let _ = self.child.start_kill();
        let dir = self.dir.clone();
        // Waits for the process (no zombie), then removes its folder.
        tokio::spawn(async move {
            let _ = self.child.wait().await;
            let _ = tokio::fs::remove_dir_all(&dir).await;
        });
    }
}

/// The node's transcoding sessions.
#[derive(Debug)]
pub struct Sessions {
    config: SessionConfig,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<u64, Session>,
    next_id: u64,
}

/// Encoding sessions whose ffmpeg has not ended: what the bound counts.
fn running(sessions: &mut HashMap<u64, Session>) -> usize {
    let mut count = 0;
    for session in sessions.values_mut() {
        session.poll();
        if session.ended.is_none() && !session.copies_video {
            count += 1;
        }
    }
    count
}

/// True for the errors a request may wait out: no slot, no process place.
fn is_busy(error: &TranscodeError) -> bool {
    matches!(error, TranscodeError::Busy(_) | TranscodeError::ProcessesBusy(_))
}

/// How often a request waiting for a slot looks again.
const SLOT_POLL: Duration = Duration::from_millis(100);
/// The longest pause between two looks at a session's output.
const WAIT_POLL_MAX: Duration = Duration::from_millis(20);

/// The files at `paths`, one after the other: a segment's pieces (each a
/// `moof` and `mdat`) make one fMP4 segment. A file gone means its session
/// was stopped meanwhile: the client may ask again.
async fn read_all(paths: &[PathBuf]) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    for path in paths {
        let piece = tokio::fs::read(path).await.map_err(|source| TranscodeError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        bytes.extend_from_slice(&piece);
    }
    Ok(bytes)
}

/// What to wait for in a session's folder.
#[derive(Debug, Clone, Copy)]
enum Wanted {
    Init,
    Segment(u32),
}

impl Sessions {
    /// Sessions that run with `config`; its work folder is emptied.
    pub fn new(config: SessionConfig) -> Result<Sessions> {
        assert!(config.max_sessions > 0, "at least one session may run");
        let _ = std::fs::remove_dir_all(&config.work_dir);
        std::fs::create_dir_all(&config.work_dir).map_err(|source| TranscodeError::Io {
            action: "create",
            path: config.work_dir.clone(),
            source,
        })?;
        Ok(Sessions {
            config,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// How sessions run.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Encoding sessions whose ffmpeg runs now (remuxes are not counted).
    pub fn running(&self) -> usize {
        running(&mut self.lock().sessions)
    }

    /// Segment `index`, made by a running or new session.
    pub async fn segment(&self, key: &SessionKey, input: SessionInput<'_>, index: u32) -> Result<Vec<u8>> {
        let count = input.plan.count();
        if index >= count {
            return Err(TranscodeError::NotFound(format!(
                "segment {index} is past the last ({})",
                count - 1
            )));
        }
        let pieces = self.made(key, input, Wanted::Segment(index)).await?;
        read_all(&pieces).await
    }

    /// The rendition's init segment.
    pub async fn init(&self, key: &SessionKey, input: SessionInput<'_>) -> Result<Vec<u8>> {
        let init = self.made(key, input, Wanted::Init).await?;
        read_all(&init).await
    }

    /// The files of what is wanted, from a session that makes it. Waits up
    /// to [`SessionConfig::slot_wait`] for a slot, and starts again once if
    /// the session was stopped meanwhile (for another request).
    async fn made(&self, key: &SessionKey, input: SessionInput<'_>, wanted: Wanted) -> Result<Vec<PathBuf>> {
        let slot_deadline = Instant::now() + self.config.slot_wait;
        let mut restarts_left = 1;
        loop {
            let found = match wanted {
                Wanted::Init => self.init_session(key, input),
                Wanted::Segment(index) => self.session_for(key, input, index),
            };
            let id = match found {
                Ok(id) => id,
                Err(error) if is_busy(&error) && Instant::now() < slot_deadline => {
                    tokio::time::sleep(SLOT_POLL).await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            match self.wait(id, wanted).await? {
                Some(files) => return Ok(files),
                None if restarts_left > 0 => restarts_left -= 1,
                // Stopped for another request again: the client may ask again.
                None => return Err(TranscodeError::Busy(self.config.max_sessions)),
            }
        }
    }

    /// A session for the init segment: any of `key` that has not failed,
    /// or a new one from the first segment.
    fn init_session(&self, key: &SessionKey, input: SessionInput<'_>) -> Result<u64> {
        let existing = {
            let mut inner = self.lock();
            inner
                .sessions
                .iter_mut()
                .find(|(_, session)| session.key == *key && session.ended.as_ref().is_none_or(Result::is_ok))
                .map(|(id, session)| {
                    session.viewer = input.viewer.to_owned();
                    *id
                })
        };
        match existing {
            Some(id) => Ok(id),
            None => self.session_for(key, input, 0),
        }
    }

    /// A session of `key` that will make segment `index`: a running one
    /// close enough, or a new one started there.
    fn session_for(&self, key: &SessionKey, input: SessionInput<'_>, index: u32) -> Result<u64> {
        let mut inner = self.lock();
        let mut stale = Vec::new();
        // Sessions of this key that do not serve the request, oldest use
        // first (an in-use one is freed only when no slot is left).
        let mut elsewhere: Vec<(Instant, u64)> = Vec::new();
        for (id, session) in &mut inner.sessions {
            if session.key != *key {
                continue;
            }
            session.poll();
            let made = session.made_up_to.map_or(i64::from(session.start) - 1, i64::from);
            let serves = index >= session.start
                && i64::from(index) <= made + i64::from(self.config.reuse_ahead)
                && session.ended.as_ref().is_none_or(Result::is_ok);
            let has_it = index >= session.start && made >= i64::from(index);
            if serves || has_it {
                session.last_used = Instant::now();
                session.viewer = input.viewer.to_owned();
                return Ok(*id);
            }
            // A seek elsewhere: a session of this key nobody has asked
            // anything of for a while is a viewer's old position. One in
            // use (another viewer) is left alone.
            if session.last_used.elapsed() >= SEEK_GRACE {
                stale.push(*id);
            } else {
                elsewhere.push((session.last_used, *id));
            }
        }
        for id in stale {
            if let Some(session) = inner.sessions.remove(&id) {
                session.stop();
            }
        }
        // The bound is on encoding ffmpeg processes: a session whose ffmpeg
        // ended only keeps its files until it is reaped, and a remux is
        // cheap. At the bound, a seek frees this key's least recently used
        // session (the viewer's own old position, most likely), then a
        // rendition switch frees this viewer's other renditions of this
        // source, before the request is refused.
        if !input.rendition.copy_video {
            elsewhere.sort();
            let mut switched: Vec<(Instant, u64)> = inner
                .sessions
                .iter()
                .filter(|(_, session)| {
                    session.key.source == key.source
                        && session.key.rendition != key.rendition
                        && session.viewer == input.viewer
                        && !session.copies_video
                })
                .map(|(id, session)| (session.last_used, *id))
                .collect();
            switched.sort();
            let mut free = elsewhere.into_iter().chain(switched).map(|(_, id)| id);
            while running(&mut inner.sessions) >= self.config.max_sessions {
                let Some(id) = free.next() else {
                    return Err(TranscodeError::Busy(self.config.max_sessions));
                };
                if let Some(session) = inner.sessions.remove(&id) {
                    session.stop();
                }
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let session = self.start(id, key, input, index)?;
        inner.sessions.insert(id, session);
        Ok(id)
    }

    fn start(&self, id: u64, key: &SessionKey, input: SessionInput<'_>, index: u32) -> Result<Session> {
        let dir = self.config.work_dir.join(format!("session-{id}"));
        std::fs::create_dir_all(&dir).map_err(|source| TranscodeError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        let spec = SessionSpec {
            ffmpeg: &self.config.ffmpeg,
            source: input.path,
            info: input.info,
            rendition: input.rendition,
            plan: input.plan,
            start_segment: index,
            encoder: &self.config.encoder,
            out_dir: &dir,
            read_rate: self.config.read_rate,
        };
        let permit = crate::budget::processes().try_acquire()?;
        let mut child = tokio::process::Command::new(&self.config.ffmpeg)
            .args(hls_args(&spec))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| TranscodeError::Spawn {
                tool: self.config.ffmpeg.display().to_string(),
                source,
            })?;
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(pipe) = child.stderr.take() {
            let sink = stderr.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let mut lines = tokio::io::BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut text = sink.lock().unwrap_or_else(|poison| poison.into_inner());
                    // Bounded: the first lines say what went wrong.
                    if text.len() < 16 * 1024 {
                        text.push_str(&line);
                        text.push('\n');
                    }
                }
            });
        }
        tracing::debug!(source = %key.source, rendition = %key.rendition, start = index, "transcoding session started");
        Ok(Session {
            key: key.clone(),
            copies_video: input.rendition.copy_video,
            viewer: input.viewer.to_owned(),
            plan: input.plan.clone(),
            start: index,
            dir,
            child,
            last_used: Instant::now(),
            pieces_up_to: None,
            made_up_to: None,
            stderr,
            ended: None,
            permit: Some(permit),
        })
    }

    /// Waits until session `id` has written what is wanted; returns its
    /// files, in order (they stay until the session ends: read them then),
    /// or `None` when the session was stopped for another request.
    async fn wait(&self, id: u64, wanted: Wanted) -> Result<Option<Vec<PathBuf>>> {
        let deadline = Instant::now() + self.config.segment_wait;
        let mut pause = Duration::from_millis(10);
        loop {
            {
                let mut inner = self.lock();
                let Some(session) = inner.sessions.get_mut(&id) else {
                    return Ok(None);
                };
                session.poll();
                session.last_used = Instant::now();
                let ready = match wanted {
                    // The init segment is complete once a piece is.
                    Wanted::Init => session.pieces_up_to.is_some().then(|| vec![init_path(&session.dir)]),
                    Wanted::Segment(index) => session.made_up_to.is_some_and(|made| made >= index).then(|| {
                        session
                            .plan
                            .pieces(index)
                            .map(|piece| piece_path(&session.dir, piece))
                            .collect()
                    }),
                };
                if let Some(path) = ready {
                    return Ok(Some(path));
                }
                if let Some(ended) = session.ended.clone() {
                    let error = match ended {
                        Err(reason) => TranscodeError::Ffmpeg(reason),
                        Ok(()) => TranscodeError::Ffmpeg("ffmpeg ended without making the segment".into()),
                    };
                    if let Some(session) = inner.sessions.remove(&id) {
                        session.stop();
                    }
                    return Err(error);
                }
            }
            if Instant::now() >= deadline {
                return Err(TranscodeError::Timeout(self.config.segment_wait, format!("{wanted:?}")));
            }
            tokio::time::sleep(pause).await;
            // Short: a segment is awaited by a player, and a stat a few
            // times a second per waiting request costs nothing.
            pause = (pause * 2).min(WAIT_POLL_MAX);
        }
    }

    /// Stops sessions idle longer than the configured time, and those whose
    /// ffmpeg ended and that nobody used since. Returns how many stopped.
    pub fn reap(&self) -> usize {
        let mut inner = self.lock();
        let idle = self.config.idle;
        let expired: Vec<u64> = inner
            .sessions
            .iter_mut()
            .filter_map(|(id, session)| {
                session.poll();
                let unused = session.last_used.elapsed();
                (unused >= idle || (session.ended.is_some() && unused >= idle / 4)).then_some(*id)
            })
            .collect();
        for id in &expired {
            if let Some(session) = inner.sessions.remove(id) {
                session.stop();
            }
        }
        expired.len()
    }

    /// Stops every session.
    pub fn stop_all(&self) {
        let mut inner = self.lock();
        for (_, session) in inner.sessions.drain() {
            session.stop();
        }
    }
}
