#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! Every configuration shown to users is valid: each ```toml block in README.md and docs/
//! (except blocks marked ```toml partial) and each examples/*.toml passes
//! `pgbastion --check-config`; broken ones fail with the line at fault.

mod common;

use std::path::Path;
use std::process::Command;

use common::{fenced_blocks, read, root};

/// Copies `examples/` (certificates included) into `dir`, so relative paths resolve.
fn copy_examples(dir: &Path) {
    let source = root().join("examples");
    for entry in walk(&source) {
        let target = dir.join(entry.strip_prefix(&source).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &target).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Runs `--check-config` with every `${UPPER_CASE}` variable of the file set.
fn check(file: &Path) -> (bool, String) {
    let text = std::fs::read_to_string(file).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_pgbastion"));
    command.arg("--check-config").arg(file);
    for name in env_names(&text) {
        command.env(name, "test-value");
    }
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn env_names(text: &str) -> Vec<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
        .filter(|name| {
            name.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .filter(|name| name.starts_with(|c: char| c.is_ascii_uppercase()))
        .collect()
}

#[test]
fn every_example_and_documented_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    copy_examples(dir.path());
    let mut checked = Vec::new();
    for example in walk(&root().join("examples")) {
        if example.extension().is_some_and(|e| e == "toml") {
            let name = example.file_name().unwrap().to_string_lossy().into_owned();
            checked.push((name.clone(), dir.path().join(name)));
        }
    }
    let mut documents = vec!["README.md".to_owned()];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            documents.push(format!("docs/{name}"));
        }
    }
    for document in &documents {
        for (i, (info, body)) in fenced_blocks(&read(document)).into_iter().enumerate() {
            if info == "toml" {
                let file = dir
                    .path()
                    .join(format!("{}-{i}.toml", document.replace('/', "_")));
                std::fs::write(&file, body).unwrap();
                checked.push((format!("{document} block {i}"), file));
            } else {
                assert!(
                    info != "toml partial" || !body.is_empty(),
                    "{document}: empty partial block"
                );
            }
        }
    }
    assert!(
        checked.len() >= 10,
        "too few configurations found: {}",
        checked.len()
    );
    for (what, file) in checked {
        let (ok, output) = check(&file);
        assert!(ok, "{what} is not a valid configuration:\n{output}");
        assert!(output.contains("valid"), "{what}: {output}");
    }
}

#[test]
fn broken_configs_name_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\ncolour = \"blue\"\n", ":4", "colour"),
        ("[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\nmatch = { user = \"/(/\" }\n", ":4", "regex"),
        ("[[route]]\nauth = \"maybe\"\nbackend = \"postgres://h/db\"\n", ":2", "maybe"),
        ("[[route]]\nauth = \"trust\"\nbackend = \"mysql://h/db\"\n", ":3", "postgres://"),
        ("[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db?sslmode=verify-full\"\n", ":3", "sslrootcert"),
        ("[[route]]\nauth = \"trust\"\nbackend = \"postgres://${pgb_not_set_anywhere}@h/db\"\n", ":3", "pgb_not_set_anywhere"),
        ("[[listener]]\naddress = \"nowhere\"\n[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n", ":2", "host:port"),
        ("[[route]]\nauth = \"jwt\"\nbackend = \"postgres://h/db\"\n", ":2", "[jwt]"),
        ("[[user]]\nname = \"a\"\npassword = \"b\"\n[[route]]\nauth = \"cleartext\"\nbackend = \"postgres://h/db\"\n", ":5", "insecure = true"),
        ("[[listener]]\naddress = \"127.0.0.1:1\"\n", "", "no [[route]]"),
    ];
    for (i, (text, line, needle)) in cases.into_iter().enumerate() {
        let file = dir.path().join(format!("broken-{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let (ok, output) = check(&file);
        assert!(!ok, "case {i} was accepted:\n{text}");
        assert!(
            output.contains(&format!("broken-{i}.toml{line}")),
            "case {i}: no line {line}: {output}"
        );
        assert!(
            output.contains(needle),
            "case {i}: {needle:?} not in {output}"
        );
    }
}
