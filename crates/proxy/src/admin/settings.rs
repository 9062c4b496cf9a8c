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
    /// Checks `[admin]` against the file's `[[user]]` list and whether it has a `[jwt]`.
    pub fn compile(
        file: &SourceFile,
        config: &AdminConfig,
        users: &HashMap<String, Secret>,
        have_jwt: bool,
    ) -> Result<Self, ConfigError> {
        let error = |span, message: String| Err(ConfigError::at(file, Some(span), message));
        let auth = *config.auth.get_ref();
        match auth {
            AuthMode::Scram | AuthMode::Md5 | AuthMode::Cleartext | AuthMode::Cert => {}
            AuthMode::Jwt if have_jwt => {}
            AuthMode::Jwt => return error(config.auth.span(), "[admin] auth = \"jwt\" needs a [jwt] table".to_owned()),
            other => {
                return error(
                    config.auth.span(),
                    format!(
                        "[admin] auth = \"{}\" is not supported: use scram, md5, cleartext, cert or jwt",
                        other.name()
                    ),
                )
            }
        }
        if config.users.get_ref().is_empty() {
            return error(
                config.users.span(),
                "[admin] users is empty: name at least one [[user]]".to_owned(),
            );
        }
        let needs_password = matches!(auth, AuthMode::Scram | AuthMode::Md5 | AuthMode::Cleartext);
        for user in config.users.get_ref() {
            if needs_password && !users.contains_key(user) {
                return error(
                    config.users.span(),
                    format!("[admin] users: \"{user}\" is not a [[user]] (auth = \"{}\" checks its password there)", auth.name()),
                );
            }
        }
        Ok(Self {
            users: config.users.get_ref().iter().cloned().collect(),
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

    fn compile(text: &str, have_jwt: bool) -> Result<Admin, ConfigError> {
        let file = SourceFile {
            path: "pgbastion.toml".into(),
            text: text.to_owned(),
        };
        let config: AdminConfig = toml::from_str(text).expect("toml");
        let users = HashMap::from([("ops".to_owned(), Secret::new("pw".to_owned()))]);
        Admin::compile(&file, &config, &users, have_jwt)
    }

    #[test]
    fn scram_is_the_default_and_users_must_be_listed() {
        let admin = compile("users = [\"ops\"]", false).expect("valid");
        assert_eq!(admin.auth, AuthMode::Scram);
        assert!(admin.allows("ops") && !admin.allows("app"));
        let error = compile("users = [\"ghost\"]", false).expect_err("unknown user");
        assert!(
            error.to_string().contains("\"ghost\" is not a [[user]]"),
            "{error}"
        );
    }

    #[test]
    fn cert_admins_need_no_password_but_jwt_needs_a_jwt_table() {
        assert!(compile("users = [\"ghost\"]\nauth = \"cert\"", false).is_ok());
        let error = compile("users = [\"ops\"]\nauth = \"jwt\"", false).expect_err("no [jwt]");
        assert!(error.to_string().contains(":2:"), "{error}");
        assert!(compile("users = [\"ops\"]\nauth = \"jwt\"", true).is_ok());
        assert!(compile("users = []", false).is_err());
        assert!(compile("users = [\"ops\"]\nauth = \"trust\"", false).is_err());
    }
}
