//! The JWS signature algorithms an issuer may be configured to accept.
//!
//! Only asymmetric algorithms exist here: `none` and the HMAC family can never be
//! named, so no configuration or token can select them.

use std::fmt;
use std::str::FromStr;

/// A JWS `alg` this crate can verify (RFC 7518 §3, RFC 8037 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    /// Every supported algorithm, in a stable order.
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// The registered JWS name, e.g. `"RS256"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`Algorithm::ALL`]. The string is what was given,
/// so callers should only show it when it came from configuration, not a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported algorithm {0:?}: expected one of RS256, RS384, RS512, PS256, PS384, PS512, \
     ES256, ES384, EdDSA (`none` and HS256/HS384/HS512 can never be accepted)"
)]
pub struct UnsupportedAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnsupportedAlgorithm;

    /// Exact, case-sensitive match on the registered name (JWS names are
    /// case-sensitive, so `rs256` is not `RS256`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|alg| alg.as_str() == s)
            .ok_or_else(|| UnsupportedAlgorithm(s.to_owned()))
    }
}

impl serde::Serialize for Algorithm {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Algorithm {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Algorithm;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JWS algorithm name such as \"RS256\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Algorithm, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_name() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>(), Ok(alg));
            assert_eq!(alg.to_string(), alg.as_str());
            let json = serde_json::to_string(&alg).expect("serialize");
            assert_eq!(json, format!("\"{}\"", alg.as_str()));
            let back: Algorithm = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, alg);
        }
    }

    #[test]
    fn rejects_none_hmac_and_unknown() {
        for name in [
            "none", "None", "NONE", "nOnE", "HS256", "HS384", "HS512", "hs256", "rs256", "ES512", "RSA-OAEP",
            "", " RS256", "RS256 ",
        ] {
            let err = name.parse::<Algorithm>().expect_err(name);
            assert_eq!(err.0, name);
            let msg = err.to_string();
            assert!(msg.contains("`none`") && msg.contains("HS256"), "{msg}");
            assert!(
                serde_json::from_value::<Algorithm>(serde_json::Value::String(name.into())).is_err(),
                "{name}"
            );
        }
    }

    #[test]
    fn deserialize_rejects_non_strings() {
        assert!(serde_json::from_str::<Algorithm>("1").is_err());
        assert!(serde_json::from_str::<Algorithm>("null").is_err());
    }
}
