//! Running ffprobe and ffmpeg: bounded output, a deadline, and stderr read
//! on its own thread so that neither pipe fills and blocks the child.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bytes of stderr kept for error messages.
const STDERR_MAX_BYTES: u64 = 64 * 1024;

/// Runs `command` to completion within `deadline`, returning its stdout (at
/// most `max_output` bytes). A failure names the program and the first line
/// it printed on stderr.
pub fn run(mut command: Command, deadline: Duration, max_output: u64) -> Result<Vec<u8>, String> {
    let program = command.get_program().to_string_lossy().into_owned();
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
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.take(STDERR_MAX_BYTES).read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let mut stdout = Vec::new();
    let _ = out.take(max_output).read_to_end(&mut stdout);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} took over {deadline:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(error) => return Err(format!("{program}: {error}")),
        }
    };
    let stderr = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        let first = stderr.lines().next().unwrap_or("failed").trim().to_owned();
        return Err(format!("{program}: {first}"));
    }
    Ok(stdout)
}
