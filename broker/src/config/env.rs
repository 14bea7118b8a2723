//! `${NAME}` substitution from the environment (given as a function: parsing stays pure).

use marked_yaml::Node;

use super::error::{ConfigError, Errors};
use super::yaml::join_path;

/// Replace `${NAME}` in every scalar from the environment. A missing variable is an error.
pub(super) fn substitute_env(
    node: &mut Node,
    path: &str,
    errors: &mut Errors,
    env: &dyn Fn(&str) -> Option<String>,
) {
    match node {
        Node::Scalar(s) => {
            let text = s.as_str();
            if !text.contains("${") {
                return;
            }
            match expand_env(text, env) {
                Ok(expanded) => {
                    let coerce = s.may_coerce();
                    let mut replaced = marked_yaml::types::MarkedScalarNode::new(*s.span(), expanded);
                    replaced.set_coerce(coerce);
                    *s = replaced;
                }
                Err(unset) => {
                    let line = s.span().start().map(|m| m.line());
                    errors.list.push(ConfigError {
                        file: errors.file.clone(),
                        line,
                        field: path.to_string(),
                        message: unset.to_string(),
                    });
                }
            }
        }
        Node::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                let child = join_path(path, k.as_str());
                substitute_env(v, &child, errors, env);
            }
        }
        Node::Sequence(seq) => {
            for (i, v) in seq.iter_mut().enumerate() {
                substitute_env(v, &format!("{path}[{i}]"), errors, env);
            }
        }
    }
}

/// A `${NAME}` whose variable is not set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable `{0}` is not set")]
pub struct UnsetVariable(pub String);

/// `${NAME}` → value; `NAME` is `[A-Za-z_][A-Za-z0-9_]*`.
pub fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, UnsetVariable> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        let valid = !name.is_empty()
            && name
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if valid {
            match env(name) {
                Some(v) => out.push_str(&v),
                None => return Err(UnsetVariable(name.to_string())),
            }
        } else {
            out.push_str(&rest[start..start + 2 + end + 1]);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
