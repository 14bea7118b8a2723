//! `kind: aws-iam` (contract §10): an AWS workload proves who it is with a SigV4-signed
//! `sts:GetCallerIdentity` request, given as the subject token in the shape Google's STS
//! accepts: the URL-encoded JSON `{"url", "method", "headers": [{"key", "value"}...],
//! "body"}`. The broker forwards exactly that request to an allow-listed STS endpoint and
//! turns STS's answer into claims.
//!
//! Here, the pure parts: [`parse_signed_request`] (the subject token, everything checked
//! that can be checked without STS), [`parse_caller_identity`] (STS's XML answer) and
//! [`CallerIdentity::claims`]. Sending the request is the broker's job.
//!
//! Every limit below bounds what an unauthenticated caller controls. Error texts never
//! quote the caller's bytes (they go to the audit log): only this module's own names.

use serde_json::{Map, Value};

use crate::jose::parse_json_strict;

/// `subject_token_type` of a signed AWS request (the URN Google's STS uses).
pub const TOKEN_TYPE: &str = "urn:ietf:params:aws:token-type:aws4_request";
/// The header the signed request must carry, and sign, with the issuer's `server_id`.
pub const SERVER_ID_HEADER: &str = "x-fedbroker-server-id";
/// How far `X-Amz-Date` may be from the broker's clock, either way (as STS allows).
pub const MAX_DATE_OFFSET_SECS: u64 = 15 * 60;
/// At most this many headers in the signed request.
pub const MAX_HEADERS: usize = 32;
/// The longest header name, in bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 128;
/// The longest header value, in bytes (a session token is about 1 KB; leave room).
pub const MAX_HEADER_VALUE_BYTES: usize = 4096;
/// The longest URL and body, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
pub const MAX_BODY_BYTES: usize = 1024;
/// The longest STS answer read, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The form body a GetCallerIdentity request must have (form-parsed, in any order).
const ACTION: (&str, &str) = ("Action", "GetCallerIdentity");
const VERSION: (&str, &str) = ("Version", "2011-06-15");

/// Why a subject token is not an acceptable signed GetCallerIdentity request.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsRequestError {
    #[error("aws4_request: not a valid URL-encoded JSON document")]
    NotJson,
    #[error("aws4_request: `{0}` is missing or not a string")]
    Field(&'static str),
    #[error("aws4_request: unknown member in the request document")]
    UnknownMember,
    #[error("aws4_request: `headers` must be a list of {{key, value}} objects")]
    HeadersShape,
    #[error("aws4_request: more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("aws4_request: a header name is empty, too long or not a token")]
    BadHeaderName,
    #[error("aws4_request: a header value is too long or not printable ASCII")]
    BadHeaderValue,
    #[error("aws4_request: a connection or framing header (Connection, Transfer-Encoding, ...) is given")]
    ForbiddenHeader,
    #[error("aws4_request: Content-Length is not the body's length")]
    ContentLength,
    #[error("aws4_request: a header is given twice")]
    DuplicateHeader,
    #[error("aws4_request: the URL is too long or not an https?:// URL")]
    BadUrl,
    #[error("aws4_request: method must be POST")]
    Method,
    #[error("aws4_request: body must be exactly Action=GetCallerIdentity&Version=2011-06-15")]
    Body,
    #[error("aws4_request: header `{0}` is missing")]
    MissingHeader(&'static str),
    #[error("aws4_request: header `{0}` is not among the signed headers")]
    NotSigned(&'static str),
    #[error("aws4_request: a signed header is not in the request")]
    SignedHeaderAbsent,
    #[error("aws4_request: Authorization is not an AWS4-HMAC-SHA256 signature: {0}")]
    Authorization(&'static str),
    #[error("aws4_request: X-Amz-Date is not YYYYMMDDTHHMMSSZ")]
    BadDate,
    #[error("aws4_request: the credential scope's date is not X-Amz-Date's")]
    ScopeDate,
    #[error("aws4_request: the host header does not name the URL's host")]
    HostMismatch,
}

/// A signed GetCallerIdentity request that passed every check made without STS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// As given (the broker compares it with the issuer's `sts_endpoints`).
    pub url: String,
    /// The headers as given, in order (names as written).
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The value of `x-fedbroker-server-id`.
    pub server_id: String,
    /// `AKID/DATE/REGION/sts/aws4_request`.
    pub credential: String,
    /// `X-Amz-Date` as given, and as unix seconds.
    pub amz_date: String,
    pub signed_at: u64,
    /// The signature, 64 lowercase hex digits.
    pub signature: String,
}

impl SignedRequest {
    /// What identifies this signed request, whatever bytes a caller may vary around
    /// it (unsigned headers, JSON spelling, URL encoding): the credential, the date and
    /// the signature. SigV4's signature is an HMAC of the signed content, so the same
    /// signed request always has the same one. Hex SHA-256, so it is bounded and
    /// reveals neither the key ID nor the signature.
    pub fn replay_id(&self) -> String {
        use std::fmt::Write;
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in [&self.credential, &self.amz_date, &self.signature] {
            ctx.update(part.as_bytes());
            ctx.update(b"\0");
        }
        ctx.finish().as_ref().iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// Whether `X-Amz-Date` is within [`MAX_DATE_OFFSET_SECS`] of `now`.
    pub fn is_fresh(&self, now: u64) -> bool {
        self.signed_at.abs_diff(now) <= MAX_DATE_OFFSET_SECS
    }

    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Parse and check a subject token of type [`TOKEN_TYPE`]: the JSON document (as is, or
/// URL-encoded), its method and body, the headers (bounded, no duplicates), the
/// `Authorization` header's credential, signed headers and signature, and that `host`,
/// `x-amz-date` and [`SERVER_ID_HEADER`] are present and signed. Never panics.
pub fn parse_signed_request(token: &str) -> Result<SignedRequest, AwsRequestError> {
    let decoded;
    let text = if token.starts_with('{') {
        token
    } else {
        decoded = percent_decode(token, false).ok_or(AwsRequestError::NotJson)?;
        decoded.as_str()
    };
    let doc = parse_json_strict(text.as_bytes()).map_err(|_| AwsRequestError::NotJson)?;
    let doc = doc.as_object().ok_or(AwsRequestError::NotJson)?;
    if doc
        .keys()
        .any(|k| !matches!(k.as_str(), "url" | "method" | "headers" | "body"))
    {
        return Err(AwsRequestError::UnknownMember);
    }
    let string = |name: &'static str| {
        doc.get(name)
            .and_then(Value::as_str)
            .ok_or(AwsRequestError::Field(name))
    };
    let url = string("url")?;
    let method = string("method")?;
    let body = string("body")?;
    let headers = parse_headers(doc.get("headers").ok_or(AwsRequestError::Field("headers"))?)?;
    let authority = url_authority(url).ok_or(AwsRequestError::BadUrl)?;
    if method != "POST" {
        return Err(AwsRequestError::Method);
    }
    if body.len() > MAX_BODY_BYTES || !is_get_caller_identity(body) {
        return Err(AwsRequestError::Body);
    }
    if header(&headers, "content-length").is_some_and(|n| n.trim() != body.len().to_string()) {
        return Err(AwsRequestError::ContentLength);
    }
    let need = |name: &'static str| header(&headers, name).ok_or(AwsRequestError::MissingHeader(name));
    let authorization = parse_authorization(need("authorization")?)?;
    let amz_date = need("x-amz-date")?;
    let host = need("host")?;
    let server_id = need(SERVER_ID_HEADER)?;
    for name in ["host", "x-amz-date", SERVER_ID_HEADER] {
        if !authorization.signed_headers.contains(&name) {
            return Err(AwsRequestError::NotSigned(name));
        }
    }
    if authorization
        .signed_headers
        .iter()
        .any(|name| header(&headers, name).is_none())
    {
        return Err(AwsRequestError::SignedHeaderAbsent);
    }
    if !host.eq_ignore_ascii_case(authority) {
        return Err(AwsRequestError::HostMismatch);
    }
    let signed_at = parse_amz_date(amz_date).ok_or(AwsRequestError::BadDate)?;
    if authorization.scope_date != &amz_date[..8] {
        return Err(AwsRequestError::ScopeDate);
    }
    Ok(SignedRequest {
        url: url.to_string(),
        server_id: server_id.to_string(),
        credential: authorization.credential.to_string(),
        amz_date: amz_date.to_string(),
        signed_at,
        signature: authorization.signature.to_string(),
        body: body.to_string(),
        headers,
    })
}

fn parse_headers(value: &Value) -> Result<Vec<(String, String)>, AwsRequestError> {
    let list = value.as_array().ok_or(AwsRequestError::HeadersShape)?;
    if list.len() > MAX_HEADERS {
        return Err(AwsRequestError::TooManyHeaders);
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(list.len());
    for item in list {
        let object = item.as_object().ok_or(AwsRequestError::HeadersShape)?;
        if object.len() != 2 {
            return Err(AwsRequestError::HeadersShape);
        }
        let get = |k: &str| object.get(k).and_then(Value::as_str);
        let (Some(key), Some(value)) = (get("key"), get("value")) else {
            return Err(AwsRequestError::HeadersShape);
        };
        let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if key.is_empty() || key.len() > MAX_HEADER_NAME_BYTES || !key.bytes().all(token_char) {
            return Err(AwsRequestError::BadHeaderName);
        }
        // Printable ASCII only: what an HTTP client sends as given, byte for byte.
        if value.len() > MAX_HEADER_VALUE_BYTES
            || !value.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\t')
        {
            return Err(AwsRequestError::BadHeaderValue);
        }
        // The connection is the broker's: nothing that changes how the request is framed
        // or forwarded.
        const FORBIDDEN: [&str; 7] = [
            "connection",
            "transfer-encoding",
            "te",
            "upgrade",
            "keep-alive",
            "proxy-connection",
            "expect",
        ];
        if FORBIDDEN.iter().any(|f| key.eq_ignore_ascii_case(f)) {
            return Err(AwsRequestError::ForbiddenHeader);
        }
        if out.iter().any(|(k, _)| k.eq_ignore_ascii_case(key)) {
            return Err(AwsRequestError::DuplicateHeader);
        }
        out.push((key.to_string(), value.to_string()));
    }
    Ok(out)
}

/// The `host[:port]` of an `http(s)://` URL with no user info, or `None`.
fn url_authority(url: &str) -> Option<&str> {
    if url.len() > MAX_URL_BYTES {
        return None;
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    (!authority.is_empty() && !authority.contains('@')).then_some(authority)
}

/// Whether `body`, form-parsed, is exactly `Action=GetCallerIdentity` and
/// `Version=2011-06-15` (each once, in either order).
fn is_get_caller_identity(body: &str) -> bool {
    let mut pairs = Vec::new();
    for pair in body.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(k), Some(v)) = (percent_decode(k, true), percent_decode(v, true)) else {
            return false;
        };
        pairs.push((k, v));
    }
    pairs.sort();
    let want = [ACTION, VERSION];
    pairs.len() == 2
        && pairs
            .iter()
            .zip(want)
            .all(|((k, v), (wk, wv))| k == wk && v == wv)
}

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=.., SignedHeaders=..,
/// Signature=..` this module checks.
struct Authorization<'a> {
    credential: &'a str,
    scope_date: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, AwsRequestError> {
    use AwsRequestError::Authorization as Bad;
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or(Bad("not AWS4-HMAC-SHA256"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (name, v) = part
            .trim()
            .split_once('=')
            .ok_or(Bad("a part is not NAME=VALUE"))?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return Err(Bad("unknown part")),
        };
        if slot.replace(v).is_some() {
            return Err(Bad("a part is repeated"));
        }
    }
    let credential = credential.ok_or(Bad("no Credential"))?;
    let signed = signed.ok_or(Bad("no SignedHeaders"))?;
    let signature = signature.ok_or(Bad("no Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, terminator] = scope[..] else {
        return Err(Bad("Credential is not KEY/DATE/REGION/SERVICE/aws4_request"));
    };
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !plain(key_id) || !plain(region) || date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Bad("Credential is not KEY/DATE/REGION/SERVICE/aws4_request"));
    }
    if service != "sts" || terminator != "aws4_request" {
        return Err(Bad("the credential scope is not for sts"));
    }
    let signed_headers: Vec<&str> = signed.split(';').collect();
    let header_name = |h: &&str| {
        !h.is_empty()
            && h.len() <= MAX_HEADER_NAME_BYTES
            && h.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if signed_headers.len() > MAX_HEADERS || !signed_headers.iter().all(header_name) {
        return Err(Bad("SignedHeaders is not a list of lowercase names"));
    }
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if signature.len() != 64 || !signature.bytes().all(lower_hex) {
        return Err(Bad("Signature is not 64 lowercase hex digits"));
    }
    Ok(Authorization {
        credential,
        scope_date: date,
        signed_headers,
        signature,
    })
}

/// `YYYYMMDDTHHMMSSZ` as unix seconds (UTC), or `None`.
pub fn parse_amz_date(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let max_day = *month_days.get(usize::try_from(m - 1).ok()?)?;
    if d < 1 || d > max_day {
        return None;
    }
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// Percent-decode `text` (with `plus`: `+` is a space, as in forms). `None` on a bad
/// escape or bytes that are not UTF-8.
fn percent_decode(text: &str, plus: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// What STS said about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    pub arn: String,
    pub user_id: String,
    pub account: String,
}

/// Why STS's answer is not a GetCallerIdentityResponse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("STS answer: {0}")]
pub struct IdentityResponseError(pub &'static str);

/// Parse STS's `GetCallerIdentityResponse` XML: `Arn`, `UserId` and `Account` of
/// `GetCallerIdentityResult`, each exactly once; the ARN must be an IAM or STS
/// principal of that account.
pub fn parse_caller_identity(xml: &str) -> Result<CallerIdentity, IdentityResponseError> {
    use xmlparser::{ElementEnd, Token, Tokenizer};
    const MAX_DEPTH: usize = 16;
    let bad = IdentityResponseError;
    if xml.len() > MAX_RESPONSE_BYTES {
        return Err(bad("too large"));
    }
    let mut path: Vec<&str> = Vec::new();
    let (mut arn, mut user_id, mut account) = (None, None, None);
    for token in Tokenizer::from(xml) {
        match token.map_err(|_| bad("not XML"))? {
            Token::ElementStart { local, .. } => {
                if path.len() >= MAX_DEPTH {
                    return Err(bad("nested too deeply"));
                }
                path.push(local.as_str());
            }
            Token::ElementEnd { end, .. } => match end {
                ElementEnd::Open => {}
                ElementEnd::Empty => {
                    path.pop();
                }
                ElementEnd::Close(_, local) => {
                    if path.pop() != Some(local.as_str()) {
                        return Err(bad("mismatched tags"));
                    }
                }
            },
            Token::Text { text } => {
                if let ["GetCallerIdentityResponse", "GetCallerIdentityResult", field] = path[..] {
                    let slot = match field {
                        "Arn" => &mut arn,
                        "UserId" => &mut user_id,
                        "Account" => &mut account,
                        _ => continue,
                    };
                    let value = unescape_xml(text.as_str()).ok_or(bad("bad entity"))?;
                    if slot.replace(value).is_some() {
                        return Err(bad("a field is repeated"));
                    }
                }
            }
            _ => {}
        }
    }
    let (Some(arn), Some(user_id), Some(account)) = (arn, user_id, account) else {
        return Err(bad("no Arn, UserId or Account in GetCallerIdentityResult"));
    };
    if crate::kinds::arn_account(&arn) != Some(account.as_str()) {
        return Err(bad("Arn is not a principal of Account"));
    }
    if user_id.is_empty() {
        return Err(bad("empty UserId"));
    }
    Ok(CallerIdentity {
        arn,
        user_id,
        account,
    })
}

/// The `Code` of an AWS Query-API error answer
/// (`<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code>...`), when it is one and
/// the code is a plain name (letters, digits, `.`, at most 64): safe to log.
pub fn error_code(xml: &str) -> Option<String> {
    use xmlparser::{ElementEnd, Token, Tokenizer};
    if xml.len() > MAX_RESPONSE_BYTES {
        return None;
    }
    let mut path: Vec<&str> = Vec::new();
    for token in Tokenizer::from(xml) {
        match token.ok()? {
            Token::ElementStart { local, .. } => {
                if path.len() >= 16 {
                    return None;
                }
                path.push(local.as_str());
            }
            Token::ElementEnd { end, .. } => match end {
                ElementEnd::Open => {}
                ElementEnd::Empty | ElementEnd::Close(..) => {
                    path.pop();
                }
            },
            Token::Text { text } if path.ends_with(&["Error", "Code"]) => {
                let code = text.as_str().trim();
                let plain = !code.is_empty()
                    && code.len() <= 64
                    && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
                return plain.then(|| code.to_string());
            }
            _ => {}
        }
    }
    None
}

/// Whether an STS error code says "later" rather than "no": throttling.
pub fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "Throttling" | "ThrottlingException" | "RequestLimitExceeded" | "TooManyRequestsException"
    )
}

fn unescape_xml(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';')? + i;
        out.push(match &rest[i + 1..end] {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => return None,
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out.trim().to_string())
}

impl CallerIdentity {
    /// The role and session names of an assumed role
    /// (`arn:PARTITION:sts::ACCOUNT:assumed-role/ROLE/SESSION`).
    pub fn assumed_role(&self) -> Option<(&str, &str)> {
        let resource = self.arn.splitn(6, ':').nth(5)?;
        let rest = resource.strip_prefix("assumed-role/")?;
        let (role, session) = rest.rsplit_once('/')?;
        (self.arn.split(':').nth(2) == Some("sts") && !role.is_empty() && !session.is_empty())
            .then_some((role, session))
    }

    /// The claims rules see: `iss` (the issuer's name), `sub` (the ARN), `arn`,
    /// `account`, `user_id`, and for an assumed role `role_name` and `session_name`.
    pub fn claims(&self, issuer: &str) -> Map<String, Value> {
        let mut claims = Map::new();
        let mut put = |k: &str, v: &str| {
            claims.insert(k.to_string(), Value::String(v.to_string()));
        };
        put("iss", issuer);
        put("sub", &self.arn);
        put("arn", &self.arn);
        put("account", &self.account);
        put("user_id", &self.user_id);
        if let Some((role, session)) = self.assumed_role() {
            put("role_name", role);
            put("session_name", session);
        }
        claims
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DATE: &str = "20261207T023000Z";
    const SIG: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn auth(signed: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261207/us-east-1/sts/aws4_request, SignedHeaders={signed}, Signature={SIG}"
        )
    }

    fn request(headers: Value) -> Value {
        json!({
            "url": "https://sts.amazonaws.com",
            "method": "POST",
            "headers": headers,
            "body": "Action=GetCallerIdentity&Version=2011-06-15",
        })
    }

    fn good_headers() -> Value {
        json!([
            {"key": "Authorization", "value": auth("content-type;host;x-amz-date;x-fedbroker-server-id")},
            {"key": "Host", "value": "sts.amazonaws.com"},
            {"key": "X-Amz-Date", "value": DATE},
            {"key": "Content-Type", "value": "application/x-www-form-urlencoded; charset=utf-8"},
            {"key": "X-Fedbroker-Server-Id", "value": "fedbroker.example.com"},
        ])
    }

    fn encode(v: &Value) -> String {
        v.to_string()
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    #[test]
    fn a_good_request_parses_encoded_or_not() {
        let doc = request(good_headers());
        for token in [encode(&doc), doc.to_string()] {
            let req = parse_signed_request(&token).expect("parses");
            assert_eq!(req.server_id, "fedbroker.example.com");
            assert_eq!(req.url, "https://sts.amazonaws.com");
            assert_eq!(req.signed_at, 1_796_610_600);
            assert_eq!(req.headers.len(), 5);
            assert_eq!(req.credential, "AKIAEXAMPLE/20261207/us-east-1/sts/aws4_request");
        }
    }

    #[test]
    fn the_replay_id_ignores_unsigned_variations() {
        let a = parse_signed_request(&request(good_headers()).to_string()).expect("a");
        let mut headers = good_headers();
        headers
            .as_array_mut()
            .expect("list")
            .push(json!({"key": "User-Agent", "value": "x"}));
        let mut doc = request(headers);
        doc["body"] = json!("Version=2011-06-15&Action=GetCallerIdentity");
        let b = parse_signed_request(&encode(&doc)).expect("b");
        assert_eq!(a.replay_id(), b.replay_id());
        assert_eq!(a.replay_id().len(), 64);
        let mut other = a.clone();
        other.signature = SIG.replace('0', "1");
        assert_ne!(a.replay_id(), other.replay_id());
    }

    #[test]
    fn refusals() {
        use AwsRequestError as E;
        let with = |f: &dyn Fn(&mut Value)| {
            let mut doc = request(good_headers());
            f(&mut doc);
            parse_signed_request(&doc.to_string()).err()
        };
        let set_header = |name: &'static str, value: &'static str| {
            move |doc: &mut Value| {
                for h in doc["headers"].as_array_mut().expect("list") {
                    if h["key"].as_str().is_some_and(|k| k.eq_ignore_ascii_case(name)) {
                        h["value"] = json!(value);
                    }
                }
            }
        };
        let drop_header = |name: &'static str| {
            move |doc: &mut Value| {
                doc["headers"]
                    .as_array_mut()
                    .expect("list")
                    .retain(|h| !h["key"].as_str().is_some_and(|k| k.eq_ignore_ascii_case(name)));
            }
        };
        assert_eq!(parse_signed_request("%7"), Err(E::NotJson));
        assert_eq!(parse_signed_request("[]"), Err(E::NotJson));
        assert_eq!(with(&|d| d["method"] = json!("GET")), Some(E::Method));
        assert_eq!(with(&|d| d["extra"] = json!(1)), Some(E::UnknownMember));
        assert_eq!(with(&|d| d["url"] = json!(1)), Some(E::Field("url")));
        assert_eq!(with(&|d| d["url"] = json!("ftp://x")), Some(E::BadUrl));
        for body in [
            "Action=AssumeRole&Version=2011-06-15",
            "Action=GetCallerIdentity",
            "Action=GetCallerIdentity&Version=2011-06-15&Action=GetCallerIdentity",
            "Action=GetCallerIdentity&Version=2011-06-15&x=1",
        ] {
            assert_eq!(with(&|d| d["body"] = json!(body)), Some(E::Body), "{body}");
        }
        assert_eq!(
            with(&|d| d["body"] = json!("Action=GetCaller%49dentity&Version=2011-06-15")),
            None
        );
        assert_eq!(
            with(&drop_header("x-fedbroker-server-id")),
            Some(E::MissingHeader(SERVER_ID_HEADER))
        );
        assert_eq!(with(&drop_header("host")), Some(E::MissingHeader("host")));
        assert_eq!(
            with(&set_header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261207/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            )),
            Some(E::NotSigned(SERVER_ID_HEADER))
        );
        assert_eq!(
            with(&set_header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20261207/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date;x-fedbroker-server-id, Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            )),
            Some(E::Authorization("the credential scope is not for sts"))
        );
        assert!(matches!(
            with(&set_header("authorization", "Bearer x")),
            Some(E::Authorization(_))
        ));
        assert_eq!(with(&drop_header("content-type")), Some(E::SignedHeaderAbsent));
        assert_eq!(with(&set_header("host", "evil.example")), Some(E::HostMismatch));
        assert_eq!(
            with(&set_header("x-amz-date", "20261207T023000")),
            Some(E::BadDate)
        );
        assert_eq!(
            with(&set_header("x-amz-date", "20261208T023000Z")),
            Some(E::ScopeDate)
        );
        assert_eq!(
            with(&|d| d["headers"]
                .as_array_mut()
                .expect("l")
                .push(json!({"key": "host", "value": "a"}))),
            Some(E::DuplicateHeader)
        );
        assert_eq!(
            with(&|d| d["headers"] = json!(vec![json!({"key": "a", "value": "b"}); MAX_HEADERS + 1])),
            Some(E::TooManyHeaders)
        );
        assert_eq!(
            with(&|d| d["headers"]
                .as_array_mut()
                .expect("l")
                .push(json!({"key": "a b", "value": "b"}))),
            Some(E::BadHeaderName)
        );
        assert_eq!(
            with(&|d| d["headers"]
                .as_array_mut()
                .expect("l")
                .push(json!({"key": "a", "value": "x".repeat(MAX_HEADER_VALUE_BYTES + 1)}))),
            Some(E::BadHeaderValue)
        );
        assert_eq!(
            with(&|d| d["headers"]
                .as_array_mut()
                .expect("l")
                .push(json!({"key": "a", "value": "x\r\ny: z"}))),
            Some(E::BadHeaderValue)
        );
        let push = |header: Value| {
            move |d: &mut Value| d["headers"].as_array_mut().expect("list").push(header.clone())
        };
        assert_eq!(
            with(&push(json!({"key": "a", "value": "caf\u{e9}"}))),
            Some(E::BadHeaderValue)
        );
        assert_eq!(
            with(&push(json!({"key": "Transfer-Encoding", "value": "chunked"}))),
            Some(E::ForbiddenHeader)
        );
        assert_eq!(
            with(&push(json!({"key": "Content-Length", "value": "7"}))),
            Some(E::ContentLength)
        );
        assert_eq!(with(&push(json!({"key": "Content-Length", "value": "43"}))), None);
    }

    #[test]
    fn freshness_is_fifteen_minutes_either_way() {
        let req = parse_signed_request(&request(good_headers()).to_string()).expect("parses");
        let t = req.signed_at;
        assert!(req.is_fresh(t + 900) && req.is_fresh(t - 900));
        assert!(!req.is_fresh(t + 901) && !req.is_fresh(t - 901));
    }

    #[test]
    fn amz_dates() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20000229T010101Z"), Some(951_782_400 + 3_661));
        assert_eq!(parse_amz_date("20010229T010101Z"), None);
        assert_eq!(parse_amz_date("2000022AT010101Z"), None);
        assert_eq!(parse_amz_date("+0000229T010101Z"), None);
        assert_eq!(parse_amz_date("20000229T250101Z"), None);
    }

    const RESPONSE: &str = r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:sts::123456789012:assumed-role/reader/build-42</Arn>
    <UserId>AROAEXAMPLE:build-42</UserId>
    <Account>123456789012</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata><RequestId>x</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"#;

    #[test]
    fn sts_answers_become_claims() {
        let id = parse_caller_identity(RESPONSE).expect("parses");
        assert_eq!(id.account, "123456789012");
        let claims = id.claims("aws-iam:prod");
        assert_eq!(
            Value::Object(claims),
            json!({
                "iss": "aws-iam:prod",
                "sub": "arn:aws:sts::123456789012:assumed-role/reader/build-42",
                "arn": "arn:aws:sts::123456789012:assumed-role/reader/build-42",
                "account": "123456789012",
                "user_id": "AROAEXAMPLE:build-42",
                "role_name": "reader",
                "session_name": "build-42",
            })
        );
        let user = CallerIdentity {
            arn: "arn:aws:iam::123456789012:user/ci".into(),
            user_id: "AIDA".into(),
            account: "123456789012".into(),
        };
        assert!(!user.claims("i").contains_key("role_name"));
    }

    #[test]
    fn error_codes() {
        let answer = |code: &str| {
            format!(
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>m</Message></Error><RequestId>r</RequestId></ErrorResponse>"
            )
        };
        assert_eq!(
            error_code(&answer("SignatureDoesNotMatch")).as_deref(),
            Some("SignatureDoesNotMatch")
        );
        assert_eq!(error_code(&answer("a b")), None);
        assert_eq!(error_code("<x><Code>Throttling</Code></x>"), None);
        assert_eq!(error_code("not xml <"), None);
        assert!(is_throttling("Throttling") && !is_throttling("AccessDenied"));
    }

    #[test]
    fn odd_sts_answers_are_refused() {
        for xml in [
            "",
            "<x/>",
            &RESPONSE.replace("123456789012</Account>", "999999999999</Account>"),
            &RESPONSE.replace("<UserId>", "<UserId>a</UserId><UserId>"),
            &RESPONSE.replace("</Arn>", "</Ar>"),
            &RESPONSE.replace("arn:aws:sts", "arn:aws:s3"),
        ] {
            assert!(parse_caller_identity(xml).is_err(), "{xml}");
        }
    }
}
