//! HLS sessions against real ffmpeg: segments from different sessions share
//! one timeline and start with keyframes; a far seek restarts; the bound on
//! sessions holds; failures are errors, not hangs or zombies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use omega_transcode::TranscodeError;
use omega_transcode::ffmpeg::VideoEncoder;
use omega_transcode::ladder::{copy_rendition, ladder};
use omega_transcode::probe::{keyframes, probe};
use omega_transcode::segments::SegmentPlan;
use omega_transcode::session::{SessionConfig, SessionInput, SessionKey, Sessions};

fn source(dir: &Path, seconds: u32) -> PathBuf {
    let path = dir.join("source.mkv");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=640x360:rate=25:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={seconds}"))
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "250", "-c:a", "aac"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

fn config(dir: &Path, max_sessions: usize) -> SessionConfig {
    SessionConfig {
        ffmpeg: "ffmpeg".into(),
        work_dir: dir.join("work"),
        max_sessions,
        idle: Duration::from_secs(30),
        segment_wait: Duration::from_secs(60),
        slot_wait: Duration::from_millis(300),
        reuse_ahead: 3,
        encoder: VideoEncoder::Software,
        // Slow enough that a session is still running when the test looks.
        read_rate: Some(3.0),
    }
}

/// (pts of the first video frame, is it a keyframe) of init + segment.
fn first_frame(init: &[u8], segment: &[u8], dir: &Path) -> (f64, bool) {
    let joined = dir.join("joined.mp4");
    std::fs::write(&joined, [init, segment].concat()).unwrap();
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "frame=pts_time,key_frame",
        ])
        .args(["-read_intervals", "%+#1", "-of", "csv=p=0"])
        .arg(&joined)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let mut fields = text.lines().next().unwrap().split(',');
    let key = fields.next().unwrap() == "1";
    (fields.next().unwrap().parse().unwrap(), key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_share_one_timeline_and_restart_on_far_seeks() {
    let dir = tempfile::tempdir().unwrap();
    let path = source(dir.path(), 30);
    let info = probe(Path::new("ffprobe"), &path).await.unwrap();
    let renditions = ladder(&info);
    let plan = SegmentPlan::new(info.duration_s);
    assert_eq!(renditions[0].name, "360p");
    let input = SessionInput {
        path: &path,
        info: &info,
        rendition: &renditions[0],
        plan: &plan,
        viewer: "viewer",
    };
    let key = SessionKey {
        source: "source".into(),
        rendition: "360p".into(),
    };
    let sessions = Sessions::new(config(dir.path(), 2)).unwrap();
    let init = sessions.init(&key, input).await.unwrap();
    let first = sessions.segment(&key, input, 0).await.unwrap();
    let (pts, key_frame) = first_frame(&init, &first, dir.path());
    assert!(key_frame && pts < 0.1, "segment 0 starts with a keyframe at {pts}");
    // Close ahead: the same session serves it.
    let from_first_session = sessions.segment(&key, input, 2).await.unwrap();
    assert_eq!(sessions.running(), 1);
    // Far ahead: a new session starts there, on the same timeline.
    let far = sessions.segment(&key, input, 6).await.unwrap();
    // The old session was used a moment ago (another viewer, as far as the
    // sessions know), so it is kept; the seek got a session of its own.
    assert!(sessions.running() <= 2);
    let (pts, key_frame) = first_frame(&init, &far, dir.path());
    assert!(key_frame, "segment 6 starts with a keyframe");
    let expected = plan.start_s(6);
    assert!(
        (pts - expected).abs() < 0.1,
        "segment 6 starts at {expected} s, not {pts}"
    );
    // Segments from two sessions play as one stream.
    let mixed = dir.path().join("mixed.mp4");
    let seven = sessions.segment(&key, input, 7).await.unwrap();
    std::fs::write(
        &mixed,
        [init.as_slice(), &first, &from_first_session, &far, &seven].concat(),
    )
    .unwrap();
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&mixed)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Past the end.
    assert!(matches!(
        sessions.segment(&key, input, 99).await,
        Err(TranscodeError::NotFound(_))
    ));
    sessions.stop_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounds_and_failures_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = source(dir.path(), 12);
    let info = probe(Path::new("ffprobe"), &path).await.unwrap();
    let renditions = ladder(&info);
    let plan = SegmentPlan::new(info.duration_s);
    let input = SessionInput {
        path: &path,
        info: &info,
        rendition: &renditions[0],
        plan: &plan,
        viewer: "viewer",
    };
    let key = |source: &str| SessionKey {
        source: source.into(),
        rendition: "360p".into(),
    };
    let sessions = Sessions::new(config(dir.path(), 1)).unwrap();
    sessions.segment(&key("a"), input, 0).await.unwrap();
    // One slot, taken by another source: busy.
    assert!(matches!(
        sessions.segment(&key("b"), input, 0).await,
        Err(TranscodeError::Busy(1))
    ));
    sessions.stop_all();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A source ffmpeg cannot decode.
    let garbage = dir.path().join("garbage.mkv");
    std::fs::write(&garbage, vec![7_u8; 100_000]).unwrap();
    assert!(probe(Path::new("ffprobe"), &garbage).await.is_err());
    let bad = SessionInput {
        path: &garbage,
        info: &info,
        rendition: &renditions[0],
        plan: &plan,
        viewer: "viewer",
    };
    let error = sessions.segment(&key("garbage"), bad, 0).await.unwrap_err();
    assert!(matches!(error, TranscodeError::Ffmpeg(_)), "{error}");
    assert_eq!(sessions.running(), 0, "the failed session is gone");

    // ffmpeg dies mid-stream: the waiter gets an error and nothing is left.
    let slow = SessionInput {
        path: &path,
        info: &info,
        rendition: &renditions[0],
        plan: &plan,
        viewer: "viewer",
    };
    let killed = key("killed");
    let waiting = sessions.segment(&killed, slow, 2);
    let work_dir = sessions.config().work_dir.display().to_string();
    let killer = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        // Only this test's ffmpeg: its command line names this work folder.
        let _ = Command::new("pkill").args(["-KILL", "-f", &work_dir]).status();
    };
    let (outcome, ()) = tokio::join!(waiting, killer);
    if let Err(error) = outcome {
        assert!(matches!(error, TranscodeError::Ffmpeg(_)), "{error}");
    }
    sessions.stop_all();

    // No ffmpeg at all: a clear error.
    let missing = Sessions::new(SessionConfig {
        ffmpeg: "/nonexistent/ffmpeg".into(),
        ..config(&dir.path().join("other"), 1)
    })
    .unwrap();
    let error = missing.segment(&key("x"), input, 0).await.unwrap_err();
    assert!(error.to_string().contains("cannot run /nonexistent/ffmpeg"), "{error}");
}

/// Frames ffmpeg decodes from `bytes` (a whole fMP4 stream), and whether
/// it said nothing while doing so.
fn decoded_frames(bytes: &[u8], dir: &Path) -> (u64, bool) {
    let path = dir.join("decoded.mp4");
    std::fs::write(&path, bytes).unwrap();
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .unwrap();
    let frames = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(0);
    (frames, output.status.success() && output.stderr.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_cut_segments_at_the_source_keyframes() {
    let dir = tempfile::tempdir().unwrap();
    // Uneven GOPs, as real encoders make them.
    let path = dir.path().join("uneven.mkv");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x240:rate=24:duration=30")
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=30"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "1000",
            "-sc_threshold",
            "0",
        ])
        .args(["-force_key_frames", "0,1.5,2,4.2,5,9.7,10.1,13,17.5,18,22,26.3,29"])
        .args(["-c:a", "aac"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let info = probe(Path::new("ffprobe"), &path).await.unwrap();
    let video = info.video.clone().unwrap();
    let keyframes = keyframes(Path::new("ffprobe"), &path, video.index).await.unwrap();
    assert_eq!(keyframes.len(), 13, "{keyframes:?}");
    let plan = SegmentPlan::from_keyframes(&keyframes, info.duration_s).unwrap();
    let copy = copy_rendition(&info).unwrap();
    let input = SessionInput {
        path: &path,
        info: &info,
        rendition: &copy,
        plan: &plan,
        viewer: "viewer",
    };
    let key = SessionKey {
        source: "uneven".into(),
        rendition: copy.name.clone(),
    };
    let sessions = Sessions::new(SessionConfig {
        read_rate: None,
        ..config(dir.path(), 2)
    })
    .unwrap();
    // A seek first, then the start: two sessions, one timeline.
    let init = sessions.init(&key, input).await.unwrap();
    let seek = plan.count() - 3;
    let mut segments = vec![Vec::new(); plan.count() as usize];
    segments[seek as usize] = sessions.segment(&key, input, seek).await.unwrap();
    for index in (0..plan.count()).filter(|index| *index != seek) {
        segments[index as usize] = sessions.segment(&key, input, index).await.unwrap();
    }
    for (index, segment) in segments.iter().enumerate().skip(1) {
        let (pts, key_frame) = first_frame(&init, segment, dir.path());
        let expected = plan.start_s(index as u32);
        assert!(key_frame, "segment {index} starts with a keyframe");
        assert!(
            (pts - expected).abs() < 0.002,
            "segment {index} starts at {expected}, not {pts}"
        );
    }
    let whole: Vec<u8> = std::iter::once(&init).chain(&segments).flatten().copied().collect();
    let (frames, clean) = decoded_frames(&whole, dir.path());
    assert_eq!(frames, 720, "every source frame, once");
    assert!(clean, "decodes without a complaint");
    sessions.stop_all();
}

/// Goal (streaming with one slot, as a 2-core node has): a viewer's request
/// for another rendition of the same source takes over that viewer's own
/// slot (players open every rendition of a master), a remux takes no slot,
/// and another viewer waits up to `slot_wait`, then is refused. Failed
/// before: the second rendition was refused at once, and a remux took the
/// only slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slot_serves_a_viewer_switching_renditions_and_remuxes_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = source(dir.path(), 12);
    let info = probe(Path::new("ffprobe"), &path).await.unwrap();
    let encoded = ladder(&info).remove(0);
    let mut other = encoded.clone();
    other.name = format!("{}-other", encoded.name);
    let plan = SegmentPlan::new(info.duration_s);
    let video = info.video.clone().unwrap();
    let frames = keyframes(Path::new("ffprobe"), &path, video.index).await.unwrap();
    let copy_plan = SegmentPlan::from_keyframes(&frames, info.duration_s).unwrap();
    let copy = copy_rendition(&info).unwrap();
    let input = |rendition, plan, viewer| SessionInput {
        path: &path,
        info: &info,
        rendition,
        plan,
        viewer,
    };
    let key = |rendition: &str| SessionKey {
        source: "film".into(),
        rendition: rendition.into(),
    };
    let sessions = Sessions::new(config(dir.path(), 1)).unwrap();

    // The remux first, as a player opens `original` first: no slot taken.
    sessions
        .init(&key(&copy.name), input(&copy, &copy_plan, "v"))
        .await
        .unwrap();
    sessions
        .segment(&key(&copy.name), input(&copy, &copy_plan, "v"), 0)
        .await
        .unwrap();
    assert_eq!(sessions.running(), 0, "a remux is outside the bound");
    // Then each encoded rendition, one after the other, as libavformat does.
    for rendition in [&encoded, &other, &encoded] {
        sessions
            .init(&key(&rendition.name), input(rendition, &plan, "v"))
            .await
            .unwrap();
        sessions
            .segment(&key(&rendition.name), input(rendition, &plan, "v"), 0)
            .await
            .unwrap();
        assert_eq!(sessions.running(), 1);
    }
    // Another viewer of another rendition: waits for the slot, then is
    // refused, and the first viewer's session goes on.
    let asked = std::time::Instant::now();
    let refused = sessions.segment(&key(&other.name), input(&other, &plan, "w"), 0).await;
    assert!(matches!(refused, Err(TranscodeError::Busy(1))), "{refused:?}");
    assert!(asked.elapsed() >= Duration::from_millis(300), "{:?}", asked.elapsed());
    sessions
        .segment(&key(&encoded.name), input(&encoded, &plan, "v"), 1)
        .await
        .unwrap();
    sessions.stop_all();
}
