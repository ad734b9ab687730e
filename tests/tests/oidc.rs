//! Single sign-on end to end: a lab whose gateway signs people in through an OpenID Connect
//! provider running on loopback (`flinger_tests::oidc`), with the `flinger` CLI's device login,
//! the web UI's authorization-code sign-in in a real browser, and the refusals: defective ID
//! tokens, replayed states and device logins, anonymous callers.

use base64::Engine;
use flinger_tests::browser::{Browser, WAIT};
use flinger_tests::oidc::{Misbehave, OidcOptions, OidcProvider};
use flinger_tests::{AgentSpec, Lab, eventually};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

const ADMIN: &str = "sso-admin";
const ADMIN_SECRET: &str = "sso-admin-secret-1234";
const CLIENT: &str = "flinger-lab";
const CLIENT_SECRET: &str = "flinger-lab-client-secret";
const ALICE: &str = "alice@example.com";

/// The provider, with the lab registered as a confidential client (any gateway port).
async fn provider() -> OidcProvider {
    OidcProvider::start(OidcOptions::default().client(
        CLIENT,
        CLIENT_SECRET,
        "http://127.0.0.1:0/auth/callback",
    ))
    .await
}

/// A lab with one fake device on queue `sso` whose gateway signs people in at `idp`; members of
/// the provider's group `lab-admins` are admins.
async fn lab(name: &str, idp: &OidcProvider) -> Lab {
    Lab::builder()
        .name(name)
        .gateway_env("FLINGER_ADMIN_CLIENT_ID", ADMIN)
        .gateway_env("FLINGER_ADMIN_SECRET", ADMIN_SECRET)
        .gateway_env("FLINGER_OIDC_ISSUER", &idp.issuer())
        .gateway_env("FLINGER_OIDC_CLIENT_ID", CLIENT)
        .gateway_env("FLINGER_OIDC_CLIENT_SECRET", CLIENT_SECRET)
        .gateway_env("FLINGER_OIDC_ROLE_CLAIM", "groups")
        .gateway_env("FLINGER_OIDC_ROLE_MAP", "lab-admins=admin")
        .agent(AgentSpec::fake("sso-dev-1", &["sso"]))
        .start()
        .await
}

/// What a JWT access token says (`permissions.client_id`, `permissions.role`).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64"),
    )
    .expect("JSON")
}

fn role(tokens: &Value) -> String {
    claims(tokens["access_token"].as_str().expect("an access token"))["permissions"]["role"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

async fn post(lab: &Lab, path: &str) -> (u16, Option<String>, Value) {
    let r = lab.http.post(lab.url(path)).send().await.expect("POST");
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

/// A device login over plain HTTP, as Testflinger's CLI makes it: `auth-init`, the person
/// approves at the provider as `email`, then polls until the gateway stops saying
/// `authorization_pending`/`slow_down`. The last answer, and the request id.
async fn device_login(lab: &Lab, idp: &OidcProvider, email: &str) -> ((u16, Value), String) {
    let (status, _, start) = post(lab, "/oidc/auth-init").await;
    assert_eq!(status, 200, "{start}");
    assert!(
        start.get("device_code").is_none(),
        "the device code stays on the gateway: {start}"
    );
    let request_id = start["request_id"].as_str().expect("request_id").to_owned();
    // Before the approval: pending (the gateway asked the provider).
    let (status, _, pending) = post(lab, &format!("/oidc/auth-poll/{request_id}")).await;
    assert_eq!(
        (status, pending["error"].as_str()),
        (400, Some("authorization_pending")),
        "{pending}"
    );
    idp.approve_device(start["user_code"].as_str().expect("user_code"), email)
        .await;
    let last = eventually(Duration::from_secs(30), "the device login to end", || async {
        let (status, retry, body) = post(lab, &format!("/oidc/auth-poll/{request_id}")).await;
        match body["error"].as_str() {
            Some("authorization_pending" | "slow_down") if status == 400 => {
                let secs = retry.and_then(|r| r.parse().ok()).unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(secs)).await;
                None
            }
            _ => Some((status, body)),
        }
    })
    .await;
    (last, request_id)
}

async fn get_as(lab: &Lab, token: &str, path: &str) -> (u16, Value) {
    let r = lab
        .http
        .get(lab.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn people_sign_in_with_the_device_flow_and_anonymous_callers_are_refused() {
    let idp = provider().await;
    let lab = lab("ssodev", &idp).await;
    let admin = lab.access_token(ADMIN, ADMIN_SECRET).await;

    // Anonymous callers: 401 on the API, a sign-in page in the UI that offers single sign-on.
    for (method, path) in [
        ("GET", "/v1/agents/data"),
        ("GET", "/v1/queues/wait_times"),
        ("GET", "/v1/job/search"),
        ("POST", "/v1/job"),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = lab
            .http
            .request(m, lab.url(path))
            .json(&json!({"job_queue": "sso"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path}");
    }
    let (status, page) = lab.get_page("/jobs").await;
    assert_eq!(status, 401);
    assert!(page.contains("Sign in required"));
    let (_, signin) = lab.get_page("/login").await;
    assert!(signin.contains("id=\"sso-sign-in\""), "{signin}");
    // Client credentials still work (agents, CI, the bootstrap admin).
    assert_eq!(get_as(&lab, &admin, "/v1/agents/data").await.0, 200);

    // `flinger login` without credentials: the device login, approved at the provider.
    let cli_home = lab.path("alice-cli");
    let mut cmd = tokio::process::Command::from(lab.cli());
    cmd.env("HOME", &cli_home)
        .env("XDG_CONFIG_HOME", cli_home.join(".config"))
        .env("XDG_DATA_HOME", cli_home.join(".local/share"))
        .arg("login")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("flinger login");
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let code = tokio::time::timeout(WAIT, async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            if let Some(code) = line.split("enter the code ").nth(1) {
                return code.trim().to_owned();
            }
        }
        panic!("flinger login ended without a code")
    })
    .await
    .expect("flinger login shows a code");
    idp.approve_device(&code, ALICE).await;
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("flinger login ends")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("Successfully authenticated as user '{ALICE}'")),
        "{stdout}"
    );

    // And submits as that person: the job's submitter is her e-mail address.
    let job = lab.path("job.yaml");
    std::fs::write(
        &job,
        "job_queue: sso\nprovision_data: {distro: noble}\ntest_data: {test_cmds: run}\n",
    )
    .unwrap();
    let mut submit = lab.cli();
    submit
        .env("HOME", &cli_home)
        .env("XDG_CONFIG_HOME", cli_home.join(".config"))
        .env("XDG_DATA_HOME", cli_home.join(".local/share"));
    let run = flinger_tests::cli::run(submit, &["submit", "--quiet", job.to_str().unwrap()], None).await;
    assert_eq!(run.code, 0, "{run}");
    let job_id = run.stdout.trim().to_owned();
    let (status, info) = get_as(&lab, &admin, &format!("/v1/job/{job_id}/info")).await;
    assert_eq!(
        (status, info["submitted_by"].as_str()),
        (200, Some(ALICE)),
        "{info}"
    );

    // A contributor the first time; an admin's role change takes effect at the next login.
    let ((status, tokens), request_id) = device_login(&lab, &idp, ALICE).await;
    assert_eq!((status, role(&tokens)), (200, "contributor".into()), "{tokens}");
    let set = flinger_tests::cli::run(
        lab.cli(),
        &[
            "--client-id",
            ADMIN,
            "--secret-key",
            ADMIN_SECRET,
            "admin",
            "set",
            "client-permissions",
            "--testflinger-client-id",
            ALICE,
            "--role",
            "manager",
        ],
        None,
    )
    .await;
    assert_eq!(set.code, 0, "{set}");
    let ((status, promoted), _) = device_login(&lab, &idp, ALICE).await;
    assert_eq!((status, role(&promoted)), (200, "manager".into()), "{promoted}");
    // A used request id is refused: the device login served once.
    let (status, _, replay) = post(&lab, &format!("/oidc/auth-poll/{request_id}")).await;
    assert_eq!(
        (status, replay["error"].as_str()),
        (400, Some("invalid_grant")),
        "{replay}"
    );

    // The role claim maps higher: a member of lab-admins is an admin.
    idp.add_user("boss@example.com", "Boss", &["lab-admins"]).await;
    let ((status, boss), _) = device_login(&lab, &idp, "boss@example.com").await;
    assert_eq!((status, role(&boss)), (200, "admin".into()), "{boss}");
    // Its refresh keeps the claim's role for that login.
    let r = lab
        .http
        .post(lab.url("/v1/oauth2/refresh"))
        .json(&json!({"refresh_token": boss["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(role(&r.json().await.unwrap()), "admin");

    // An admin revokes a person's refresh tokens: they no longer refresh.
    let refresh = |token: Value| {
        let lab = &lab;
        async move {
            lab.http
                .post(lab.url("/v1/oauth2/refresh"))
                .json(&json!({"refresh_token": token}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(refresh(promoted["refresh_token"].clone()).await, 200);
    let r = lab
        .http
        .post(lab.url(&format!("/v1/client-permissions/{ALICE}/revoke-tokens")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let revoked: Value = r.json().await.unwrap();
    assert!(revoked["revoked"].as_u64().unwrap() >= 3, "{revoked}");
    assert_eq!(refresh(promoted["refresh_token"].clone()).await, 400);
    assert_eq!(refresh(tokens["refresh_token"].clone()).await, 400);

    // The provider rotates its keys: the gateway fetches them again at once (the first unknown
    // key id since discovery) and the next login passes. (A rotation right after another fetch
    // waits for --oidc-jwks-refetch-interval: the API tests count those fetches.)
    idp.rotate_keys().await;
    let ((status, after), _) = device_login(&lab, &idp, ALICE).await;
    assert_eq!(status, 200, "{after}");

    // Defective ID tokens are refused, and the login is over.
    for defect in [
        Misbehave::Expired,
        Misbehave::WrongAudience,
        Misbehave::WrongIssuer,
        Misbehave::BadSignature,
        Misbehave::UnknownKid,
    ] {
        idp.misbehave(defect).await;
        let ((status, body), request_id) = device_login(&lab, &idp, ALICE).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("access_denied")),
            "{defect:?}: {body}"
        );
        let (status, _, again) = post(&lab, &format!("/oidc/auth-poll/{request_id}")).await;
        assert_eq!(
            (status, again["error"].as_str()),
            (400, Some("invalid_grant")),
            "{defect:?}: {again}"
        );
    }

    // The security log: sign-ins, refusals and role changes, and never a token.
    let logs = lab.logs();
    // (The lab's services log JSON lines.)
    for event in [
        "\"event\":\"sign_in\"",
        "\"event\":\"sign_in_refused\"",
        "\"event\":\"role_change\"",
        "\"event\":\"refresh_tokens_revoked\"",
    ] {
        assert!(logs.contains(event), "no {event} in the logs");
    }
    for secret in [&tokens, &promoted, &boss, &after] {
        for field in ["access_token", "refresh_token"] {
            assert!(
                !logs.contains(secret[field].as_str().unwrap()),
                "a {field} was logged"
            );
        }
    }
    assert!(!logs.contains(CLIENT_SECRET), "the client secret was logged");
    assert!(
        !logs.contains(&request_id),
        "a device login's request id was logged"
    );
    lab.stop().await;
}

/// The web UI's sign-on over plain HTTP, up to the provider's redirect back: the callback URL
/// and this "browser"'s state cookie.
async fn browser_sign_on(lab: &Lab, http: &reqwest::Client, email: &str) -> (String, String) {
    let r = http.get(lab.url("/auth/login")).send().await.unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("flinger_sso="))
        .expect("the state cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let authorize = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        authorize.contains("code_challenge_method=S256") && authorize.contains("nonce="),
        "{authorize}"
    );
    let r = http
        .post(&authorize)
        .form(&[("email", email), ("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let callback = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(callback.starts_with(&lab.url("/auth/callback")), "{callback}");
    (callback, cookie)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_signs_in_to_the_web_ui_and_replays_and_defective_tokens_are_refused() {
    let idp = provider().await;
    let lab = lab("ssoui", &idp).await;

    // Alice has a job (submitted with a device login's token).
    let ((status, tokens), _) = device_login(&lab, &idp, ALICE).await;
    assert_eq!(status, 200, "{tokens}");
    let r = lab
        .http
        .post(lab.url("/v1/job"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .json(&json!({"job_queue": "sso", "name": "alices-sso-job", "test_data": {"test_cmds": "run"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // In a real browser: the jobs page asks to sign in; single sign-on at the provider; her jobs.
    let b = Browser::start(1280, 900).await;
    b.goto(&lab.url("/jobs")).await;
    b.wait_text("#message-heading", "the sign-in required page", |t| {
        t == "Sign in required"
    })
    .await;
    b.click("#message-sign-in").await;
    b.click("#sso-sign-in").await;
    b.wait_text("button#approve", "the provider's sign-in page", |t| !t.is_empty())
        .await;
    b.type_into("#email", ALICE).await;
    b.click("#approve").await;
    b.wait_text("#signed-in", "the signed-in person", |t| t.contains(ALICE))
        .await;
    b.goto(&lab.url("/jobs")).await;
    b.wait_text("main", "her job in the list", |t| t.contains("alices-sso-job"))
        .await;
    b.close().await;

    // Over plain HTTP: a callback is good once; its replay is refused, and so is another
    // browser's state.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (callback, cookie) = browser_sign_on(&lab, &http, ALICE).await;
    let stranger = http
        .get(&callback)
        .header("cookie", "flinger_sso=someone-else")
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 403);
    let first = http
        .get(&callback)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert!(
        first
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("flinger_session=")),
        "a session"
    );
    let replay = http
        .get(&callback)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 400);
    assert!(replay.text().await.unwrap().contains("replayed"));

    // Defective ID tokens open no session.
    for defect in [
        Misbehave::WrongNonce,
        Misbehave::Expired,
        Misbehave::WrongAudience,
        Misbehave::BadSignature,
    ] {
        idp.misbehave(defect).await;
        let (callback, cookie) = browser_sign_on(&lab, &http, ALICE).await;
        let r = http
            .get(&callback)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{defect:?}");
        assert!(
            !r.headers()
                .get_all("set-cookie")
                .iter()
                .any(|c| c.to_str().unwrap().starts_with("flinger_session=")),
            "{defect:?} opened a session"
        );
    }
    lab.stop().await;
}
