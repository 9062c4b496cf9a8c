//! `${…}` in configuration values: one tokenizer ([`tokenize`]) for all of them.
//!
//! Most values only take environment references (`${APP_PW}`), expanded at load by
//! [`expand_env`]. A backend URL also takes route placeholders: `${1}`, `${tenant}` (regex
//! captures), `${user}` and `${database}` (the client's). [`Text::compile`] resolves every
//! reference of such a value once, at load (environment references become literal text), and a
//! connection only fills the placeholders in ([`Text::fill`]).

use crate::route::Captures;

/// One piece of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Text taken as it is.
    Literal(&'a str),
    /// The name between `${` and `}`.
    Reference(&'a str),
}

/// Why a template is refused at load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `${` without its `}`.
    #[error("unterminated ${{ (write ${{NAME}})")]
    Unterminated,
    /// A reference that cannot be an environment variable (where only those are allowed).
    #[error("\"${{{0}}}\" is not an environment variable name")]
    NotEnvName(String),
    /// A reference to a variable that is not set.
    #[error("environment variable {0} is not set")]
    EnvUnset(String),
    /// `${N}` beyond the route's capture groups (or `${0}`).
    #[error("${{{name}}}: this route's regexes have {groups} capture groups")]
    NoSuchGroup {
        /// The reference.
        name: String,
        /// How many groups the route has.
        groups: usize,
    },
    /// A name that is neither a capture group nor a set environment variable: it would
    /// silently become empty.
    #[error(
        "${{{name}}} is neither a named capture group of this route ({named}) nor a set \
         environment variable"
    )]
    Unknown {
        /// The reference.
        name: String,
        /// The route's named groups, or "it has none".
        named: String,
    },
}

/// Splits `text` into literal text and `${…}` references (the name runs to the first `}`).
pub fn tokenize(text: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            pieces.push(Piece::Literal(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(TemplateError::Unterminated)?;
        pieces.push(Piece::Reference(&after[..end]));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest));
    }
    Ok(pieces)
}

/// `text` with every `${NAME}` replaced by the environment variable `NAME` (letters, digits
/// and `_`, not starting with a digit), which must be set.
pub fn expand_env(text: &str) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    for piece in tokenize(text)? {
        match piece {
            Piece::Literal(literal) => out.push_str(literal),
            Piece::Reference(name) if !is_env_name(name) => {
                return Err(TemplateError::NotEnvName(name.to_owned()))
            }
            Piece::Reference(name) => {
                let value =
                    std::env::var(name).map_err(|_| TemplateError::EnvUnset(name.to_owned()))?;
                out.push_str(&value);
            }
        }
    }
    Ok(out)
}

fn is_env_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A route placeholder of a backend URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    /// `${user}`: the client's startup user.
    User,
    /// `${database}`: the client's database (defaulting to the user).
    Database,
    /// `${N}`: capture group N, stored 0-based.
    Group(usize),
    /// `${name}`: the named capture group.
    Named(String),
}

/// What placeholders stand for on one connection.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    /// The route's regex captures.
    pub captures: &'a Captures,
    /// The client's user.
    pub user: &'a str,
    /// The client's database.
    pub database: &'a str,
}

impl<'a> Values<'a> {
    /// A placeholder's value; a group that did not take part in the match is empty.
    pub fn get(&self, placeholder: &Placeholder) -> &'a str {
        let value = match placeholder {
            Placeholder::User => Some(self.user),
            Placeholder::Database => Some(self.database),
            Placeholder::Group(i) => self.captures.numbered.get(*i).map(String::as_str),
            Placeholder::Named(name) => self.captures.named.get(name).map(String::as_str),
        };
        value.unwrap_or_default()
    }
}

/// One piece of a compiled [`Text`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// Text taken as it is (environment references already expanded).
    Literal(String),
    /// Filled in per connection.
    Placeholder(Placeholder),
}

/// Text with route placeholders, compiled once: a connection only fills them in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(Vec<Token>);

/// As written, placeholders included (`${user}`, `${1}`), for the admin console.
impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for token in &self.0 {
            match token {
                Token::Literal(text) => f.write_str(text)?,
                Token::Placeholder(Placeholder::User) => f.write_str("${user}")?,
                Token::Placeholder(Placeholder::Database) => f.write_str("${database}")?,
                Token::Placeholder(Placeholder::Group(i)) => write!(f, "${{{}}}", i + 1)?,
                Token::Placeholder(Placeholder::Named(name)) => write!(f, "${{{name}}}")?,
            }
        }
        Ok(())
    }
}

impl Text {
    /// Compiles a value for a route whose regexes have the capture groups `groups` (their
    /// names, `None` for unnamed ones, in numbering order). `${user}`, `${database}`, `${N}`
    /// and group names become placeholders; any other name must be a set environment
    /// variable, and becomes its value.
    pub fn compile(text: &str, groups: &[Option<String>]) -> Result<Self, TemplateError> {
        let tokens = tokenize(text)?
            .into_iter()
            .map(|piece| match piece {
                Piece::Literal(literal) => Ok(Token::Literal(literal.to_owned())),
                Piece::Reference(name) => resolve(name, groups),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(tokens))
    }

    /// The tokens in order.
    pub fn tokens(&self) -> &[Token] {
        &self.0
    }

    /// Whether any part is filled in per connection.
    pub fn has_placeholders(&self) -> bool {
        self.0.iter().any(|t| matches!(t, Token::Placeholder(_)))
    }

    /// The text with each placeholder replaced by `value(placeholder)`.
    pub fn render<'v>(&self, mut value: impl FnMut(&Placeholder) -> &'v str) -> String {
        let mut out = String::new();
        for token in &self.0 {
            match token {
                Token::Literal(literal) => out.push_str(literal),
                Token::Placeholder(placeholder) => out.push_str(value(placeholder)),
            }
        }
        out
    }

    /// The text for one connection.
    pub fn fill(&self, values: &Values<'_>) -> String {
        self.render(|placeholder| values.get(placeholder))
    }

    /// The values the placeholders take on one connection, in order.
    pub fn placeholder_values<'a>(
        &'a self,
        values: &'a Values<'a>,
    ) -> impl Iterator<Item = &'a str> {
        self.0.iter().filter_map(|token| match token {
            Token::Placeholder(placeholder) => Some(values.get(placeholder)),
            Token::Literal(_) => None,
        })
    }

    /// Appends a token, merging adjacent literals.
    pub fn push(&mut self, token: Token) {
        if let (Some(Token::Literal(last)), Token::Literal(more)) = (self.0.last_mut(), &token) {
            last.push_str(more);
            return;
        }
        if token != Token::Literal(String::new()) {
            self.0.push(token);
        }
    }
}

fn resolve(name: &str, groups: &[Option<String>]) -> Result<Token, TemplateError> {
    let placeholder = match name {
        "user" => Placeholder::User,
        "database" => Placeholder::Database,
        _ => match name.parse::<usize>() {
            Ok(n) if n >= 1 && n <= groups.len() => Placeholder::Group(n - 1),
            Ok(_) => {
                return Err(TemplateError::NoSuchGroup {
                    name: name.to_owned(),
                    groups: groups.len(),
                })
            }
            Err(_) if groups.iter().any(|g| g.as_deref() == Some(name)) => {
                Placeholder::Named(name.to_owned())
            }
            Err(_) => return env_literal(name, groups),
        },
    };
    Ok(Token::Placeholder(placeholder))
}

fn env_literal(name: &str, groups: &[Option<String>]) -> Result<Token, TemplateError> {
    match std::env::var(name) {
        Ok(value) if is_env_name(name) => Ok(Token::Literal(value)),
        _ => {
            let named: Vec<&str> = groups.iter().flatten().map(String::as_str).collect();
            Err(TemplateError::Unknown {
                name: name.to_owned(),
                named: if named.is_empty() {
                    "it has none".to_owned()
                } else {
                    named.join(", ")
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn tokenize_splits_literals_and_references() {
        use Piece::{Literal, Reference};
        let table: [(&str, &[Piece<'_>]); 6] = [
            ("", &[]),
            ("plain", &[Literal("plain")]),
            ("${A}", &[Reference("A")]),
            (
                "a${1}b${x}",
                &[Literal("a"), Reference("1"), Literal("b"), Reference("x")],
            ),
            ("$x{y}", &[Literal("$x{y}")]),
            ("${a${b}c}", &[Reference("a${b"), Literal("c}")]),
        ];
        for (text, expected) in table {
            assert_eq!(tokenize(text).unwrap(), expected, "{text:?}");
        }
        for unterminated in ["${", "a${b", "${a}${"] {
            let error = tokenize(unterminated).unwrap_err();
            assert_eq!(error.to_string(), "unterminated ${ (write ${NAME})");
        }
    }

    #[test]
    fn expand_env_replaces_set_variables_and_refuses_the_rest() {
        std::env::set_var("PGB_TEMPLATE_TEST_PW", "s3cret${1}");
        assert_eq!(
            expand_env("a:${PGB_TEMPLATE_TEST_PW}@h").unwrap(),
            "a:s3cret${1}@h"
        );
        let table = [
            ("${1}", "\"${1}\" is not an environment variable name"),
            ("${}", "\"${}\" is not an environment variable name"),
            ("${a-b}", "\"${a-b}\" is not an environment variable name"),
            (
                "${PGB_TEMPLATE_TEST_UNSET}",
                "environment variable PGB_TEMPLATE_TEST_UNSET is not set",
            ),
            ("x${", "unterminated ${ (write ${NAME})"),
        ];
        for (text, message) in table {
            assert_eq!(expand_env(text).unwrap_err().to_string(), message, "{text}");
        }
    }

    #[test]
    fn compile_resolves_placeholders_once_and_expands_the_environment() {
        std::env::set_var("PGB_TEMPLATE_TEST_HOST", "db-${user}");
        let groups = [None, Some("tenant".to_owned())];
        let text = Text::compile(
            "${PGB_TEMPLATE_TEST_HOST}/${1}_${tenant}_${2}:${user}@${database}",
            &groups,
        )
        .unwrap();
        let captures = Captures {
            numbered: vec!["a".to_owned(), "t1".to_owned()],
            named: BTreeMap::from([("tenant".to_owned(), "t1".to_owned())]),
        };
        let values = Values {
            captures: &captures,
            user: "u",
            database: "d",
        };
        // The variable's value is literal text: its "${user}" is not a placeholder.
        assert_eq!(text.fill(&values), "db-${user}/a_t1_t1:u@d");
        assert_eq!(
            text.placeholder_values(&values).collect::<Vec<_>>(),
            ["a", "t1", "t1", "u", "d"]
        );
        assert!(text.has_placeholders());
        assert!(!Text::compile("plain", &groups).unwrap().has_placeholders());
    }

    #[test]
    fn compile_refuses_names_that_would_silently_be_empty() {
        let tenant = [Some("tenant".to_owned())];
        let table: [(&str, &[Option<String>], &str); 5] = [
            (
                "${3}",
                &[None, None],
                "${3}: this route's regexes have 2 capture groups",
            ),
            (
                "${0}",
                &[None],
                "${0}: this route's regexes have 1 capture groups",
            ),
            (
                "${tenat}",
                &tenant,
                "${tenat} is neither a named capture group of this route (tenant) nor a set \
                 environment variable",
            ),
            (
                "${x}",
                &[],
                "${x} is neither a named capture group of this route (it has none) nor a set \
                 environment variable",
            ),
            ("${user", &[], "unterminated ${ (write ${NAME})"),
        ];
        for (text, groups, message) in table {
            let error = Text::compile(text, groups).unwrap_err();
            assert_eq!(error.to_string(), message, "{text}");
        }
    }

    #[test]
    fn groups_that_did_not_take_part_are_empty() {
        let text = Text::compile("<${1}|${2}|${t}>", &[None, Some("t".into())]).unwrap();
        let captures = Captures::default();
        let values = Values {
            captures: &captures,
            user: "u",
            database: "d",
        };
        assert_eq!(text.fill(&values), "<||>");
    }
}
