//! Body of the `jwt` fuzz target: the input as a token (JWT-as-password or an OAUTHBEARER
//! token) checked by a verifier with fixed keys (Ed25519, RSA and P-256) for a fixed issuer
//! and audience: splitting, header JSON, algorithm and key selection, signature and, for
//! validly signed seeds, the claims.

use std::sync::OnceLock;

use pgbastion_jwt::{JwtSettings, JwtVerifier, KeySource, MAX_ECHO};

/// The issuer tokens must name.
pub const ISSUER: &str = "https://issuer.fuzz.invalid";
/// The audience tokens must name.
pub const AUDIENCE: &str = "pgbastion-fuzz";

/// Public halves of the keys the seeds are signed with (test-only keys, trusted nowhere).
const PUBLIC_KEYS: &str = "\
-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAu9cdednBnkD3LmR2DWMAdNNeHeTb4A3cZ5Fkc4gvDFE=
-----END PUBLIC KEY-----
-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxdmWDbk3M/hY1esFiKm4
bsUAJ4fZiaLYj4C0cnnDgC7/daG2+XgDMpF8qqisMVhXxRxfFMZatMuoBwbB6x2e
Gp2oNS6N4RE3sKtqNWKq6IrYidWulvhQSMg1whfFLsbki+gpGmOFf6aSHTzk2oKs
0wN9cW8RrlOxHv5XxX/w+FTmO1yYDNPTIl+oOzTU+ClJY91LDCeYGyzCg44SrOSW
tHYXlF6pAmHCMsdiyk6n+Ipk8xChdAwFEs0aCrORk5nOAKuf0orJERgRiizj5wR0
fcv+bZyrTt49Yl775VAysDxVhxeE+XCtT+Pgx12k9vuxdx5BR6Mo6ziE7pgbhCHz
UwIDAQAB
-----END PUBLIC KEY-----
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEUfng7czUsIka7UlfgS8+TOzwKVjs
BCXTofgwphkaMb2Y5YSuPE1RdtwC38YfQMZcEj2tUGQ+cILmlZS6KUj5Hw==
-----END PUBLIC KEY-----
";

/// Verifies `data` (as UTF-8: the gateway hands tokens over as strings).
pub fn fuzz_jwt(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = verifier().verify(token) {
        // Errors reach clients: they repeat at most MAX_ECHO characters of the token.
        assert!(e.to_string().chars().count() <= 100 + MAX_ECHO, "{e}");
    }
}

/// The verifier with the fixed keys, issuer and audience, built once.
pub fn verifier() -> &'static JwtVerifier {
    static VERIFIER: OnceLock<JwtVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let settings =
            JwtSettings::new(ISSUER, KeySource::PemFiles(Vec::new())).with_audience(AUDIENCE);
        JwtVerifier::from_pem(settings, PUBLIC_KEYS).expect("the fixed keys load")
    })
}
