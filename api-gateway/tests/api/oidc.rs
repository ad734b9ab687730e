//! Single sign-on against a real identity provider on loopback (`flinger_tests::oidc`, the
//! Authlib fixture the end-to-end tests sign in at). Every answer goes through
//! [`TestApp::send`], so the OpenAPI document must describe each one: the device login's 200s
//! and 400s with their codes, its 503 when the provider is away, and the 401 every anonymous
//! caller gets once single sign-on is on. And the provider's keys: ID tokens naming keys the
//! gateway does not hold make it fetch them again at most once per
//! `--oidc-jwks-refetch-interval`, counted at the provider, while a genuine rotation is taken.

use crate::support::{ADMIN_ID, ADMIN_SECRET, TestApp};
use flinger_gateway::config::Hidden;
use flinger_gateway::openapi;
use flinger_tests::oidc::{Misbehave, OidcOptions, OidcProvider};
use serde_json::Value;
use std::time::{Duration, Instant};

const CLIENT: &str = "flinger-lab";
const CLIENT_SECRET: &str = "flinger-lab-client-secret";
const ALICE: &str = "alice@example.com";
/// Long enough that no test outlives it: only the first unknown key id fetches.
const NEVER_AGAIN: Duration = Duration::from_secs(3600);

/// The provider, with the lab registered as a confidential client.
async fn provider(opts: OidcOptions) -> OidcProvider {
    OidcProvider::start(opts.client(CLIENT, CLIENT_SECRET, "http://127.0.0.1:0/auth/callback")).await
}

/// A gateway that signs people in at `issuer`, fetching its keys again at most every `refetch`.
async fn gateway(issuer: String, refetch: Duration) -> TestApp {
    TestApp::spawn_with(move |c| {
        let o = &mut c.auth.oidc;
        o.oidc_issuer = Some(issuer);
        o.oidc_client_id = Some(CLIENT.into());
        o.oidc_client_secret = Some(Hidden(CLIENT_SECRET.into()));
        o.oidc_jwks_refetch_interval = refetch;
    })
    .await
}

/// `POST /oidc/auth-init`, which must answer 200: the device login.
async fn start(app: &TestApp) -> Value {
    let r = app.send(app.http.post(app.url("/oidc/auth-init"))).await;
    assert_eq!(r.status(), 200);
    let start: Value = r.json().await.unwrap();
    assert!(start.get("device_code").is_none(), "{start}");
    start
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name].as_str().unwrap_or_else(|| panic!("no {name} in {v}"))
}

/// One poll: the status, `Retry-After` and the body.
async fn poll(app: &TestApp, request_id: &str) -> (u16, Option<u64>, Value) {
    let r = app
        .send(app.http.post(app.url(&format!("/oidc/auth-poll/{request_id}"))))
        .await;
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().expect("Retry-After in seconds"));
    (r.status().as_u16(), retry_after, r.json().await.unwrap())
}

/// Polls as Testflinger's CLI does until the answer is neither `authorization_pending` nor
/// `slow_down`: that answer.
async fn poll_until_decided(app: &TestApp, request_id: &str) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, retry_after, body) = poll(app, request_id).await;
        match body["error"].as_str() {
            Some("authorization_pending" | "slow_down") if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1))).await;
            }
            _ => return (status, body),
        }
    }
}

/// A device login that `email` approves at the provider, polled until decided.
async fn login(app: &TestApp, idp: &OidcProvider, email: &str) -> (u16, Value) {
    let start = start(app).await;
    idp.approve_device(field(&start, "user_code"), email).await;
    poll_until_decided(app, field(&start, "request_id")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_of_a_device_login_is_the_documented_one() {
    let idp = provider(OidcOptions::default()).await;
    let app = gateway(idp.issuer(), NEVER_AGAIN).await;

    // Started: where to go and what to enter; pending until the person decides; polled again
    // at once, told to slow down for the interval.
    let started = start(&app).await;
    assert!(field(&started, "verification_uri").starts_with(&idp.issuer()));
    assert_eq!(started["interval"], 1);
    let request_id = field(&started, "request_id");
    let (status, _, pending) = poll(&app, request_id).await;
    assert_eq!((status, field(&pending, "error")), (400, "authorization_pending"));
    // (Polled again at once: within half the interval, unless this machine is very slow.)
    let mut slowed = None;
    for _ in 0..5 {
        let (status, retry_after, body) = poll(&app, request_id).await;
        assert_eq!(status, 400, "{body}");
        if field(&body, "error") == "slow_down" {
            slowed = Some(retry_after);
            break;
        }
        assert_eq!(field(&body, "error"), "authorization_pending");
    }
    let retry_after = slowed.expect("told to slow down").expect("with Retry-After");
    assert!(retry_after >= 1);

    // Approved: the lab's tokens, once; the request id is spent.
    idp.approve_device(field(&started, "user_code"), ALICE).await;
    let (status, tokens) = poll_until_decided(&app, request_id).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(field(&tokens, "token_type"), "Bearer");
    assert!(!field(&tokens, "refresh_token").is_empty());
    let (status, _, replay) = poll(&app, request_id).await;
    assert_eq!((status, field(&replay, "error")), (400, "invalid_grant"));
    let (status, _, unknown) = poll(&app, "never-issued").await;
    assert_eq!((status, field(&unknown, "error")), (400, "invalid_grant"));

    // Denied at the provider, and an ID token the gateway refuses: access_denied, saying why.
    let denied = start(&app).await;
    idp.deny_device(field(&denied, "user_code")).await;
    let (status, body) = poll_until_decided(&app, field(&denied, "request_id")).await;
    assert_eq!((status, field(&body, "error")), (400, "access_denied"));
    idp.misbehave(Misbehave::WrongAudience).await;
    let (status, body) = login(&app, &idp, ALICE).await;
    assert_eq!((status, field(&body, "error")), (400, "access_denied"));
    assert!(field(&body, "message").contains("Sign-in refused"), "{body}");

    // The document says which codes a 400 may carry and that `slow_down` comes with
    // Retry-After (what `send` checked the bodies against).
    let doc = serde_json::to_value(openapi::document()).unwrap();
    let bad = &doc["paths"]["/oidc/auth-poll/{request_id}"]["post"]["responses"]["400"];
    assert!(bad["headers"]["Retry-After"].is_object(), "{bad}");
    let codes = &doc["components"]["schemas"]["DeviceLoginCode"]["enum"];
    for code in [
        "authorization_pending",
        "slow_down",
        "access_denied",
        "expired_token",
        "invalid_grant",
    ] {
        assert!(
            codes.as_array().unwrap().contains(&code.into()),
            "{code}: {codes}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_device_login_is_refused_as_expired() {
    let idp = provider(OidcOptions::default().device_code_ttl(1)).await;
    let app = gateway(idp.issuer(), NEVER_AGAIN).await;
    let started = start(&app).await;
    assert_eq!(started["expires_in"], 1);
    // Waiting for the login to expire (what is tested is the answer after).
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (status, _, body) = poll(&app, field(&started, "request_id")).await;
    assert_eq!((status, field(&body, "error")), (400, "expired_token"), "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_login_is_503_while_the_provider_does_not_answer() {
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = gateway(format!("http://127.0.0.1:{port}"), NEVER_AGAIN).await;
    let r = app.send(app.http.post(app.url("/oidc/auth-init"))).await;
    assert_eq!(r.status(), 503);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_single_sign_on_anonymous_callers_get_401_on_every_operation_that_needs_a_caller() {
    let idp = provider(OidcOptions::default()).await;
    // Anonymous use is allowed in the configuration (the default): single sign-on turns it off.
    let app = gateway(idp.issuer(), NEVER_AGAIN).await;
    crate::auth::call_every_operation(&app, "anonymous", None, None, false).await;
    // Public operations stay public, and client credentials still work.
    assert_eq!(app.get("/v1/").await.status(), 200);
    let (admin, _) = app.login(ADMIN_ID, ADMIN_SECRET).await;
    assert_eq!(app.get_as(&admin, "/v1/agents/data").await.status(), 200);
    // A person signed in by single sign-on is a contributor.
    let (status, tokens) = login(&app, &idp, ALICE).await;
    assert_eq!(status, 200, "{tokens}");
    let r = app
        .get_as(field(&tokens, "access_token"), "/v1/queues/wait_times")
        .await;
    assert_eq!(r.status(), 200);
    app.stop().await;
}

/// Starts `n` device logins and has the provider approve each: their request ids.
async fn approved_logins(app: &TestApp, idp: &OidcProvider, n: usize) -> Vec<String> {
    let mut ids = vec![];
    for _ in 0..n {
        let started = start(app).await;
        idp.approve_device(field(&started, "user_code"), ALICE).await;
        ids.push(field(&started, "request_id").to_owned());
    }
    ids
}

/// Polls every login at once (each one's first poll: the gateway asks the provider for its
/// tokens): the answers.
async fn poll_all(app: &TestApp, ids: &[String]) -> Vec<(u16, Value)> {
    futures::future::join_all(ids.iter().map(|id| async move {
        let (status, _, body) = poll(app, id).await;
        (status, body)
    }))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_tokens_naming_unknown_keys_costs_the_provider_one_key_fetch_per_interval() {
    const FLOOD: usize = 12;
    let idp = provider(OidcOptions::default()).await;
    let app = gateway(idp.issuer(), NEVER_AGAIN).await;
    let (status, _) = login(&app, &idp, ALICE).await;
    assert_eq!(status, 200);
    let discovered = idp.jwks_fetches().await;
    assert_eq!(discovered, 1, "discovery fetched the keys");

    // Forged tokens, each naming a key of its own, all at once: every one is refused, and the
    // first made the gateway fetch the keys again (the rest waited for that fetch).
    let ids = approved_logins(&app, &idp, FLOOD).await;
    idp.misbehave_times(Misbehave::UnknownKid, FLOOD as u32).await;
    for (status, body) in poll_all(&app, &ids).await {
        assert_eq!((status, field(&body, "error")), (400, "access_denied"), "{body}");
    }
    assert_eq!(idp.jwks_fetches().await, discovered + 1);

    // A second flood within the interval: refused again, without a fetch.
    let ids = approved_logins(&app, &idp, FLOOD).await;
    idp.misbehave_times(Misbehave::UnknownKid, FLOOD as u32).await;
    for (status, body) in poll_all(&app, &ids).await {
        assert_eq!((status, field(&body, "error")), (400, "access_denied"), "{body}");
    }
    assert_eq!(idp.jwks_fetches().await, discovered + 1);

    // Sound tokens still pass, with the keys held.
    let (status, body) = login(&app, &idp, ALICE).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(idp.jwks_fetches().await, discovered + 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_rotation_is_taken_at_once_and_again_once_the_interval_has_passed() {
    const INTERVAL: Duration = Duration::from_secs(2);
    let idp = provider(OidcOptions::default()).await;
    let app = gateway(idp.issuer(), INTERVAL).await;
    let (status, _) = login(&app, &idp, ALICE).await;
    assert_eq!(status, 200);
    let discovered = idp.jwks_fetches().await;

    // The provider rotates its keys: many people sign in at once with tokens under the new
    // key; the first unknown key id since discovery fetches at once, and all of them pass.
    idp.rotate_keys().await;
    let ids = approved_logins(&app, &idp, 4).await;
    let before_fetch = Instant::now();
    for (status, body) in poll_all(&app, &ids).await {
        assert_eq!(status, 200, "{body}");
    }
    let fetched_by = Instant::now();
    assert_eq!(idp.jwks_fetches().await, discovered + 1);

    // Rotated again at once: within the interval, tokens under the newest key are refused
    // without a fetch. (Checked only when this machine polled within the interval: the
    // gateway fetched after `before_fetch`.)
    idp.rotate_keys().await;
    let id = approved_logins(&app, &idp, 1).await;
    let (status, _, body) = poll(&app, &id[0]).await;
    if before_fetch.elapsed() < INTERVAL {
        // (Else the gateway may have fetched the newest key by now, and taken the token.)
        assert_eq!((status, field(&body, "error")), (400, "access_denied"), "{body}");
        assert_eq!(idp.jwks_fetches().await, discovered + 1);
    }

    // Once the interval has passed since that fetch, the newest key is fetched and taken.
    tokio::time::sleep(INTERVAL.saturating_sub(fetched_by.elapsed())).await;
    let (status, body) = login(&app, &idp, ALICE).await;
    assert_eq!(status, 200, "{body}");
    // One fetch for the second rotation, whichever poll made it.
    assert_eq!(idp.jwks_fetches().await, discovered + 2);
    app.stop().await;
}
