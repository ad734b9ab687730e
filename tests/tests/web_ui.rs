//! The web UI in a real browser (headless chromium through chromedriver) against a running lab,
//! and its answers over plain HTTP. With `FLINGER_UI_SCREENSHOTS=docs/web-ui` the browser tests
//! save the screenshots `docs/web-ui.md` shows.

use broker_schema::Phase;
use broker_schema::messages::JobEventKind;
use flinger_tests::agent_double::AgentDouble;
use flinger_tests::browser::{Browser, WAIT};
use flinger_tests::{AgentSpec, Lab, eventually};
use serde_json::{Value, json};
use std::time::Duration;

const ADMIN: &str = "ui-admin";
const ADMIN_SECRET: &str = "ui-admin-secret-1234";

/// A lab with one fake device on queue `ui` and an admin client.
async fn lab(name: &str) -> Lab {
    Lab::builder()
        .name(name)
        .gateway_env("FLINGER_ADMIN_CLIENT_ID", ADMIN)
        .gateway_env("FLINGER_ADMIN_SECRET", ADMIN_SECRET)
        .agent(AgentSpec::fake("ui-dev-1", &["ui"]))
        .start()
        .await
}

/// A job whose test phase prints `lines` over `secs` seconds.
fn job(name: &str, lines: &[&str], secs: u32) -> Value {
    json!({
        "job_queue": "ui",
        "name": name,
        "tags": ["web-ui"],
        "provision_data": {"distro": "noble"},
        "test_data": {"test_cmds": "run-the-tests", "fake": {"duration": format!("{secs}s"), "output": lines}},
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_jobs_agents_and_queues_are_html_not_found_pages() {
    let lab = lab("ui404").await;
    lab.wait_agent_state("ui-dev-1", "waiting").await;
    for path in [
        "/jobs/00000000-0000-4000-8000-000000000000",
        "/jobs/not-a-job",
        "/agents/no-such-agent",
        "/queues/no-such-queue",
        "/no/such/page",
    ] {
        let (status, body) = lab.get_page(path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            body.contains("<h1 id=\"message-heading\">Not found</h1>"),
            "{path}: {body}"
        );
    }
    // The pages of what exists answer 200 (the positive control).
    for path in [
        "/",
        "/jobs",
        "/jobs?sort=queue",
        "/jobs?sort=state&state=ended&page=2",
        "/jobs?sort=submitted&submitter=nobody&tag=x",
        "/agents",
        "/agents/ui-dev-1",
        "/agents/ui-dev-1?days=30",
        "/queues",
        "/queues/ui",
    ] {
        let (status, body) = lab.get_page(path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // The API keeps its JSON 404s.
    let r = lab.http.get(lab.url("/v1/no-such-thing")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "Not found");
    let b = Browser::start(1100, 700).await;
    b.goto(&lab.url("/jobs/00000000-0000-4000-8000-000000000000"))
        .await;
    b.wait_text("#message-heading", "the not-found page", |t| t == "Not found")
        .await;
    b.screenshot("not-found").await;
    b.close().await;
    // At phone width no page is wider than the screen (wide tables scroll inside themselves).
    let phone = Browser::start(390, 844).await;
    for (path, shot) in [
        ("/", "phone-home"),
        ("/jobs", "phone-jobs"),
        ("/agents", "phone-agents"),
        ("/queues/ui", "phone-queue"),
    ] {
        phone.goto(&lab.url(path)).await;
        phone.wait_text("h1", "the page", |t| !t.is_empty()).await;
        let fits = phone
            .js("return document.documentElement.scrollWidth <= window.innerWidth;")
            .await;
        assert_eq!(fits, Value::Bool(true), "{path} is wider than a phone");
        phone.screenshot(shot).await;
    }
    phone.close().await;
    lab.stop().await;
}

/// The names in the rows of `/jobs` (as served with `query`), top to bottom.
async fn listed_names(lab: &Lab, query: &str) -> Vec<String> {
    let (status, body) = lab.get_page(&format!("/jobs?tag=web-ui{query}")).await;
    assert_eq!(status, 200, "{body}");
    let rows = body.split("<tr data-job=").skip(1);
    rows.map(|row| {
        row.split("<td>")
            .nth(1)
            .and_then(|c| c.split("</td>").next())
            .unwrap_or_default()
            .to_owned()
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_sort_by_each_column_from_its_header() {
    let lab = lab("uisort").await;
    // One agent runs them in turn: "a long" first and for longer, "z short" after it.
    let long = lab.submit(&job("a long", &["slow"], 2)).await;
    let short = lab.submit(&job("z short", &["quick"], 0)).await;
    for id in [long, short] {
        assert_eq!(
            lab.wait_done(id, Duration::from_secs(60)).await["state"],
            "complete"
        );
    }
    let (newest, oldest) = (vec!["z short", "a long"], vec!["a long", "z short"]);
    assert_eq!(listed_names(&lab, "").await, newest, "newest first by default");
    assert_eq!(listed_names(&lab, "&sort=submitted").await, oldest);
    assert_eq!(listed_names(&lab, "&sort=name").await, oldest);
    assert_eq!(
        listed_names(&lab, "&sort=duration").await,
        oldest,
        "longest first"
    );
    assert_eq!(
        listed_names(&lab, "&sort=started").await,
        newest,
        "last started first"
    );

    // In the browser: each header sorts, and the sorted column carries the arrow.
    let b = Browser::start(1100, 700).await;
    b.goto(&lab.url("/jobs?tag=web-ui")).await;
    b.wait_text("#sort-submitted", "the default order's arrow", |t| {
        t == "Submitted ▼"
    })
    .await;
    b.click("#sort-duration").await;
    b.wait_text("#sort-duration", "the duration order's arrow", |t| {
        t == "Duration ▼"
    })
    .await;
    b.wait_text(
        "#jobs-table tbody tr:first-child td:nth-child(2)",
        "the longest job first",
        |t| t == "a long",
    )
    .await;
    b.click("#sort-submitted").await;
    b.wait_text("#sort-submitted", "oldest first", |t| t == "Submitted ▲")
        .await;
    b.click("#sort-submitted").await;
    b.wait_text("#sort-submitted", "newest first again", |t| t == "Submitted ▼")
        .await;
    b.wait_text(
        "#jobs-table tbody tr:first-child td:nth-child(2)",
        "the newest job first",
        |t| t == "z short",
    )
    .await;
    b.close().await;
    lab.stop().await;
}

const HOSTILE: [&str; 3] = [
    "<script>window.__pwned = 'script'</script>",
    "<img src=x onerror=\"window.__pwned = 'img'\">",
    "\u{1b}[31mred alert\u{1b}[0m and \u{1b}[1;32mbold green\u{1b}[0m",
];

#[tokio::test(flavor = "multi_thread")]
async fn output_that_looks_like_html_is_shown_as_text_and_never_runs() {
    let lab = lab("uiescape").await;
    let mut lines = HOSTILE.to_vec();
    lines.push("the last line");
    let id = lab.submit(&job("<b>bold</b> name", &lines, 1)).await;
    let info = lab.wait_done(id, Duration::from_secs(60)).await;
    assert_eq!(info["state"], "complete", "{info}");
    // Over HTTP: escaped in the page as served.
    let (status, body) = lab.get_page(&format!("/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("&lt;script&gt;window.__pwned = &#39;script&#39;&lt;/script&gt;"),
        "{body}"
    );
    assert!(
        body.contains("&lt;img src=x onerror=&quot;window.__pwned = &#39;img&#39;&quot;&gt;"),
        "{body}"
    );
    assert!(body.contains("<span class=\"ansi-1\">red alert</span>"), "{body}");
    assert!(body.contains("&#60;b&#62;bold&#60;/b&#62; name"), "{body}");
    assert!(!body.contains("<b>bold</b>"), "{body}");
    assert!(!body.contains("<script>window"), "{body}");
    // The search box finds it by part of its name in any case, or by its tag.
    for (q, found) in [
        ("BOLD</b> NA", true),
        ("web-ui", true),
        ("web-u", false),
        ("nothing like it", false),
    ] {
        let path = format!(
            "/jobs?q={}",
            url::form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
        );
        let (status, list) = lab.get_page(&path).await;
        assert_eq!(status, 200);
        assert_eq!(list.contains(&id.to_string()), found, "{q}: {list}");
    }

    // In a browser: the text is there, nothing ran.
    let b = Browser::start(1100, 900).await;
    b.goto(&lab.url(&format!("/jobs/{id}"))).await;
    let out = b
        .wait_text("#out-output", "the output", |t| t.contains("the last line"))
        .await;
    assert!(
        out.contains("<script>window.__pwned = 'script'</script>"),
        "{out}"
    );
    assert!(
        out.contains("<img src=x onerror=\"window.__pwned = 'img'\">"),
        "{out}"
    );
    assert!(out.contains("red alert and bold green"), "{out}");
    assert!(!out.contains('\u{1b}'), "{out}");
    let red = b
        .js("return document.querySelector('#out-output .ansi-1').textContent;")
        .await;
    assert_eq!(red, "red alert");
    assert_eq!(
        b.js("return document.querySelectorAll('#out-output img, #out-output script').length;")
            .await,
        0
    );
    assert_eq!(b.js("return typeof window.__pwned;").await, "undefined");
    b.screenshot("job-escaped-output").await;
    b.close().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_jobs_output_and_completion_appear_without_reload() {
    let lab = lab("uilive").await;
    lab.wait_agent_state("ui-dev-1", "waiting").await;
    let b = Browser::start(1100, 900).await;
    b.goto(&lab.url("/jobs")).await;
    b.mark_page().await;
    let lines: Vec<String> = (1..=6).map(|i| format!("live line {i} of 6")).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let id = lab.submit(&job("live-job", &refs, 8)).await;
    // The new job's row appears on the open list without a reload.
    let link = format!("#jobs-table a[href='/jobs/{id}']");
    eventually(WAIT, "the new job on /jobs", || async {
        b.has(&link).await.then_some(())
    })
    .await;
    assert!(b.page_marked().await, "/jobs was reloaded");
    b.screenshot("jobs").await;
    lab.wait_state(id, &["test"], Duration::from_secs(60)).await;
    b.click(&link).await;
    b.wait_text("#job-state", "the job page", |s| s == "test").await;
    b.mark_page().await;
    let first = b
        .wait_text("#out-output", "the first line", |t| {
            t.contains("live line 1 of 6")
        })
        .await;
    assert!(
        !first.contains("live line 6 of 6"),
        "all output was there at once: {first}"
    );
    b.screenshot("job-running").await;
    let out = b
        .wait_text("#out-output", "the last line", |t| t.contains("live line 6 of 6"))
        .await;
    b.wait_text("#job-state", "the job to complete", |s| s == "complete")
        .await;
    assert!(b.page_marked().await, "the job page was reloaded");
    for l in &lines {
        assert_eq!(
            out.matches(l.as_str()).count(),
            1,
            "{l} not exactly once in {out}"
        );
    }
    b.screenshot("job-complete").await;
    b.close().await;
    lab.stop().await;
}

/// `pairs` as an HTML form's body.
fn form(req: reqwest::RequestBuilder, pairs: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    req.header("content-type", "application/x-www-form-urlencoded")
        .body(s.finish())
}

/// Signs `b` in as the lab's admin through the sign-in form.
async fn sign_in(b: &Browser, lab: &Lab) {
    b.goto(&lab.url("/login")).await;
    b.type_into("#client-id", ADMIN).await;
    b.type_into("#secret", ADMIN_SECRET).await;
    b.click("#sign-in-button").await;
    b.wait_text("#signed-in", "the signed-in client", |t| t.contains(ADMIN))
        .await;
}

/// The value of `name=` in the `set-cookie` headers of `r`.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.strip_prefix(&format!("{name}="))?
                .split(';')
                .next()
                .map(str::to_owned)
        })
        .filter(|v| !v.is_empty())
}

/// The `value` of the first hidden `csrf` input of a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_owned()
}

/// Signs in over plain HTTP (as a script would): the session cookie and its CSRF token.
async fn http_session(lab: &Lab) -> (String, String) {
    let page = lab.http.get(lab.url("/login")).send().await.unwrap();
    let login = set_cookie(&page, "flinger_login").expect("the sign-in form's cookie");
    let csrf = csrf_of(&page.text().await.unwrap());
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = form(
        no_redirect
            .post(lab.url("/login"))
            .header("cookie", format!("flinger_login={login}")),
        &[
            ("client_id", ADMIN),
            ("secret", ADMIN_SECRET),
            ("csrf", csrf.as_str()),
        ],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 303, "sign-in over HTTP");
    let session = set_cookie(&r, "flinger_session").expect("a session cookie");
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let session_cookie = cookies
        .iter()
        .find(|c| c.starts_with("flinger_session="))
        .unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session_cookie.contains(attr), "{session_cookie}");
    }
    let home = lab
        .http
        .get(lab.url("/"))
        .header("cookie", format!("flinger_session={session}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!home.contains(ADMIN_SECRET), "a page shows the secret");
    (session, csrf_of(&home))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_in_admin_cancels_a_running_job_and_forged_posts_are_refused() {
    let lab = lab("uicancel").await;
    let id = lab.submit(&job("to-cancel", &["started"], 600)).await;
    lab.wait_state(id, &["test"], Duration::from_secs(60)).await;
    let job_url = lab.url(&format!("/jobs/{id}"));

    // Signed out: the page shows the job, without a Cancel button.
    let b = Browser::start(1100, 900).await;
    b.goto(&job_url).await;
    b.wait_text("#job-state", "the job page", |s| s == "test").await;
    assert!(!b.has("#cancel").await, "a signed-out visitor sees Cancel");

    // A forged cancel: no session, then a real session without its CSRF token, or a wrong one.
    let cancel_url = format!("{job_url}/cancel");
    let r = form(lab.http.post(&cancel_url), &[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let (session, csrf) = http_session(&lab).await;
    let wrong: &[(&str, &str)] = &[("csrf", "not-the-token")];
    for fields in [&[][..], wrong] {
        let r = form(
            lab.http
                .post(&cancel_url)
                .header("cookie", format!("flinger_session={session}")),
            fields,
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status().as_u16(), 403, "{fields:?}");
    }
    assert!(!csrf.is_empty());
    // Signing out (over HTTP) ends that session: its cookie, kept, opens nothing any more.
    let signed_in = |html: &str| html.contains("id=\"signed-in\"");
    let page_with = |cookie: String| {
        let req = lab
            .http
            .get(&job_url)
            .header("accept", "text/html")
            .header("cookie", cookie);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    assert!(signed_in(&page_with(format!("flinger_session={session}")).await));
    let r = form(
        lab.http
            .post(lab.url("/logout"))
            .header("cookie", format!("flinger_session={session}")),
        &[("csrf", csrf.as_str())],
    )
    .send()
    .await
    .unwrap();
    assert!(r.status().is_success(), "sign-out: {}", r.status());
    assert!(!signed_in(&page_with(format!("flinger_session={session}")).await));
    let r = form(
        lab.http
            .post(&cancel_url)
            .header("cookie", format!("flinger_session={session}")),
        &[("csrf", csrf.as_str())],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 403, "a signed-out session cancelled");
    // None of those reached the scheduler: the job still runs.
    assert_eq!(lab.info(id).await.unwrap()["state"], "test");

    // Signed in: Cancel is there and works.
    sign_in(&b, &lab).await;
    b.screenshot("home").await;
    b.goto(&job_url).await;
    b.wait_text("#job-state", "the job page", |s| s == "test").await;
    b.screenshot("job-signed-in").await;
    b.click("#cancel").await;
    b.wait_text("#job-state", "the job to be cancelled", |s| s == "cancelled")
        .await;
    let info = lab.wait_done(id, Duration::from_secs(60)).await;
    assert_eq!(info["state"], "cancelled", "{info}");
    assert!(!b.has("#cancel").await, "an ended job offers Cancel");

    // Signing out ends the session: the button is gone, the sign-in link is back.
    b.click("#sign-out").await;
    b.wait_text("#sign-in", "the sign-in link", |t| t == "Sign in")
        .await;
    b.close().await;
    lab.stop().await;
}

async fn admin_token(lab: &Lab) -> String {
    let r: Value = lab
        .http
        .post(lab.url("/v1/oauth2/token"))
        .basic_auth(ADMIN, Some(ADMIN_SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["access_token"].as_str().expect("a token").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_put_in_maintenance_through_the_api_changes_on_agents_without_reload() {
    let lab = lab("uimaint").await;
    lab.wait_agent_state("ui-dev-1", "waiting").await;
    let b = Browser::start(1100, 700).await;
    b.goto(&lab.url("/agents")).await;
    let cell = "tr[data-agent='ui-dev-1'] .agent-state";
    b.wait_text(cell, "the agent waiting", |s| s == "waiting").await;
    b.mark_page().await;
    b.screenshot("agents").await;
    let r = lab
        .http
        .post(lab.url("/v1/agents/data/ui-dev-1"))
        .bearer_auth(admin_token(&lab).await)
        .json(&json!({"state": "maintenance", "comment": "cable swap"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    b.wait_text(cell, "the agent in maintenance", |s| s == "maintenance")
        .await;
    assert!(b.page_marked().await, "/agents was reloaded");
    b.screenshot("agents-maintenance").await;
    b.goto(&lab.url("/agents/ui-dev-1")).await;
    b.wait_text("#agent-state", "the agent page", |s| s == "maintenance")
        .await;
    b.screenshot("agent").await;
    b.goto(&lab.url("/queues/ui")).await;
    b.screenshot("queue").await;
    b.close().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reservation_counts_down_and_extend_moves_its_deadline() {
    let lab = lab("uireserve").await;
    let id = lab
        .submit(&json!({"job_queue": "ui", "name": "reserved", "reserve_data": {"timeout": 600}}))
        .await;
    lab.wait_state(id, &["reserve"], Duration::from_secs(60)).await;
    let b = Browser::start(1100, 900).await;
    sign_in(&b, &lab).await;
    b.goto(&lab.url(&format!("/jobs/{id}"))).await;
    let left = b
        .wait_text("#reservation-left", "the countdown", |t| t.contains(':'))
        .await;
    // It counts down by itself: a later reading is smaller.
    let secs = |t: &str| -> u64 {
        t.split(':')
            .fold(0, |acc, p| acc * 60 + p.trim().parse::<u64>().unwrap_or(0))
    };
    let first = secs(&left);
    assert!((500..=600).contains(&first), "{left}");
    b.wait_text("#reservation-left", "the countdown to move", |t| secs(t) < first)
        .await;
    let until = b.text("#reservation-until").await.unwrap();
    b.screenshot("job-reserved").await;
    b.click("#extend").await;
    let later = b
        .wait_text("#reservation-until", "the new deadline", |t| t != until)
        .await;
    assert!(later > until, "{until} → {later}");
    b.wait_text("#reservation-left", "the longer countdown", |t| secs(t) > 3600)
        .await;
    b.click("#cancel").await;
    let info = lab.wait_done(id, Duration::from_secs(60)).await;
    assert_eq!(info["state"], "cancelled", "{info}");
    b.close().await;
    lab.stop().await;
}

/// Records, in the page, the order in which the test phase's last line and the cleanup state
/// first show (`window.__order`); both in one change would be `together`.
const ORDER_WATCH: &str = r#"
window.__order = [];
const look = () => {
  const out = document.getElementById('out-output').textContent.includes('the last test line');
  const state = document.getElementById('job-state');
  const cleanup = state !== null && state.textContent === 'cleanup';
  const o = window.__order;
  const newLine = out && !o.includes('last line') && !o.includes('together');
  const newState = cleanup && !o.includes('cleanup') && !o.includes('together');
  if (newLine && newState) { o.push('together'); }
  else if (newLine) { o.push('last line'); }
  else if (newState) { o.push('cleanup'); }
};
new MutationObserver(look).observe(document.body, {childList: true, subtree: true, characterData: true});
"#;

/// The scheduler stores output and states from two queues, so the record can reach the next
/// phase before the previous phase's last line is stored, and a page that joined late gets
/// that line from the store only. An agent double sends the move to cleanup, then holds the
/// test phase's last line back until the page's stream has held its summary (its gateway says
/// so at debug level): the page still shows the line before the state turns `cleanup`.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_page_shows_a_phase_output_before_the_next_phase_state() {
    let lab = Lab::builder()
        .name("uilate")
        // The double does not renew its lease: a lease that outlasts the test.
        .scheduler_arg("--lease-secs", "300")
        .gateway_env("FLINGER_LOG", "info,flinger_gateway::ui::stream=debug")
        .start()
        .await;
    let agent = AgentDouble::start(&lab.broker_url, &lab.names, "uilate").await;
    let id = lab
        .submit(&json!({"job_queue": "uilate", "test_data": {"test_cmds": "x"}}))
        .await;
    let grant = agent.lease_next().await;
    agent.phase_started(&grant, Phase::Test, 0).await;
    agent.output(&grant, 0, Phase::Test, "test line 1\n").await;
    let b = Browser::start(1100, 900).await;
    b.goto(&lab.url(&format!("/jobs/{id}"))).await;
    b.wait_text("#out-output", "the first line", |t| t.contains("test line 1"))
        .await;
    b.wait_text("#job-state", "the test phase", |s| s == "test").await;
    b.js(ORDER_WATCH).await;
    // The move to cleanup, two chunks in, before the second chunk.
    agent.phase_started(&grant, Phase::Cleanup, 2).await;
    lab.wait_state(id, &["cleanup"], WAIT).await;
    let gateway = lab.gateway.as_ref().expect("a gateway");
    eventually(WAIT, "the page's summary to wait for the output", || async {
        let log = gateway.log_text();
        (log.contains("summary waits for the output") && log.contains(&id.to_string())).then_some(())
    })
    .await;
    agent.output(&grant, 1, Phase::Test, "the last test line\n").await;
    b.wait_text("#job-state", "the cleanup state", |s| s == "cleanup")
        .await;
    assert_eq!(
        b.js("return window.__order;").await,
        json!(["last line", "cleanup"])
    );
    assert!(
        b.text("#out-output")
            .await
            .unwrap_or_default()
            .contains("the last test line"),
        "the line is shown"
    );
    agent.output(&grant, 2, Phase::Cleanup, "cleaning up\n").await;
    agent
        .finished_complete(&grant, 3, &[Phase::Test, Phase::Cleanup])
        .await;
    b.wait_text("#job-state", "the job to complete", |s| s == "complete")
        .await;
    b.close().await;
    agent.stop().await;
    lab.stop().await;
}

/// A job page opens with the end of a large output only, and links to the whole text; its
/// live stream goes on from the fragment after the last one shown.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_page_shows_the_end_of_a_large_output_and_links_to_the_whole() {
    let lab = Lab::builder()
        .name("uitail")
        // The double does not renew its lease: a lease that outlasts the test.
        .scheduler_arg("--lease-secs", "300")
        .start()
        .await;
    let agent = AgentDouble::start(&lab.broker_url, &lab.names, "uitail").await;
    let id = lab
        .submit(&json!({"job_queue": "uitail", "test_data": {"test_cmds": "x"}}))
        .await;
    let grant = agent.lease_next().await;
    agent
        .report(&grant, JobEventKind::PhaseStarted { phase: Phase::Test })
        .await;
    // 40 chunks of 64 KiB (as agents ship them at most), then 1000 short lines.
    let mut whole = String::new();
    let mut seq = 0;
    for i in 0..40 {
        let mut chunk = format!("BIG-{i:02} ");
        chunk.push_str(&"x".repeat(64 * 1024 - chunk.len() - 1));
        chunk.push('\n');
        agent.output(&grant, seq, Phase::Test, &chunk).await;
        whole.push_str(&chunk);
        seq += 1;
    }
    for i in 0..1000 {
        let line = format!("short line {i:04}\n");
        agent.output(&grant, seq, Phase::Test, &line).await;
        whole.push_str(&line);
        seq += 1;
    }
    // Once every chunk is stored, the page's live stream starts after the last one.
    let cursor = format!("cursor={}.{seq}.0", grant.attempt);
    let html = eventually(WAIT, "the page to show the whole tail", || async {
        let (status, html) = lab.get_page(&format!("/jobs/{id}")).await;
        (status == 200 && html.contains(&cursor)).then_some(html)
    })
    .await;
    assert!(
        html.len() < 200 * 1024,
        "the page carries {} bytes of a {}-byte output",
        html.len(),
        whole.len()
    );
    assert!(html.contains("short line 0999"), "the end is shown");
    assert!(!html.contains("BIG-00"), "the start is not");
    let link = format!("/jobs/{id}/output");
    assert!(
        html.contains(&format!("href=\"{link}\"")),
        "a link to the whole output"
    );
    let r = lab.http.get(lab.url(&link)).send().await.expect("GET");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "text/plain; charset=utf-8"
    );
    assert!(r.text().await.unwrap() == whole, "the whole output, as shipped");
    agent.stop().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_page_reconnects_across_a_gateway_restart_without_gaps_or_repeats() {
    let mut lab = lab("uirestart").await;
    let lines: Vec<String> = (1..=20).map(|i| format!("restart line {i:02} of 20")).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let id = lab.submit(&job("restart", &refs, 16)).await;
    lab.wait_state(id, &["test"], Duration::from_secs(60)).await;
    let b = Browser::start(1100, 900).await;
    b.goto(&lab.url(&format!("/jobs/{id}"))).await;
    b.wait_text("#out-output", "some output", |t| t.contains("restart line 02"))
        .await;
    b.mark_page().await;
    let gateway = lab.gateway.as_mut().expect("a gateway");
    assert_eq!(
        gateway.stop(Duration::from_secs(20)),
        Some(0),
        "the gateway did not stop cleanly"
    );
    gateway.restart();
    let out = b
        .wait_text("#out-output", "the output after the restart", |t| {
            t.contains("restart line 20 of 20")
        })
        .await;
    b.wait_text("#job-state", "the job to complete", |s| s == "complete")
        .await;
    assert!(b.page_marked().await, "the page was reloaded");
    for l in &lines {
        assert_eq!(
            out.matches(l.as_str()).count(),
            1,
            "{l} not exactly once in {out}"
        );
    }
    b.close().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_anonymous_use_pages_ask_to_sign_in_and_a_session_opens_them() {
    let lab = Lab::builder()
        .name("uinoanon")
        .gateway_env("FLINGER_ADMIN_CLIENT_ID", ADMIN)
        .gateway_env("FLINGER_ADMIN_SECRET", ADMIN_SECRET)
        .gateway_env("FLINGER_ALLOW_ANONYMOUS", "false")
        .start()
        .await;
    let id = "00000000-0000-4000-8000-000000000000";
    for path in ["/", "/jobs", &format!("/jobs/{id}"), "/agents", "/queues"] {
        let (status, body) = lab.get_page(path).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("Sign in required"), "{path}: {body}");
        // Nor does its event stream answer.
        let live = lab
            .http
            .get(lab.url(&if path.starts_with("/jobs/") {
                format!("{path}/live")
            } else {
                format!("/live?page={path}")
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(live.status().as_u16(), 401, "{path}'s stream");
    }
    let (session, _) = http_session(&lab).await;
    let r = lab
        .http
        .get(lab.url("/jobs"))
        .header("cookie", format!("flinger_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("0 job(s)"));
    // A cookie that was tampered with is no session.
    let mut forged = session.clone();
    forged.replace_range(5..6, if &session[5..6] == "A" { "B" } else { "A" });
    let (status, _) = {
        let r = lab
            .http
            .get(lab.url("/jobs"))
            .header("cookie", format!("flinger_session={forged}"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(status, 401);
    lab.stop().await;
}
