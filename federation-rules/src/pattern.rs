//! Anchored globs for `subject_pattern` and `claim_patterns`.
//!
//! `*` matches any run of characters (including none, including `/` and `:`), `?`
//! exactly one character (code point); everything else matches itself exactly, without
//! case folding or Unicode normalisation. The whole value must match. There is no escape:
//! a literal `*` or `?` in a value is matched by a wildcard.

use wildmatch::WildMatch;

/// Longest pattern accepted, in characters.
pub const MAX_PATTERN_CHARS: usize = 1024;

/// Why a glob is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PatternError {
    #[error("pattern must not be empty")]
    Empty,
    #[error("pattern is {chars} characters long; at most {MAX_PATTERN_CHARS} are allowed")]
    TooLong { chars: usize },
}

#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    source: String,
    matcher: WildMatch,
}

impl Pattern {
    pub(crate) fn new(source: &str) -> Result<Pattern, PatternError> {
        if source.is_empty() {
            return Err(PatternError::Empty);
        }
        let chars = source.chars().count();
        if chars > MAX_PATTERN_CHARS {
            return Err(PatternError::TooLong { chars });
        }
        Ok(Pattern {
            source: source.to_owned(),
            matcher: WildMatch::new(source),
        })
    }

    pub(crate) fn matches(&self, value: &str) -> bool {
        self.matcher.matches(value)
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matches(pattern: &str, value: &str) -> bool {
        Pattern::new(pattern).expect("valid pattern").matches(value)
    }

    #[test]
    fn glob_semantics() {
        let cases: &[(&str, &str, bool)] = &[
            (
                "repo:acme/*:ref:refs/heads/main",
                "repo:acme/api:ref:refs/heads/main",
                true,
            ),
            (
                "repo:acme/*:ref:refs/heads/main",
                "repo:acme/a/b:ref:refs/heads/main",
                true,
            ),
            (
                "repo:acme/*:ref:refs/heads/main",
                "repo:acme/api:ref:refs/heads/mainx",
                false,
            ),
            (
                "repo:acme/*:ref:refs/heads/main",
                "xrepo:acme/api:ref:refs/heads/main",
                false,
            ),
            ("repo:acme/*", "repo:acme/", true),
            ("repo:acme/*", "repo:acmeX", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "abbc", false),
            ("a?c", "aéc", true),
            ("*", "", true),
            ("*", "anything", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbYcZ", false),
            ("*ab", "aab", true),
            ("*a*a*a", "aaa", true),
            ("*a*a*a", "aa", false),
            ("Main", "main", false),
            ("ﬁ", "fi", false),
            ("e\u{301}", "\u{e9}", false),
        ];
        for (pattern, value, want) in cases {
            assert_eq!(matches(pattern, value), *want, "{pattern:?} vs {value:?}");
        }
    }

    #[test]
    fn rejects_empty_and_oversized_patterns() {
        assert!(Pattern::new("").is_err());
        assert!(Pattern::new(&"a".repeat(MAX_PATTERN_CHARS)).is_ok());
        let long = "é".repeat(MAX_PATTERN_CHARS + 1);
        let err = Pattern::new(&long).expect_err("too long").to_string();
        assert!(err.contains("at most 1024"), "{err}");
    }

    proptest! {
        /// A pattern without `*` is anchored at both ends: it never matches its own text
        /// with anything added before or after.
        #[test]
        fn literal_pattern_never_matches_with_prefix_or_suffix(
            s in "[^*]{1,40}",
            extra in ".{1,10}",
            prefix in any::<bool>(),
        ) {
            let pattern = Pattern::new(&s).expect("valid");
            prop_assert!(pattern.matches(&s));
            let value = if prefix { format!("{extra}{s}") } else { format!("{s}{extra}") };
            prop_assert!(!pattern.matches(&value));
        }

        /// Without wildcards a pattern is an exact comparison.
        #[test]
        fn wildcard_free_pattern_is_exact(s in "[^*?]{1,30}", t in "[^*?]{0,30}") {
            let pattern = Pattern::new(&s).expect("valid");
            prop_assert_eq!(pattern.matches(&t), s == t);
        }

        /// A trailing `*` after a literal prefix matches exactly the strings starting with it.
        #[test]
        fn prefix_star_is_starts_with(s in "[^*?]{1,20}", t in ".{0,30}") {
            let pattern = Pattern::new(&format!("{s}*")).expect("valid");
            prop_assert_eq!(pattern.matches(&t), t.starts_with(&s));
        }
    }
}
