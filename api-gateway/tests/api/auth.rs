//! Access control: tokens, roles on every endpoint, anonymous use, client permissions, priority
//! and reservation limits, restricted queues (over HTTP and over AMQP), job ownership.

use crate::support::{ADMIN_ID, ADMIN_SECRET, SIGNING_KEY, TestApp, validation_detail};
use base64::Engine;
use broker_schema::Millis;
use broker_schema::messages::{AgentState, CommandReply, SchedulerReply, SchedulerRequest};
use flinger_gateway::auth::{Claims, Permissions, Tokens};
use flinger_gateway::openapi::{self, Who};
use flinger_store::Role;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

fn job_id(body: &Value) -> Uuid {
    body["job_id"].as_str().expect("job_id").parse().unwrap()
}

/// Who may call an endpoint.
#[derive(Clone, Copy, Debug)]
enum May {
    /// Anyone, no token checked.
    Public,
    /// These roles; anonymous callers act as contributors (and as agents with
    /// `--allow-anonymous-agents`).
    Roles(&'static [Role]),
    /// A logged-in client, about its own resources (secrets): admins, managers and contributors
    /// (agents submit no jobs, so they have no secrets).
    Owner,
}

const SUBMITTER: May = May::Roles(&[Role::Admin, Role::Manager, Role::Contributor]);
const AGENT: May = May::Roles(&[Role::Agent]);
const ANYONE: May = May::Roles(&[Role::Admin, Role::Manager, Role::Contributor, Role::Agent]);
const MANAGER: May = May::Roles(&[Role::Admin, Role::Manager]);
const ADMIN: May = May::Roles(&[Role::Admin]);
/// Where Flinger lets managers do what the reference gives admins and agents.
const AGENT_DATA: May = May::Roles(&[Role::Admin, Role::Manager, Role::Agent]);

/// Every endpoint and who may call it: the *who* column of Testflinger's API in
/// `shared/design/testflinger-reference.md` (submitter, agent, anyone, admin and manager, owner),
/// and for Flinger's own endpoints (`[ext]`) what `docs/api.md` says. Written out here, not taken
/// from the gateway's OpenAPI list, so a role set changed in the code fails this test. Where
/// Flinger differs from the reference on purpose, the row says so (and
/// `docs/migrating-from-testflinger.md` lists it).
const WHO_MAY: &[(&str, &str, May)] = &[
    ("get", "/v1", May::Public),
    ("get", "/healthz", May::Public),
    ("get", "/readyz", May::Public),
    ("get", "/openapi.json", May::Public),
    ("post", "/oidc/auth-init", May::Public),
    ("post", "/oidc/auth-poll/{request_id}", May::Public),
    ("post", "/v1/job", SUBMITTER),
    ("get", "/v1/job", AGENT),
    ("get", "/v1/job/search", SUBMITTER),
    ("get", "/v1/job/{job_id}", SUBMITTER),
    ("post", "/v1/job/{job_id}/action", SUBMITTER),
    ("get", "/v1/job/{job_id}/position", SUBMITTER),
    ("get", "/v1/job/{job_id}/info", SUBMITTER),     // [ext]
    ("get", "/v1/job/{job_id}/estimate", SUBMITTER), // [ext]
    ("post", "/v1/job/{job_id}/attachments", SUBMITTER),
    ("get", "/v1/job/{job_id}/attachments", AGENT),
    ("post", "/v1/job/{job_id}/events", AGENT),
    ("get", "/v1/job/{job_id}/reservation", SUBMITTER), // [ext]
    ("post", "/v1/job/{job_id}/reservation/extend", SUBMITTER), // [ext]
    ("get", "/v1/result/{job_id}", ANYONE),
    ("post", "/v1/result/{job_id}", AGENT),
    ("get", "/v1/result/{job_id}/log/{log_type}", SUBMITTER),
    ("post", "/v1/result/{job_id}/log/{log_type}", AGENT),
    ("post", "/v1/result/{job_id}/artifact", AGENT),
    ("get", "/v1/result/{job_id}/artifact", SUBMITTER),
    ("get", "/v1/agents/data", SUBMITTER),
    // Differs: agents read their own record too (to keep an admin-set state across restarts).
    ("get", "/v1/agents/data/{name}", ANYONE),
    // Differs: managers set agents' state as admins do.
    ("post", "/v1/agents/data/{name}", AGENT_DATA),
    ("post", "/v1/agents/provision_logs/{name}", AGENT),
    ("get", "/v1/agents/provision_logs/{name}", SUBMITTER), // [ext]
    ("get", "/v1/agents/queues", SUBMITTER),
    // Differs: admins and managers may advertise queues and images as agents do.
    ("post", "/v1/agents/queues", AGENT_DATA),
    ("get", "/v1/agents/images/{queue}", SUBMITTER),
    ("post", "/v1/agents/images", AGENT_DATA),
    ("get", "/v1/queues/wait_times", SUBMITTER),
    ("get", "/v1/queues/{queue}/agents", SUBMITTER),
    ("get", "/v1/queues/{queue}/jobs", SUBMITTER),
    ("post", "/v1/oauth2/token", May::Public),
    ("post", "/v1/oauth2/refresh", May::Public),
    ("post", "/v1/oauth2/revoke", ADMIN),
    ("get", "/v1/client-permissions", MANAGER),
    ("get", "/v1/client-permissions/{client_id}", MANAGER),
    ("put", "/v1/client-permissions/{client_id}", MANAGER),
    ("delete", "/v1/client-permissions/{client_id}", MANAGER),
    ("post", "/v1/client-permissions/{client_id}/revoke-tokens", ADMIN), // [ext]
    ("get", "/v1/restricted-queues", MANAGER),
    ("get", "/v1/restricted-queues/{queue}", MANAGER),
    ("post", "/v1/restricted-queues/{queue}", MANAGER),
    ("delete", "/v1/restricted-queues/{queue}", MANAGER),
    ("get", "/v1/retention", MANAGER), // [ext]
    ("put", "/v1/secrets/{client_id}/{path}", May::Owner),
    ("delete", "/v1/secrets/{client_id}/{path}", May::Owner),
];

/// Whether `may` lets in a caller of `role` (`None`: anonymous, with anonymous use `anonymous`).
fn allowed(may: May, role: Option<Role>, anonymous: bool) -> bool {
    match (may, role) {
        (May::Public, _) => true,
        (May::Owner, r) => r.is_some_and(|r| r != Role::Agent),
        (May::Roles(roles), Some(r)) => roles.contains(&r),
        (May::Roles(roles), None) => anonymous && roles.contains(&Role::Contributor),
    }
}

/// A concrete path for a template, for a caller named `me`.
fn concrete(path: &str, me: &str) -> String {
    path.replace("{job_id}", &Uuid::new_v4().to_string())
        .replace("{name}", "matrix-agent")
        .replace("{queue}", "matrix-q")
        .replace("{client_id}", me)
        .replace("{path}", "ci/token")
        .replace("{log_type}", "output")
}

pub(crate) async fn call_every_operation(
    app: &TestApp,
    who_am_i: &str,
    token: Option<&str>,
    role: Option<Role>,
    anonymous: bool,
) {
    // Public operations take no token and are tested on their own.
    for (method, template, may) in WHO_MAY.iter().filter(|(_, _, m)| !matches!(m, May::Public)) {
        let path = concrete(template, who_am_i);
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut req = app.http.request(m, app.url(&path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if *method != "get" {
            req = req.json(&json!({}));
        }
        let status = app.send(req).await.status().as_u16();
        let label = format!("{method} {template} as {who_am_i} ({role:?})");
        if allowed(*may, role, anonymous) {
            assert!(status != 401 && status != 403, "{label}: refused with {status}");
        } else if role.is_none() {
            assert_eq!(status, 401, "{label}");
        } else {
            assert_eq!(status, 403, "{label}");
        }
    }
}

#[test]
fn the_role_table_covers_every_documented_operation_and_agrees_with_the_document() {
    let documented: std::collections::BTreeSet<(String, String)> = openapi::operations()
        .iter()
        .map(|o| (o.method.to_owned(), o.path.to_owned()))
        .collect();
    let tabled: std::collections::BTreeSet<(String, String)> = WHO_MAY
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, tabled,
        "the OpenAPI document and the role table list other operations"
    );
    // The document's *who* says the same as the table.
    for op in openapi::operations() {
        let (_, _, may) = WHO_MAY
            .iter()
            .find(|(m, p, _)| *m == op.method && *p == op.path)
            .unwrap();
        let same = match (op.who, may) {
            (Who::Public, May::Public) => true,
            (Who::Submitter, May::Owner) => op.path.starts_with("/v1/secrets/"),
            (who, May::Roles(roles)) => {
                let doc: &[Role] = match who {
                    Who::Submitter => &[Role::Admin, Role::Manager, Role::Contributor],
                    Who::Agent => &[Role::Agent],
                    Who::AgentData => &[Role::Admin, Role::Manager, Role::Agent],
                    Who::Anyone => &[Role::Admin, Role::Manager, Role::Contributor, Role::Agent],
                    Who::Manager => &[Role::Admin, Role::Manager],
                    Who::Admin => &[Role::Admin],
                    Who::Public => &[],
                };
                doc == *roles
            }
            _ => false,
        };
        assert!(
            same,
            "{} {}: the document says {:?}, the table {may:?}",
            op.method, op.path, op.who
        );
    }
}

#[tokio::test]
async fn every_role_is_checked_on_every_endpoint() {
    let app = TestApp::spawn_with(|c| c.scheduler_timeout = Duration::from_millis(300)).await;
    app.heartbeat("matrix-agent", &["matrix-q"], AgentState::Waiting, Millis::now())
        .await;
    let agent = app.client("matrix-ag", "agent", json!({})).await;
    let contributor = app.client("matrix-co", "contributor", json!({})).await;
    let manager = app.client("matrix-ma", "manager", json!({})).await;
    let admin = app.admin_token().await;
    call_every_operation(&app, "anonymous", None, None, true).await;
    call_every_operation(&app, "matrix-ag", Some(&agent), Some(Role::Agent), true).await;
    call_every_operation(
        &app,
        "matrix-co",
        Some(&contributor),
        Some(Role::Contributor),
        true,
    )
    .await;
    call_every_operation(&app, "matrix-ma", Some(&manager), Some(Role::Manager), true).await;
    call_every_operation(&app, ADMIN_ID, Some(&admin), Some(Role::Admin), true).await;
    app.stop().await;
}

#[tokio::test]
async fn without_anonymous_use_every_guarded_endpoint_needs_a_token() {
    let app = TestApp::spawn_with(|c| c.auth.allow_anonymous = false).await;
    call_every_operation(&app, "anonymous", None, None, false).await;
    assert_eq!(app.get("/v1/").await.status(), 200, "the banner stays public");
    let admin = app.admin_token().await;
    assert_eq!(app.get_as(&admin, "/v1/agents/data").await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn anonymous_agents_may_use_agent_endpoints_only_when_allowed() {
    let app = TestApp::spawn_with(|c| c.auth.allow_anonymous_agents = true).await;
    let job = app.insert_job(json!({"job_queue": "q1"}), |_| {}).await;
    let r = app
        .post_json(
            &format!("/v1/result/{}", job.job_id),
            &json!({"status": {"test": 0}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .post_json("/v1/restricted-queues/q1", &json!({"client_id": "x"}))
        .await;
    assert_eq!(r.status(), 401, "still not a manager");
    app.stop().await;
}

fn now_secs() -> i64 {
    Millis::now().0 / 1000
}

fn perms(role: Role) -> Permissions {
    Permissions {
        client_id: "forger".into(),
        role,
        max_priority: BTreeMap::new(),
        allowed_queues: vec![],
        max_reservation_time: BTreeMap::new(),
    }
}

#[tokio::test]
async fn expired_tampered_and_foreign_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let ours = Tokens::new(
        SIGNING_KEY.as_bytes(),
        Duration::from_secs(600),
        Duration::from_secs(60),
    );
    let expired = ours.sign(&Claims {
        exp: now_secs() - 120,
        iat: now_secs() - 720,
        sub: "access_token".into(),
        permissions: perms(Role::Admin),
    });
    let r = app.get_as(&expired, "/v1/agents/data").await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "Token has expired");

    let valid = ours.issue(&perms(Role::Contributor), now_secs());
    assert_eq!(app.get_as(&valid, "/v1/agents/data").await.status(), 200);
    // The bare token works too (Testflinger's CLI sends no "Bearer").
    let r = app
        .send(
            app.http
                .get(app.url("/v1/agents/data"))
                .header("authorization", &valid),
        )
        .await;
    assert_eq!(r.status(), 200);

    // A contributor that edits its token into an admin breaks the signature.
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: Value = serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
    payload["permissions"]["role"] = json!("admin");
    parts[1] = b64.encode(serde_json::to_vec(&payload).unwrap());
    let tampered = parts.join(".");
    let r = app.get_as(&tampered, "/v1/client-permissions").await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "Invalid Token");

    let foreign = Tokens::new(
        b"another lab's key",
        Duration::from_secs(600),
        Duration::from_secs(60),
    )
    .issue(&perms(Role::Admin), now_secs());
    assert_eq!(app.get_as(&foreign, "/v1/client-permissions").await.status(), 403);
    assert_eq!(app.get_as("garbage", "/v1/agents/data").await.status(), 403);
    app.stop().await;
}

#[tokio::test]
async fn login_refresh_and_revoke() {
    let app = TestApp::spawn().await;
    // No credentials, wrong ones, an unknown client: 401.
    assert_eq!(
        app.send(app.http.post(app.url("/v1/oauth2/token")))
            .await
            .status(),
        401
    );
    let r = app
        .send(
            app.http
                .post(app.url("/v1/oauth2/token"))
                .basic_auth(ADMIN_ID, Some("wrong")),
        )
        .await;
    assert_eq!(r.status(), 401);
    let r = app
        .send(
            app.http
                .post(app.url("/v1/oauth2/token"))
                .basic_auth("nobody", Some("whatever-secret")),
        )
        .await;
    assert_eq!(r.status(), 401);

    let admin = app.admin_token().await;
    let ci = app
        .client(
            "ci-bot",
            "contributor",
            json!({"max_priority": {"*": 3}, "max_reservation_time": {"q": 36000}}),
        )
        .await;
    // The CLI reads the permissions claim without verifying the signature.
    let payload = ci.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "access_token");
    assert_eq!(
        claims["permissions"],
        json!({"client_id": "ci-bot", "role": "contributor", "max_priority": {"*": 3},
               "allowed_queues": [], "max_reservation_time": {"q": 36000}})
    );
    assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() == 600);

    let (_, refresh) = app.login("ci-bot", "ci-bot-secret-0123456789").await;
    let r = app
        .post_json("/v1/oauth2/refresh", &json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(
        body.get("refresh_token").is_none(),
        "refresh tokens are not rotated"
    );
    let fresh = body["access_token"].as_str().unwrap();
    assert_eq!(app.get_as(fresh, "/v1/agents/data").await.status(), 200);

    assert_eq!(
        validation_detail(app.post_json("/v1/oauth2/refresh", &json!({})).await).await["refresh_token"],
        json!(["Missing data for required field."])
    );
    assert_eq!(
        app.post_json("/v1/oauth2/refresh", &json!({"refresh_token": "nope"}))
            .await
            .status(),
        400
    );
    let r = app
        .post_json_as(&ci, "/v1/oauth2/revoke", &json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status(), 403, "only admins revoke");
    let r = app
        .post_json_as(&admin, "/v1/oauth2/revoke", &json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "OK"}));
    assert_eq!(
        app.post_json_as(&admin, "/v1/oauth2/revoke", &json!({"refresh_token": refresh}))
            .await
            .status(),
        400
    );
    assert_eq!(
        app.post_json_as(&admin, "/v1/oauth2/revoke", &json!({"refresh_token": "x"}))
            .await
            .status(),
        400
    );
    let r = app
        .post_json("/v1/oauth2/refresh", &json!({"refresh_token": refresh}))
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "Refresh token revoked."
    );
    app.stop().await;
}

#[tokio::test]
async fn client_secrets_are_stored_hashed_and_never_shown() {
    let app = TestApp::spawn().await;
    let _ = app
        .client("hashed", "contributor", json!({"email": "h@example.com"}))
        .await;
    let stored = app.store_client("hashed").await;
    let hash = stored.secret_hash.expect("a hash");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("hashed-secret"), "not the secret");
    let admin = app.admin_token().await;
    let text = app
        .get_as(&admin, "/v1/client-permissions")
        .await
        .text()
        .await
        .unwrap();
    assert!(!text.contains("argon2") && !text.contains("secret"), "{text}");
    let one: Value = app
        .get_as(&admin, "/v1/client-permissions/hashed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        one,
        json!({"client_id": "hashed", "role": "contributor", "max_priority": {}, "max_reservation_time": {},
               "allowed_queues": [], "email": "h@example.com"})
    );
    assert_eq!(
        app.get_as(&admin, "/v1/client-permissions/nobody").await.status(),
        404
    );
    app.stop().await;
}

#[tokio::test]
async fn managers_manage_clients_up_to_their_own_rank() {
    let app = TestApp::spawn().await;
    let admin = app.admin_token().await;
    let manager = app.client("mgr", "manager", json!({})).await;
    let put = |token: String, id: &'static str, body: Value| {
        let app = &app;
        async move {
            app.put_json_as(&token, &format!("/v1/client-permissions/{id}"), &body)
                .await
        }
    };
    let r = put(
        manager.clone(),
        "newbie",
        json!({"client_secret": "newbie-secret-0123456", "role": "contributor"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "Created permissions for client 'newbie'");
    let r = put(manager.clone(), "newbie", json!({"max_priority": {"q": 7}})).await;
    assert_eq!(r.text().await.unwrap(), "Updated permissions for client 'newbie'");
    assert_eq!(app.store_client("newbie").await.max_priority.get("q"), Some(&7));
    assert_eq!(
        app.store_client("newbie").await.role,
        Role::Contributor,
        "fields not given are kept"
    );

    assert_eq!(
        put(
            manager.clone(),
            "boss",
            json!({"client_secret": "boss-secret-01234567", "role": "admin"})
        )
        .await
        .status(),
        403
    );
    assert_eq!(
        put(manager.clone(), "nosecret", json!({"role": "contributor"}))
            .await
            .status(),
        400
    );
    let detail =
        validation_detail(put(manager.clone(), "short", json!({"client_secret": "short"})).await).await;
    assert!(detail["client_secret"].is_array(), "{detail}");
    let detail = validation_detail(
        put(
            manager.clone(),
            "badrole",
            json!({"client_secret": "x".repeat(20), "role": "god"}),
        )
        .await,
    )
    .await;
    assert!(detail["role"].is_array(), "{detail}");
    let _ = app.client("peer-admin", "admin", json!({})).await;
    assert_eq!(
        put(manager.clone(), "peer-admin", json!({"max_priority": {}}))
            .await
            .status(),
        403,
        "an admin is above a manager"
    );
    // A manager may not reset another manager's secret or permissions, only its own; admins may.
    let _ = app.client("other-mgr", "manager", json!({})).await;
    assert_eq!(
        put(
            manager.clone(),
            "other-mgr",
            json!({"client_secret": "taken-over-0123456789"})
        )
        .await
        .status(),
        403,
        "managers are peers"
    );
    app.login("other-mgr", "other-mgr-secret-0123456789").await;
    assert_eq!(
        put(manager.clone(), "mgr", json!({"max_priority": {"q": 3}}))
            .await
            .status(),
        200,
        "a manager may edit itself"
    );
    assert_eq!(
        put(admin.clone(), "other-mgr", json!({"max_priority": {"q": 1}}))
            .await
            .status(),
        200
    );
    assert_eq!(
        put(admin.clone(), "peer-admin", json!({"max_priority": {"q": 1}}))
            .await
            .status(),
        200,
        "admins manage admins"
    );
    // The bootstrap admin cannot be changed or deleted through the API.
    assert_eq!(
        put(admin.clone(), ADMIN_ID, json!({"role": "contributor"}))
            .await
            .status(),
        422
    );
    assert_eq!(
        app.delete_as(Some(&admin), &format!("/v1/client-permissions/{ADMIN_ID}"), None)
            .await
            .status(),
        422
    );
    // Managers delete clients ranked below them; admins any (but the bootstrap admin).
    let delete = |token: String, id: &'static str| {
        let app = &app;
        async move {
            app.delete_as(Some(&token), &format!("/v1/client-permissions/{id}"), None)
                .await
                .status()
        }
    };
    let contributor = app.client("contrib", "contributor", json!({})).await;
    assert_eq!(delete(contributor, "newbie").await, 403, "contributors do not");
    assert_eq!(delete(manager.clone(), "peer-admin").await, 403, "not an admin");
    assert_eq!(
        delete(manager.clone(), "other-mgr").await,
        403,
        "not another manager"
    );
    assert_eq!(delete(manager.clone(), "newbie").await, 200);
    assert_eq!(delete(manager.clone(), "newbie").await, 404);
    assert_eq!(delete(admin.clone(), "other-mgr").await, 200);
    assert_eq!(delete(admin.clone(), "peer-admin").await, 200);
    let r = app
        .send(
            app.http
                .post(app.url("/v1/oauth2/token"))
                .basic_auth("newbie", Some("newbie-secret-0123456")),
        )
        .await;
    assert_eq!(r.status(), 401, "a deleted client cannot log in");
    app.stop().await;
}

#[tokio::test]
async fn priority_and_long_reservations_need_permission() {
    let app = TestApp::spawn().await;
    app.declare_class("q").await;
    app.declare_class("other").await;
    let ci = app
        .client(
            "prio",
            "contributor",
            json!({"max_priority": {"*": 5, "q": 20}, "max_reservation_time": {"q": 36000}}),
        )
        .await;
    let plain = app.client("plain", "contributor", json!({})).await;

    let r = app
        .post_json("/v1/job", &json!({"job_queue": "q", "job_priority": 1}))
        .await;
    assert_eq!(r.status(), 401, "anonymous priority");
    assert!(
        r.json::<Value>().await.unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("priority")
    );
    assert_eq!(
        app.post_json_as(&plain, "/v1/job", &json!({"job_queue": "q", "job_priority": 1}))
            .await
            .status(),
        403
    );
    assert_eq!(
        app.post_json_as(&ci, "/v1/job", &json!({"job_queue": "q", "job_priority": 20}))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_json_as(&ci, "/v1/job", &json!({"job_queue": "q", "job_priority": 21}))
            .await
            .status(),
        403
    );
    assert_eq!(
        app.post_json_as(&ci, "/v1/job", &json!({"job_queue": "other", "job_priority": 5}))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_json_as(&ci, "/v1/job", &json!({"job_queue": "other", "job_priority": 6}))
            .await
            .status(),
        403
    );

    let long = |queue: &str, timeout: Value| json!({"job_queue": queue, "reserve_data": {"ssh_keys": ["lp:x"], "timeout": timeout}});
    assert_eq!(
        app.post_json("/v1/job", &long("q", json!(6 * 3600)))
            .await
            .status(),
        200,
        "6 h is free"
    );
    assert_eq!(
        app.post_json("/v1/job", &long("q", json!("7h"))).await.status(),
        401
    );
    assert_eq!(
        app.post_json_as(&plain, "/v1/job", &long("q", json!("7h")))
            .await
            .status(),
        403
    );
    assert_eq!(
        app.post_json_as(&ci, "/v1/job", &long("q", json!("10h")))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.post_json_as(&ci, "/v1/job", &long("q", json!("10h1s")))
            .await
            .status(),
        403
    );
    assert_eq!(
        app.post_json_as(&ci, "/v1/job", &long("other", json!("7h")))
            .await
            .status(),
        403
    );
    app.stop().await;
}

#[tokio::test]
async fn restricted_queues_admit_only_their_owners_over_http() {
    let app = TestApp::spawn().await;
    app.declare_class("secure").await;
    app.heartbeat("dut-s", &["secure"], AgentState::Waiting, Millis::now())
        .await;
    let admin = app.admin_token().await;
    let owner = app.client("owner", "contributor", json!({})).await;
    let stranger = app.client("stranger", "contributor", json!({})).await;

    // Adding an owner: the client must exist, the queue must be known.
    assert_eq!(
        app.post_json_as(
            &admin,
            "/v1/restricted-queues/secure",
            &json!({"client_id": "ghost"})
        )
        .await
        .status(),
        404
    );
    assert_eq!(
        app.post_json_as(
            &admin,
            "/v1/restricted-queues/nowhere",
            &json!({"client_id": "owner"})
        )
        .await
        .status(),
        404
    );
    assert_eq!(
        validation_detail(
            app.post_json_as(&admin, "/v1/restricted-queues/secure", &json!({}))
                .await
        )
        .await["client_id"],
        json!(["Missing data for required field."])
    );
    assert_eq!(
        app.post_json_as(
            &owner,
            "/v1/restricted-queues/secure",
            &json!({"client_id": "owner"})
        )
        .await
        .status(),
        403
    );
    assert_eq!(
        app.post_json_as(
            &admin,
            "/v1/restricted-queues/secure",
            &json!({"client_id": "owner"})
        )
        .await
        .status(),
        200
    );

    let listed: Value = app
        .get_as(&admin, "/v1/restricted-queues")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!([{"queue": "secure", "owners": ["owner"]}]));
    let one: Value = app
        .get_as(&admin, "/v1/restricted-queues/secure")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one, json!({"queue": "secure", "owners": ["owner"]}));
    assert_eq!(
        app.get_as(&admin, "/v1/restricted-queues/open").await.status(),
        404
    );
    // Who owns what is for admins and managers only.
    for path in ["/v1/restricted-queues", "/v1/restricted-queues/secure"] {
        assert_eq!(app.get(path).await.status(), 401, "{path} anonymous");
        assert_eq!(
            app.get_as(&owner, path).await.status(),
            403,
            "{path} as a contributor"
        );
    }
    let agent: Value = app.get("/v1/agents/data/dut-s").await.json().await.unwrap();
    assert_eq!(agent["restricted_to"], json!({"secure": ["owner"]}));

    let job = json!({"job_queue": "secure"});
    assert_eq!(app.post_json("/v1/job", &job).await.status(), 401);
    assert_eq!(app.post_json_as(&stranger, "/v1/job", &job).await.status(), 403);
    let r = app.post_json_as(&owner, "/v1/job", &job).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.post_json_as(&admin, "/v1/job", &job).await.status(),
        200,
        "admins may use any queue"
    );
    // The owner's token says which queues it may use.
    let (token, _) = app.login("owner", "owner-secret-0123456789").await;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["permissions"]["allowed_queues"], json!(["secure"]));

    // The last owner leaving lifts the restriction.
    assert_eq!(
        app.delete_as(
            Some(&admin),
            "/v1/restricted-queues/secure",
            Some(&json!({"client_id": "owner"}))
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        app.delete_as(
            Some(&admin),
            "/v1/restricted-queues/secure",
            Some(&json!({"client_id": "owner"}))
        )
        .await
        .status(),
        404
    );
    assert_eq!(app.post_json("/v1/job", &job).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn only_the_submitter_a_manager_or_an_admin_may_cancel_a_job() {
    let app = TestApp::spawn().await;
    app.declare_class("q").await;
    let alice = app.client("alice", "contributor", json!({})).await;
    let bob = app.client("bob", "contributor", json!({})).await;
    let manager = app.client("boss", "manager", json!({})).await;
    let _served = app
        .fake_scheduler(|_| {
            SchedulerReply::Command(CommandReply::Done {
                detail: "ok".into(),
                reserve_until: None,
            })
        })
        .await;
    let id = job_id(
        &app.post_json_as(&alice, "/v1/job", &json!({"job_queue": "q"}))
            .await
            .json()
            .await
            .unwrap(),
    );
    let cancel = json!({"action": "cancel"});
    let path = format!("/v1/job/{id}/action");
    assert_eq!(app.post_json_as(&bob, &path, &cancel).await.status(), 403);
    assert_eq!(
        app.post_json(&path, &cancel).await.status(),
        403,
        "anonymous is not alice"
    );
    assert_eq!(app.post_json_as(&alice, &path, &cancel).await.status(), 200);
    assert_eq!(app.post_json_as(&manager, &path, &cancel).await.status(), 200);
    // A job submitted anonymously has no known owner: anyone let in may cancel it.
    let anon = job_id(
        &app.post_json("/v1/job", &json!({"job_queue": "q"}))
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(
        app.post_json(&format!("/v1/job/{anon}/action"), &cancel)
            .await
            .status(),
        200
    );
    // The scheduler is told who asked.
    app.stop().await;
}

#[tokio::test]
async fn only_the_submitter_a_manager_or_an_admin_may_extend_a_reservation() {
    let app = TestApp::spawn().await;
    app.declare_class("q").await;
    let alice = app
        .client(
            "alice",
            "contributor",
            json!({"max_reservation_time": {"q": 36000}}),
        )
        .await;
    let bob = app.client("bob", "contributor", json!({})).await;
    let mut served = app
        .fake_scheduler(|_| {
            SchedulerReply::Command(CommandReply::Done {
                detail: "ok".into(),
                reserve_until: None,
            })
        })
        .await;
    let id = job_id(
        &app.post_json_as(&alice, "/v1/job", &json!({"job_queue": "q", "reserve_data": {}}))
            .await
            .json()
            .await
            .unwrap(),
    );
    let path = format!("/v1/job/{id}/reservation/extend");
    assert_eq!(
        app.post_json_as(&bob, &path, &json!({"by": "1h"})).await.status(),
        403
    );
    assert_eq!(
        app.post_json_as(&alice, &path, &json!({"by": "1h"}))
            .await
            .status(),
        200
    );
    let SchedulerRequest::Extend(r) = served.recv().await.unwrap() else {
        panic!("not an extend")
    };
    assert_eq!(r.requested_by.as_deref(), Some("alice"));
    assert_eq!(
        r.max_total_secs,
        Some(36000),
        "alice's own limit travels with the request"
    );
    app.stop().await;
}

/// Uploads `bytes` as the attachments of `id` (raw body), with `token` if given.
async fn upload_attachments(app: &TestApp, token: Option<&str>, id: Uuid, bytes: &[u8]) -> u16 {
    let mut r = app
        .http
        .post(app.url(&format!("/v1/job/{id}/attachments")))
        .header("content-type", "application/gzip")
        .body(bytes.to_vec());
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    app.send(r).await.status().as_u16()
}

/// The attachments an agent would download for `id`.
async fn stored_attachments(app: &TestApp, agent: &str, id: Uuid) -> Option<Vec<u8>> {
    let r = app.get_as(agent, &format!("/v1/job/{id}/attachments")).await;
    match r.status().as_u16() {
        200 => Some(r.bytes().await.unwrap().to_vec()),
        204 => None,
        other => panic!("downloading attachments answered {other}"),
    }
}

/// Clears `awaiting_attachments`, as the scheduler does when asked to release the job.
async fn release(app: &TestApp, id: Uuid) {
    use flinger_store::{JobUpdate, Precondition};
    let mut update = JobUpdate::at(Millis::now());
    update.awaiting_attachments = Some(false);
    let released = app
        .store
        .update_job(
            id,
            &Precondition::state(broker_schema::JobState::Waiting),
            &update,
        )
        .await
        .unwrap();
    assert!(released.is_some(), "job released");
}

fn done() -> SchedulerReply {
    SchedulerReply::Command(CommandReply::Done {
        detail: "ok".into(),
        reserve_until: None,
    })
}

#[tokio::test]
async fn only_the_submitter_a_manager_or_an_admin_may_upload_a_jobs_attachments() {
    let app = TestApp::spawn().await;
    app.declare_class("q").await;
    let _served = app.fake_scheduler(|_| done()).await;
    let alice = app
        .client("alice", "contributor", json!({"max_priority": {"*": 10}}))
        .await;
    let bob = app.client("bob", "contributor", json!({})).await;
    let manager = app.client("boss", "manager", json!({})).await;
    let agent = app.client("att-agent", "agent", json!({})).await;
    // A priority only alice may set: a stranger's attachments would run with her privilege.
    let with_attachments =
        json!({"job_queue": "q", "job_priority": 5, "test_data": {"attachments": [{"agent": "a.txt"}]}});
    let submit = |token: String| {
        let (app, job) = (&app, &with_attachments);
        async move {
            job_id(
                &app.post_json_as(&token, "/v1/job", job)
                    .await
                    .json()
                    .await
                    .unwrap(),
            )
        }
    };

    let id = submit(alice.clone()).await;
    assert_eq!(upload_attachments(&app, Some(&bob), id, b"bob's").await, 403);
    assert_eq!(
        upload_attachments(&app, None, id, b"anonymous").await,
        403,
        "anonymous is not alice"
    );
    assert_eq!(stored_attachments(&app, &agent, id).await, None, "nothing stored");
    assert_eq!(upload_attachments(&app, Some(&alice), id, b"alice's").await, 200);
    assert_eq!(
        stored_attachments(&app, &agent, id).await.as_deref(),
        Some(&b"alice's"[..])
    );

    let other = submit(alice.clone()).await;
    assert_eq!(
        upload_attachments(&app, Some(&manager), other, b"boss's").await,
        200
    );
    assert_eq!(
        stored_attachments(&app, &agent, other).await.as_deref(),
        Some(&b"boss's"[..])
    );
    app.stop().await;
}

/// Testflinger's CLI uploads attachments without a token, even for a job it submitted with one:
/// that works as long as the job uses none of its submitter's privileges.
#[tokio::test]
async fn a_logged_in_clients_unprivileged_job_takes_attachments_uploaded_without_a_token() {
    let app = TestApp::spawn().await;
    app.declare_class("q").await;
    let _served = app.fake_scheduler(|_| done()).await;
    let alice = app.client("alice", "contributor", json!({})).await;
    let agent = app.client("att-agent", "agent", json!({})).await;
    let job = json!({"job_queue": "q", "test_data": {"attachments": [{"agent": "a.txt"}]}});
    let id = job_id(
        &app.post_json_as(&alice, "/v1/job", &job)
            .await
            .json()
            .await
            .unwrap(),
    );
    assert_eq!(
        upload_attachments(&app, None, id, b"from testflinger-cli").await,
        200
    );
    assert_eq!(
        stored_attachments(&app, &agent, id).await.as_deref(),
        Some(&b"from testflinger-cli"[..])
    );
    release(&app, id).await;
    // Once released, its archive is final for everyone but its owner's retry.
    assert_eq!(upload_attachments(&app, None, id, b"late").await, 422);
    assert_eq!(upload_attachments(&app, Some(&alice), id, b"retry").await, 200);
    assert_eq!(
        stored_attachments(&app, &agent, id).await.as_deref(),
        Some(&b"from testflinger-cli"[..])
    );
    app.stop().await;
}

#[tokio::test]
async fn an_anonymous_jobs_attachments_are_taken_only_while_it_waits_for_them() {
    let app = TestApp::spawn().await;
    app.declare_class("q").await;
    let _served = app.fake_scheduler(|_| done()).await;
    let bob = app.client("bob", "contributor", json!({})).await;
    let agent = app.client("att-agent", "agent", json!({})).await;
    let id = job_id(
        &app.post_json(
            "/v1/job",
            &json!({"job_queue": "q", "test_data": {"attachments": [{"agent": "a.txt"}]}}),
        )
        .await
        .json()
        .await
        .unwrap(),
    );
    // No owner: anyone let in may upload while the job waits (as in Testflinger).
    assert_eq!(upload_attachments(&app, None, id, b"first").await, 200);
    release(&app, id).await;

    for token in [None, Some(bob.as_str())] {
        assert_eq!(
            upload_attachments(&app, token, id, b"replacement").await,
            422,
            "a released job's archive is final"
        );
    }
    assert_eq!(
        stored_attachments(&app, &agent, id).await.as_deref(),
        Some(&b"first"[..])
    );
    app.stop().await;
}

#[tokio::test]
async fn the_admin_comes_from_configuration_and_nothing_else() {
    let app = TestApp::spawn_with(|c| {
        c.auth.admin_client_id = None;
        c.auth.admin_secret = None;
    })
    .await;
    assert!(app.store_clients().await.is_empty(), "no built-in account");
    let r = app
        .send(
            app.http
                .post(app.url("/v1/oauth2/token"))
                .basic_auth("admin", Some("admin")),
        )
        .await;
    assert_eq!(r.status(), 401);
    app.stop().await;
    // With configuration, the admin logs in with the configured secret.
    let app = TestApp::spawn().await;
    app.login(ADMIN_ID, ADMIN_SECRET).await;
    app.stop().await;
}

fn rabbitmqctl(args: &[&str]) -> std::io::Result<std::process::Output> {
    std::process::Command::new("rabbitmqctl").args(args).output()
}

/// A RabbitMQ user made for a test, deleted when the test ends, whether it passed or not.
struct RabbitUser(String);

impl RabbitUser {
    fn add(name: String, password: &str) -> RabbitUser {
        let user = RabbitUser(name);
        let out = rabbitmqctl(&["add_user", &user.0, password]).expect("rabbitmqctl runs");
        assert!(out.status.success(), "add_user: {out:?}");
        user
    }
}

impl Drop for RabbitUser {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_user", &self.0]);
    }
}

/// A RabbitMQ user allowed to publish to one class only: what `docs/amqp-producers.md` tells
/// operators to set up for producers of restricted queues. Needs `rabbitmqctl` on the broker's
/// host (the test script makes sure it is there); without it the test fails.
#[tokio::test]
async fn restricted_queues_are_enforced_by_rabbitmq_for_direct_producers() {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let status = rabbitmqctl(&["status"]);
    assert!(
        status.as_ref().is_ok_and(|o| o.status.success()),
        "rabbitmqctl is not usable here, so this test cannot set up a producer's RabbitMQ user \
         (run it where RabbitMQ runs, as scripts/test does): {status:?}"
    );
    let app = TestApp::spawn().await;
    app.declare_class("open-q").await;
    app.declare_class("secure-q").await;
    let ns = app.names.namespace().to_owned();
    let producer = RabbitUser::add(
        format!("producer-{}", &Uuid::new_v4().simple().to_string()[..8]),
        "producer-password",
    );
    let user = producer.0.clone();
    let ctl = rabbitmqctl;
    let ok = |o: std::io::Result<std::process::Output>| {
        let o = o.expect("rabbitmqctl runs");
        assert!(o.status.success(), "{o:?}");
    };
    let jobs = format!("^{}$", regex_escape(&app.names.jobs_exchange()));
    ok(ctl(&["set_permissions", "-p", "/", &user, "^$", &jobs, "^$"]));
    ok(ctl(&[
        "set_topic_permissions",
        "-p",
        "/",
        &user,
        &app.names.jobs_exchange(),
        "^open-q$",
        "^$",
    ]));

    let url = format!("amqp://{user}:producer-password@127.0.0.1:5672/%2f");
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("producer connects");
    let publish = |key: &'static str| {
        let conn = &conn;
        let exchange = app.names.jobs_exchange();
        async move {
            let ch = conn.create_channel().await.unwrap();
            ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
            let body = broker_schema::encode(&broker_schema::messages::Submission {
                job_id: Uuid::new_v4(),
                job: broker_schema::JobDefinition::parse(json!({"job_queue": key})).unwrap(),
                submitted_at: None,
                submitted_by: Some("producer".into()),
            });
            let confirm = ch
                .basic_publish(
                    exchange.as_str().into(),
                    key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    BasicProperties::default().with_content_type(broker_schema::CONTENT_TYPE.into()),
                )
                .await;
            match confirm {
                Ok(c) => c.await.map(|_| ()),
                Err(e) => Err(e),
            }
        }
    };
    assert!(publish("open-q").await.is_ok(), "allowed routing key");
    let refused = publish("secure-q").await;
    let err = refused.expect_err("a routing key outside the topic permission is refused");
    assert!(
        err.to_string().contains("ACCESS_REFUSED") || err.to_string().contains("access"),
        "{err}"
    );
    let _ = conn.close(200, "bye".into()).await;
    drop(producer);
    let _ = ns;
    app.stop().await;
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if ".^$*+?()[]{}|\\-".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

/// A scheduler's job-files token (the lease grant's credential) moves its own job's files, and
/// nothing else: not another job's, not other endpoints, not once its attempt is over.
#[tokio::test]
async fn a_jobs_files_token_moves_only_that_jobs_files_while_its_attempt_runs() {
    use broker_schema::JobState;
    use broker_schema::job_files::JobFilesKey;
    let app = TestApp::spawn().await;
    let running = |attempt| {
        move |j: &mut flinger_store::JobRecord| {
            j.state = JobState::Test;
            j.attempt = attempt;
        }
    };
    let job = app.insert_job(json!({"job_queue": "q"}), running(1)).await;
    let other = app.insert_job(json!({"job_queue": "q"}), running(1)).await;
    let ended = app
        .insert_job(json!({"job_queue": "q"}), |j| {
            j.state = JobState::Complete;
            j.attempt = 1;
        })
        .await;
    let key = JobFilesKey::new(SIGNING_KEY.as_bytes());
    let now = Millis::now();
    let until = now.plus(Duration::from_secs(30));
    let token = |id, attempt| key.issue(id, attempt, now, until);
    let upload = |id: Uuid, token: String| {
        app.http
            .post(app.url(&format!("/v1/result/{id}/artifact")))
            .bearer_auth(token)
            .header("content-type", "application/gzip")
            .body(b"archive".to_vec())
    };
    let t = token(job.job_id, 1);

    // Its own job's two operations.
    let r = app
        .get_as(&t, &format!("/v1/job/{}/attachments", job.job_id))
        .await;
    assert_eq!(r.status(), 204, "allowed (the job has none)");
    assert_eq!(app.send(upload(job.job_id, t.clone())).await.status(), 200);
    assert_eq!(
        app.get(&format!("/v1/result/{}/artifact", job.job_id))
            .await
            .bytes()
            .await
            .unwrap()
            .to_vec(),
        b"archive".to_vec()
    );

    // Another job's files, and every other endpoint: 403.
    let r = app
        .get_as(&t, &format!("/v1/job/{}/attachments", other.job_id))
        .await;
    assert_eq!(r.status(), 403);
    assert_eq!(app.send(upload(other.job_id, t.clone())).await.status(), 403);
    for path in [
        format!("/v1/result/{}/artifact", job.job_id),
        format!("/v1/job/{}", job.job_id),
        "/v1/agents/data".to_owned(),
    ] {
        assert_eq!(app.get_as(&t, &path).await.status(), 403, "{path}");
    }
    let r = app.post_json_as(&t, "/v1/job", &json!({"job_queue": "q"})).await;
    assert_eq!(r.status(), 403);

    // Not for another attempt of the job, nor once the job ended.
    let stale = token(job.job_id, 0);
    assert_eq!(app.send(upload(job.job_id, stale)).await.status(), 403);
    assert_eq!(
        app.send(upload(ended.job_id, token(ended.job_id, 1)))
            .await
            .status(),
        403
    );

    // Expired: 401, as an expired access token.
    let long_ago = Millis(now.0 - 3_600_000);
    let expired = key.issue(job.job_id, 1, long_ago, long_ago.plus(Duration::from_secs(30)));
    assert_eq!(app.send(upload(job.job_id, expired)).await.status(), 401);
    // Signed with another key: 403.
    let foreign = JobFilesKey::new(b"another lab's key").issue(job.job_id, 1, now, until);
    assert_eq!(app.send(upload(job.job_id, foreign)).await.status(), 403);
}
