#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

//! Every configuration shown to users is valid: each ```toml block in README.md and docs/*.md
//! (except blocks marked ```toml partial) and each examples/*.toml passes
//! `pgbastion --check-config`, with the files of `examples/` next to it so that relative
//! paths resolve. The README's tour shows the examples themselves; the sample authenticator
//! keeps its contract; broken configurations fail and name their line.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{fenced_blocks, read, root};

/// The examples the README's tour and docs/migration.md point at.
const EXAMPLES: [&str; 6] = [
    "tls-scram.toml",
    "jwt-oidc.toml",
    "sni-tenants.toml",
    "client-certs.toml",
    "client-address.toml",
    "external.toml",
];

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Copies `examples/` (certificates included) into `dir`.
fn copy_examples(dir: &Path) {
    let source = root().join("examples");
    for entry in walk(&source) {
        let target = dir.join(entry.strip_prefix(&source).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &target).unwrap();
    }
}

/// The `${NAME}` references of a text that are environment variables (upper case), not route
/// placeholders (`${1}`, `${user}`, `${tenant}`).
fn env_names(text: &str) -> Vec<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
        .filter(|name| {
            name.starts_with(|c: char| c.is_ascii_uppercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect()
}

/// Runs `pgbastion --check-config FILE` with the file's environment variables set; returns
/// success and stdout + stderr.
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

/// The Markdown files whose ```toml blocks must be valid.
fn documents() -> Vec<String> {
    let mut documents = vec!["README.md".to_owned()];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            documents.push(format!("docs/{name}"));
        }
    }
    documents.sort();
    documents
}

/// A TOML text's lines without comments and blank lines.
fn significant_lines(toml: &str) -> Vec<String> {
    toml.lines()
        .map(|line| {
            // Strip a trailing `# comment` outside quotes.
            let mut quoted = None;
            let mut end = line.len();
            for (i, c) in line.char_indices() {
                match (quoted, c) {
                    (None, '"' | '\'') => quoted = Some(c),
                    (Some(q), c) if c == q => quoted = None,
                    (None, '#') => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            line[..end].trim().to_owned()
        })
        .filter(|line| !line.is_empty())
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
            checked.push((format!("examples/{name}"), dir.path().join(name)));
        }
    }
    let mut partial = 0;
    for document in documents() {
        for (i, (info, body)) in fenced_blocks(&read(&document)).into_iter().enumerate() {
            match info.as_str() {
                "toml" => {
                    let file = dir
                        .path()
                        .join(format!("{}-block-{i}.toml", document.replace('/', "_")));
                    std::fs::write(&file, body).unwrap();
                    checked.push((format!("{document}, fenced block {i}"), file));
                }
                "toml partial" => {
                    assert!(!body.trim().is_empty(), "{document}: empty partial block");
                    partial += 1;
                }
                other => assert!(
                    !other.starts_with("toml"),
                    "{document}, fenced block {i}: unknown info string {other:?} \
                     (write toml, or toml partial for a fragment)"
                ),
            }
        }
    }
    for name in EXAMPLES {
        assert!(
            checked
                .iter()
                .any(|(what, _)| *what == format!("examples/{name}")),
            "examples/{name} is missing"
        );
    }
    assert!(
        checked.len() >= 15,
        "too few configurations found: {}",
        checked.len()
    );
    assert!(
        partial >= 3,
        "docs/configuration.md lost its partial blocks"
    );
    for (what, file) in checked {
        let (ok, output) = check(&file);
        assert!(ok, "{what} is not a valid configuration:\n{output}");
        let expected = format!("{}: valid (", file.display());
        assert!(output.contains(&expected), "{what}: {output}");
    }
}

#[test]
fn the_readme_tour_shows_the_examples() {
    let examples: Vec<(String, Vec<String>)> = EXAMPLES
        .iter()
        .map(|name| {
            let text = read(&format!("examples/{name}"));
            ((*name).to_owned(), significant_lines(&text))
        })
        .collect();
    let readme = read("README.md");
    let mut shown = Vec::new();
    for (info, body) in fenced_blocks(&readme) {
        if info != "toml" {
            continue;
        }
        let lines = significant_lines(&body);
        let example = examples
            .iter()
            .find(|(_, example)| lines.iter().all(|line| example.contains(line)));
        let Some((name, _)) = example else {
            panic!("README.md shows a configuration that is not (a part of) an example:\n{body}");
        };
        assert!(
            readme.contains(&format!("`examples/{name}`")),
            "README.md shows examples/{name} without naming it"
        );
        shown.push(name.clone());
    }
    for name in EXAMPLES {
        assert!(
            shown.iter().any(|s| s == name),
            "README.md's tour does not show examples/{name}"
        );
    }
    assert!(readme.contains("pgbastion --config examples/tls-scram.toml"));
}

#[test]
fn the_example_files_are_marked_and_the_authenticator_keeps_the_contract() {
    use std::os::unix::fs::PermissionsExt;

    let notes = read("examples/certs/README.md");
    assert!(notes.contains("TEST ONLY"), "examples/certs/README.md");
    let script = root().join("examples/authenticator.sh");
    let mode = std::fs::metadata(&script).unwrap().permissions().mode();
    assert!(
        mode & 0o111 != 0,
        "examples/authenticator.sh is not executable"
    );
    assert!(read("examples/authenticator.sh").starts_with("#!/bin/sh\n"));

    let run = |cred: &str| {
        let mut child = Command::new(&script)
            .env("APP_PW", "backend-secret")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let input = format!(
            "user=alice\ndatabase=app\napplication_name=psql\n_SOURCE_CRED={cred}\n_SOURCE_SALT=00000000\n"
        );
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        (
            output.status.success(),
            String::from_utf8(output.stdout).unwrap(),
        )
    };
    let (ok, stdout) = run("wonderland");
    assert!(ok, "the right password was refused");
    let lines: Vec<&str> = stdout.lines().collect();
    for expected in [
        "user=app_alice",
        "database=app",
        "_META_TARGET_HOST=127.0.0.1:5432",
        "_META_TARGET_CRED=backend-secret",
    ] {
        assert!(lines.contains(&expected), "{expected:?} not in {stdout}");
    }
    assert!(
        lines.iter().all(|line| line.contains('=')),
        "output lines must be key=value: {stdout}"
    );
    let (ok, _) = run("wrong");
    assert!(!ok, "a wrong password was accepted");
}

#[test]
fn broken_configs_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    // (configuration, line, words the message must contain)
    let cases = [
        // an unknown key
        (
            "[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\ncolour = \"blue\"\n",
            Some(4),
            "colour",
        ),
        // a bad regex
        (
            "[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\nmatch = { user = \"/(/\" }\n",
            Some(4),
            "regex",
        ),
        // a log destination pgbastion does not write to
        (
            "[log]\ndestination = \"journald\"\n\n[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n",
            Some(2),
            "\"syslog\"",
        ),
        // an audit destination left empty
        (
            "[audit]\ndestination = \"\"\n\n[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n",
            Some(1),
            "\"stdout\"",
        ),
        // an audit queue that holds nothing
        (
            "[audit]\ndestination = \"stdout\"\nqueue = 0\n\n[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n",
            Some(3),
            "nonzero",
        ),
        // an unknown auth mode
        (
            "[[route]]\nauth = \"maybe\"\nbackend = \"postgres://h/db\"\n",
            Some(2),
            "maybe",
        ),
        // a route without its backend
        ("[[listener]]\naddress = \"127.0.0.1:6432\"\n\n[[route]]\nauth = \"trust\"\n", Some(4), "backend"),
        // not a postgres:// URL
        (
            "[[route]]\nauth = \"trust\"\nbackend = \"mysql://h/db\"\n",
            Some(3),
            "postgres://",
        ),
        // verify-full without a CA
        (
            "[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db?sslmode=verify-full\"\n",
            Some(3),
            "sslrootcert",
        ),
        // a CA file that does not exist
        (
            "[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db?sslmode=verify-full&sslrootcert=nowhere.pem\"\n",
            Some(3),
            "nowhere.pem",
        ),
        // an unset environment variable
        (
            "[[route]]\nauth = \"trust\"\nbackend = \"postgres://${pgb_not_set_anywhere}@h/db\"\n",
            Some(3),
            "pgb_not_set_anywhere",
        ),
        // a capture the route does not have
        (
            "[[route]]\nmatch = { user = \"/(.*)/\" }\nauth = \"trust\"\nbackend = \"postgres://${2}@h/db\"\n",
            Some(4),
            "${2}",
        ),
        // a listener address that is not ip:port
        (
            "[[listener]]\naddress = \"nowhere\"\n[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n",
            Some(2),
            "host:port",
        ),
        // a jwt route without [jwt]
        (
            "[[route]]\nauth = \"jwt\"\nbackend = \"postgres://h/db\"\n",
            Some(2),
            "[jwt]",
        ),
        // secrets in clear without any TLS listener
        (
            "[[user]]\nname = \"a\"\npassword = \"b\"\n[[route]]\nauth = \"cleartext\"\nbackend = \"postgres://h/db\"\n",
            Some(5),
            "insecure = true",
        ),
        // a broken SCRAM verifier
        (
            "[[user]]\nname = \"a\"\npassword = \"SCRAM-SHA-256$4096:broken\"\n[[route]]\nauth = \"scram\"\nbackend = \"postgres://h/db\"\n",
            Some(3),
            "user \"a\"",
        ),
        // no route at all: nothing to point at
        ("[[listener]]\naddress = \"127.0.0.1:1\"\n", None, "no [[route]]"),
        // [jwt] without a key source: its table's line
        (
            "[[route]]\nauth = \"trust\"\nbackend = \"postgres://h/db\"\n\n[jwt]\nissuer = \"https://i\"\n",
            Some(5),
            "exactly one of",
        ),
        // an authenticator that is not there (relative to this file)
        (
            "[[route]]\nauth = \"external\"\ninsecure = true\nbackend = \"postgres://h/db\"\nexternal = { command = [\"./missing.sh\"] }\n",
            Some(5),
            "missing.sh",
        ),
        // an authenticator that is not executable
        (
            "[[route]]\nauth = \"external\"\ninsecure = true\nbackend = \"postgres://h/db\"\nexternal = { command = [\"./plain.sh\"] }\n",
            Some(5),
            "not executable",
        ),
    ];
    std::fs::write(dir.path().join("plain.sh"), "#!/bin/sh\n").unwrap();
    // cert routes need a listener whose tls has client_ca; the message names the route's line
    let certs = root().join("examples/certs");
    let cert_without_ca = format!(
        "[[listener]]\naddress = \"127.0.0.1:6432\"\ntls = {{ cert = \"{0}/server.pem\", key = \"{0}/server.key\" }}\n\
         [[route]]\nauth = \"cert\"\nbackend = \"postgres://h/db\"\n",
        certs.display()
    );
    let cases = cases
        .into_iter()
        .map(|(text, line, needle)| (text.to_owned(), line, needle))
        .chain([(cert_without_ca, Some(5), "client_ca")]);
    for (i, (text, line, needle)) in cases.enumerate() {
        let file = dir.path().join(format!("broken-{i}.toml"));
        std::fs::write(&file, &text).unwrap();
        let (ok, output) = check(&file);
        assert!(!ok, "case {i} was accepted:\n{text}");
        assert!(!output.contains(": valid ("), "case {i}: {output}");
        let prefix = match line {
            Some(line) => format!("{}:{line}: ", file.display()),
            None => format!("{}: ", file.display()),
        };
        assert!(
            output.starts_with(&prefix),
            "case {i}: expected {prefix:?}, got {output}"
        );
        assert!(
            output.contains(needle),
            "case {i}: {needle:?} not in {output}"
        );
    }
}
