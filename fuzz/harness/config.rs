//! Body of the `config` fuzz target: the input as the text of a configuration file, loaded
//! as `pgbastion --check-config` loads it (TOML shape, then every semantic check), from
//! memory. Files with a `[listener.tls]` table stop after the TOML shape: compiling those
//! reads certificate files, and a fuzzer must not read arbitrary paths. (The other checks
//! only look whether a named file exists.)

use std::path::PathBuf;

use pgbastion_proxy::config::{parse, SourceFile};
use pgbastion_proxy::Settings;

/// Where the text claims to come from: relative paths resolve into a directory that does
/// not exist.
const PATH: &str = "/nonexistent/pgbastion-fuzz/pgbastion.toml";

/// Loads `data` (as UTF-8, as the loader reads files) as a configuration file.
pub fn fuzz_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = SourceFile {
        path: PathBuf::from(PATH),
        text: text.to_owned(),
    };
    match parse(&file) {
        Ok(parsed) if parsed.listeners.iter().all(|l| l.tls.is_none()) => {
            if let Err(e) = Settings::from_source(&file) {
                check_error(&e.to_string());
            }
        }
        Ok(_) => {}
        Err(e) => check_error(&e.to_string()),
    }
}

/// Every error names the file it is about.
fn check_error(message: &str) {
    assert!(message.starts_with(PATH), "{message}");
}
