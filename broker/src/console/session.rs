//! Console sessions and CSRF tokens, both HMAC-SHA256 under one key: nothing is kept
//! on the server, so every replica accepts a session another made when they share the
//! key (derived from `admin.state_hmac_key`, which replicas sharing Redis share; else
//! random, this process only).
//!
//! A session cookie is `v1.<expiry>.<token id>.<session id>.<mac>`: the expiry (Unix
//! seconds), the first 16 hex digits of the admin token's SHA-256 (never the token), a
//! random session id, and the MAC of those. A session ends at its expiry, at logout (the
//! cookie is cleared), or as soon as its admin token no longer opens the admin API.
//! A form's CSRF token is the MAC of the session id (before login: of a random nonce
//! kept in a cookie of its own), compared in constant time.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "fedbroker_console";
/// The login form's nonce cookie's name.
pub const LOGIN_COOKIE: &str = "fedbroker_console_login";
/// How long a login form may be filled in (seconds).
pub const LOGIN_FORM_LIFETIME: u64 = 1800;

/// The key sessions and CSRF tokens are made with.
pub struct SessionKey(hmac::Key);

/// A valid session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The admin token's id (16 hex digits of its SHA-256).
    pub token_id: String,
    pub session_id: String,
    pub expires: u64,
}

impl Session {
    /// Who is logged in, as the admin API's audit names callers (`token:` and 8 hex
    /// digits of the token's SHA-256).
    pub fn who(&self) -> String {
        crate::admin::caller_name(&self.token_id)
    }
}

/// Random bytes, base64url.
pub fn random_id() -> Result<String, aws_lc_rs::error::Unspecified> {
    let mut bytes = [0u8; 18];
    aws_lc_rs::rand::fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

impl SessionKey {
    /// From `admin.state_hmac_key` when set (shared by replicas), else random.
    pub fn new(shared_secret: Option<&str>) -> Result<SessionKey, aws_lc_rs::error::Unspecified> {
        let material: Vec<u8> = match shared_secret {
            Some(secret) => {
                let parent = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
                hmac::sign(&parent, b"fedbroker console sessions v1")
                    .as_ref()
                    .to_vec()
            }
            None => {
                let mut bytes = [0u8; 32];
                aws_lc_rs::rand::fill(&mut bytes)?;
                bytes.to_vec()
            }
        };
        Ok(SessionKey(hmac::Key::new(hmac::HMAC_SHA256, &material)))
    }

    fn mac(&self, purpose: &str, parts: &[&str]) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(purpose.as_bytes());
        for p in parts {
            ctx.update(b"\n");
            ctx.update(p.as_bytes());
        }
        URL_SAFE_NO_PAD.encode(ctx.sign().as_ref())
    }

    fn verify(&self, purpose: &str, parts: &[&str], mac: &str) -> bool {
        let Ok(given) = URL_SAFE_NO_PAD.decode(mac) else {
            return false;
        };
        let mut message = purpose.as_bytes().to_vec();
        for p in parts {
            message.push(b'\n');
            message.extend_from_slice(p.as_bytes());
        }
        hmac::verify(&self.0, &message, &given).is_ok()
    }

    /// A new session's cookie value.
    pub fn issue(&self, token_id: &str, expires: u64) -> Result<String, aws_lc_rs::error::Unspecified> {
        let sid = random_id()?;
        let exp = expires.to_string();
        let mac = self.mac("session", &[&exp, token_id, &sid]);
        Ok(format!("v1.{exp}.{token_id}.{sid}.{mac}"))
    }

    /// The session a cookie value carries, if its MAC holds and it has not expired.
    pub fn open(&self, value: &str, now: u64) -> Option<Session> {
        if value.len() > 256 {
            return None;
        }
        let mut parts = value.split('.');
        let (Some("v1"), Some(exp), Some(tid), Some(sid), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        if !self.verify("session", &[exp, tid, sid], mac) {
            return None;
        }
        let expires: u64 = exp.parse().ok()?;
        (expires > now).then(|| Session {
            token_id: tid.to_owned(),
            session_id: sid.to_owned(),
            expires,
        })
    }

    /// The CSRF token of a session's forms.
    pub fn csrf(&self, session: &Session) -> String {
        self.mac("csrf", &[&session.session_id])
    }

    /// Whether `given` is the CSRF token of `session`.
    pub fn csrf_ok(&self, session: &Session, given: &str) -> bool {
        self.verify("csrf", &[&session.session_id], given)
    }

    /// A login form's nonce (for its cookie): its expiry and random bytes.
    pub fn login_nonce(now: u64) -> Result<String, aws_lc_rs::error::Unspecified> {
        Ok(format!("{}.{}", now + LOGIN_FORM_LIFETIME, random_id()?))
    }

    /// The login form's CSRF token for the nonce in its cookie.
    pub fn login_csrf(&self, nonce: &str) -> String {
        self.mac("login", &[nonce])
    }

    /// Whether `given` is the CSRF token of `nonce` and the form has not expired.
    pub fn login_csrf_ok(&self, nonce: &str, given: &str, now: u64) -> bool {
        let unexpired = nonce
            .split_once('.')
            .and_then(|(exp, _)| exp.parse::<u64>().ok())
            .is_some_and(|exp| exp > now);
        unexpired && self.verify("login", &[nonce], given)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_opens_until_it_expires_and_not_once_changed() {
        let key = SessionKey::new(None).expect("key");
        let cookie = key.issue("0123456789abcdef", 1_000).expect("cookie");
        let s = key.open(&cookie, 999).expect("valid");
        assert_eq!(s.token_id, "0123456789abcdef");
        assert_eq!(s.who(), "token:01234567");
        assert!(key.open(&cookie, 1_000).is_none(), "expired");
        // Any change to any part breaks the MAC.
        let later = cookie.replacen("v1.1000.", "v1.9000.", 1);
        assert!(key.open(&later, 999).is_none());
        let other_token = cookie.replacen(".0123456789abcdef.", ".fedcba9876543210.", 1);
        assert!(key.open(&other_token, 999).is_none());
        assert!(key.open("v1.1000.x.y.z", 0).is_none());
        assert!(key.open("", 0).is_none());
        // Another key (another process without a shared secret) refuses it.
        let other = SessionKey::new(None).expect("key");
        assert!(other.open(&cookie, 999).is_none());
    }

    #[test]
    fn replicas_sharing_the_state_key_share_sessions() {
        let a = SessionKey::new(Some("a-shared-secret-of-thirty-two-chars!")).expect("key");
        let b = SessionKey::new(Some("a-shared-secret-of-thirty-two-chars!")).expect("key");
        let cookie = a.issue("0123456789abcdef", 1_000).expect("cookie");
        let session = b.open(&cookie, 1).expect("valid on the other replica");
        assert!(b.csrf_ok(&session, &a.csrf(&session)));
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let key = SessionKey::new(None).expect("key");
        let one = key
            .open(&key.issue("0123456789abcdef", 10).expect("c"), 1)
            .expect("s");
        let two = key
            .open(&key.issue("0123456789abcdef", 10).expect("c"), 1)
            .expect("s");
        assert!(key.csrf_ok(&one, &key.csrf(&one)));
        assert!(!key.csrf_ok(&one, &key.csrf(&two)));
        assert!(!key.csrf_ok(&one, ""));
        let nonce = SessionKey::login_nonce(100).expect("nonce");
        let other = SessionKey::login_nonce(100).expect("nonce");
        assert!(key.login_csrf_ok(&nonce, &key.login_csrf(&nonce), 100));
        assert!(
            !key.login_csrf_ok(&nonce, &key.login_csrf(&nonce), 100 + LOGIN_FORM_LIFETIME),
            "an old form is refused"
        );
        assert!(!key.login_csrf_ok(&other, &key.login_csrf(&nonce), 100));
        assert!(!key.login_csrf_ok("", &key.login_csrf(""), 0));
        assert!(
            !key.login_csrf_ok("nonce", &key.login_csrf("nonce"), 0),
            "no expiry, no form"
        );
    }
}
