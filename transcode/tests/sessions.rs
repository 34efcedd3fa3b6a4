//! HLS sessions against real ffmpeg: segments from different sessions share
//! one timeline and start with keyframes; a far seek restarts; the bound on
//! sessions holds; failures are errors, not hangs or zombies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use omega_transcode::TranscodeError;
use omega_transcode::ffmpeg::VideoEncoder;
use omega_transcode::ladder::ladder;
use omega_transcode::probe::probe;
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
    assert_eq!(renditions[0].name, "360p");
    let input = SessionInput {
        path: &path,
        info: &info,
        rendition: &renditions[0],
    };
    let key = SessionKey {
        source: "source".into(),
        rendition: "360p".into(),
    };
    let sessions = Sessions::new(config(dir.path(), 2)).unwrap();
    let init = std::fs::read(sessions.init(&key, input).await.unwrap()).unwrap();
    let first = std::fs::read(sessions.segment(&key, input, 0).await.unwrap()).unwrap();
    let (pts, key_frame) = first_frame(&init, &first, dir.path());
    assert!(key_frame && pts < 0.1, "segment 0 starts with a keyframe at {pts}");
    // Close ahead: the same session serves it.
    let second = sessions.segment(&key, input, 2).await.unwrap();
    assert_eq!(sessions.running(), 1);
    let from_first_session = std::fs::read(&second).unwrap();
    // Far ahead: a new session starts there, on the same timeline.
    let far = std::fs::read(sessions.segment(&key, input, 6).await.unwrap()).unwrap();
    // The old session was used a moment ago (another viewer, as far as the
    // sessions know), so it is kept; the seek got a session of its own.
    assert!(sessions.running() <= 2);
    let (pts, key_frame) = first_frame(&init, &far, dir.path());
    assert!(key_frame, "segment 6 starts with a keyframe");
    let expected = omega_transcode::segments::SegmentPlan::new(info.duration_s).start_s(6);
    assert!(
        (pts - expected).abs() < 0.1,
        "segment 6 starts at {expected} s, not {pts}"
    );
    // Segments from two sessions play as one stream.
    let mixed = dir.path().join("mixed.mp4");
    let seven = std::fs::read(sessions.segment(&key, input, 7).await.unwrap()).unwrap();
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
    let input = SessionInput {
        path: &path,
        info: &info,
        rendition: &renditions[0],
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
    };
    let error = sessions.segment(&key("garbage"), bad, 0).await.unwrap_err();
    assert!(matches!(error, TranscodeError::Ffmpeg(_)), "{error}");
    assert_eq!(sessions.running(), 0, "the failed session is gone");

    // ffmpeg dies mid-stream: the waiter gets an error and nothing is left.
    let slow = SessionInput {
        path: &path,
        info: &info,
        rendition: &renditions[0],
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
