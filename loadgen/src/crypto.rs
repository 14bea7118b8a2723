//! Keys and signatures (aws-lc-rs, the library the broker uses), and the crypto bound:
//! how many verify + sign pairs per second this machine can do at best.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Serialize;
use serde_json::{Value, json};

/// The JWS algorithms the load generator signs with (and asks the broker to issue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum Alg {
    #[value(name = "RS256")]
    #[serde(rename = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    #[serde(rename = "ES256")]
    Es256,
    #[value(name = "EdDSA")]
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// The `openssl speed` algorithm name with the same key type and size.
    fn openssl_name(self) -> &'static str {
        match self {
            Alg::Rs256 => "rsa2048",
            Alg::Es256 => "ecdsap256",
            Alg::EdDsa => "ed25519",
        }
    }

    fn verification(self) -> &'static dyn signature::VerificationAlgorithm {
        match self {
            Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Alg::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            Alg::EdDsa => &signature::ED25519,
        }
    }
}

enum Material {
    Rsa(RsaKeyPair),
    P256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A private key, parsed once.
pub struct SigningKey {
    alg: Alg,
    material: Material,
    rng: SystemRandom,
}

impl SigningKey {
    pub fn generate(alg: Alg) -> Result<SigningKey> {
        let rng = SystemRandom::new();
        let material = match alg {
            Alg::Rs256 => {
                let k =
                    RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| anyhow!("generating an RSA key"))?;
                // Round-trip through PKCS#8 as the broker loads its keys.
                let der = k.as_der().map_err(|_| anyhow!("encoding an RSA key"))?;
                Material::Rsa(RsaKeyPair::from_pkcs8(der.as_ref()).map_err(|e| anyhow!("RSA key: {e}"))?)
            }
            Alg::Es256 => {
                let der = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| anyhow!("generating a P-256 key"))?;
                Material::P256(
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der.as_ref())
                        .map_err(|e| anyhow!("P-256 key: {e}"))?,
                )
            }
            Alg::EdDsa => {
                let der =
                    Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| anyhow!("generating an Ed25519 key"))?;
                Material::Ed25519(
                    Ed25519KeyPair::from_pkcs8(der.as_ref()).map_err(|e| anyhow!("Ed25519 key: {e}"))?,
                )
            }
        };
        Ok(SigningKey { alg, material, rng })
    }

    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        match &self.material {
            Material::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &self.rng, message, &mut sig)
                    .map_err(|_| anyhow!("RSA signing failed"))?;
                Ok(sig)
            }
            Material::P256(k) => Ok(k
                .sign(&self.rng, message)
                .map_err(|_| anyhow!("ECDSA signing failed"))?
                .as_ref()
                .to_vec()),
            Material::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
        }
    }

    /// The public key as the verifier parses it (PKCS#1 for RSA, the point for EC, the
    /// 32 bytes for Ed25519).
    fn public_bytes(&self) -> Vec<u8> {
        match &self.material {
            Material::Rsa(k) => k.public_key().as_ref().to_vec(),
            Material::P256(k) => k.public_key().as_ref().to_vec(),
            Material::Ed25519(k) => k.public_key().as_ref().to_vec(),
        }
    }

    /// The public JWK with `kid`, `alg` and `use: sig`.
    pub fn public_jwk(&self, kid: &str) -> Value {
        let alg = self.alg.as_str();
        match &self.material {
            Material::Rsa(k) => {
                let c = PublicKeyComponents::<Vec<u8>>::from(k.public_key());
                json!({"kty": "RSA", "kid": kid, "alg": alg, "use": "sig",
                       "n": B64.encode(strip_zeros(&c.n)), "e": B64.encode(strip_zeros(&c.e))})
            }
            Material::P256(k) => {
                let point = k.public_key().as_ref();
                let (x, y) = point
                    .get(1..)
                    .unwrap_or_default()
                    .split_at(32.min(point.len().saturating_sub(1)));
                json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": alg, "use": "sig",
                       "x": B64.encode(x), "y": B64.encode(y)})
            }
            Material::Ed25519(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": alg, "use": "sig",
                       "x": B64.encode(k.public_key().as_ref())})
            }
        }
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b
        .iter()
        .position(|&x| x != 0)
        .unwrap_or(b.len().saturating_sub(1));
    &b[first..]
}

/// Operations per second, all threads together.
#[derive(Debug, Clone, Serialize)]
pub struct Bound {
    pub verify_alg: Alg,
    pub verify_per_s: f64,
    pub sign_alg: Alg,
    pub sign_per_s: f64,
    /// 1 / (1/verify + 1/sign): exchanges per second if a request were one verify and one sign.
    pub exchanges_per_s: f64,
    /// CPU time of one verify plus one sign, in ms, from the threads' own CPU time (so
    /// not skewed by other processes sharing the cores); aws-lc-rs only.
    pub cpu_ms_per_exchange: Option<f64>,
}

pub fn bound(verify_per_s: f64, sign_per_s: f64) -> f64 {
    if verify_per_s <= 0.0 || sign_per_s <= 0.0 {
        return 0.0;
    }
    1.0 / (1.0 / verify_per_s + 1.0 / sign_per_s)
}

/// A typical JWS signing input (header and claims of a projected service account token).
fn sample_message() -> Vec<u8> {
    let header = B64.encode(br#"{"alg":"RS256","typ":"JWT","kid":"k0"}"#);
    let claims = B64.encode(
        br#"{"iss":"https://iss0.loadgen.test","sub":"system:serviceaccount:ns0:sa0","aud":"fedbroker","iat":1700000000,"nbf":1700000000,"exp":1700007200,"jti":"0123456789abcdef-0000000000"}"#,
    );
    format!("{header}.{claims}").into_bytes()
}

/// Runs `op` on `threads` threads for `each`: (operations per second of wall time, all
/// threads together; operations per second of the threads' own CPU time).
fn per_second<F>(threads: usize, each: Duration, op: F) -> Result<(f64, f64)>
where
    F: Fn() -> Result<()> + Sync,
{
    let ticks = crate::setup::clock_ticks();
    let counts = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<(f64, u64, f64)> {
                    let cpu0 = thread_cpu_seconds(ticks)?;
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < each {
                        for _ in 0..16 {
                            op()?;
                        }
                        n += 16;
                    }
                    let wall = start.elapsed().as_secs_f64();
                    Ok((n as f64 / wall, n, thread_cpu_seconds(ticks)? - cpu0))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow!("a crypto benchmark thread panicked"))?
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let wall_rate = counts.iter().map(|c| c.0).sum();
    let ops: u64 = counts.iter().map(|c| c.1).sum();
    let cpu: f64 = counts.iter().map(|c| c.2).sum();
    Ok((wall_rate, if cpu > 0.0 { ops as f64 / cpu } else { 0.0 }))
}

fn thread_cpu_seconds(ticks: f64) -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").context("reading /proc/thread-self/stat")?;
    crate::setup::cpu_from_stat(&stat, ticks)
}

/// Measures verify/s of `verify_alg` and sign/s of `sign_alg` on `threads` threads.
pub fn measure(verify_alg: Alg, sign_alg: Alg, threads: usize, each: Duration) -> Result<Bound> {
    let message = sample_message();
    let vkey = SigningKey::generate(verify_alg)?;
    let sig = vkey.sign(&message)?;
    let public = ParsedPublicKey::new(verify_alg.verification(), vkey.public_bytes())
        .map_err(|e| anyhow!("parsing the {} public key: {e}", verify_alg.as_str()))?;
    public
        .verify_sig(&message, &sig)
        .map_err(|_| anyhow!("self-check: a {} signature does not verify", verify_alg.as_str()))?;
    let (verify_per_s, verify_per_cpu_s) = per_second(threads, each, || {
        public
            .verify_sig(&message, &sig)
            .map_err(|_| anyhow!("verify failed"))
    })?;
    let skey = SigningKey::generate(sign_alg)?;
    let (sign_per_s, sign_per_cpu_s) = per_second(threads, each, || skey.sign(&message).map(|_| ()))?;
    let cpu = bound(verify_per_cpu_s, sign_per_cpu_s);
    Ok(Bound {
        verify_alg,
        verify_per_s,
        sign_alg,
        sign_per_s,
        exchanges_per_s: bound(verify_per_s, sign_per_s),
        cpu_ms_per_exchange: (cpu > 0.0).then(|| 1000.0 / cpu),
    })
}

/// `openssl speed` for the same algorithms, when `openssl` is on PATH.
pub fn openssl_speed(verify_alg: Alg, sign_alg: Alg, cores: usize) -> Result<Bound> {
    let mut names = vec![verify_alg.openssl_name()];
    if sign_alg != verify_alg {
        names.push(sign_alg.openssl_name());
    }
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "2", "-multi", &cores.to_string()])
        .args(&names)
        .output()
        .context("running openssl speed")?;
    if !out.status.success() {
        bail!("openssl speed exited with {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (_, verify_per_s) = parse_openssl(&text, verify_alg)?;
    let (sign_per_s, _) = parse_openssl(&text, sign_alg)?;
    Ok(Bound {
        verify_alg,
        verify_per_s,
        sign_alg,
        sign_per_s,
        exchanges_per_s: bound(verify_per_s, sign_per_s),
        cpu_ms_per_exchange: None,
    })
}

/// (sign/s, verify/s) from `openssl speed` output: the summary line of the algorithm,
/// whose last two numbers are sign/s and verify/s.
pub fn parse_openssl(text: &str, alg: Alg) -> Result<(f64, f64)> {
    let marker = match alg {
        Alg::Rs256 => "rsa 2048 bits",
        Alg::Es256 => "ecdsa (nistp256)",
        Alg::EdDsa => "EdDSA (Ed25519)",
    };
    let line = text
        .lines()
        .find(|l| l.contains(marker))
        .ok_or_else(|| anyhow!("no `{marker}` line in openssl speed's output"))?;
    let numbers: Vec<f64> = line
        .split_whitespace()
        .filter(|w| !w.ends_with('s'))
        .filter_map(|w| w.parse().ok())
        .collect();
    match numbers.as_slice() {
        [.., sign, verify] if numbers.len() >= 3 => Ok((*sign, *verify)),
        _ => bail!(
            "cannot read sign/s and verify/s from openssl's line `{}`",
            line.trim()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
Got: +F2:2:2048:411.000000:14883.000000 from 1
version: 3.0.19
                  sign    verify    sign/s verify/s
rsa 2048 bits 0.001389s 0.000035s    720.0  28672.1
                              sign    verify    sign/s verify/s
 256 bits ecdsa (nistp256)   0.0000s   0.0002s  20956.9   4343.0
                              sign    verify    sign/s verify/s
 253 bits EdDSA (Ed25519)   0.0002s   0.0003s   5810.5   3628.1
";

    #[test]
    fn reads_openssl_speed_summary_lines() {
        assert_eq!(parse_openssl(OUTPUT, Alg::Rs256).expect("rsa"), (720.0, 28672.1));
        assert_eq!(
            parse_openssl(OUTPUT, Alg::Es256).expect("ecdsa"),
            (20956.9, 4343.0)
        );
        assert_eq!(
            parse_openssl(OUTPUT, Alg::EdDsa).expect("eddsa"),
            (5810.5, 3628.1)
        );
    }

    #[test]
    fn missing_or_garbled_openssl_lines_are_errors() {
        assert!(parse_openssl("version: 3.0.19\n", Alg::Rs256).is_err());
        assert!(parse_openssl("rsa 2048 bits 0.1s 0.2s\n", Alg::Rs256).is_err());
    }

    #[test]
    fn bound_is_the_harmonic_combination() {
        assert!((bound(3000.0, 1000.0) - 750.0).abs() < 1e-9);
        assert_eq!(bound(0.0, 1000.0), 0.0);
    }

    #[test]
    fn signatures_verify_with_the_parsed_public_key() {
        let message = sample_message();
        for alg in [Alg::Rs256, Alg::Es256, Alg::EdDsa] {
            let key = SigningKey::generate(alg).expect("key");
            let sig = key.sign(&message).expect("sign");
            let public = ParsedPublicKey::new(alg.verification(), key.public_bytes()).expect("public");
            assert!(public.verify_sig(&message, &sig).is_ok(), "{}", alg.as_str());
            assert!(public.verify_sig(b"other", &sig).is_err(), "{}", alg.as_str());
        }
    }
}
