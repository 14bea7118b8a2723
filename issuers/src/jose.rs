//! Unverified parsing of compact JWS tokens, and the strict JSON and base64url
//! decoders shared with key-set parsing.
//!
//! [`peek`] exists only to choose which issuer (and so which policy and keys) a token
//! claims to come from. Nothing it returns is trusted until [`crate::verify()`] says so.

use std::cell::RefCell;
use std::fmt;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Tokens longer than this are refused before any decoding.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Deepest nesting of JSON arrays and objects accepted (the top-level object is 1).
pub(crate) const MAX_JSON_DEPTH: usize = 32;

/// base64url without padding, rejecting `=`, the standard alphabet's `+`/`/`,
/// whitespace and non-zero trailing bits, so each value has exactly one encoding.
pub(crate) const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

/// The JOSE header of a token. Only `alg`, `kid`, `typ` and `crit` are interpreted;
/// everything (including `jku`, `x5u`, `jwk`, `x5c`, which are never used) stays in `raw`.
#[derive(Debug, Clone)]
pub struct Header {
    pub alg: String,
    pub kid: Option<String>,
    pub typ: Option<String>,
    pub crit: Option<Vec<String>>,
    pub raw: Map<String, Value>,
}

/// A structurally valid compact JWS whose signature has not been checked.
#[derive(Debug, Clone)]
pub struct Peeked {
    header: Header,
    claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

impl Peeked {
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The payload as sent. Unverified: use it only to route the token.
    pub fn unverified_claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The `iss` claim if it is a JSON string. Unverified.
    pub fn unverified_issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// `BASE64URL(header) || '.' || BASE64URL(payload)`, the bytes that were signed.
    pub(crate) fn signing_input(&self) -> &[u8] {
        self.signing_input.as_bytes()
    }

    pub(crate) fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// Why a token could not even be parsed. Messages name the part of the token at
/// fault but never include any of its contents.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeekError {
    #[error("token is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("token is not a compact JWS of three dot-separated parts")]
    NotThreeParts,
    #[error("token {part} is not unpadded canonical base64url")]
    Base64 { part: &'static str },
    #[error("token {part} is not UTF-8")]
    InvalidUtf8 { part: &'static str },
    #[error("token {part} is not valid JSON")]
    InvalidJson { part: &'static str },
    #[error("token {part} is not a JSON object")]
    NotAnObject { part: &'static str },
    /// `name` is the repeated member name; it is kept out of the message.
    #[error("token {part} repeats a JSON member name")]
    DuplicateMember { part: &'static str, name: String },
    #[error("token {part} nests JSON deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep { part: &'static str },
    #[error("token header has no `alg`")]
    MissingAlg,
    /// A header member this crate interprets has the wrong type or shape.
    #[error("token header member `{name}` is malformed")]
    InvalidHeaderMember { name: &'static str },
}

/// Unverified parse, only to choose the issuer. Never trust its output.
pub fn peek(token: &str) -> Result<Peeked, PeekError> {
    peek_with_limit(token, DEFAULT_MAX_TOKEN_BYTES)
}

/// [`peek`] with a size limit other than [`DEFAULT_MAX_TOKEN_BYTES`].
pub fn peek_with_limit(token: &str, max_bytes: usize) -> Result<Peeked, PeekError> {
    if token.len() > max_bytes {
        return Err(PeekError::TooLarge { max: max_bytes });
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PeekError::NotThreeParts);
    };

    let header_raw = parse_part(header_b64, "header")?;
    let claims = parse_part(payload_b64, "payload")?;
    let signature = BASE64URL
        .decode(signature_b64)
        .map_err(|_| PeekError::Base64 { part: "signature" })?;
    let header = header_from_raw(header_raw)?;

    let signing_input_len = header_b64.len() + 1 + payload_b64.len();
    let signing_input = token.get(..signing_input_len).unwrap_or_default().to_owned();

    Ok(Peeked {
        header,
        claims,
        signing_input,
        signature,
    })
}

fn parse_part(b64: &str, part: &'static str) -> Result<Map<String, Value>, PeekError> {
    let bytes = BASE64URL.decode(b64).map_err(|_| PeekError::Base64 { part })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| PeekError::InvalidUtf8 { part })?;
    match parse_json_strict(text.as_bytes()) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(PeekError::NotAnObject { part }),
        Err(StrictJsonError::Syntax) => Err(PeekError::InvalidJson { part }),
        Err(StrictJsonError::TooDeep) => Err(PeekError::TooDeep { part }),
        Err(StrictJsonError::DuplicateMember(name)) => Err(PeekError::DuplicateMember { part, name }),
    }
}

fn header_from_raw(raw: Map<String, Value>) -> Result<Header, PeekError> {
    let alg = match raw.get("alg") {
        None => return Err(PeekError::MissingAlg),
        Some(Value::String(alg)) => alg.clone(),
        Some(_) => return Err(PeekError::InvalidHeaderMember { name: "alg" }),
    };
    let optional_string = |name: &'static str| match raw.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(PeekError::InvalidHeaderMember { name }),
    };
    let kid = optional_string("kid")?;
    let typ = optional_string("typ")?;
    // RFC 7515 §4.1.11: if present, a non-empty array of strings.
    let crit = match raw.get("crit") {
        None => None,
        Some(Value::Array(items)) if !items.is_empty() => Some(
            items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or(PeekError::InvalidHeaderMember { name: "crit" })?,
        ),
        Some(_) => return Err(PeekError::InvalidHeaderMember { name: "crit" }),
    };
    Ok(Header {
        alg,
        kid,
        typ,
        crit,
        raw,
    })
}

/// Why [`parse_json_strict`] refused its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StrictJsonError {
    Syntax,
    TooDeep,
    DuplicateMember(String),
}

/// Parses one JSON value, rejecting repeated member names at any depth and nesting
/// deeper than [`MAX_JSON_DEPTH`]. `serde_json::Value` on its own keeps the last of
/// two equal names, which lets a token mean different things to different parsers.
pub(crate) fn parse_json_strict(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    let failure = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = StrictValue {
        depth: 0,
        failure: &failure,
    };
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(value) => Ok(value),
        Err(_) => Err(failure.into_inner().unwrap_or(StrictJsonError::Syntax)),
    }
}

/// Builds a `Value` like serde_json's own, but records why it gave up in `failure`
/// so the caller gets a typed reason instead of a formatted string.
#[derive(Clone, Copy)]
struct StrictValue<'a> {
    depth: usize,
    failure: &'a RefCell<Option<StrictJsonError>>,
}

impl StrictValue<'_> {
    fn fail<E: de::Error>(&self, why: StrictJsonError) -> E {
        *self.failure.borrow_mut() = Some(why);
        E::custom("strict JSON violation")
    }

    fn nested<E: de::Error>(&self) -> Result<Self, E> {
        let depth = self.depth + 1;
        if depth > MAX_JSON_DEPTH {
            return Err(self.fail(StrictJsonError::TooDeep));
        }
        Ok(StrictValue {
            depth,
            failure: self.failure,
        })
    }
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON cannot spell NaN or infinity, so `from_f64` only declines for
        // values serde_json itself would never produce; map those to null as it does.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(self.fail(StrictJsonError::DuplicateMember(name)));
            }
            let value = map.next_value_seed(inner)?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        BASE64URL.encode(bytes)
    }

    fn token(header: &str, payload: &str, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            b64(header.as_bytes()),
            b64(payload.as_bytes()),
            b64(sig)
        )
    }

    const H: &str = r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#;
    const P: &str = r#"{"iss":"https://issuer.example","sub":"s","aud":"a","exp":1}"#;

    fn nested(depth: usize) -> String {
        // `depth` levels in total including the top-level object.
        let inner = "[".repeat(depth - 1) + &"]".repeat(depth - 1);
        format!(r#"{{"alg":"RS256","x":{inner}}}"#)
    }

    #[test]
    fn peeks_a_well_formed_token() {
        let t = token(H, P, b"sig");
        let p = peek(&t).expect("peek");
        assert_eq!(p.header().alg, "RS256");
        assert_eq!(p.header().kid.as_deref(), Some("k1"));
        assert_eq!(p.header().typ.as_deref(), Some("JWT"));
        assert_eq!(p.header().crit, None);
        assert_eq!(p.unverified_issuer(), Some("https://issuer.example"));
        assert_eq!(p.unverified_claims().len(), 4);
        assert_eq!(p.signature(), b"sig");
        let dot = t.rfind('.').expect("dot");
        assert_eq!(p.signing_input(), &t.as_bytes()[..dot]);
    }

    #[test]
    fn unverified_issuer_only_when_string() {
        let p = peek(&token(H, r#"{"iss":1}"#, b"")).expect("peek");
        assert_eq!(p.unverified_issuer(), None);
        let p = peek(&token(H, r#"{}"#, b"")).expect("peek");
        assert_eq!(p.unverified_issuer(), None);
    }

    #[test]
    fn empty_signature_parses_for_verify_to_reject() {
        let t = format!("{}.{}.", b64(H.as_bytes()), b64(P.as_bytes()));
        assert!(peek(&t).expect("peek").signature().is_empty());
    }

    #[test]
    fn crit_is_parsed() {
        let p = peek(&token(r#"{"alg":"ES256","crit":["b64"]}"#, P, b"")).expect("peek");
        assert_eq!(p.header().crit, Some(vec!["b64".to_owned()]));
    }

    #[test]
    fn depth_limit_is_inclusive() {
        let ok = token(&nested(MAX_JSON_DEPTH), P, b"");
        assert!(peek(&ok).is_ok());
        let deep = token(&nested(MAX_JSON_DEPTH + 1), P, b"");
        assert_eq!(
            peek(&deep).expect_err("deep"),
            PeekError::TooDeep { part: "header" }
        );
    }

    #[test]
    fn size_limit_applies_before_parsing() {
        // Garbage of the limit's length passes the size check and fails later;
        // one byte more fails the size check even though it is not a token at all.
        let at_limit = "!".repeat(DEFAULT_MAX_TOKEN_BYTES);
        assert_eq!(peek(&at_limit).expect_err("x"), PeekError::NotThreeParts);
        let over = "!".repeat(DEFAULT_MAX_TOKEN_BYTES + 1);
        assert_eq!(
            peek(&over).expect_err("x"),
            PeekError::TooLarge {
                max: DEFAULT_MAX_TOKEN_BYTES
            }
        );
        let t = token(H, P, b"sig");
        assert!(peek_with_limit(&t, t.len()).is_ok());
        assert_eq!(
            peek_with_limit(&t, t.len() - 1).expect_err("x"),
            PeekError::TooLarge { max: t.len() - 1 }
        );
    }

    #[test]
    fn rejects_malformed_tokens() {
        let h = b64(H.as_bytes());
        let p = b64(P.as_bytes());
        let deep_payload = format!(
            r#"{{"a":{}{}}}"#,
            "{\"a\":".repeat(MAX_JSON_DEPTH),
            "1".to_owned() + &"}".repeat(MAX_JSON_DEPTH)
        );
        let cases: Vec<(&str, String, PeekError)> = vec![
            ("empty", String::new(), PeekError::NotThreeParts),
            ("one part", h.clone(), PeekError::NotThreeParts),
            ("two parts", format!("{h}.{p}"), PeekError::NotThreeParts),
            (
                "four parts",
                format!("{h}.{p}.c2ln.c2ln"),
                PeekError::NotThreeParts,
            ),
            (
                "jwe-like five parts",
                format!("{h}.{p}...."),
                PeekError::NotThreeParts,
            ),
            (
                "padded header",
                format!("{}=.{p}.", b64(br#"{"alg":"RS256"}"#)),
                PeekError::Base64 { part: "header" },
            ),
            (
                "padded signature",
                format!("{h}.{p}.c2lnbg=="),
                PeekError::Base64 { part: "signature" },
            ),
            (
                "standard alphabet plus",
                format!("{h}.{p}.ab+c"),
                PeekError::Base64 { part: "signature" },
            ),
            (
                "standard alphabet slash",
                format!("{h}.{p}.ab/c"),
                PeekError::Base64 { part: "signature" },
            ),
            (
                "whitespace in payload",
                format!("{h}.{} {}.", &p[..4], &p[4..]),
                PeekError::Base64 { part: "payload" },
            ),
            (
                "non-canonical trailing bits",
                // "c2lnbg" is canonical for "sign"; "c2lnbh" has the same bytes
                // with a non-zero unused low bit.
                format!("{h}.{p}.c2lnbh"),
                PeekError::Base64 { part: "signature" },
            ),
            (
                "impossible length",
                format!("{h}.{p}.a"),
                PeekError::Base64 { part: "signature" },
            ),
            (
                "header not utf-8",
                format!("{}.{p}.", b64(b"{\"alg\":\"\xff\"}")),
                PeekError::InvalidUtf8 { part: "header" },
            ),
            (
                "payload not utf-8",
                format!("{h}.{}.", b64(b"\xc3\x28")),
                PeekError::InvalidUtf8 { part: "payload" },
            ),
            (
                "empty header",
                format!(".{p}."),
                PeekError::InvalidJson { part: "header" },
            ),
            (
                "header not json",
                format!("{}.{p}.", b64(b"alg=RS256")),
                PeekError::InvalidJson { part: "header" },
            ),
            (
                "trailing data after payload",
                token(H, &format!("{P} {{}}"), b""),
                PeekError::InvalidJson { part: "payload" },
            ),
            (
                "header is an array",
                token(r#"["RS256"]"#, P, b""),
                PeekError::NotAnObject { part: "header" },
            ),
            (
                "payload is a string",
                token(H, r#""claims""#, b""),
                PeekError::NotAnObject { part: "payload" },
            ),
            (
                "duplicate alg in header",
                token(r#"{"alg":"RS256","alg":"none"}"#, P, b""),
                PeekError::DuplicateMember {
                    part: "header",
                    name: "alg".into(),
                },
            ),
            (
                "duplicate sub in payload",
                token(H, r#"{"sub":"a","exp":1,"sub":"b"}"#, b""),
                PeekError::DuplicateMember {
                    part: "payload",
                    name: "sub".into(),
                },
            ),
            (
                "duplicate by escape",
                token(H, r#"{"iss":"a","\u0069ss":"b"}"#, b""),
                PeekError::DuplicateMember {
                    part: "payload",
                    name: "iss".into(),
                },
            ),
            (
                "nested duplicate",
                token(H, r#"{"x":[{"y":1,"y":2}]}"#, b""),
                PeekError::DuplicateMember {
                    part: "payload",
                    name: "y".into(),
                },
            ),
            (
                "too deep payload",
                token(H, &deep_payload, b""),
                PeekError::TooDeep { part: "payload" },
            ),
            (
                "missing alg",
                token(r#"{"kid":"k"}"#, P, b""),
                PeekError::MissingAlg,
            ),
            (
                "alg not a string",
                token(r#"{"alg":["RS256"]}"#, P, b""),
                PeekError::InvalidHeaderMember { name: "alg" },
            ),
            (
                "alg null",
                token(r#"{"alg":null}"#, P, b""),
                PeekError::InvalidHeaderMember { name: "alg" },
            ),
            (
                "kid not a string",
                token(r#"{"alg":"RS256","kid":7}"#, P, b""),
                PeekError::InvalidHeaderMember { name: "kid" },
            ),
            (
                "typ not a string",
                token(r#"{"alg":"RS256","typ":{}}"#, P, b""),
                PeekError::InvalidHeaderMember { name: "typ" },
            ),
            (
                "crit empty",
                token(r#"{"alg":"RS256","crit":[]}"#, P, b""),
                PeekError::InvalidHeaderMember { name: "crit" },
            ),
            (
                "crit not strings",
                token(r#"{"alg":"RS256","crit":[1]}"#, P, b""),
                PeekError::InvalidHeaderMember { name: "crit" },
            ),
            (
                "crit a string",
                token(r#"{"alg":"RS256","crit":"exp"}"#, P, b""),
                PeekError::InvalidHeaderMember { name: "crit" },
            ),
        ];
        for (name, t, want) in cases {
            assert_eq!(peek(&t).expect_err(name), want, "{name}");
        }
    }

    #[test]
    fn error_messages_never_echo_the_token() {
        let secret = "s3cr3t-marker";
        let tokens = [
            secret.to_owned(),
            token(&format!(r#"{{"alg":"RS256","{secret}":1,"{secret}":2}}"#), P, b""),
            token(H, &format!(r#"{{"{secret}":1,"{secret}":2}}"#), b""),
            token(&format!(r#"{{"kid":"{secret}"}}"#), P, b""),
            format!("{}.{}.{secret}=", b64(H.as_bytes()), b64(P.as_bytes())),
            format!("{secret}.{secret}.{secret}"),
        ];
        for t in tokens {
            let msg = peek(&t).expect_err("must fail").to_string();
            assert!(!msg.contains(secret), "{msg}");
            assert!(!msg.contains(&t), "{msg}");
        }
    }

    #[test]
    fn strict_json_accepts_ordinary_documents() {
        let v = parse_json_strict(br#"{"a":[1,-2,3.5,true,null,"x",{"b":{}}],"c":{"a":1}}"#).expect("parse");
        assert_eq!(
            v,
            serde_json::json!({"a":[1,-2,3.5,true,null,"x",{"b":{}}],"c":{"a":1}})
        );
        // The same name in sibling objects is not a duplicate.
        assert!(parse_json_strict(br#"[{"a":1},{"a":2}]"#).is_ok());
    }
}
