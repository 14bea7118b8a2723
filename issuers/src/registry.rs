//! Configured issuers, indexed by their exact `iss` string.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

/// Values (policies, key caches, ...) keyed by issuer. Lookup is exact and
/// case-sensitive with no normalisation: `https://a.example` and
/// `https://a.example/` are different issuers, as RFC 7519 §4.1.1 and OIDC
/// Discovery §4.3 require.
#[derive(Debug, Clone)]
pub struct IssuerRegistry<T> {
    by_issuer: HashMap<String, T>,
}

/// A second value for an issuer that is already registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("issuer {0:?} is configured more than once")]
pub struct DuplicateIssuer(pub String);

impl<T> IssuerRegistry<T> {
    pub fn new() -> Self {
        IssuerRegistry {
            by_issuer: HashMap::new(),
        }
    }

    /// Adds `value` for `iss`. An issuer already present keeps its first value.
    pub fn insert(&mut self, iss: String, value: T) -> Result<(), DuplicateIssuer> {
        match self.by_issuer.entry(iss) {
            Entry::Occupied(taken) => Err(DuplicateIssuer(taken.key().clone())),
            Entry::Vacant(slot) => {
                slot.insert(value);
                Ok(())
            }
        }
    }

    pub fn get(&self, iss: &str) -> Option<&T> {
        self.by_issuer.get(iss)
    }

    pub fn len(&self) -> usize {
        self.by_issuer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_issuer.is_empty()
    }

    /// Every issuer and its value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.by_issuer.iter().map(|(iss, v)| (iss.as_str(), v))
    }
}

impl<T> Default for IssuerRegistry<T> {
    fn default() -> Self {
        IssuerRegistry::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_exact() {
        let mut reg = IssuerRegistry::new();
        assert!(reg.is_empty());
        reg.insert("https://token.actions.githubusercontent.com".into(), 1)
            .expect("insert");
        reg.insert("https://accounts.google.com".into(), 2)
            .expect("insert");
        assert_eq!(reg.len(), 2);
        let cases = [
            ("https://token.actions.githubusercontent.com", Some(1)),
            ("https://accounts.google.com", Some(2)),
            ("https://token.actions.githubusercontent.com/", None),
            ("HTTPS://token.actions.githubusercontent.com", None),
            ("https://Accounts.google.com", None),
            ("https://accounts.google.com ", None),
            ("http://accounts.google.com", None),
            ("accounts.google.com", None),
            ("", None),
        ];
        for (iss, want) in cases {
            assert_eq!(reg.get(iss).copied(), want, "{iss:?}");
        }
    }

    #[test]
    fn duplicate_issuer_keeps_the_first() {
        let mut reg = IssuerRegistry::default();
        reg.insert("https://a.example".into(), "first").expect("insert");
        assert_eq!(
            reg.insert("https://a.example".into(), "second"),
            Err(DuplicateIssuer("https://a.example".into()))
        );
        assert_eq!(reg.get("https://a.example"), Some(&"first"));
        // A trailing slash is another issuer, not a duplicate.
        reg.insert("https://a.example/".into(), "slash").expect("insert");
        let mut all: Vec<_> = reg.iter().collect();
        all.sort();
        assert_eq!(
            all,
            vec![("https://a.example", &"first"), ("https://a.example/", &"slash")]
        );
    }
}
