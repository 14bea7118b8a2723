//! The admin API's bearer tokens: from `admin.tokens` and `admin.tokens_file`, kept as
//! SHA-256 digests and compared in constant time.

use std::sync::RwLock;

use axum::http::{HeaderMap, header};

use super::{hex, sha256};
use crate::config::AdminConfig;

/// The accepted bearer tokens, as SHA-256 digests.
struct Tokens {
    /// From `admin.tokens`.
    inline: Vec<[u8; 32]>,
    /// `admin.tokens_file`, and the tokens read from it.
    file: Option<std::path::PathBuf>,
    from_file: Vec<[u8; 32]>,
}

impl Tokens {
    fn from_config(config: &AdminConfig) -> Tokens {
        let split = config.tokens.len().saturating_sub(config.tokens_from_file);
        let (inline, from_file) = config.tokens.split_at(split);
        Tokens {
            inline: inline.iter().map(|t| sha256(t.as_bytes())).collect(),
            file: config.tokens_file.clone(),
            from_file: from_file.iter().map(|t| sha256(t.as_bytes())).collect(),
        }
    }
}

/// The tokens that open the admin API now: replaced at every load that succeeds.
/// How the audit log names the caller holding an admin token: `token:` and the first 8
/// hex digits of the token's SHA-256 (`digest_hex`, or a longer prefix of it).
pub fn caller_name(digest_hex: &str) -> String {
    format!("token:{}", &digest_hex[..8.min(digest_hex.len())])
}

pub(super) struct AdminTokens(RwLock<Tokens>);

impl AdminTokens {
    pub(super) fn new(config: &AdminConfig) -> AdminTokens {
        AdminTokens(RwLock::new(Tokens::from_config(config)))
    }

    /// The caller's identity for the audit log (`token:` and 8 hex digits of its
    /// digest), or `None`. Every configured token is compared, in constant time.
    pub(super) fn authenticate(&self, headers: &HeaderMap) -> Option<String> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(rest)
            })?
            .trim();
        let digest = sha256(presented.as_bytes());
        let mut found = false;
        let tokens = self.0.read().unwrap_or_else(|e| e.into_inner());
        for known in tokens.inline.iter().chain(&tokens.from_file) {
            found |= aws_lc_rs::constant_time::verify_slices_are_equal(known, &digest).is_ok();
        }
        found.then(|| caller_name(&hex(&digest)))
    }

    /// Take the tokens of a configuration just installed (a reload or an admin change).
    /// The console's login: whether `presented` is an admin token (compared in constant
    /// time, as [`AdminTokens::authenticate`] does), answered as the first 16 hex digits
    /// of its SHA-256, the session's reference to it.
    pub(super) fn token_id(&self, presented: &str) -> Option<String> {
        let digest = sha256(presented.trim().as_bytes());
        let mut found = false;
        let tokens = self.0.read().unwrap_or_else(|e| e.into_inner());
        for known in tokens.inline.iter().chain(&tokens.from_file) {
            found |= aws_lc_rs::constant_time::verify_slices_are_equal(known, &digest).is_ok();
        }
        found.then(|| hex(&digest)[..16].to_owned())
    }

    /// Whether a token whose id ([`AdminTokens::token_id`]) is `id` still opens the
    /// admin API: a console session ends with its token.
    pub(super) fn holds_id(&self, id: &str) -> bool {
        let tokens = self.0.read().unwrap_or_else(|e| e.into_inner());
        tokens
            .inline
            .iter()
            .chain(&tokens.from_file)
            .any(|d| hex(&d[..8]) == id)
    }

    pub(super) fn set(&self, config: &AdminConfig) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Tokens::from_config(config);
    }

    /// After a reload that failed: read `admin.tokens_file` again on its own, so a token
    /// removed from it stops working even while another file has an error. Only
    /// removes: a token added to the file waits for a reload that succeeds. A file that
    /// cannot be read revokes every token that came from it.
    pub(super) fn revoke_removed(&self) {
        let mut tokens = self.0.write().unwrap_or_else(|e| e.into_inner());
        let Some(path) = tokens.file.clone() else {
            return;
        };
        let now: Vec<[u8; 32]> = match crate::files::read_regular_text(&path, crate::files::MAX_SMALL_BYTES) {
            Ok(text) => text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|t| sha256(t.as_bytes()))
                .collect(),
            Err(e) => {
                tracing::error!(
                    path = %path.display(),
                    error = %e,
                    "cannot read admin.tokens_file: its tokens no longer open the admin API"
                );
                Vec::new()
            }
        };
        let before = tokens.from_file.len();
        tokens.from_file.retain(|d| now.contains(d));
        if tokens.from_file.len() < before {
            tracing::warn!(
                revoked = before - tokens.from_file.len(),
                "admin tokens removed from admin.tokens_file no longer open the admin API"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::path::PathBuf;

    /// `tokens`, of which the last `tokens_from_file` came from `tokens_file`.
    fn admin_tokens(tokens: &[&str], tokens_from_file: usize, tokens_file: Option<PathBuf>) -> AdminTokens {
        AdminTokens::new(&AdminConfig {
            listen: None,
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            tokens_from_file,
            tokens_file,
            state_file: PathBuf::from("/nonexistent/admin-state.json"),
            allow_insecure_issuers: false,
            allow_file_paths: false,
            state_hmac_key: None,
            tls: None,
        })
    }

    fn tokens() -> AdminTokens {
        admin_tokens(&["0123456789abcdef-first", "0123456789abcdef-second"], 0, None)
    }

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).expect("header"));
        h
    }

    /// Which of the `Authorization` values `a` accepts.
    fn accepted<'t>(a: &AdminTokens, values: &[&'t str]) -> Vec<&'t str> {
        values
            .iter()
            .copied()
            .filter(|v| a.authenticate(&bearer(v)).is_some())
            .collect()
    }

    #[test]
    fn authenticates_any_configured_token_only() {
        let a = tokens();
        let tried = [
            "Bearer 0123456789abcdef-first",
            "Bearer 0123456789abcdef-second",
            "Bearer 0123456789abcdef-third",
            "Basic 0123456789abcdef-first",
        ];
        assert_eq!(accepted(&a, &tried), &tried[..2]);
        assert!(a.authenticate(&HeaderMap::new()).is_none());
        let who = a
            .authenticate(&bearer("Bearer 0123456789abcdef-first"))
            .expect("ok");
        assert!(
            !who.contains("0123456789abcdef"),
            "the token itself is never the identity"
        );
    }

    #[test]
    fn a_reload_that_fails_still_revokes_tokens_removed_from_the_file() {
        let (_dir, file) =
            crate::files::temp_file("tokens", "0123456789abcdef-file-a\n0123456789abcdef-file-b\n");
        let a = admin_tokens(
            &[
                "0123456789abcdef-inline",
                "0123456789abcdef-file-a",
                "0123456789abcdef-file-b",
            ],
            2,
            Some(file.clone()),
        );
        // A token added to the file waits for a reload that succeeds; a removed one goes.
        std::fs::write(&file, "0123456789abcdef-file-b\n0123456789abcdef-file-c\n").expect("write");
        a.revoke_removed();
        let tried = [
            "Bearer 0123456789abcdef-inline",
            "Bearer 0123456789abcdef-file-a",
            "Bearer 0123456789abcdef-file-b",
            "Bearer 0123456789abcdef-file-c",
        ];
        assert_eq!(accepted(&a, &tried), [tried[0], tried[2]]);
        // An unreadable file revokes every token from it, never the inline ones.
        std::fs::remove_file(&file).expect("rm");
        a.revoke_removed();
        assert_eq!(accepted(&a, &tried), [tried[0]]);
    }
}
