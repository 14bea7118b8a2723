//! Claim paths: `repository`, `["kubernetes.io"].namespace`, `a["b.c"]["d"]`.
//!
//! Dots separate nested keys; a key that contains a dot (or any other character that
//! would be ambiguous) is written as a double-quoted string in brackets, with `\"` and
//! `\\` as the only escapes. The same grammar is used for the keys of `match.claims` /
//! `match.claim_patterns` (relative to the token's claims) and inside template
//! placeholders, where the root (`claims`, `sub`, `iss`, `aud`) is explicit.

use std::fmt;

use serde_json::{Map, Value};

/// Why a claim path (or the path in a template placeholder) does not parse. `text` is
/// the whole text being parsed, positions count characters from its start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PathError {
    #[error("unexpected `{found}` at position {pos} in claim path `{text}`")]
    TrailingChar { found: char, pos: usize, text: String },
    #[error("unexpected `.` before `[` at position {pos} in `{text}` (write `a[\"b\"]`, not `a.[\"b\"]`)")]
    DotBeforeBracket { pos: usize, text: String },
    #[error("unexpected `{found}` at position {pos} in `{text}`")]
    UnexpectedChar { found: char, pos: usize, text: String },
    #[error("expected a claim name at the end of `{text}`")]
    NameAtEnd { text: String },
    #[error(
        "expected a claim name at position {pos} in `{text}`, found `{found}` (keys containing dots or special characters are written `[\"key.with.dots\"]`)"
    )]
    ExpectedName { pos: usize, text: String, found: char },
    #[error(
        "expected `\"` after `[` at position {pos} in `{text}` (bracketed keys are double-quoted: `[\"kubernetes.io\"]`)"
    )]
    ExpectedQuote { pos: usize, text: String },
    #[error("unterminated string starting at position {pos} in `{text}`")]
    Unterminated { pos: usize, text: String },
    #[error("unknown escape `\\{escape}` in `{text}` (only `\\\"` and `\\\\` are allowed)")]
    UnknownEscape { escape: char, text: String },
    #[error("expected `]` after the quoted key at position {pos} in `{text}`")]
    ExpectedCloseBracket { pos: usize, text: String },
    #[error("empty key `[\"\"]` in `{text}`")]
    EmptyKey { text: String },
}

/// A parsed path into a token's claims: the keys to follow, outermost first. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimPath(Vec<String>);

impl ClaimPath {
    /// A one-key path (`sub`, `iss`, `aud`).
    pub(crate) fn single(key: &str) -> ClaimPath {
        ClaimPath(vec![key.to_owned()])
    }

    /// A path from already-split keys; `None` when there are none.
    pub(crate) fn from_keys(keys: Vec<String>) -> Option<ClaimPath> {
        if keys.is_empty() {
            None
        } else {
            Some(ClaimPath(keys))
        }
    }

    /// The top-level claim the path starts at (`kubernetes.io` of
    /// `["kubernetes.io"].namespace`).
    pub(crate) fn first(&self) -> &str {
        self.0.first().map_or("", String::as_str)
    }

    /// Parses a whole string as a path relative to the claims root.
    pub(crate) fn parse(text: &str) -> Result<ClaimPath, PathError> {
        let mut cursor = Cursor::new(text);
        let path = parse_relative(&mut cursor, |_| false)?;
        match cursor.peek() {
            None => Ok(path),
            Some(found) => Err(PathError::TrailingChar {
                found,
                pos: cursor.pos,
                text: text.to_owned(),
            }),
        }
    }

    /// Follows the path through nested JSON objects. Anything that is not an object on
    /// the way (an array, a string, ...) means the claim is absent.
    pub(crate) fn lookup<'v>(&self, claims: &'v Map<String, Value>) -> Option<&'v Value> {
        let (first, rest) = self.0.split_first()?;
        let mut value = claims.get(first)?;
        for key in rest {
            value = value.as_object()?.get(key)?;
        }
        Some(value)
    }

    /// Writes the path as it would be written in a rule, after `prefix` (e.g. `claims`).
    pub(crate) fn write_with_prefix(&self, prefix: &str, f: &mut impl fmt::Write) -> fmt::Result {
        f.write_str(prefix)?;
        for (i, key) in self.0.iter().enumerate() {
            if is_plain_key(key) {
                if i > 0 || !prefix.is_empty() {
                    f.write_char('.')?;
                }
                f.write_str(key)?;
            } else {
                f.write_str("[\"")?;
                for c in key.chars() {
                    if c == '"' || c == '\\' {
                        f.write_char('\\')?;
                    }
                    f.write_char(c)?;
                }
                f.write_str("\"]")?;
            }
        }
        Ok(())
    }

    /// The path with a root, as used in denial reasons: `claims.environment`.
    pub(crate) fn display_with(&self, prefix: &str) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_with_prefix(prefix, &mut out);
        out
    }
}

/// Characters that end a bare key. Braces are included so that the same parser can be
/// used inside template placeholders.
fn is_key_char(c: char) -> bool {
    !matches!(c, '.' | '[' | ']' | '"' | '{' | '}' | '\\') && !c.is_whitespace() && !c.is_control()
}

fn is_plain_key(key: &str) -> bool {
    !key.is_empty() && key.chars().all(is_key_char)
}

/// A character cursor over a string, tracking the byte position for error messages.
pub(crate) struct Cursor<'a> {
    text: &'a str,
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(text: &'a str) -> Cursor<'a> {
        Cursor { text, pos: 0 }
    }

    pub(crate) fn peek(&self) -> Option<char> {
        self.text.get(self.pos..)?.chars().next()
    }

    pub(crate) fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    pub(crate) fn eat(&mut self, expected: char) -> bool {
        if self.peek() == Some(expected) {
            self.pos += expected.len_utf8();
            true
        } else {
            false
        }
    }

    pub(crate) fn text(&self) -> &'a str {
        self.text
    }
}

/// Parses `key` then any number of `.key` / `["key"]`, stopping (without consuming) at a
/// character for which `stop` is true or at the end of input.
pub(crate) fn parse_relative(
    cursor: &mut Cursor<'_>,
    stop: impl Fn(char) -> bool,
) -> Result<ClaimPath, PathError> {
    let mut keys = Vec::new();
    if cursor.peek() == Some('[') {
        keys.push(parse_bracket(cursor)?);
    } else {
        keys.push(parse_plain(cursor)?);
    }
    parse_continuation(cursor, stop, &mut keys)?;
    Ok(ClaimPath(keys))
}

/// Parses the `.key` / `["key"]` steps after a root, appending to `keys`.
pub(crate) fn parse_continuation(
    cursor: &mut Cursor<'_>,
    stop: impl Fn(char) -> bool,
    keys: &mut Vec<String>,
) -> Result<(), PathError> {
    loop {
        match cursor.peek() {
            None => return Ok(()),
            Some(c) if stop(c) => return Ok(()),
            Some('.') => {
                cursor.bump();
                if cursor.peek() == Some('[') {
                    return Err(PathError::DotBeforeBracket {
                        pos: cursor.pos - 1,
                        text: cursor.text().to_owned(),
                    });
                }
                keys.push(parse_plain(cursor)?);
            }
            Some('[') => keys.push(parse_bracket(cursor)?),
            Some(found) => {
                return Err(PathError::UnexpectedChar {
                    found,
                    pos: cursor.pos,
                    text: cursor.text().to_owned(),
                });
            }
        }
    }
}

fn parse_plain(cursor: &mut Cursor<'_>) -> Result<String, PathError> {
    let start = cursor.pos;
    while let Some(c) = cursor.peek() {
        if !is_key_char(c) {
            break;
        }
        cursor.bump();
    }
    if cursor.pos == start {
        let text = cursor.text().to_owned();
        return Err(match cursor.peek() {
            None => PathError::NameAtEnd { text },
            Some(found) => PathError::ExpectedName {
                pos: start,
                text,
                found,
            },
        });
    }
    Ok(cursor.text()[start..cursor.pos].to_owned())
}

fn parse_bracket(cursor: &mut Cursor<'_>) -> Result<String, PathError> {
    let open = cursor.pos;
    cursor.bump(); // `[`
    if !cursor.eat('"') {
        return Err(PathError::ExpectedQuote {
            pos: open,
            text: cursor.text().to_owned(),
        });
    }
    let mut key = String::new();
    loop {
        match cursor.bump() {
            None => {
                return Err(PathError::Unterminated {
                    pos: open,
                    text: cursor.text().to_owned(),
                });
            }
            Some('"') => break,
            Some('\\') => match cursor.bump() {
                Some(c @ ('"' | '\\')) => key.push(c),
                Some(escape) => {
                    return Err(PathError::UnknownEscape {
                        escape,
                        text: cursor.text().to_owned(),
                    });
                }
                None => {
                    return Err(PathError::Unterminated {
                        pos: open,
                        text: cursor.text().to_owned(),
                    });
                }
            },
            Some(c) => key.push(c),
        }
    }
    if !cursor.eat(']') {
        return Err(PathError::ExpectedCloseBracket {
            pos: cursor.pos,
            text: cursor.text().to_owned(),
        });
    }
    if key.is_empty() {
        return Err(PathError::EmptyKey {
            text: cursor.text().to_owned(),
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(path: &str) -> Vec<String> {
        match ClaimPath::parse(path) {
            Ok(p) => p.0,
            Err(e) => panic!("{path}: {e}"),
        }
    }

    #[test]
    fn parses_valid_paths() {
        let cases: &[(&str, &[&str])] = &[
            ("repository", &["repository"]),
            ("kubernetes.io", &["kubernetes", "io"]),
            (r#"["kubernetes.io"].namespace"#, &["kubernetes.io", "namespace"]),
            (
                r#"["kubernetes.io"]["serviceaccount"]["name"]"#,
                &["kubernetes.io", "serviceaccount", "name"],
            ),
            (r#"a["b.c"].d"#, &["a", "b.c", "d"]),
            (
                r#"["https://aws.amazon.com/tags"]"#,
                &["https://aws.amazon.com/tags"],
            ),
            (r#"["say \"hi\" \\ there"]"#, &["say \"hi\" \\ there"]),
            ("x-y_z:1/2", &["x-y_z:1/2"]),
            ("ünïcödé.ключ", &["ünïcödé", "ключ"]),
        ];
        for (input, want) in cases {
            assert_eq!(keys(input), *want, "input {input}");
        }
    }

    #[test]
    fn rejects_invalid_paths() {
        let cases: &[(&str, &str)] = &[
            ("", "expected a claim name"),
            (".a", "expected a claim name at position 0"),
            ("a.", "expected a claim name at the end"),
            ("a..b", "expected a claim name at position 2"),
            ("a.[\"b\"]", "unexpected `.` before `[`"),
            ("[kubernetes.io]", "expected `\"` after `[`"),
            ("['a']", "expected `\"` after `[`"),
            ("[\"a\"", "expected `]`"),
            ("[\"a", "unterminated string"),
            ("[\"a\\", "unterminated string"),
            ("[\"a\\n\"]", "unknown escape"),
            ("[\"\"]", "empty key"),
            ("a b", "unexpected ` `"),
            ("a]", "unexpected `]`"),
            ("a\"b", "unexpected `\"`"),
            ("a{b}", "unexpected `{`"),
        ];
        for (input, want) in cases {
            let err = ClaimPath::parse(input).expect_err(input).to_string();
            assert!(err.contains(want), "input {input:?}: {err}");
        }
    }

    #[test]
    fn displays_canonically() {
        let cases: &[(&str, &str)] = &[
            ("repository", "claims.repository"),
            (
                r#"["kubernetes.io"].namespace"#,
                r#"claims["kubernetes.io"].namespace"#,
            ),
            (r#"["a\"b"]"#, r#"claims["a\"b"]"#),
        ];
        for (input, want) in cases {
            let path = ClaimPath::parse(input).expect("valid");
            assert_eq!(path.display_with("claims"), *want);
            let relative = path.display_with("");
            assert_eq!(ClaimPath::parse(&relative), Ok(path), "round trip of {relative}");
        }
    }

    #[test]
    fn looks_up_nested_claims() {
        let claims = json!({
            "repository": "acme/api",
            "kubernetes.io": {"namespace": "prod", "serviceaccount": {"name": "deployer"}},
            "kubernetes": {"io": "nested"},
            "list": [{"a": 1}],
        });
        let Value::Object(claims) = claims else {
            unreachable!()
        };
        let get = |p: &str| ClaimPath::parse(p).expect("valid").lookup(&claims).cloned();
        assert_eq!(get("repository"), Some(json!("acme/api")));
        assert_eq!(get(r#"["kubernetes.io"].namespace"#), Some(json!("prod")));
        assert_eq!(
            get(r#"["kubernetes.io"]["serviceaccount"]["name"]"#),
            Some(json!("deployer"))
        );
        assert_eq!(get("kubernetes.io"), Some(json!("nested")));
        assert_eq!(get("repository.x"), None);
        assert_eq!(get("list.a"), None);
        assert_eq!(get("missing"), None);
    }
}
