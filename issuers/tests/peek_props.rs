//! Property tests for [`issuers::peek`]: it never panics, whatever the input, and
//! each part of a token has exactly one accepted encoding, so re-encoding a valid
//! part in any other base64 spelling (padding, the standard alphabet, non-zero
//! trailing bits, embedded whitespace) gets the token refused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use issuers::{PeekError, peek, peek_with_limit};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const URL_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const PARTS: [&str; 3] = ["header", "payload", "signature"];

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Characters that make up tokens and their near misses, so random strings
/// often get past the split and into base64 and JSON decoding.
fn tokenish() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[A-Za-z0-9_=+/. \\n-]{0,200}").expect("regex")
}

/// Three parts that decode to arbitrary bytes or to JSON-looking text.
fn base64_parts() -> impl Strategy<Value = String> {
    let json_like = proptest::string::string_regex(r#"[{}\[\]":,a-z0-9 \\.-]{0,60}"#).expect("regex");
    let part = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(|b| b64(&b)),
        json_like.prop_map(|s| b64(s.as_bytes())),
        Just(b64(br#"{"alg":"ES256"}"#)),
    ];
    (part.clone(), part.clone(), part).prop_map(|(h, p, s)| format!("{h}.{p}.{s}"))
}

fn header() -> impl Strategy<Value = Value> {
    let alg = prop_oneof![
        Just("RS256"),
        Just("PS384"),
        Just("ES256"),
        Just("EdDSA"),
        Just("none"),
        Just("HS256")
    ];
    (alg, proptest::option::of(".{0,24}"), any::<bool>()).prop_map(|(alg, kid, typ)| {
        let mut h = Map::new();
        h.insert("alg".into(), json!(alg));
        if let Some(kid) = kid {
            h.insert("kid".into(), json!(kid));
        }
        if typ {
            h.insert("typ".into(), json!("JWT"));
        }
        Value::Object(h)
    })
}

fn claims() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map("[a-z]{1,8}", ".{0,24}", 0..6).prop_map(|m| {
        let mut c: Map<String, Value> = m.into_iter().map(|(k, v)| (k, json!(v))).collect();
        c.insert("iss".into(), json!("https://issuer.example"));
        Value::Object(c)
    })
}

/// A well-formed token, as its three canonical base64url parts.
fn valid_parts() -> impl Strategy<Value = [String; 3]> {
    (header(), claims(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(h, c, sig)| {
        [
            b64(&serde_json::to_vec(&h).expect("json")),
            b64(&serde_json::to_vec(&c).expect("json")),
            b64(&sig),
        ]
    })
}

/// Every other base64 spelling of `part` that this function knows how to make,
/// with a name for failure messages. Each decodes (leniently) to the same bytes
/// or is a common transport mangling of it, and none is canonical base64url.
fn non_canonical_variants(part: &str, pos: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // Padding: the correct amount for standard base64, and stray `=`s.
    let pad = (4 - part.len() % 4) % 4;
    if pad > 0 {
        out.push(("padded".into(), format!("{part}{}", "=".repeat(pad))));
    }
    out.push(("one stray =".into(), format!("{part}=")));
    out.push(("two stray =".into(), format!("{part}==")));
    // The standard alphabet's `+` and `/` for `-` and `_`.
    if part.contains(['-', '_']) {
        out.push((
            "standard alphabet".into(),
            part.replace('-', "+").replace('_', "/"),
        ));
    }
    // Non-zero unused low bits in the last character.
    let unused_bits = match part.len() % 4 {
        2 => 4,
        3 => 2,
        _ => 0,
    };
    if unused_bits > 0
        && let Some(last) = part.bytes().last()
        && let Some(index) = URL_ALPHABET.iter().position(|&c| c == last)
    {
        let mask = (1 << unused_bits) - 1;
        for low in 1..=mask {
            let bumped = URL_ALPHABET[(index & !mask) | low] as char;
            out.push((
                format!("trailing bits {low:#b}"),
                format!("{}{bumped}", &part[..part.len() - 1]),
            ));
        }
    }
    // Whitespace, which lenient decoders and MIME line wrapping allow.
    let at = pos % (part.len() + 1);
    for ws in [" ", "\n", "\r\n", "\t"] {
        out.push((
            format!("whitespace {ws:?} at {at}"),
            format!("{}{ws}{}", &part[..at], &part[at..]),
        ));
    }
    out
}

proptest! {
    #[test]
    fn never_panics_on_any_string(s in any::<String>()) {
        let _ = peek(&s);
    }

    #[test]
    fn never_panics_on_tokenish_strings(s in tokenish()) {
        let _ = peek(&s);
    }

    #[test]
    fn never_panics_on_base64_parts(s in base64_parts(), limit in 0usize..400) {
        let _ = peek(&s);
        let limited = peek_with_limit(&s, limit);
        if s.len() > limit {
            prop_assert_eq!(limited.expect_err("over the limit"), PeekError::TooLarge { max: limit });
        }
    }

    #[test]
    fn non_canonical_base64_of_any_part_is_rejected(parts in valid_parts(), pos in any::<usize>()) {
        let token = parts.join(".");
        prop_assert!(peek(&token).is_ok(), "the canonical token must parse");
        for (i, part) in parts.iter().enumerate() {
            for (name, variant) in non_canonical_variants(part, pos) {
                let mut mutated = parts.clone();
                mutated[i] = variant;
                let err = peek(&mutated.join(".")).expect_err(&format!("{} {name}", PARTS[i]));
                prop_assert_eq!(err, PeekError::Base64 { part: PARTS[i] }, "{} {}", PARTS[i], name);
            }
        }
    }
}

/// The variants above really are other spellings: a lenient decoder maps the
/// padded, standard-alphabet and trailing-bit ones back to the original bytes.
#[test]
fn variants_decode_leniently_to_the_same_bytes() {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let lenient = |alphabet| {
        GeneralPurpose::new(
            alphabet,
            GeneralPurposeConfig::new()
                .with_decode_padding_mode(DecodePaddingMode::Indifferent)
                .with_decode_allow_trailing_bits(true),
        )
    };
    let url = lenient(&base64::alphabet::URL_SAFE);
    let std = lenient(&base64::alphabet::STANDARD);
    for bytes in [&b"\xfb\xff\x01"[..], b"\xfb\xef", b"?", b"{\"alg\":\"RS256\"}"] {
        let part = b64(bytes);
        for (name, variant) in non_canonical_variants(&part, 0) {
            if name.starts_with("whitespace") || name.contains("stray") {
                continue;
            }
            let decoded = url.decode(&variant).or_else(|_| std.decode(&variant));
            assert_eq!(decoded.as_deref(), Ok(bytes), "{name}: {variant}");
        }
    }
}
