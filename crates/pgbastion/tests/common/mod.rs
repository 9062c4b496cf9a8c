//! Helpers shared by the binary's tests.

#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};

pub mod drivers;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file of the repository, as text.
pub fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fenced blocks of a Markdown text: (info string, contents).
pub fn fenced_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in markdown.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut current, fence) {
            (None, Some(info)) => current = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some("")) => blocks.extend(current.take()),
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// The contents of the blocks whose info string is exactly `language`.
pub fn blocks_of(markdown: &str, language: &str) -> Vec<String> {
    fenced_blocks(markdown)
        .into_iter()
        .filter(|(info, _)| info == language)
        .map(|(_, body)| body)
        .collect()
}
