//! Running ffprobe and ffmpeg: bounded output, a deadline, and stderr read
//! on its own thread so that neither pipe fills and blocks the child.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bytes of stderr kept for error messages.
const STDERR_MAX_BYTES: u64 = 64 * 1024;

/// Runs `command` to completion within `deadline`, returning its stdout (at
/// most `max_output` bytes). A failure names the program and the first line
/// it printed on stderr. The process takes a place in the media-process
/// budget (`omega_transcode::budget`) while it runs, and is killed at its
/// deadline even if it never writes or closes its output (a hung ffprobe).
pub fn run(mut command: Command, deadline: Duration, max_output: u64) -> Result<Vec<u8>, String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let _permit = omega_transcode::budget::processes()
        .acquire_blocking()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{program} has no output pipes"));
    };
    // Both pipes are read on their own threads, so the deadline below holds
    // whatever the child does with them; they end when the child does.
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.take(STDERR_MAX_BYTES).read_to_string(&mut text);
        text
    });
    let stdout_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = out.take(max_output).read_to_end(&mut bytes);
        bytes
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} took over {deadline:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program}: {error}"));
            }
        }
    };
    let stdout = stdout_reader.join().unwrap_or_default();
    let stderr = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        let first = stderr.lines().next().unwrap_or("failed").trim().to_owned();
        return Err(format!("{program}: {first}"));
    }
    Ok(stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that neither writes nor exits (a hung ffprobe) is killed at
    /// its deadline. Failed before the fix: reading its output blocked
    /// until it ended by itself.
    #[test]
    fn a_hung_child_is_killed_at_its_deadline() {
        let mut command = Command::new("sleep");
        command.arg("30");
        let started = Instant::now();
        let error = run(command, Duration::from_millis(300), 1024).unwrap_err();
        assert!(error.contains("took over"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn output_and_failures_come_back() {
        let mut command = Command::new("sh");
        command.args(["-c", "printf hello"]);
        assert_eq!(run(command, Duration::from_secs(5), 1024).unwrap(), b"hello");
        let mut command = Command::new("sh");
        command.args(["-c", "echo broken >&2; exit 3"]);
        assert_eq!(run(command, Duration::from_secs(5), 1024).unwrap_err(), "sh: broken");
    }
}
