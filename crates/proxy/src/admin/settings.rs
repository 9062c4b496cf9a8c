//! `[admin]`: who may open the admin console and how they prove it. The table as written
//! ([`AdminConfig`]) and as checked ([`Admin`]).

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;
use toml::Spanned;

use crate::config::{AuthMode, ConfigError, SourceFile};
use crate::secret::Secret;

/// The console's database name: a client asking for it talks to the console, not a backend.
pub const CONSOLE_DATABASE: &str = "pgbastion";

/// `[admin]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Names of the users allowed on the console.
    pub users: Spanned<Vec<String>>,
    /// How they authenticate: `scram` (default), `md5`, `cleartext`, `cert` or `jwt`.
    #[serde(default = "default_auth")]
    pub auth: Spanned<AuthMode>,
    /// Allow `cleartext` and `jwt` without TLS.
    #[serde(default)]
    pub insecure: bool,
}

/// What is wrong with `auth` for the console, if anything.
fn auth_problem(auth: AuthMode, have_jwt: bool, any_client_ca: bool) -> Option<&'static str> {
    match auth {
        AuthMode::Scram | AuthMode::Md5 | AuthMode::Cleartext => None,
        AuthMode::Cert if !any_client_ca => Some("needs a listener with tls.client_ca"),
        AuthMode::Jwt if !have_jwt => Some("needs a [jwt] table"),
        AuthMode::Cert | AuthMode::Jwt => None,
        AuthMode::Trust | AuthMode::Oauth | AuthMode::External | AuthMode::Passthrough => {
            Some("is not supported: use scram, md5, cleartext, cert or jwt")
        }
    }
}

fn default_auth() -> Spanned<AuthMode> {
    Spanned::new(0..0, AuthMode::Scram)
}

/// `[admin]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// The users allowed on the console.
    pub users: BTreeSet<String>,
    /// How they authenticate.
    pub auth: AuthMode,
    /// Whether secrets in clear are accepted without TLS.
    pub insecure: bool,
}

impl Admin {
    /// Checks `[admin]` against the file's `[[user]]` list, whether it has a `[jwt]` and
    /// whether any listener takes client certificates (`client_ca`).
    pub fn compile(
        file: &SourceFile,
        config: &AdminConfig,
        users: &HashMap<String, Secret>,
        (have_jwt, any_client_ca): (bool, bool),
    ) -> Result<Self, ConfigError> {
        let at = |span, message: String| ConfigError::at(file, Some(span), message);
        let auth = *config.auth.get_ref();
        if let Some(problem) = auth_problem(auth, have_jwt, any_client_ca) {
            return Err(at(
                config.auth.span(),
                format!("[admin] auth = \"{}\" {problem}", auth.name()),
            ));
        }
        let names = config.users.get_ref();
        if names.is_empty() {
            let message = "[admin] users is empty: name at least one [[user]]";
            return Err(at(config.users.span(), message.to_owned()));
        }
        let needs_password = matches!(auth, AuthMode::Scram | AuthMode::Md5 | AuthMode::Cleartext);
        if let Some(user) = names
            .iter()
            .find(|u| needs_password && !users.contains_key(*u))
        {
            let message = format!(
                "[admin] users: \"{user}\" is not a [[user]] (auth = \"{}\" checks its password there)",
                auth.name()
            );
            return Err(at(config.users.span(), message));
        }
        Ok(Self {
            users: names.iter().cloned().collect(),
            auth,
            insecure: config.insecure,
        })
    }

    /// Whether `user` may use the console.
    pub fn allows(&self, user: &str) -> bool {
        self.users.contains(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str, facts: (bool, bool)) -> Result<Admin, ConfigError> {
        let file = SourceFile {
            path: "pgbastion.toml".into(),
            text: text.to_owned(),
        };
        let config: AdminConfig = toml::from_str(text).expect("toml");
        let users = HashMap::from([("ops".to_owned(), Secret::new("pw".to_owned()))]);
        Admin::compile(&file, &config, &users, facts)
    }

    #[test]
    fn scram_is_the_default_and_users_must_be_listed() {
        let admin = compile("users = [\"ops\"]", (false, false)).expect("valid");
        assert_eq!(admin.auth, AuthMode::Scram);
        assert!(admin.allows("ops") && !admin.allows("app"));
        let error = compile("users = [\"ghost\"]", (false, false)).expect_err("unknown user");
        assert!(
            error.to_string().contains("\"ghost\" is not a [[user]]"),
            "{error}"
        );
    }

    #[test]
    fn cert_admins_need_no_password_but_a_client_ca_and_jwt_needs_a_jwt_table() {
        let cert = "users = [\"ghost\"]\nauth = \"cert\"";
        assert!(compile(cert, (false, true)).is_ok());
        let error = compile(cert, (false, false)).expect_err("no client_ca");
        assert!(error.to_string().contains("client_ca"), "{error}");
        let jwt = "users = [\"ops\"]\nauth = \"jwt\"";
        let error = compile(jwt, (false, false)).expect_err("no [jwt]");
        assert!(error.to_string().contains(":2:"), "{error}");
        assert!(compile(jwt, (true, false)).is_ok());
        assert!(compile("users = []", (false, false)).is_err());
        assert!(compile("users = [\"ops\"]\nauth = \"trust\"", (false, false)).is_err());
    }
}
