//! The web UI in a real browser (headless chromium through chromedriver) against a running lab,
//! and its answers over plain HTTP. With `FLINGER_UI_SCREENSHOTS=docs/web-ui` the browser tests
//! save the screenshots `docs/web-ui.md` shows.

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

async fn get_html(lab: &Lab, path: &str) -> (u16, String) {
    let r = lab
        .http
        .get(lab.url(path))
        .header("accept", "text/html")
        .send()
        .await
        .expect("GET");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
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
        let (status, body) = get_html(&lab, path).await;
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
        "/agents",
        "/agents/ui-dev-1",
        "/queues",
        "/queues/ui",
    ] {
        let (status, body) = get_html(&lab, path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // The API keeps its JSON 404s.
    let r = lab.http.get(lab.url("/v1/no-such-thing")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["message"], "Not found");
    if std::env::var("FLINGER_UI_SCREENSHOTS").is_ok() {
        let b = Browser::start(1100, 700).await;
        b.goto(&lab.url("/jobs/00000000-0000-4000-8000-000000000000"))
            .await;
        b.screenshot("not-found").await;
        b.close().await;
    }
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
    let (status, body) = get_html(&lab, &format!("/jobs/{id}")).await;
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
