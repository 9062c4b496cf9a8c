//! What a pooled backend connection carries from one client to the next: its prepared
//! statements and its session parameters.

use std::collections::HashMap;

use super::statements::BackendStatements;

/// The session state pgbastion knows of one backend connection.
#[derive(Debug)]
pub struct BackendState {
    /// Statements prepared on it under pgbastion's names.
    pub statements: BackendStatements,
    /// Parameters as the backend last reported them (ParameterStatus): their names are the
    /// ones it reports.
    pub reported: HashMap<String, String>,
    /// Parameters pgbastion set that the backend does not report.
    pub applied: HashMap<String, String>,
}

impl BackendState {
    /// The state of a connection fresh from login, which reported `parameters`.
    pub fn new(parameters: &[(String, String)], statement_capacity: usize) -> Self {
        Self {
            statements: BackendStatements::new(statement_capacity),
            reported: parameters.iter().cloned().collect(),
            applied: HashMap::new(),
        }
    }

    /// Whether the backend reports changes of `name` (case-insensitively, as GUC names are).
    pub fn reports(&self, name: &str) -> bool {
        self.reported
            .keys()
            .any(|key| key.eq_ignore_ascii_case(name))
    }

    /// The value the backend last reported for `name`.
    pub fn reported_value(&self, name: &str) -> Option<&str> {
        self.reported
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The value of `name` as far as pgbastion knows.
    fn current(&self, name: &str) -> Option<&str> {
        self.reported
            .iter()
            .chain(&self.applied)
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// What to change so that the backend has `wanted`: `(name, Some(value))` to set,
    /// `(name, None)` to reset a parameter an earlier client had set and this one did not.
    /// The changes are recorded as done (the caller sends them before anything else).
    pub fn changes_for(&mut self, wanted: &[(String, String)]) -> Vec<(String, Option<String>)> {
        let mut changes = Vec::new();
        for (name, value) in wanted {
            if self.current(name) != Some(value.as_str()) {
                if name.eq_ignore_ascii_case("DateStyle") && !value.contains(',') {
                    // A style without its order (`ISO`, as pgjdbc sends) keeps the order the
                    // backend has: it is reset first, as a new session starts from the
                    // default.
                    changes.push((name.clone(), None));
                }
                changes.push((name.clone(), Some(value.clone())));
                if !self.reports(name) {
                    self.applied.insert(name.clone(), value.clone());
                }
            }
        }
        let stale: Vec<String> = self
            .applied
            .keys()
            .filter(|name| !wanted.iter().any(|(w, _)| w.eq_ignore_ascii_case(name)))
            .cloned()
            .collect();
        for name in stale {
            self.applied.remove(&name);
            changes.push((name, None));
        }
        changes
    }

    /// The backend ran `DISCARD ALL` or `RESET ALL`: what pgbastion set is gone.
    pub fn forget_applied(&mut self) {
        self.applied.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_date_style_without_its_order_is_set_from_the_default() {
        let mut backend = BackendState::new(&pairs(&[("DateStyle", "ISO, DMY")]), 10);
        assert_eq!(
            backend.changes_for(&pairs(&[("DateStyle", "ISO")])),
            vec![
                ("DateStyle".into(), None),
                ("DateStyle".into(), Some("ISO".into())),
            ]
        );
        assert_eq!(
            backend.changes_for(&pairs(&[("DateStyle", "SQL, MDY")])),
            vec![("DateStyle".into(), Some("SQL, MDY".into()))]
        );
    }

    #[test]
    fn changes_set_what_differs_and_reset_what_a_previous_client_left() {
        let mut backend =
            BackendState::new(&pairs(&[("TimeZone", "UTC"), ("application_name", "")]), 10);
        let first = pairs(&[
            ("TimeZone", "UTC"),
            ("application_name", "a"),
            ("statement_timeout", "5s"),
        ]);
        assert_eq!(
            backend.changes_for(&first),
            vec![
                ("application_name".into(), Some("a".into())),
                ("statement_timeout".into(), Some("5s".into())),
            ]
        );
        // The backend reports application_name itself once set.
        backend
            .reported
            .insert("application_name".into(), "a".into());
        assert!(
            backend.changes_for(&first).is_empty(),
            "nothing to do twice"
        );
        let second = pairs(&[("TimeZone", "Europe/Paris"), ("application_name", "a")]);
        assert_eq!(
            backend.changes_for(&second),
            vec![
                ("TimeZone".into(), Some("Europe/Paris".into())),
                ("statement_timeout".into(), None),
            ]
        );
    }
}
