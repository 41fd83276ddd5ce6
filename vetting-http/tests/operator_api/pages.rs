//! Cursor pages over a few hundred runs: every run once, newest first, no
//! gap, no duplicate; filters; bad limits and cursors refused.

use std::collections::HashSet;

use super::*;

#[tokio::test]
async fn a_walk_over_the_run_pages_sees_every_run_once_in_order() {
    let h = harness().await;
    let operator = h.orchestrator.operator();
    let actor = Actor::operator("test");
    // paused, so that the dispatcher leaves the runs alone
    operator.pause_dispatch(&actor).await.unwrap();
    let mut hosts = Vec::new();
    for index in 0..30 {
        hosts.push(h.register(index).await);
    }
    for _round in 0..10 {
        for host in &hosts {
            let run = operator.start_run(host.id, &actor).await.unwrap();
            operator.cancel(&run.id, &actor, None).await.unwrap();
        }
    }
    let expected: Vec<String> = operator
        .list_runs(None)
        .await
        .unwrap()
        .into_iter()
        .map(|run| run.id)
        .collect();
    assert_eq!(expected.len(), 300);
    let viewer = h.token("eyes", "viewer").await;

    let walk = |query: String| {
        let h = &h;
        let viewer = viewer.clone();
        async move {
            let mut seen = Vec::new();
            let mut before: Option<String> = None;
            loop {
                let cursor = before
                    .as_ref()
                    .map(|cursor| format!("&before={cursor}"))
                    .unwrap_or_default();
                let page = h
                    .get(&format!("/api/v1/runs?limit=7{query}{cursor}"), &viewer)
                    .await;
                assert_eq!(page.status, 200, "{page:?}");
                let items = page.body["items"].as_array().unwrap();
                assert!(items.len() <= 7);
                for item in items {
                    seen.push(item["id"].as_str().unwrap().to_string());
                    assert!(item["host_name"].as_str().unwrap().starts_with('h'));
                }
                match page.body["next"].as_str() {
                    Some(next) => before = Some(next.to_string()),
                    None => break,
                }
            }
            seen
        }
    };
    let seen = walk(String::new()).await;
    assert_eq!(seen, expected, "every run once, newest first");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 300);

    let of_h3 = walk("&host=h3".into()).await;
    let expected_h3: Vec<String> = operator
        .list_runs(Some(hosts[3].id))
        .await
        .unwrap()
        .into_iter()
        .map(|run| run.id)
        .collect();
    assert_eq!(of_h3, expected_h3);
    assert_eq!(of_h3.len(), 10);
    assert_eq!(walk("&state=Cancelled".into()).await, expected);
    assert!(walk("&state=Queued".into()).await.is_empty());

    // what is refused
    for (query, status) in [
        ("limit=0", 422),
        ("limit=1001", 422),
        ("before=not-a-cursor!", 422),
        ("state=Sleeping", 400),
        ("host=nobody", 404),
        ("colour=red", 400),
        ("limit=-1", 400),
    ] {
        let answer = h.get(&format!("/api/v1/runs?{query}"), &viewer).await;
        assert_eq!(answer.status, status, "{query}: {answer:?}");
        assert!(answer.body["error"].is_string());
    }
    h.shutdown().await;
}
