//! How often each rule decided, since the broker started (the console's rules page and
//! `GET /admin/v1/status/rules`). Keyed by rule name, so counts outlive reloads that keep
//! the name. A rule counts an allow when it granted an exchange that was answered (not
//! one refused after the rules, as a replay), a deny when it decided a refusal (a deny
//! rule, or a matching allow rule that could not grant the scope or render the token);
//! refusals no rule decided (no rule matched) count under no rule. At most [`MAX_RULES`] names are kept: a rule set that churns through more
//! names (admin changes) stops adding new ones rather than growing without bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The most rule names counted.
pub const MAX_RULES: usize = 200_000;

#[derive(Default)]
struct Count {
    allow: AtomicU64,
    deny: AtomicU64,
}

/// Allow and deny counts per rule name.
#[derive(Default)]
pub struct RuleHits {
    map: RwLock<HashMap<Arc<str>, Arc<Count>>>,
    /// Refusals that no rule decided.
    unmatched: AtomicU64,
}

impl RuleHits {
    /// Count a decision: `rule` is the deciding rule (`None`: no rule matched).
    pub fn record(&self, rule: Option<&str>, allow: bool) {
        let Some(rule) = rule else {
            self.unmatched.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let found = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(rule)
            .cloned();
        let count = match found {
            Some(c) => c,
            None => {
                let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
                if map.len() >= MAX_RULES && !map.contains_key(rule) {
                    return;
                }
                map.entry(Arc::from(rule)).or_default().clone()
            }
        };
        let field = if allow { &count.allow } else { &count.deny };
        field.fetch_add(1, Ordering::Relaxed);
    }

    /// `(allow, deny)` for `rule`.
    pub fn of(&self, rule: &str) -> (u64, u64) {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(rule)
            .map(|c| (c.allow.load(Ordering::Relaxed), c.deny.load(Ordering::Relaxed)))
            .unwrap_or((0, 0))
    }

    /// Refusals no rule decided.
    pub fn unmatched(&self) -> u64 {
        self.unmatched.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_allows_and_denies_per_rule() {
        let hits = RuleHits::default();
        hits.record(Some("a"), true);
        hits.record(Some("a"), true);
        hits.record(Some("a"), false);
        hits.record(Some("b"), false);
        hits.record(None, false);
        assert_eq!(hits.of("a"), (2, 1));
        assert_eq!(hits.of("b"), (0, 1));
        assert_eq!(hits.of("c"), (0, 0));
        assert_eq!(hits.unmatched(), 1);
    }
}
