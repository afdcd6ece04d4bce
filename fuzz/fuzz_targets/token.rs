//! Fuzzes access-token verification, `common::token::KeySet::verify`, with the test-only key.
//!
//! Each input is used twice:
//! 1. as a token string (its lossy UTF-8 decoding), so hand-written tokens in the corpus and
//!    plain garbage reach the verifier as they are;
//! 2. through `arbitrary` as a [`Scenario`]: claims, a way of making a token (legitimately
//!    signed, unsigned, HMAC keyed with the public key, signed by another Ed25519 key, a
//!    signature moved onto other claims) and byte-level edits applied afterwards.
//!
//! The verifier must never panic, and whatever it accepts is checked two ways:
//! - against a reference written here from the rules alone (three canonical base64url parts,
//!   `alg` EdDSA, `kid` of the test key, an Ed25519 signature that verifies strictly, `iss`,
//!   `aud`, `exp`, `nbf`, `sub` and `name` as the policy and the domain types demand), and the
//!   user it returns must be the one the claims name;
//! - in a scenario, the accepted token must be byte for byte one that the harness signed with
//!   the test key: anything else accepted is a forgery.
//!
//! A legitimately signed token with claims that are valid by a clear margin must be accepted,
//! so a harness that never reaches the accepting path fails instead of passing quietly.

#![no_main]

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use common::testing::{TEST_AUDIENCE, TEST_ISSUER, TEST_KID};
use common::token::{AuthenticatedUser, Claims, KeySet, TokenPolicy};
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use jsonwebtoken::jwk::AlgorithmParameters;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const LEEWAY_SECS: u64 = 5;
/// Edits beyond this many are ignored: enough to combine a few, bounded per run.
const MAX_EDITS: usize = 8;

static KEYS: LazyLock<KeySet> = LazyLock::new(|| KeySet::from_jwks(&common::testing::jwks()));
static POLICY: LazyLock<TokenPolicy> = LazyLock::new(|| TokenPolicy {
    issuer: TEST_ISSUER.to_string(),
    audience: TEST_AUDIENCE.to_string(),
    leeway_secs: LEEWAY_SECS,
});
static SIGNING_KEY: LazyLock<EncodingKey> = LazyLock::new(common::testing::encoding_key);
/// The test key's public half, read from the JWKS the verifier is built from.
static PUBLIC_KEY: LazyLock<VerifyingKey> = LazyLock::new(|| {
    let jwks = common::testing::jwks();
    let AlgorithmParameters::OctetKeyPair(params) = &jwks.keys[0].algorithm else {
        panic!("the test JWKS holds an Ed25519 key");
    };
    let bytes: [u8; 32] = URL_SAFE_NO_PAD
        .decode(&params.x)
        .expect("x is base64url")
        .try_into()
        .expect("x is 32 bytes");
    VerifyingKey::from_bytes(&bytes).expect("x is a public key")
});

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let (before, outcome, after) = timed(&raw);
    if let Ok(user) = outcome {
        check_against_reference(&raw, &user, before, after);
    }

    if let Ok(scenario) = Scenario::arbitrary_take_rest(Unstructured::new(data)) {
        scenario.run();
    }
});

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verifies `token`, with the clock read just before and just after.
fn timed(token: &str) -> (u64, Result<AuthenticatedUser, String>, u64) {
    let before = now();
    let outcome = KEYS.verify(token, &POLICY).map_err(|e| e.to_string());
    (before, outcome, now())
}

/// How the token is made before the edits.
#[derive(Arbitrary, Debug)]
enum Make {
    /// Signed with the test key: the only legitimate kind.
    Signed {
        kid: Kid,
        typ: Option<String>,
        cty: Option<String>,
    },
    /// A header naming some algorithm, the claims, and a signature that is not one.
    Unsigned {
        alg: Alg,
        kid: Kid,
        signature: Vec<u8>,
    },
    /// HMAC keyed with the test key's public half (algorithm confusion).
    HmacWithPublicKey {
        alg: Hmac,
        form: PublicKeyForm,
        kid: Kid,
    },
    /// Ed25519, but with another key, under the test key's `kid`.
    OtherKey { seed: [u8; 32] },
    /// A legitimate header and signature over other claims, with these claims in the payload.
    MovedSignature { signed: ClaimsSpec },
    /// A legitimate payload and signature under a header of the fuzzer's choosing.
    OtherHeader {
        alg: Alg,
        kid: Kid,
        extra: Vec<(String, String)>,
    },
}

#[derive(Arbitrary, Debug, Clone)]
enum Kid {
    Test,
    Absent,
    Other(String),
}

impl Kid {
    fn value(&self) -> Option<String> {
        match self {
            Kid::Test => Some(TEST_KID.to_string()),
            Kid::Absent => None,
            Kid::Other(kid) => Some(kid.clone()),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Alg {
    None,
    NoneMixedCase,
    EdDsa,
    Ed25519,
    Hs256,
    Rs256,
    Es256,
    Other(String),
}

impl Alg {
    fn name(&self) -> &str {
        match self {
            Alg::None => "none",
            Alg::NoneMixedCase => "nOnE",
            Alg::EdDsa => "EdDSA",
            Alg::Ed25519 => "Ed25519",
            Alg::Hs256 => "HS256",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::Other(name) => name,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Hmac {
    Hs256,
    Hs384,
    Hs512,
}

/// The shapes in which an attacker might feed the public key to HMAC.
#[derive(Arbitrary, Debug)]
enum PublicKeyForm {
    Raw,
    JwkX,
    Pem,
    Der,
}

/// Claims to put in the token; `None` fields take the valid value.
#[derive(Arbitrary, Debug)]
struct ClaimsSpec {
    sub: Option<String>,
    name: Option<String>,
    exp: Time,
    nbf: Option<Time>,
    iss: Option<String>,
    aud: Option<String>,
    jti: String,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Time {
    /// Seconds from now.
    Relative(i32),
    Absolute(u64),
}

impl Time {
    fn at(self, now: u64) -> u64 {
        match self {
            Time::Relative(offset) => now.saturating_add_signed(i64::from(offset)),
            Time::Absolute(at) => at,
        }
    }
}

impl ClaimsSpec {
    fn claims(&self, now: u64) -> Claims {
        Claims {
            sub: self
                .sub
                .clone()
                .unwrap_or_else(|| "01JBZ5T3ZK9W6Q8X2Y4N0M7R1S".into()),
            name: self.name.clone().unwrap_or_else(|| "alice".into()),
            iat: now,
            exp: self.exp.at(now),
            nbf: self.nbf.map(|t| t.at(now)),
            iss: self.iss.clone().unwrap_or_else(|| TEST_ISSUER.into()),
            aud: self.aud.clone().unwrap_or_else(|| TEST_AUDIENCE.into()),
            jti: self.jti.clone(),
        }
    }

    /// Valid by a margin wide enough that the clock moving during the run cannot change it.
    fn clearly_valid(&self, claims: &Claims, now: u64) -> bool {
        claims.iss == TEST_ISSUER
            && claims.aud == TEST_AUDIENCE
            && is_user_id(&claims.sub)
            && is_username(&claims.name)
            && claims.exp >= now.saturating_add(60)
            && claims.nbf.is_none_or(|nbf| nbf <= now)
    }
}

/// Byte-level damage done to the finished token.
#[derive(Arbitrary, Debug)]
enum Edit {
    FlipBit {
        at: u16,
        bit: u8,
    },
    Insert {
        at: u16,
        byte: u8,
    },
    Remove {
        at: u16,
    },
    Truncate {
        len: u16,
    },
    /// Replaces part `index` (of the `.`-separated parts) with the base64url of `text`.
    ReplacePart {
        index: u8,
        text: String,
    },
    SwapParts {
        a: u8,
        b: u8,
    },
    AppendPart {
        text: String,
    },
    /// Re-encodes part `index` in another base64 dialect (padded, or standard alphabet).
    Reencode {
        index: u8,
        padded: bool,
        standard: bool,
    },
    Surround {
        prefix: String,
        suffix: String,
    },
}

impl Edit {
    fn apply(&self, token: &mut Vec<u8>) {
        let at = |i: u16, len: usize| if len == 0 { 0 } else { usize::from(i) % len };
        match self {
            Edit::FlipBit { at: i, bit } => {
                if !token.is_empty() {
                    let i = at(*i, token.len());
                    token[i] ^= 1 << (bit % 8);
                }
            }
            Edit::Insert { at: i, byte } => {
                let i = at(*i, token.len() + 1);
                token.insert(i, *byte);
            }
            Edit::Remove { at: i } => {
                if !token.is_empty() {
                    let i = at(*i, token.len());
                    token.remove(i);
                }
            }
            Edit::Truncate { len } => token.truncate(usize::from(*len)),
            Edit::ReplacePart { index, text } => edit_parts(token, |parts| {
                let i = usize::from(*index) % parts.len();
                parts[i] = URL_SAFE_NO_PAD.encode(text).into_bytes();
            }),
            Edit::SwapParts { a, b } => edit_parts(token, |parts| {
                let len = parts.len();
                parts.swap(usize::from(*a) % len, usize::from(*b) % len);
            }),
            Edit::AppendPart { text } => {
                token.push(b'.');
                token.extend_from_slice(URL_SAFE_NO_PAD.encode(text).as_bytes());
            }
            Edit::Reencode {
                index,
                padded,
                standard,
            } => edit_parts(token, |parts| {
                let i = usize::from(*index) % parts.len();
                if let Ok(bytes) = URL_SAFE_NO_PAD.decode(&parts[i]) {
                    let text = match (padded, standard) {
                        (false, false) => URL_SAFE_NO_PAD.encode(bytes),
                        (true, false) => URL_SAFE.encode(bytes),
                        (_, true) => STANDARD.encode(bytes),
                    };
                    parts[i] = text.into_bytes();
                }
            }),
            Edit::Surround { prefix, suffix } => {
                token.splice(0..0, prefix.bytes());
                token.extend_from_slice(suffix.as_bytes());
            }
        }
    }
}

fn edit_parts(token: &mut Vec<u8>, edit: impl FnOnce(&mut Vec<Vec<u8>>)) {
    let mut parts: Vec<Vec<u8>> = token.split(|&b| b == b'.').map(<[u8]>::to_vec).collect();
    edit(&mut parts);
    *token = parts.join(&b'.');
}

#[derive(Arbitrary, Debug)]
struct Scenario {
    claims: ClaimsSpec,
    make: Make,
    edits: Vec<Edit>,
}

impl Scenario {
    fn run(&self) {
        let now = now();
        let claims = self.claims.claims(now);
        let (made, legitimate) = self.make(&claims, now);
        let mut bytes = made.clone().into_bytes();
        for edit in self.edits.iter().take(MAX_EDITS) {
            edit.apply(&mut bytes);
        }
        let token = String::from_utf8_lossy(&bytes);

        let (before, outcome, after) = timed(&token);
        match &outcome {
            Ok(user) => {
                check_against_reference(&token, user, before, after);
                assert_eq!(
                    legitimate.as_deref(),
                    Some(&*token),
                    "a token the test key never signed was accepted: {token:?} from {self:?}"
                );
            }
            Err(error) => {
                let untouched = token == made;
                if untouched
                    && legitimate.is_some()
                    && matches!(self.make, Make::Signed { kid: Kid::Test, .. })
                    && self.claims.clearly_valid(&claims, now)
                {
                    panic!("a valid token was refused ({error}): {token:?} from {self:?}");
                }
            }
        }
    }

    /// The token, and the same token again when the test key legitimately signed it.
    fn make(&self, claims: &Claims, now: u64) -> (String, Option<String>) {
        match &self.make {
            Make::Signed { kid, typ, cty } => {
                let mut header = Header::new(Algorithm::EdDSA);
                header.kid = kid.value();
                header.typ = typ.clone();
                header.cty = cty.clone();
                let token = jsonwebtoken::encode(&header, claims, &SIGNING_KEY).expect("signs");
                (token.clone(), Some(token))
            }
            Make::Unsigned {
                alg,
                kid,
                signature,
            } => {
                let header = header_json(alg.name(), kid, &[]);
                let token = format!(
                    "{}.{}.{}",
                    b64_json(&header),
                    b64_json(&json!(claims)),
                    URL_SAFE_NO_PAD.encode(signature)
                );
                (token, None)
            }
            Make::HmacWithPublicKey { alg, form, kid } => {
                let secret = match form {
                    PublicKeyForm::Raw => PUBLIC_KEY.as_bytes().to_vec(),
                    PublicKeyForm::JwkX => URL_SAFE_NO_PAD.encode(PUBLIC_KEY.as_bytes()).into(),
                    PublicKeyForm::Pem => PUBLIC_KEY
                        .to_public_key_pem(Default::default())
                        .expect("pem")
                        .into(),
                    PublicKeyForm::Der => PUBLIC_KEY.to_public_key_der().expect("der").into_vec(),
                };
                let mut header = Header::new(match alg {
                    Hmac::Hs256 => Algorithm::HS256,
                    Hmac::Hs384 => Algorithm::HS384,
                    Hmac::Hs512 => Algorithm::HS512,
                });
                header.kid = kid.value();
                let key = EncodingKey::from_secret(&secret);
                let token = jsonwebtoken::encode(&header, claims, &key).expect("signs");
                (token, None)
            }
            Make::OtherKey { seed } => {
                let signing = SigningKey::from_bytes(seed);
                let der = signing.to_pkcs8_der().expect("pkcs8");
                let key = EncodingKey::from_ed_der(der.as_bytes());
                let mut header = Header::new(Algorithm::EdDSA);
                header.kid = Some(TEST_KID.to_string());
                let token = jsonwebtoken::encode(&header, claims, &key).expect("signs");
                // Only the test key's own seed would make this legitimate.
                let legitimate = (signing.verifying_key() == *PUBLIC_KEY).then(|| token.clone());
                (token, legitimate)
            }
            Make::MovedSignature { signed } => {
                let mut header = Header::new(Algorithm::EdDSA);
                header.kid = Some(TEST_KID.to_string());
                let donor = jsonwebtoken::encode(&header, &signed.claims(now), &SIGNING_KEY)
                    .expect("signs");
                let parts: Vec<&str> = donor.split('.').collect();
                let token = format!("{}.{}.{}", parts[0], b64_json(&json!(claims)), parts[2]);
                // The same claims give back the donor itself, which is legitimate.
                let legitimate = (token == donor).then(|| token.clone());
                (token, legitimate)
            }
            Make::OtherHeader { alg, kid, extra } => {
                let mut header = Header::new(Algorithm::EdDSA);
                header.kid = Some(TEST_KID.to_string());
                let donor = jsonwebtoken::encode(&header, claims, &SIGNING_KEY).expect("signs");
                let parts: Vec<&str> = donor.split('.').collect();
                let forged = header_json(alg.name(), kid, extra);
                let token = format!("{}.{}.{}", b64_json(&forged), parts[1], parts[2]);
                let legitimate = (token == donor).then(|| token.clone());
                (token, legitimate)
            }
        }
    }
}

fn header_json(alg: &str, kid: &Kid, extra: &[(String, String)]) -> Value {
    let mut header = serde_json::Map::new();
    header.insert("typ".into(), "JWT".into());
    header.insert("alg".into(), alg.into());
    if let Some(kid) = kid.value() {
        header.insert("kid".into(), kid.into());
    }
    for (name, value) in extra {
        header.insert(name.clone(), value.clone().into());
    }
    Value::Object(header)
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn is_user_id(value: &str) -> bool {
    (1..=64).contains(&value.len())
}

fn is_username(value: &str) -> bool {
    (3..=32).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Panics unless `token`, accepted as `user` between the clock readings `before` and `after`,
/// satisfies every rule when checked independently of the verifier.
fn check_against_reference(token: &str, user: &AuthenticatedUser, before: u64, after: u64) {
    let fail = |why: &str| -> ! { panic!("accepted token breaks a rule ({why}): {token:?}") };
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        fail("not three parts")
    };
    let decode = |part: &str| {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .unwrap_or_else(|_| fail("a part is not base64url"));
        if URL_SAFE_NO_PAD.encode(&bytes) != part {
            fail("a part is not canonical base64url");
        }
        bytes
    };
    let object = |bytes: &[u8]| match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => map,
        _ => fail("a part is not a JSON object"),
    };

    let header = object(&decode(header));
    if header.get("alg").and_then(Value::as_str) != Some("EdDSA") {
        fail("alg is not EdDSA");
    }
    if header.get("kid").and_then(Value::as_str) != Some(TEST_KID) {
        fail("kid is not the test key's");
    }

    let signature: [u8; 64] = decode(signature)
        .try_into()
        .unwrap_or_else(|_| fail("signature is not 64 bytes"));
    let signed = format!("{}.{}", parts[0], parts[1]);
    if PUBLIC_KEY
        .verify_strict(signed.as_bytes(), &Signature::from_bytes(&signature))
        .is_err()
    {
        fail("the signature does not verify with the test key");
    }

    let claims = object(&decode(payload));
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if text("iss") != Some(TEST_ISSUER) {
        fail("wrong iss");
    }
    if text("aud") != Some(TEST_AUDIENCE) {
        fail("wrong aud");
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| fail("exp is missing"));
    if exp.saturating_add(LEEWAY_SECS) < before {
        fail("expired");
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_u64)
        && nbf > after.saturating_add(LEEWAY_SECS)
    {
        fail("not yet valid");
    }
    let sub = text("sub").unwrap_or_else(|| fail("sub is missing"));
    let name = text("name").unwrap_or_else(|| fail("name is missing"));
    if !is_user_id(sub) || !is_username(name) {
        fail("sub or name breaks its rule");
    }
    if (
        user.user.id.as_str(),
        user.user.username.as_str(),
        user.expires_at,
    ) != (sub, name, exp)
    {
        fail("the returned user is not the one the claims name");
    }
}
