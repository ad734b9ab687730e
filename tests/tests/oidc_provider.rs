//! The loopback OpenID Connect provider (tests/fixtures/oidc-provider) does what the single
//! sign-on tests rely on: discovery, the code flow with PKCE and nonce giving ID tokens that
//! verify against its JWKS, the device flow's answers in order (pending, slow_down, tokens once,
//! access_denied, expired_token), refresh tokens, and each defect it can be told to put in the
//! next ID token. Plain HTTP only, as a relying party would speak to it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use flinger_tests::eventually;
use flinger_tests::oidc::{Misbehave, OidcOptions, OidcProvider, TokenRequest};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;
use url::Url;

const WEB: &str = "web-ui";
const SECRET: &str = "web-secret";
const CALLBACK: &str = "http://127.0.0.1:0/oidc/callback";
const CLI: &str = "flinger-cli";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

fn options() -> OidcOptions {
    OidcOptions::default()
        .client(WEB, SECRET, CALLBACK)
        .public_client(CLI, "")
}

fn http() -> reqwest::Client {
    flinger_tests::init_tls();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// A PKCE pair: (code_verifier, S256 code_challenge).
fn pkce() -> (String, String) {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The query parameter `name` of `url`.
fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `GET /authorize` with these extra parameters: the answer's status, Location and body.
async fn authorize(p: &OidcProvider, extra: &[(&str, &str)]) -> (u16, Option<Url>, String) {
    let mut params = vec![("response_type", "code"), ("client_id", WEB)];
    params.extend_from_slice(extra);
    let resp = http()
        .get(p.url("/authorize"))
        .query(&params)
        .send()
        .await
        .expect("GET /authorize");
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|l| Url::parse(l.to_str().expect("ascii")).expect("Location is a URL"));
    (status, location, resp.text().await.expect("body"))
}

/// The authorization code flow as a browser and a confidential client would do it, signing in
/// as `email` on port `port` of the registered port-0 callback: the token endpoint's answer.
async fn code_flow(p: &OidcProvider, email: &str, nonce: &str, port: u16) -> Value {
    let (verifier, challenge) = pkce();
    let redirect = format!("http://127.0.0.1:{port}/oidc/callback");
    let (status, _, page) = authorize(
        p,
        &[
            ("redirect_uri", &redirect),
            ("scope", "openid email profile groups offline_access"),
            ("state", "state-1"),
            ("nonce", nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(r#"id="email""#) && page.contains(r#"id="approve""#),
        "{page}"
    );
    let action = page
        .split(r#"action=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the sign-in form's action")
        .replace("&amp;", "&");
    let resp = http()
        .post(p.url(&action))
        .form(&[("email", email), ("name", "Ada"), ("decision", "approve")])
        .send()
        .await
        .expect("POST the sign-in form");
    assert_eq!(
        resp.status().as_u16(),
        302,
        "{}",
        resp.text().await.unwrap_or_default()
    );
    let back = Url::parse(resp.headers()["location"].to_str().expect("ascii")).expect("URL");
    assert_eq!(back.port(), Some(port), "back to the port asked for: {back}");
    assert_eq!(back.path(), "/oidc/callback");
    assert_eq!(param(&back, "state").as_deref(), Some("state-1"));
    let code = param(&back, "code").expect("a code");

    // A wrong verifier is refused; the right one gets tokens.
    let (wrong, _) = pkce();
    let refused = token(p, &code, &redirect, &wrong).await;
    assert_eq!(refused.0, 400);
    assert_eq!(refused.1["error"], "invalid_grant", "{}", refused.1);
    let (status, answer) = token(p, &code, &redirect, &verifier).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn token(p: &OidcProvider, code: &str, redirect: &str, verifier: &str) -> (u16, Value) {
    let resp = http()
        .post(p.url("/token"))
        .basic_auth(WEB, Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .expect("POST /token");
    (resp.status().as_u16(), resp.json().await.expect("JSON"))
}

/// `POST /device_authorization` for the public CLI client.
async fn device_authorization(p: &OidcProvider) -> Value {
    let resp = http()
        .post(p.url("/device_authorization"))
        .form(&[
            ("client_id", CLI),
            ("scope", "openid email groups offline_access"),
        ])
        .send()
        .await
        .expect("POST /device_authorization");
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.expect("JSON")
}

/// One device-flow poll of the token endpoint: (status, answer).
async fn poll(p: &OidcProvider, device_code: &str) -> (u16, Value) {
    let resp = http()
        .post(p.url("/token"))
        .form(&[
            ("grant_type", DEVICE_GRANT),
            ("client_id", CLI),
            ("device_code", device_code),
        ])
        .send()
        .await
        .expect("POST /token");
    (resp.status().as_u16(), resp.json().await.expect("JSON"))
}

/// Tokens through the device flow, approved as `email` through the test control.
async fn device_tokens(p: &OidcProvider, email: &str) -> Value {
    let auth = device_authorization(p).await;
    p.approve_device(auth["user_code"].as_str().expect("user_code"), email)
        .await;
    let (status, answer) = poll(p, auth["device_code"].as_str().expect("device_code")).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Why a relying party refuses an ID token.
#[derive(Debug, PartialEq)]
enum Refused {
    /// The JWKS has no key with the token's `kid`.
    NoSuchKid,
    Jwt(ErrorKind),
}

/// Verifies `id_token` as a relying party must: signature by the JWKS key its `kid` names,
/// RS256, issuer, audience, expiry. The claims, or why it was refused.
async fn verify(p: &OidcProvider, id_token: &str, audience: &str) -> Result<Value, Refused> {
    let header = jsonwebtoken::decode_header(id_token).expect("a JWT header");
    let jwks: Value = http()
        .get(p.url("/jwks"))
        .send()
        .await
        .expect("GET /jwks")
        .json()
        .await
        .expect("JWKS");
    let Some(jwk) = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"].as_str() == header.kid.as_deref())
    else {
        return Err(Refused::NoSuchKid);
    };
    let key = DecodingKey::from_rsa_components(jwk["n"].as_str().expect("n"), jwk["e"].as_str().expect("e"))
        .expect("an RSA key");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[p.issuer()]);
    validation.leeway = 0;
    jsonwebtoken::decode::<Value>(id_token, &key, &validation)
        .map(|t| t.claims)
        .map_err(|e| Refused::Jwt(e.into_kind()))
}

fn id_token(answer: &Value) -> &str {
    answer["id_token"].as_str().expect("an id_token")
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_names_the_endpoints_and_what_is_supported() {
    let p = OidcProvider::start(options()).await;
    let doc: Value = http()
        .get(p.url("/.well-known/openid-configuration"))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("JSON");
    let i = p.issuer();
    assert!(i.starts_with("http://127.0.0.1:") && !i.ends_with('/'), "{i}");
    assert_eq!(doc["issuer"], i);
    for (field, path) in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("jwks_uri", "/jwks"),
        ("userinfo_endpoint", "/userinfo"),
        ("device_authorization_endpoint", "/device_authorization"),
    ] {
        assert_eq!(doc[field], format!("{i}{path}"), "{field}");
    }
    let list = |field: &str| -> Vec<String> {
        serde_json::from_value(doc[field].clone()).unwrap_or_else(|_| panic!("{field}: {doc}"))
    };
    assert_eq!(list("response_types_supported"), ["code"]);
    assert_eq!(list("id_token_signing_alg_values_supported"), ["RS256"]);
    assert_eq!(list("code_challenge_methods_supported"), ["S256"]);
    assert!(!list("subject_types_supported").is_empty());
    for grant in ["authorization_code", DEVICE_GRANT, "refresh_token"] {
        assert!(
            list("grant_types_supported").iter().any(|g| g == grant),
            "{grant}"
        );
    }
    for scope in ["openid", "email", "profile", "groups", "offline_access"] {
        assert!(list("scopes_supported").iter().any(|s| s == scope), "{scope}");
    }
    for method in ["client_secret_basic", "client_secret_post", "none"] {
        assert!(
            list("token_endpoint_auth_methods_supported")
                .iter()
                .any(|m| m == method),
            "{method}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn code_flow_with_pkce_gives_an_id_token_that_verifies_against_the_jwks() {
    let p = OidcProvider::start(options()).await;
    p.add_user("ada@example.com", "Ada Lovelace", &["lab-admins", "qa"])
        .await;

    let answer = code_flow(&p, "ada@example.com", "nonce-1", 41001).await;
    assert_eq!(answer["token_type"], "Bearer");
    assert!(answer["access_token"].is_string() && answer["expires_in"].is_number());
    assert!(answer["refresh_token"].is_string(), "offline_access: {answer}");
    let claims = verify(&p, id_token(&answer), WEB)
        .await
        .expect("a sound ID token");
    assert_eq!(claims["nonce"], "nonce-1");
    assert_eq!(claims["email"], "ada@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Ada");
    assert_eq!(claims["groups"], serde_json::json!(["lab-admins", "qa"]));
    assert!(claims["iat"].is_number());

    // The same person is the same subject, whatever the port and the session.
    let again = code_flow(&p, "ada@example.com", "nonce-2", 41002).await;
    let claims2 = verify(&p, id_token(&again), WEB).await.expect("sound");
    assert_eq!(claims2["sub"], claims["sub"]);
    assert_eq!(claims2["nonce"], "nonce-2");

    let userinfo: Value = http()
        .get(p.url("/userinfo"))
        .bearer_auth(answer["access_token"].as_str().expect("access_token"))
        .send()
        .await
        .expect("GET /userinfo")
        .json()
        .await
        .expect("JSON");
    assert_eq!(userinfo["sub"], claims["sub"]);
    assert_eq!(userinfo["groups"], claims["groups"]);

    // The refresh token gets new tokens with a fresh ID token (no nonce: no new authentication).
    let resp = http()
        .post(p.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", answer["refresh_token"].as_str().expect("rt")),
            ("client_id", WEB),
            ("client_secret", SECRET),
        ])
        .send()
        .await
        .expect("refresh");
    assert_eq!(resp.status().as_u16(), 200);
    let refreshed: Value = resp.json().await.expect("JSON");
    let claims3 = verify(&p, id_token(&refreshed), WEB).await.expect("sound");
    assert_eq!(claims3["sub"], claims["sub"]);

    let log = p.token_log().await;
    let ok: Vec<&TokenRequest> = log.iter().filter(|r| r.status == 200).collect();
    assert_eq!(ok.len(), 3, "{log:?}");
    assert_eq!(ok[2].grant_type.as_deref(), Some("refresh_token"));
    assert!(log.iter().all(|r| r.client_id.as_deref() == Some(WEB)), "{log:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn authorization_requests_without_pkce_or_from_strangers_are_refused() {
    let p = OidcProvider::start(options()).await;
    let redirect = "http://127.0.0.1:41003/oidc/callback";

    // No code challenge: an error back at the (valid) redirect uri, with the state.
    let (status, location, _) = authorize(
        &p,
        &[("redirect_uri", redirect), ("scope", "openid"), ("state", "s")],
    )
    .await;
    assert_eq!(status, 302);
    let location = location.expect("Location");
    assert_eq!(param(&location, "error").as_deref(), Some("invalid_request"));
    assert_eq!(param(&location, "state").as_deref(), Some("s"));

    // A `plain` challenge is no better.
    let (_, challenge) = pkce();
    let (status, location, _) = authorize(
        &p,
        &[
            ("redirect_uri", redirect),
            ("scope", "openid"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "plain"),
        ],
    )
    .await;
    assert_eq!(status, 302);
    assert_eq!(
        param(&location.expect("Location"), "error").as_deref(),
        Some("invalid_request")
    );

    // A redirect uri that was not registered: a page of the provider's own, never a redirect.
    let (status, location, page) = authorize(
        &p,
        &[
            ("redirect_uri", "http://127.0.0.1:41003/elsewhere"),
            ("scope", "openid"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    assert_eq!((status, location), (400, None), "{page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn device_flow_is_pending_until_approved_and_its_code_works_once() {
    let p = OidcProvider::start(options().device_interval(60).device_code_ttl(300)).await;
    p.add_user("bob@example.com", "Bob", &["ops"]).await;
    let auth = device_authorization(&p).await;
    assert_eq!(auth["interval"], 60);
    assert_eq!(auth["expires_in"], 300);
    assert_eq!(auth["verification_uri"], p.url("/device"));
    let user_code = auth["user_code"].as_str().expect("user_code");
    assert_eq!(
        auth["verification_uri_complete"],
        format!("{}?user_code={user_code}", p.url("/device"))
    );
    let device_code = auth["device_code"].as_str().expect("device_code");

    let (status, first) = poll(&p, device_code).await;
    assert_eq!(
        (status, first["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    // Polling again at once, well within the 60 s interval, is told to slow down.
    let (_, second) = poll(&p, device_code).await;
    assert_eq!(second["error"], "slow_down");

    p.approve_device(user_code, "bob@example.com").await;
    let (status, answer) = poll(&p, device_code).await;
    assert_eq!(status, 200, "{answer}");
    let claims = verify(&p, id_token(&answer), CLI)
        .await
        .expect("a sound ID token");
    assert_eq!(claims["email"], "bob@example.com");
    assert_eq!(claims["groups"], serde_json::json!(["ops"]));
    assert!(claims.get("nonce").is_none(), "{claims}");
    assert!(answer["refresh_token"].is_string(), "offline_access: {answer}");

    let (status, reused) = poll(&p, device_code).await;
    assert_eq!((status, reused["error"].as_str()), (400, Some("invalid_grant")));

    let errors: Vec<Option<String>> = p.token_log().await.into_iter().map(|r| r.error).collect();
    assert_eq!(
        errors,
        [
            Some("authorization_pending".into()),
            Some("slow_down".into()),
            None,
            Some("invalid_grant".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn device_codes_can_be_denied_and_expire() {
    let p = OidcProvider::start(options().device_interval(0).device_code_ttl(1)).await;

    let denied = device_authorization(&p).await;
    p.deny_device(denied["user_code"].as_str().expect("user_code"))
        .await;
    let (status, answer) = poll(&p, denied["device_code"].as_str().expect("code")).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("access_denied")));

    let ignored = device_authorization(&p).await;
    let device_code = ignored["device_code"].as_str().expect("code");
    let (_, first) = poll(&p, device_code).await;
    assert_eq!(first["error"], "authorization_pending");
    eventually(Duration::from_secs(10), "expired_token", || async {
        let (_, answer) = poll(&p, device_code).await;
        (answer["error"] == "expired_token").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_defect_spoils_only_the_next_id_token() {
    let p = OidcProvider::start(options().device_interval(0)).await;
    for (defect, refused) in [
        (Misbehave::Expired, Refused::Jwt(ErrorKind::ExpiredSignature)),
        (Misbehave::WrongAudience, Refused::Jwt(ErrorKind::InvalidAudience)),
        (Misbehave::WrongIssuer, Refused::Jwt(ErrorKind::InvalidIssuer)),
        (Misbehave::BadSignature, Refused::Jwt(ErrorKind::InvalidSignature)),
        (Misbehave::UnknownKid, Refused::NoSuchKid),
    ] {
        p.misbehave(defect).await;
        let bad = device_tokens(&p, "eve@example.com").await;
        assert_eq!(
            verify(&p, id_token(&bad), CLI).await.err(),
            Some(refused),
            "{defect:?}"
        );
        let good = device_tokens(&p, "eve@example.com").await;
        verify(&p, id_token(&good), CLI)
            .await
            .unwrap_or_else(|e| panic!("after {defect:?}, a sound token: {e:?}"));
    }

    // Expired: the time claims are in the past (and the signature is sound).
    p.misbehave(Misbehave::Expired).await;
    let expired = device_tokens(&p, "eve@example.com").await;
    let mut lenient = Validation::new(Algorithm::RS256);
    lenient.insecure_disable_signature_validation();
    lenient.validate_exp = false;
    lenient.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(id_token(&expired), &DecodingKey::from_secret(b""), &lenient)
        .expect("decodes")
        .claims;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(claims["exp"].as_u64().expect("exp") < now, "{claims}");

    // Wrong nonce: the code flow's token carries another nonce than the request's.
    p.misbehave(Misbehave::WrongNonce).await;
    let answer = code_flow(&p, "eve@example.com", "nonce-3", 41004).await;
    let claims = verify(&p, id_token(&answer), WEB).await.expect("signed soundly");
    assert_ne!(claims["nonce"], "nonce-3");
    let answer = code_flow(&p, "eve@example.com", "nonce-4", 41004).await;
    assert_eq!(
        verify(&p, id_token(&answer), WEB).await.expect("sound")["nonce"],
        "nonce-4"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_keys_replaces_the_kid_in_jwks_and_tokens() {
    let p = OidcProvider::start(options().device_interval(0)).await;
    let before = device_tokens(&p, "kim@example.com").await;
    let old_kid = jsonwebtoken::decode_header(id_token(&before))
        .expect("header")
        .kid
        .expect("kid");

    let new_kid = p.rotate_keys().await;
    assert_ne!(new_kid, old_kid);
    let jwks: Value = http()
        .get(p.url("/jwks"))
        .send()
        .await
        .expect("GET /jwks")
        .json()
        .await
        .expect("JSON");
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid"))
        .collect();
    assert_eq!(kids, [new_kid.as_str()]);

    let after = device_tokens(&p, "kim@example.com").await;
    let header = jsonwebtoken::decode_header(id_token(&after)).expect("header");
    assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()));
    verify(&p, id_token(&after), CLI)
        .await
        .expect("signed by the new key");
    // A token from before the rotation names a kid the JWKS no longer has.
    assert_eq!(
        verify(&p, id_token(&before), CLI).await.err(),
        Some(Refused::NoSuchKid)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_defect_may_spoil_several_tokens_in_a_row_and_key_fetches_are_counted() {
    let p = OidcProvider::start(options().device_interval(0)).await;
    assert_eq!(p.jwks_fetches().await, 0, "nobody asked yet");
    p.misbehave_times(Misbehave::UnknownKid, 2).await;
    for n in 1..=2 {
        let bad = device_tokens(&p, "lee@example.com").await;
        assert_eq!(
            verify(&p, id_token(&bad), CLI).await.err(),
            Some(Refused::NoSuchKid),
            "token {n}"
        );
    }
    let good = device_tokens(&p, "lee@example.com").await;
    verify(&p, id_token(&good), CLI)
        .await
        .expect("the third token is sound");
    // Each `verify` fetched the JWKS once.
    assert_eq!(p.jwks_fetches().await, 3);
}
