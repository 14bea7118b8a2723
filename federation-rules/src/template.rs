//! Templates for issued values: `gha:{claims.repository}`, `{sub}`, `{{literal}}`.
//!
//! Parsed once at compile time into literal and placeholder segments. A placeholder names
//! `sub`, `iss`, `aud` or `claims.<path>` (see [`crate::path`]). `{{` and `}}` are literal
//! braces. Rendering never produces an empty substitution: a missing, null, empty-string,
//! object or multi-valued claim is a [`RenderError`] and the request is denied.

use serde_json::{Map, Value};

use crate::path::{ClaimPath, Cursor, PathError, parse_continuation, parse_relative};

#[derive(Debug, Clone, Default)]
pub(crate) struct Template {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Placeholder(Placeholder),
}

#[derive(Debug, Clone)]
struct Placeholder {
    /// How the rule wrote it, canonicalised, for denial reasons: `claims.repository`.
    display: String,
    path: ClaimPath,
}

/// Why a template does not parse. `text` is the whole template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TemplateError {
    #[error("unmatched `}}` at position {pos} in template `{text}` (write `}}}}` for a literal brace)")]
    UnmatchedClose { pos: usize, text: String },
    #[error("unclosed `{{` at position {pos} in template `{text}` (write `{{{{` for a literal brace)")]
    Unclosed { pos: usize, text: String },
    #[error(
        "`{{{root}}}` takes no path: `{root}` is a string claim; use `{{claims.<path>}}` for other claims (in template `{text}`)"
    )]
    PathAfterStringClaim { root: String, text: String },
    #[error("write `claims[\"key\"]`, not `claims.[\"key\"]` (in template `{text}`)")]
    DotBeforeBracket { text: String },
    #[error("empty claim path in template `{text}`")]
    EmptyPath { text: String },
    #[error("`{{claims}}` needs a claim path, e.g. `{{claims.repository}}` (in template `{text}`)")]
    ClaimsWithoutPath { text: String },
    #[error(
        "empty placeholder `{{}}` at position {pos} in template `{text}` (write `{{{{}}}}` for literal braces)"
    )]
    EmptyPlaceholder { pos: usize, text: String },
    #[error(
        "unknown placeholder {written} at position {pos} in template `{text}`: placeholders are `{{sub}}`, `{{iss}}`, `{{aud}}` or `{{claims.<path>}}` (write `{{{{` for a literal brace)"
    )]
    UnknownPlaceholder {
        written: String,
        pos: usize,
        text: String,
    },
    #[error(transparent)]
    Path(#[from] PathError),
}

/// Why a template could not be rendered for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RenderError {
    pub(crate) placeholder: String,
    pub(crate) problem: Substitution,
}

/// Why a claim cannot be substituted into a template; reads after the placeholder's name
/// (`claims.env is missing`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Substitution {
    #[error("is missing")]
    Missing,
    #[error("is an empty array")]
    EmptyArray,
    #[error("has {0} values; a template needs exactly one")]
    ManyValues(usize),
    #[error("is an empty string")]
    EmptyString,
    #[error("is null")]
    Null,
    #[error("is an object")]
    Object,
    #[error("is a nested array")]
    NestedArray,
}

impl Template {
    /// The template `{name}` for a top-level claim such as `sub`.
    pub(crate) fn claim(name: &str) -> Template {
        Template {
            segments: vec![Segment::Placeholder(Placeholder {
                display: name.to_owned(),
                path: ClaimPath::single(name),
            })],
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut cursor = Cursor::new(text);
        while let Some(c) = cursor.bump() {
            match c {
                '{' if cursor.eat('{') => literal.push('{'),
                '}' if cursor.eat('}') => literal.push('}'),
                '}' => {
                    return Err(TemplateError::UnmatchedClose {
                        pos: cursor.pos - 1,
                        text: text.to_owned(),
                    });
                }
                '{' => {
                    let open = cursor.pos - 1;
                    let placeholder = parse_placeholder(&mut cursor)?;
                    if !cursor.eat('}') {
                        return Err(TemplateError::Unclosed {
                            pos: open,
                            text: text.to_owned(),
                        });
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Placeholder(placeholder));
                }
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template { segments })
    }

    /// Renders against the token's claims.
    pub(crate) fn render(&self, claims: &Map<String, Value>) -> Result<String, RenderError> {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Placeholder(placeholder) => {
                    let value = placeholder.path.lookup(claims);
                    let text = substitution(value).map_err(|problem| RenderError {
                        placeholder: placeholder.display.clone(),
                        problem,
                    })?;
                    out.push_str(&text);
                }
            }
        }
        Ok(out)
    }

    /// The template's parts in order: `Some(text)` for literal text, `None` for a
    /// placeholder (which always renders at least one character).
    pub(crate) fn parts(&self) -> Vec<Option<&str>> {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(text) => Some(text.as_str()),
                Segment::Placeholder(_) => None,
            })
            .collect()
    }

    /// Every placeholder's path (relative to the claims; `sub` for `{sub}`) and how it
    /// is written (`claims.repository`), in order.
    pub(crate) fn claim_paths(&self) -> impl Iterator<Item = (&str, &ClaimPath)> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Placeholder(p) => Some((p.display.as_str(), &p.path)),
            Segment::Literal(_) => None,
        })
    }

    /// Whether the template is the one placeholder `{name}`, nothing else.
    pub(crate) fn is_claim(&self, name: &str) -> bool {
        matches!(self.segments.as_slice(), [Segment::Placeholder(p)] if p.display == name)
    }

    /// The template written out again (`{{` and `}}` for literal braces).
    pub(crate) fn source(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(text) => text.replace('{', "{{").replace('}', "}}"),
                Segment::Placeholder(p) => format!("{{{}}}", p.display),
            })
            .collect()
    }

    #[cfg(test)]
    fn placeholders(&self) -> Vec<&str> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Placeholder(p) => Some(p.display.as_str()),
                Segment::Literal(_) => None,
            })
            .collect()
    }
}

fn parse_placeholder(cursor: &mut Cursor<'_>) -> Result<Placeholder, TemplateError> {
    let text = cursor.text();
    let start = cursor.pos;
    let mut root = String::new();
    while let Some(c) = cursor.peek() {
        if !(c.is_ascii_alphanumeric() || c == '_') {
            break;
        }
        root.push(c);
        cursor.bump();
    }
    let stop = |c: char| c == '}';
    let path = match root.as_str() {
        "sub" | "iss" | "aud" => {
            if cursor.peek().is_some_and(|c| c != '}') {
                return Err(TemplateError::PathAfterStringClaim {
                    root,
                    text: text.to_owned(),
                });
            }
            ClaimPath::single(&root)
        }
        "claims" => {
            if cursor.peek() == Some('.') {
                cursor.bump();
                if cursor.peek() == Some('[') {
                    return Err(TemplateError::DotBeforeBracket {
                        text: text.to_owned(),
                    });
                }
                parse_relative(cursor, stop)?
            } else if cursor.peek() == Some('[') {
                let mut keys = Vec::new();
                parse_continuation(cursor, stop, &mut keys)?;
                match ClaimPath::from_keys(keys) {
                    Some(path) => path,
                    None => {
                        return Err(TemplateError::EmptyPath {
                            text: text.to_owned(),
                        });
                    }
                }
            } else {
                return Err(TemplateError::ClaimsWithoutPath {
                    text: text.to_owned(),
                });
            }
        }
        "" if cursor.peek() == Some('}') => {
            return Err(TemplateError::EmptyPlaceholder {
                pos: start - 1,
                text: text.to_owned(),
            });
        }
        _ => {
            // Name what was written when it looks like a placeholder: `{foo}`.
            let written = match text[start..].find('}') {
                Some(end) if !root.is_empty() && end <= 64 => format!("`{{{}}}`", &text[start..start + end]),
                _ => "starting".to_owned(),
            };
            return Err(TemplateError::UnknownPlaceholder {
                written,
                pos: start,
                text: text.to_owned(),
            });
        }
    };
    let display = if root == "claims" {
        path.display_with("claims")
    } else {
        root
    };
    Ok(Placeholder { display, path })
}

/// The text a claim contributes to a template, or why it cannot.
fn substitution(value: Option<&Value>) -> Result<String, Substitution> {
    match value {
        None => Err(Substitution::Missing),
        Some(Value::Array(items)) => match items.as_slice() {
            [single] => scalar_text(single),
            [] => Err(Substitution::EmptyArray),
            _ => Err(Substitution::ManyValues(items.len())),
        },
        Some(other) => scalar_text(other),
    }
}

fn scalar_text(value: &Value) -> Result<String, Substitution> {
    match value {
        Value::String(s) if s.is_empty() => Err(Substitution::EmptyString),
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Err(Substitution::Null),
        Value::Object(_) => Err(Substitution::Object),
        Value::Array(_) => Err(Substitution::NestedArray),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims() -> Map<String, Value> {
        let Value::Object(map) = json!({
            "sub": "repo:acme/api:ref:refs/heads/main",
            "iss": "https://token.actions.githubusercontent.com",
            "aud": ["https://broker.example.com"],
            "repository": "acme/api",
            "run_number": 42,
            "ref_protected": true,
            "kubernetes.io": {"namespace": "prod", "serviceaccount": {"name": "deployer"}},
            "groups": ["a", "b"],
            "one": ["only"],
            "empty": "",
            "nothing": null,
            "obj": {"a": 1},
            "no_items": [],
            "nested_list": [[1]],
        }) else {
            unreachable!()
        };
        map
    }

    fn render(template: &str) -> Result<String, RenderError> {
        match Template::parse(template) {
            Ok(t) => t.render(&claims()),
            Err(e) => panic!("{template}: {e}"),
        }
    }

    #[test]
    fn renders_templates() {
        let cases: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("", ""),
            ("{sub}", "repo:acme/api:ref:refs/heads/main"),
            ("{iss}", "https://token.actions.githubusercontent.com"),
            ("{aud}", "https://broker.example.com"),
            ("gha:{claims.repository}", "gha:acme/api"),
            ("{claims.run_number}/{claims.ref_protected}", "42/true"),
            (r#"{claims["kubernetes.io"].namespace}"#, "prod"),
            (
                r#"{claims["kubernetes.io"]["serviceaccount"]["name"]}"#,
                "deployer",
            ),
            (r#"{claims["kubernetes.io"].serviceaccount.name}"#, "deployer"),
            ("{claims.one}", "only"),
            ("{{literal}}", "{literal}"),
            ("{{{claims.repository}}}", "{acme/api}"),
            ("a}}b{{c", "a}b{c"),
            ("{claims.sub}", "repo:acme/api:ref:refs/heads/main"),
            ("ünï{claims.repository}ü", "ünïacme/apiü"),
        ];
        for (template, want) in cases {
            assert_eq!(render(template).as_deref(), Ok(*want), "template {template}");
        }
    }

    #[test]
    fn refuses_to_render_unusable_claims() {
        let cases: &[(&str, &str, &str)] = &[
            ("{claims.missing}", "claims.missing", "is missing"),
            ("x{claims.missing.deeper}", "claims.missing.deeper", "is missing"),
            ("{claims.groups}", "claims.groups", "has 2 values"),
            ("{claims.empty}", "claims.empty", "empty string"),
            ("{claims.nothing}", "claims.nothing", "null"),
            ("{claims.obj}", "claims.obj", "object"),
            ("{claims.no_items}", "claims.no_items", "empty array"),
            ("{claims.nested_list}", "claims.nested_list", "nested array"),
            (
                r#"{claims["kubernetes.io"].missing}"#,
                r#"claims["kubernetes.io"].missing"#,
                "is missing",
            ),
            // A quoted key may contain a brace.
            (r#"{claims["a}b"]}"#, r#"claims["a}b"]"#, "is missing"),
        ];
        for (template, placeholder, problem) in cases {
            let err = render(template).expect_err(template);
            assert_eq!(err.placeholder, *placeholder, "template {template}");
            assert!(
                err.problem.to_string().contains(problem),
                "template {template}: {err:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_syntax() {
        let cases: &[(&str, &str)] = &[
            ("{", "unknown placeholder"),
            ("{sub", "unclosed `{`"),
            ("}", "unmatched `}`"),
            ("a}b", "unmatched `}`"),
            ("{}", "empty placeholder"),
            ("{subject}", "unknown placeholder"),
            ("{claims}", "needs a claim path"),
            ("{claims.}", "expected a claim name"),
            ("{claims..a}", "expected a claim name"),
            ("{claims.[\"a\"]}", "not `claims.[\"key\"]`"),
            ("{sub.x}", "takes no path"),
            ("{ sub }", "unknown placeholder"),
            ("{claims.a b}", "unexpected ` `"),
            ("{claims[a]}", "expected `\"` after `[`"),
            ("{claims[\"a\"}", "expected `]`"),
            ("{claims.a", "unclosed `{`"),
            ("{Claims.a}", "unknown placeholder"),
        ];
        for (template, want) in cases {
            let err = Template::parse(template).expect_err(template).to_string();
            assert!(err.contains(want), "template {template:?}: {err}");
        }
    }

    #[test]
    fn parses_placeholders_canonically() {
        let template = Template::parse(r#"{sub}-{claims.a}-{claims["b.c"].d}-{claims["e"]}"#).expect("valid");
        assert_eq!(
            template.placeholders(),
            ["sub", "claims.a", r#"claims["b.c"].d"#, "claims.e"]
        );
    }
}
