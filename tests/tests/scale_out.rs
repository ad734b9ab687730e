//! Scaled out: several schedulers competing for the same queues and several stateless gateways
//! answering the same clients, with one scheduler killed under load. Nothing in Flinger may
//! assume one instance of anything but the agent per device.

use broker_schema::Phase;
use flinger_tests::{AgentSpec, Lab, eventually, invariants};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

/// Follows a job's output as a client does — long polls asking for the fragments after the last
/// one it got — sending each request to the next of `bases` in turn. Returns the text it saw
/// once the job has ended.
async fn follow(http: reqwest::Client, bases: Vec<String>, id: Uuid) -> String {
    let mut text = String::new();
    let mut next: i64 = 0;
    let mut ended = false;
    for turn in 0.. {
        let base = &bases[turn % bases.len()];
        let url = format!("{base}/v1/result/{id}/log/output?start_fragment={next}&wait=5");
        let answer: Value = http
            .get(&url)
            .send()
            .await
            .expect("GET log")
            .json()
            .await
            .expect("log JSON");
        let mut got = false;
        // Fragments are numbered across phases, so phases in run order are fragments in order.
        for phase in Phase::ALL {
            let Some(log) = answer["output"].get(phase.as_str()) else {
                continue;
            };
            let last = log["last_fragment_number"]
                .as_i64()
                .expect("last_fragment_number");
            if last >= next {
                text.push_str(log["log_data"].as_str().expect("log_data"));
                next = last + 1;
                got = true;
            }
        }
        if ended {
            return text;
        }
        if !got {
            // Nothing new: if the job has ended, one more read takes whatever came meanwhile.
            let info: Value = http
                .get(format!("{base}/v1/job/{id}/info"))
                .send()
                .await
                .expect("GET info")
                .json()
                .await
                .expect("info JSON");
            ended = matches!(info["state"].as_str(), Some("complete" | "cancelled" | "failed"));
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_schedulers_and_two_gateways_lose_nothing_when_a_scheduler_is_killed() {
    let mut builder = Lab::builder()
        .name("scaleout")
        .schedulers(3)
        .gateways(2)
        .scheduler_arg("--lease-secs", "15")
        .scheduler_arg("--renew-secs", "1");
    for i in 0..4 {
        builder = builder.agent(AgentSpec::fake(&format!("so{i}"), &["scaleout"]));
    }
    let mut lab = builder.start().await;
    let bases = [lab.base.clone(), lab.more_bases[0].clone()];
    let lines = |i: usize| (0..6).map(|k| format!("job {i} line {k}")).collect::<Vec<_>>();
    let mut ids = vec![];
    for i in 0..32 {
        let job = json!({"job_queue": "scaleout", "test_data": {"test_cmds": format!("job {i}"), "fake": {"duration": "600ms", "output": lines(i)}}});
        // Submissions alternate between the gateways.
        let r = lab
            .http
            .post(format!("{}/v1/job", bases[i % 2]))
            .json(&job)
            .send()
            .await
            .expect("POST /v1/job");
        assert_eq!(r.status().as_u16(), 200);
        let body: Value = r.json().await.expect("json");
        ids.push(
            body["job_id"]
                .as_str()
                .and_then(|s| s.parse::<Uuid>().ok())
                .expect("job_id"),
        );
    }
    // Jobs that run around the kill, each followed through one gateway, the other, and both in
    // turn.
    let mut followers = vec![];
    for id in &ids[4..10] {
        for route in [vec![bases[0].clone()], vec![bases[1].clone()], bases.to_vec()] {
            followers.push((*id, tokio::spawn(follow(lab.http.clone(), route, *id))));
        }
    }
    eventually(Duration::from_secs(90), "some jobs to finish", || async {
        (lab.info(ids[3]).await?["state"] == "complete").then_some(())
    })
    .await;
    // The one to kill has taken part: it granted leases.
    assert!(
        lab.schedulers[0].log_text().contains("lease granted"),
        "{}",
        lab.log_tails(40)
    );
    lab.schedulers[0].crash();
    for id in &ids {
        let info = lab.wait_done(*id, Duration::from_secs(120)).await;
        assert_eq!(info["state"], "complete", "{info}\n{}", lab.log_tails(60));
    }
    // Each job ran its commands once: every line once, in its current attempt's output.
    for (i, id) in ids.iter().enumerate() {
        let output = lab.output(*id).await;
        for line in lines(i) {
            let printed = output.lines().filter(|l| *l == line).count();
            assert_eq!(printed, 1, "{line:?} in {output:?}");
        }
    }
    invariants::check(&lab.store, &ids).await;
    // Whichever gateways a follower asked, it saw the whole output, without a gap.
    for (id, follower) in followers {
        let followed = follower.await.expect("follower");
        assert_eq!(followed, lab.output(id).await, "output of {id} as followed");
    }
    lab.stop().await;
}
