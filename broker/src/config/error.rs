//! How problems are reported: every one with file, line and field ([`ConfigError`]),
//! all of them together ([`ConfigErrors`]), and the reasons a value is refused
//! ([`Problem`]), whose texts are the contract's.

use std::fmt;
use std::path::{Path, PathBuf};

use marked_yaml::Node;

use super::yaml::line_of;

/// One problem in a configuration or rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

/// Every problem found while loading; never just the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A collector that turns YAML positions into [`ConfigError`]s.
pub(super) struct Errors {
    pub(super) file: PathBuf,
    pub(super) list: Vec<ConfigError>,
}

impl Errors {
    pub(super) fn new(file: &Path) -> Self {
        Errors {
            file: file.to_path_buf(),
            list: Vec::new(),
        }
    }
    pub(super) fn at(&mut self, node: Option<&Node>, field: impl Into<String>, message: impl Into<String>) {
        self.at_line(node.and_then(line_of), field, message);
    }
    pub(super) fn at_line(
        &mut self,
        line: Option<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.list.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            field: field.into(),
            message: message.into(),
        });
    }
}
