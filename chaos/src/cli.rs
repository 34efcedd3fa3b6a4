//! The command-line convention of Omega's engineering tools (`omega-chaos`,
//! `omega-sim`), as the `omega` binary keeps it: help and version as clap
//! prints them, every error on one line.

use std::process::ExitCode;

/// Parses the arguments as `T`; on a usage error (an unknown flag, a
/// missing or malformed argument) prints `PROGRAM: error: …` on one line
/// and gives exit code 2; help and version print as usual.
pub fn parse_or_exit<T: clap::Parser>(program: &str) -> Result<T, ExitCode> {
    use clap::error::ErrorKind;
    let error = match T::try_parse() {
        Ok(parsed) => return Ok(parsed),
        Err(error) => error,
    };
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return Err(if error.use_stderr() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        });
    }
    eprintln!(
        "{program}: error: {} (see --help)",
        one_line(&error.render().to_string())
    );
    Err(ExitCode::from(2))
}

/// clap's rendering of an error (the error, tips, then a usage block) as
/// one line: what precedes the usage block, joined.
fn one_line(rendered: &str) -> String {
    rendered
        .lines()
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| line.strip_prefix("error: ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_and_its_tip_make_one_line() {
        let rendered = "error: unexpected argument '--sed' found\n\n  tip: a similar argument exists: '--seed'\n\nUsage: omega-sim [OPTIONS]\n\nFor more information, try '--help'.\n";
        assert_eq!(
            super::one_line(rendered),
            "unexpected argument '--sed' found tip: a similar argument exists: '--seed'"
        );
    }
}
