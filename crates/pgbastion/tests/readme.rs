#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! README.md stays true: every command it shows is run by CI, and its test command is the one
//! CI runs.

mod common;

use common::{blocks_of as fenced_blocks, read};

/// A command line without its trailing `# comment` (outside quotes).
fn without_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && (i == 0 || line[..i].ends_with(' ')) => {
                return line[..i].trim_end();
            }
            _ => {}
        }
    }
    line.trim_end()
}

#[test]
fn every_readme_command_is_run_by_ci() {
    let readme = read("README.md");
    let ci = format!("{}\n{}", read(".ci/run"), read(".ci/readme-commands"));
    let examples_test = read("crates/gateway/tests/examples.rs");
    let blocks = fenced_blocks(&readme, "sh");
    assert!(blocks.len() >= 3, "README.md lost its command blocks");
    for block in blocks {
        for line in block.lines().map(without_comment).filter(|l| !l.is_empty()) {
            let example = line
                .split_once("--example ")
                .and_then(|(_, rest)| rest.split_whitespace().next());
            let covered = ci
                .lines()
                .any(|ci_line| ci_line.trim() == line || ci_line.contains(line))
                || example
                    .is_some_and(|name| examples_test.contains(&format!("examples/{name}.rs")));
            assert!(
                covered,
                "README.md command `{line}` is run neither by .ci/run, .ci/readme-commands \
                 nor crates/gateway/tests/examples.rs"
            );
        }
    }
}

#[test]
fn ci_runs_exactly_the_readme_test_command() {
    let readme = read("README.md");
    let test_command = fenced_blocks(&readme, "sh")
        .into_iter()
        .flat_map(|block| block.lines().map(str::to_owned).collect::<Vec<_>>())
        .find(|line| line.starts_with("cargo test"))
        .expect("README.md shows the test command");
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|line| line.trim() == test_command),
        ".ci/run does not run `{test_command}`"
    );
    assert!(
        ci.contains(".ci/readme-commands"),
        ".ci/run does not run the README commands"
    );
}

#[test]
fn the_readme_starts_with_the_two_commands() {
    let readme = read("README.md");
    let blocks = fenced_blocks(&readme, "sh");
    assert_eq!(blocks[0].trim(), "cargo run --release -p pgbastion");
    assert_eq!(blocks[1].trim(), "cargo test --workspace --locked");
}
