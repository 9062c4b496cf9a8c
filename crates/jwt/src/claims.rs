//! The verified payload, and the checks on `exp`, `nbf`, `iss` and `aud`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::error::JwtError;

/// The claims of a token whose signature and registered claims were checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims(Map<String, Value>);

impl Claims {
    /// The claim `name`: a top-level claim of exactly that name if there is one (names such as
    /// `https://example.com/roles` contain dots), otherwise a dotted path into nested objects,
    /// e.g. `realm_access.roles`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        if let Some(value) = self.0.get(name) {
            return Some(value);
        }
        let mut parts = name.split('.');
        let first = self.0.get(parts.next()?)?;
        parts.try_fold(first, |value, part| value.as_object()?.get(part))
    }

    /// The claim `name` (see [`Claims::get`]) when it is a string.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name)?.as_str()
    }

    /// The `sub` claim.
    pub fn subject(&self) -> Option<&str> {
        self.get_str("sub")
    }

    /// All claims.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// All claims, owned.
    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }
}

/// What the registered claims must satisfy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimRules<'a> {
    /// The exact `iss`.
    pub(crate) issuer: &'a str,
    /// A value `aud` must contain, when set.
    pub(crate) audience: Option<&'a str>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub(crate) leeway: Duration,
}

impl ClaimRules<'_> {
    /// Checks `map` at time `now` and wraps it.
    pub(crate) fn check(
        &self,
        map: Map<String, Value>,
        now: SystemTime,
    ) -> Result<Claims, JwtError> {
        let now = seconds_since_epoch(now);
        let leeway = self.leeway.as_secs_f64();
        let exp = numeric_date(&map, "exp")?.ok_or(JwtError::MissingClaim("exp"))?;
        if now >= exp + leeway {
            return Err(JwtError::Expired);
        }
        if numeric_date(&map, "nbf")?.is_some_and(|nbf| now + leeway < nbf) {
            return Err(JwtError::NotYetValid);
        }
        self.check_issuer(&map)?;
        self.check_audience(&map)?;
        Ok(Claims(map))
    }

    fn check_issuer(&self, map: &Map<String, Value>) -> Result<(), JwtError> {
        match map.get("iss") {
            Some(Value::String(iss)) if iss == self.issuer => Ok(()),
            Some(Value::String(_)) => Err(JwtError::WrongIssuer),
            _ => Err(JwtError::MissingClaim("iss")),
        }
    }

    fn check_audience(&self, map: &Map<String, Value>) -> Result<(), JwtError> {
        let Some(wanted) = self.audience else {
            return Ok(());
        };
        let found = match map.get("aud") {
            Some(Value::String(aud)) => aud == wanted,
            Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(wanted)),
            _ => false,
        };
        if found {
            Ok(())
        } else {
            Err(JwtError::WrongAudience)
        }
    }
}

/// A NumericDate claim: absent is `None`; present but not a number is an error.
fn numeric_date(map: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, JwtError> {
    match map.get(name) {
        None => Ok(None),
        Some(value) => value.as_f64().map(Some).ok_or(JwtError::MissingClaim(name)),
    }
}

fn seconds_since_epoch(now: SystemTime) -> f64 {
    // A clock before 1970 is a broken clock; treating it as the epoch fails every `exp` check
    // only if the token expired before 1970.
    now.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn rules() -> ClaimRules<'static> {
        ClaimRules {
            issuer: "https://idp",
            audience: Some("pg"),
            leeway: Duration::from_secs(30),
        }
    }

    fn check(claims: Value) -> Result<Claims, JwtError> {
        let Value::Object(map) = claims else {
            panic!("not an object")
        };
        rules().check(map, UNIX_EPOCH + Duration::from_secs(NOW))
    }

    fn valid() -> Value {
        json!({"iss": "https://idp", "aud": "pg", "exp": NOW + 60, "sub": "alice"})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut claims = valid();
        claims[key] = value;
        claims
    }

    #[test]
    fn valid_claims_pass() {
        assert_eq!(check(valid()).unwrap().subject(), Some("alice"));
    }

    #[test]
    fn exp_within_leeway_passes_and_beyond_fails() {
        assert!(check(with("exp", json!(NOW - 29))).is_ok());
        assert_eq!(check(with("exp", json!(NOW - 30))), Err(JwtError::Expired));
    }

    #[test]
    fn nbf_within_leeway_passes_and_beyond_fails() {
        assert!(check(with("nbf", json!(NOW + 30))).is_ok());
        assert_eq!(
            check(with("nbf", json!(NOW + 31))),
            Err(JwtError::NotYetValid)
        );
    }

    #[test]
    fn fractional_numeric_dates_are_accepted() {
        assert!(check(with("exp", json!(NOW as f64 + 0.5))).is_ok());
    }

    #[test]
    fn missing_or_non_numeric_exp_is_refused() {
        let mut claims = valid();
        claims.as_object_mut().unwrap().remove("exp");
        assert_eq!(check(claims), Err(JwtError::MissingClaim("exp")));
        assert_eq!(
            check(with("exp", json!("soon"))),
            Err(JwtError::MissingClaim("exp"))
        );
    }

    #[test]
    fn issuer_must_match_exactly() {
        assert_eq!(
            check(with("iss", json!("https://idp/"))),
            Err(JwtError::WrongIssuer)
        );
        assert_eq!(
            check(with("iss", json!(7))),
            Err(JwtError::MissingClaim("iss"))
        );
    }

    #[test]
    fn audience_may_be_a_string_or_an_array() {
        assert!(check(with("aud", json!(["other", "pg"]))).is_ok());
        assert_eq!(
            check(with("aud", json!(["other"]))),
            Err(JwtError::WrongAudience)
        );
        assert_eq!(
            check(with("aud", json!(null))),
            Err(JwtError::WrongAudience)
        );
    }

    #[test]
    fn audience_is_ignored_when_not_configured() {
        let rules = ClaimRules {
            audience: None,
            ..rules()
        };
        let Value::Object(map) = with("aud", json!("other")) else {
            unreachable!()
        };
        assert!(rules
            .check(map, UNIX_EPOCH + Duration::from_secs(NOW))
            .is_ok());
    }

    #[test]
    fn get_prefers_exact_names_then_follows_dotted_paths() {
        let claims = check(with("realm", json!({"role": "admin", "n": 1}))).unwrap();
        assert_eq!(claims.get_str("realm.role"), Some("admin"));
        assert_eq!(claims.get_str("realm.n"), None);
        assert_eq!(claims.get_str("realm.missing"), None);
        let claims = check(with("https://x.io/role", json!("dba"))).unwrap();
        assert_eq!(claims.get_str("https://x.io/role"), Some("dba"));
    }
}
