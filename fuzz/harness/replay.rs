//! Stable-toolchain side of the fuzz targets, shared by every crate's `tests/fuzz_corpus.rs`
//! (included with `#[path]`): keeps a target's committed seed files equal to what the seed
//! builders produce, and replays every file of a corpus through the target's body.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// Set to rewrite the seed files after a deliberate change to what the builders produce.
const WRITE_SEEDS: &str = "PGBASTION_WRITE_FUZZ_SEEDS";

/// `fuzz/corpus/<target>`, from any crate of the workspace.
pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Fails unless every seed is committed as `fuzz/corpus/<target>/<name>` with exactly these
/// bytes; with `PGBASTION_WRITE_FUZZ_SEEDS=1` writes them first.
pub fn check_seeds(target: &str, seeds: &[(&str, Vec<u8>)]) {
    let dir = corpus_dir(target);
    if std::env::var_os(WRITE_SEEDS).is_some() {
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).expect("write a seed");
        }
    }
    for (name, bytes) in seeds {
        let path = dir.join(name);
        let committed = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; regenerate with {WRITE_SEEDS}=1", path.display()));
        assert_eq!(
            &committed, bytes,
            "{name} is stale; regenerate with {WRITE_SEEDS}=1"
        );
    }
}

/// Runs every file of `fuzz/corpus/<target>` (seeds and whatever fuzzing added) through
/// `body`, and fails naming each file that panicked. Returns how many files ran.
pub fn replay(target: &str, body: fn(&[u8])) -> usize {
    let dir = corpus_dir(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("read the corpus directory").path())
        .collect();
    paths.sort();
    let failed: Vec<String> = paths
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("read a corpus file");
            catch_unwind(AssertUnwindSafe(|| body(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: panicked on {failed:#?}");
    assert!(
        !paths.is_empty(),
        "{target}: empty corpus in {}",
        dir.display()
    );
    paths.len()
}
