//! Recording a benchmark's row in `docs/benchmarks.md`.
//!
//! Each benchmark's table ends with a marker comment `<!-- rows: NAME -->`;
//! a new row goes just above it, so tables stay in the file's order.

use std::path::Path;

use anyhow::Context;

/// Inserts `row` above the marker `<!-- rows: {name} -->` in `path`.
pub fn record_row(path: &Path, name: &str, row: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let marker = format!("<!-- rows: {name} -->");
    let position = text
        .find(&marker)
        .with_context(|| format!("{} has no marker {marker}", path.display()))?;
    let mut updated = String::with_capacity(text.len() + row.len() + 1);
    updated.push_str(&text[..position]);
    updated.push_str(row.trim_end());
    updated.push('\n');
    updated.push_str(&text[position..]);
    std::fs::write(path, updated).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rows_go_above_their_marker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("benchmarks.md");
        std::fs::write(
            &path,
            "| a |\n|---|\n<!-- rows: store -->\n\n| b |\n<!-- rows: raft -->\n",
        )
        .unwrap();
        super::record_row(&path, "store", "| 1 |").unwrap();
        super::record_row(&path, "raft", "| 2 |").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "| a |\n|---|\n| 1 |\n<!-- rows: store -->\n\n| b |\n| 2 |\n<!-- rows: raft -->\n"
        );
        assert!(super::record_row(&path, "p2p", "| 3 |").is_err());
    }
}
