//! Scheduled rotation (`signing.rotation`): which key signs, which are published, which
//! are removed and when the next key is made, all computed from the key files' times
//! (whole seconds) and the clock, so that every replica that sees the same directory
//! comes to the same answer without talking to the others.
//!
//! With `every` E, `prepublish` P (P < E) and the longest issued lifetime L:
//!
//! - a key made at `c` is published at once and **signs from `c + P`** (its
//!   activation), until the next key's activation: the newest activated key signs. When
//!   no key has reached its activation yet (the first key of a new directory), the
//!   oldest signs at once: nothing was published before it, so no verifier can miss it.
//! - the next key is **made at `a + E - P`**, `a` being the newest key's activation, so
//!   it is published P before it must sign, and each key signs for E.
//! - a key that stopped signing at `r` stays **published until `r + L + 60s`**, when
//!   every token it signed has expired (60 s for clock skew); then its file is removed.
//! - at most [`MAX_PUBLISHED_KEYS`](super::MAX_PUBLISHED_KEYS) are published: the
//!   signing key and the newest others.

/// One key of the directory, as the schedule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTimes {
    pub kid: String,
    /// When its file was written (modification time, whole seconds since the epoch).
    pub created: u64,
    /// Whether it can sign with `signing.algorithm`.
    pub fits: bool,
}

/// `signing.rotation`, and the lifetime that bounds how long a retired key is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub every: u64,
    pub prepublish: u64,
    /// `server.max_issued_lifetime`.
    pub max_lifetime: u64,
}

/// Extra time a retired key stays published beyond the tokens it signed: clock skew.
pub const RETIRE_MARGIN: u64 = 60;

/// What a key is at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Published, signs from `signs_from`.
    Next,
    /// Signs now.
    Active,
    /// Signed until `signs_until`; published until `published_until`.
    Previous,
    /// No longer needed: every token it signed has expired. Removed.
    Expired,
    /// Does not fit `signing.algorithm`: published while it is younger than the signing
    /// key's retirement horizon, never signs.
    Unfit,
}

/// One key's place in the schedule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyPlan {
    pub kid: String,
    pub state: KeyState,
    pub created: u64,
    pub signs_from: Option<u64>,
    pub signs_until: Option<u64>,
    pub published_until: Option<u64>,
}

/// The schedule at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Every key, in the order given.
    pub keys: Vec<KeyPlan>,
    /// The kid that signs now; `None` when no key fits.
    pub active: Option<String>,
    /// When the next key must be made (it may be in the past: make it now).
    pub next_key_at: Option<u64>,
    /// When this plan next changes (a key activates, a key expires, a key is due).
    pub next_change: Option<u64>,
}

impl Plan {
    /// Whether a new key must be made now.
    pub fn key_due(&self, now: u64) -> bool {
        self.next_key_at.is_none_or(|t| t <= now)
    }
}

/// The schedule of `keys` at `now`.
pub fn plan(keys: &[KeyTimes], rotation: Rotation, now: u64) -> Plan {
    let Rotation {
        every,
        prepublish,
        max_lifetime,
    } = rotation;
    // Fitting keys, oldest first (ties: smallest kid), with their activation times.
    let mut order: Vec<usize> = (0..keys.len()).filter(|&i| keys[i].fits).collect();
    order.sort_by(|&a, &b| {
        keys[a]
            .created
            .cmp(&keys[b].created)
            .then_with(|| keys[a].kid.cmp(&keys[b].kid))
    });
    let mut activation: Vec<u64> = order.iter().map(|&i| keys[i].created + prepublish).collect();
    // A key signs until the next key's activation; activations must not go backwards
    // (a key made with an older time than the one before it signs from the later time).
    for i in 1..activation.len() {
        activation[i] = activation[i].max(activation[i - 1]);
    }
    // The newest activated key; before any has activated (a new directory), the oldest.
    let activated = activation.iter().rposition(|&a| a <= now);
    let active_pos = activated.or(if order.is_empty() { None } else { Some(0) });
    let mut plans: Vec<KeyPlan> = keys
        .iter()
        .map(|k| KeyPlan {
            kid: k.kid.clone(),
            state: KeyState::Unfit,
            created: k.created,
            signs_from: None,
            signs_until: None,
            published_until: None,
        })
        .collect();
    let mut next_change: Option<u64> = None;
    let mut consider = |t: u64| {
        if t > now {
            next_change = Some(next_change.map_or(t, |c| c.min(t)));
        }
    };
    for (pos, &i) in order.iter().enumerate() {
        let from = activation[pos];
        let until = activation.get(pos + 1).copied();
        let p = &mut plans[i];
        p.signs_from = Some(from);
        p.signs_until = until;
        match active_pos {
            Some(a) if pos == a => {
                p.state = KeyState::Active;
                if activated.is_none() {
                    // Signing before its activation: nothing older exists.
                    p.signs_from = Some(keys[i].created);
                }
                if let Some(u) = until {
                    consider(u);
                }
            }
            Some(a) if pos > a => {
                p.state = KeyState::Next;
                consider(from);
            }
            _ => {
                let retired = until.unwrap_or(from);
                let published_until = retired + max_lifetime + RETIRE_MARGIN;
                p.published_until = Some(published_until);
                p.state = if published_until <= now {
                    KeyState::Expired
                } else {
                    consider(published_until);
                    KeyState::Previous
                };
            }
        }
    }
    let next_key_at = order
        .last()
        .map(|_| activation.last().copied().unwrap_or(0) + every.saturating_sub(prepublish));
    if let Some(t) = next_key_at {
        consider(t);
    }
    Plan {
        keys: plans,
        active: active_pos.map(|a| keys[order[a]].kid.clone()),
        next_key_at,
        next_change,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROT: Rotation = Rotation {
        every: 100,
        prepublish: 20,
        max_lifetime: 30,
    };

    fn key(kid: &str, created: u64) -> KeyTimes {
        KeyTimes {
            kid: kid.into(),
            created,
            fits: true,
        }
    }

    fn states(p: &Plan) -> Vec<(&str, KeyState)> {
        p.keys.iter().map(|k| (k.kid.as_str(), k.state)).collect()
    }

    #[test]
    fn no_key_is_due_at_once() {
        let p = plan(&[], ROT, 1000);
        assert_eq!(p.active, None);
        assert!(p.key_due(1000));
    }

    #[test]
    fn the_first_key_signs_at_once_and_the_next_is_made_prepublish_before_its_turn() {
        let p = plan(&[key("a", 1000)], ROT, 1000);
        assert_eq!(p.active.as_deref(), Some("a"));
        assert_eq!(p.keys[0].signs_from, Some(1000));
        // a's turn starts at 1020 (its activation) and lasts 100: b must sign at 1120, so
        // it is made at 1100.
        assert_eq!(p.next_key_at, Some(1100));
        assert!(!p.key_due(1099));
        assert!(p.key_due(1100));
        assert_eq!(p.next_change, Some(1100));
    }

    #[test]
    fn a_new_key_is_published_then_signs_after_prepublish() {
        let keys = [key("a", 1000), key("b", 1100)];
        let p = plan(&keys, ROT, 1110);
        assert_eq!(states(&p), [("a", KeyState::Active), ("b", KeyState::Next)]);
        assert_eq!(p.keys[1].signs_from, Some(1120));
        assert_eq!(p.next_change, Some(1120));
        let p = plan(&keys, ROT, 1120);
        assert_eq!(states(&p), [("a", KeyState::Previous), ("b", KeyState::Active)]);
        // a signed until 1120; its tokens live 30 s at most, plus the margin.
        assert_eq!(p.keys[0].published_until, Some(1120 + 30 + RETIRE_MARGIN));
        assert_eq!(p.next_key_at, Some(1200));
        let p = plan(&keys, ROT, 1120 + 30 + RETIRE_MARGIN);
        assert_eq!(states(&p), [("a", KeyState::Expired), ("b", KeyState::Active)]);
        // Once a's file is gone, b's schedule is the same.
        let p = plan(&keys[1..], ROT, 1300);
        assert_eq!(p.next_key_at, Some(1200));
    }

    #[test]
    fn an_old_directory_gets_a_new_key_at_once_and_keeps_signing_meanwhile() {
        let p = plan(&[key("old", 10)], ROT, 5000);
        assert_eq!(p.active.as_deref(), Some("old"));
        assert!(p.key_due(5000));
        let p = plan(&[key("old", 10), key("new", 5000)], ROT, 5010);
        assert_eq!(p.active.as_deref(), Some("old"));
        assert_eq!(p.keys[1].signs_from, Some(5020));
        assert!(!p.key_due(5010));
    }

    #[test]
    fn ties_go_to_the_smallest_kid_and_unfit_keys_never_sign() {
        let mut unfit = key("x", 2000);
        unfit.fits = false;
        let keys = [key("b", 1000), key("a", 1000), unfit];
        let p = plan(&keys, ROT, 1000);
        // a and b made at once: a (smaller) signs first, b (the later in that order)
        // from their activation on, on every replica alike.
        assert_eq!(p.active.as_deref(), Some("a"));
        let p = plan(&keys, ROT, 1020);
        assert_eq!(p.active.as_deref(), Some("b"));
        assert_eq!(p.keys[2].state, KeyState::Unfit);
    }
}
