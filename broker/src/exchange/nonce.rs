//! DPoP server nonces (RFC 9449 §8), when `server.dpop.nonce` asks for them: made and
//! checked without state, so that replicas sharing a secret accept each other's.
//!
//! A nonce is base64url (no padding, 32 characters) of 24 bytes: the Unix second it was
//! made (8 bytes, big-endian), then the first 16 bytes of HMAC-SHA256(secret, those 8
//! bytes). Checking one decodes at most 24 bytes into a buffer on the stack (anything
//! that is not exactly 32 characters is refused before decoding), computes one HMAC and
//! compares the tags in constant time: no allocation, whatever the client sent.
//!
//! A nonce says when it was made, not to whom: every client is handed the same nonce
//! within a second, and may use it until it is `lifetime` old. That is what §8 asks of
//! it (the server, not the client, chooses the time a proof may claim); a proof is still
//! used once (its `jti`), and bound to its key by its signature.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// The response header that carries a fresh nonce.
pub const NONCE_HEADER: &str = "dpop-nonce";
/// How far ahead of this broker's clock a nonce's time may lie (a replica whose clock
/// runs ahead made it): the window a proof's `iat` has.
pub const FUTURE_SKEW_SECS: u64 = issuers::dpop::IAT_WINDOW_SECS;

const TIME_BYTES: usize = 8;
const TAG_BYTES: usize = 16;
const NONCE_BYTES: usize = TIME_BYTES + TAG_BYTES;
/// base64url of [`NONCE_BYTES`] bytes, unpadded.
const NONCE_CHARS: usize = NONCE_BYTES / 3 * 4;

/// Why a proof's nonce was refused (the audit log's reason; the client is told
/// `use_dpop_nonce` and handed a fresh one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NonceRefusal {
    #[error("DPoP proof: no nonce, and this broker requires one")]
    Missing,
    #[error("DPoP proof: the nonce is malformed")]
    Malformed,
    #[error("DPoP proof: the nonce was not made with this broker's nonce secret")]
    Forged,
    #[error("DPoP proof: the nonce expired ({age}s old; accepted for {lifetime}s)")]
    Expired { age: u64, lifetime: u64 },
    #[error("DPoP proof: the nonce was made {ahead}s in the future")]
    FromTheFuture { ahead: u64 },
}

/// The secret and lifetime nonces are made and checked with.
pub struct DpopNonces {
    key: aws_lc_rs::hmac::Key,
    lifetime: u64,
}

impl DpopNonces {
    /// Nonces made with `secret`, accepted for `lifetime` seconds.
    pub fn new(secret: &[u8], lifetime: u64) -> DpopNonces {
        DpopNonces {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret),
            lifetime,
        }
    }

    /// `server.dpop.nonce`'s: its secret file's, or 32 random bytes of this process.
    pub fn of(config: &crate::config::DpopNonceConfig) -> Result<DpopNonces, aws_lc_rs::error::Unspecified> {
        match &config.secret {
            Some(secret) => Ok(DpopNonces::new(secret.bytes(), config.lifetime)),
            None => {
                let mut secret = [0u8; 32];
                aws_lc_rs::rand::fill(&mut secret)?;
                Ok(DpopNonces::new(&secret, config.lifetime))
            }
        }
    }

    pub fn lifetime(&self) -> u64 {
        self.lifetime
    }

    /// A nonce made at `now` (Unix seconds).
    pub fn make(&self, now: u64) -> String {
        let mut bytes = [0u8; NONCE_BYTES];
        bytes[..TIME_BYTES].copy_from_slice(&now.to_be_bytes());
        bytes[TIME_BYTES..].copy_from_slice(&self.tag(now)[..]);
        B64.encode(bytes)
    }

    /// Whether a proof's `nonce` claim (`None`: absent or not a string) is one made with
    /// this secret, at most `lifetime` seconds before `now` and at most
    /// [`FUTURE_SKEW_SECS`] after it.
    pub fn check(&self, nonce: Option<&str>, now: u64) -> Result<(), NonceRefusal> {
        let nonce = nonce.ok_or(NonceRefusal::Missing)?;
        if nonce.len() != NONCE_CHARS {
            return Err(NonceRefusal::Malformed);
        }
        let mut bytes = [0u8; NONCE_BYTES];
        match B64.decode_slice(nonce, &mut bytes) {
            Ok(NONCE_BYTES) => {}
            _ => return Err(NonceRefusal::Malformed),
        }
        let (time, tag) = bytes.split_at(TIME_BYTES);
        let mut time_bytes = [0u8; TIME_BYTES];
        time_bytes.copy_from_slice(time);
        let made = u64::from_be_bytes(time_bytes);
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.tag(made), tag)
            .map_err(|_| NonceRefusal::Forged)?;
        if made > now.saturating_add(FUTURE_SKEW_SECS) {
            return Err(NonceRefusal::FromTheFuture { ahead: made - now });
        }
        let age = now.saturating_sub(made);
        if age > self.lifetime {
            return Err(NonceRefusal::Expired {
                age,
                lifetime: self.lifetime,
            });
        }
        Ok(())
    }

    /// The truncated HMAC of the second `made`.
    fn tag(&self, made: u64) -> [u8; TAG_BYTES] {
        let mac = aws_lc_rs::hmac::sign(&self.key, &made.to_be_bytes());
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&mac.as_ref()[..TAG_BYTES]);
        tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_nonce_is_time_then_a_truncated_hmac_in_32_characters() {
        let nonces = DpopNonces::new(SECRET, 300);
        let nonce = nonces.make(NOW);
        assert_eq!(nonce.len(), 32);
        let bytes = B64.decode(&nonce).expect("base64url");
        assert_eq!(bytes[..8], NOW.to_be_bytes());
        // Computed here without the module's code.
        let mac = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET),
            &NOW.to_be_bytes(),
        );
        assert_eq!(bytes[8..], mac.as_ref()[..16]);
        // The same second, the same nonce; another second, another.
        assert_eq!(nonces.make(NOW), nonce);
        assert_ne!(nonces.make(NOW + 1), nonce);
    }

    #[test]
    fn accepted_within_its_lifetime_and_the_skew() {
        let nonces = DpopNonces::new(SECRET, 300);
        let nonce = nonces.make(NOW);
        for now in [NOW, NOW + 1, NOW + 300, NOW - FUTURE_SKEW_SECS] {
            assert_eq!(nonces.check(Some(&nonce), now), Ok(()), "{now}");
        }
        assert_eq!(
            nonces.check(Some(&nonce), NOW + 301),
            Err(NonceRefusal::Expired {
                age: 301,
                lifetime: 300
            })
        );
        assert_eq!(
            nonces.check(Some(&nonce), NOW - FUTURE_SKEW_SECS - 1),
            Err(NonceRefusal::FromTheFuture {
                ahead: FUTURE_SKEW_SECS + 1
            })
        );
        // Another broker with the same secret accepts it; one with another does not.
        assert_eq!(DpopNonces::new(SECRET, 60).check(Some(&nonce), NOW), Ok(()));
        let other = DpopNonces::new(b"another secret, also 32 bytes lo", 300);
        assert_eq!(other.check(Some(&nonce), NOW), Err(NonceRefusal::Forged));
    }

    #[test]
    fn refuses_what_it_did_not_make() {
        let nonces = DpopNonces::new(SECRET, 300);
        let good = nonces.make(NOW);
        let mut bytes = B64.decode(&good).expect("base64url");
        // Another time under the same tag.
        let mut retimed = bytes.clone();
        retimed[7] ^= 1;
        // A tag bit flipped.
        bytes[23] ^= 0x80;
        let long = "A".repeat(8 * 1024);
        let cases: Vec<(Option<&str>, NonceRefusal)> = vec![
            (None, NonceRefusal::Missing),
            (Some(""), NonceRefusal::Malformed),
            (Some(&good[..31]), NonceRefusal::Malformed),
            (Some(&long), NonceRefusal::Malformed),
            (Some("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"), NonceRefusal::Malformed),
            // Padded or standard-alphabet base64 is not base64url.
            (Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="), NonceRefusal::Malformed),
            (Some("+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), NonceRefusal::Malformed),
        ];
        for (nonce, expected) in cases {
            assert_eq!(nonces.check(nonce, NOW), Err(expected), "{nonce:?}");
        }
        for forged in [B64.encode(&bytes), B64.encode(&retimed), B64.encode([0u8; 24])] {
            assert_eq!(
                nonces.check(Some(&forged), NOW),
                Err(NonceRefusal::Forged),
                "{forged}"
            );
        }
        // A time far off in either direction is still checked for its tag first.
        let mut far = [0u8; 24];
        far[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            nonces.check(Some(&B64.encode(far)), NOW),
            Err(NonceRefusal::Forged)
        );
        assert!(matches!(
            nonces.check(Some(&nonces.make(u64::MAX)), NOW),
            Err(NonceRefusal::FromTheFuture { .. })
        ));
        assert!(matches!(
            nonces.check(Some(&nonces.make(0)), NOW),
            Err(NonceRefusal::Expired { .. })
        ));
    }

    #[test]
    fn a_random_secret_is_made_when_none_is_configured() {
        let config = crate::config::DpopNonceConfig {
            lifetime: 300,
            secret_file: None,
            secret: None,
        };
        let (a, b) = (
            DpopNonces::of(&config).expect("random"),
            DpopNonces::of(&config).expect("random"),
        );
        assert_ne!(a.make(NOW), b.make(NOW));
        assert_eq!(a.check(Some(&a.make(NOW)), NOW), Ok(()));
        assert_eq!(b.check(Some(&a.make(NOW)), NOW), Err(NonceRefusal::Forged));
        let config = crate::config::DpopNonceConfig {
            secret: Some(crate::config::NonceSecret::new(SECRET)),
            ..config
        };
        let shared = DpopNonces::of(&config).expect("secret");
        assert_eq!(shared.make(NOW), DpopNonces::new(SECRET, 1).make(NOW));
    }
}
