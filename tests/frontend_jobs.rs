//! The jobs API the editor's queue and history panels use (`/api/jobs…`),
//! `/interrupt` and `POST /queue`: a participant sees and cancels their own
//! jobs only; another participant's ids answer 404.

mod support;

use comfy_multi::frontend::{run, FrontendState};
use comfy_multi::queue::{Outcome, Queue, QueueSettings};
use serde_json::{json, Value};
use support::RedisServer;
use tokio_util::sync::CancellationToken;

async fn setup() -> (RedisServer, Queue, String, String, tempfile::TempDir) {
    let redis = RedisServer::start();
    let queue = Queue::connect(
        &redis.url(),
        &support::unique_prefix(),
        QueueSettings::default(),
    )
    .await
    .unwrap();
    support::store_catalogue(&queue).await;
    let state = tempfile::tempdir().unwrap();
    let mut urls = vec![];
    for u in ["user07", "user08"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!("http://{}/{u}", listener.local_addr().unwrap()));
        let fs = FrontendState::new(
            u,
            queue.clone(),
            state.path().join("static"),
            state.path().join("users").join(u),
            1 << 20,
        );
        tokio::spawn(run(listener, fs, CancellationToken::new()));
    }
    let theirs = urls.pop().unwrap();
    let mine = urls.pop().unwrap();
    (redis, queue, mine, theirs, state)
}

fn prompt(n: u64) -> Value {
    json!({"prompt": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": n}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}}},
        "extra_data": {"extra_pnginfo": {"workflow": {"id": "wf-1"}}}})
}

#[tokio::test]
async fn the_jobs_api_lists_and_cancels_this_participants_jobs_only() {
    let (_r, queue, mine, theirs, _s) = setup().await;
    let http = reqwest::Client::new();
    let mut ids = vec![];
    for n in 0..3 {
        let r: Value = http
            .post(format!("{mine}/prompt"))
            .json(&prompt(n))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(r["prompt_id"].as_str().unwrap().to_string());
    }
    // One runs and finishes with an image; one is still waiting; one waits too.
    let l = queue.lease("gpu0").await.unwrap().unwrap();
    queue.start(&l.job_id, l.token).await.unwrap();
    let outputs =
        json!({"2": {"images": [{"filename": "t_00001_.png", "subfolder": "", "type": "output"}]}});
    queue
        .finish(
            &l.job_id,
            l.token,
            Outcome::Succeeded,
            &outputs,
            None,
            Some(1.5),
        )
        .await
        .unwrap();

    let all: Value = http
        .get(format!("{mine}/api/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["pagination"]["total"], 3);
    let done = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == l.job_id.as_str())
        .unwrap();
    assert_eq!(done["status"], "completed");
    assert_eq!(done["outputs_count"], 1);
    assert_eq!(done["preview_output"]["filename"], "t_00001_.png");
    assert_eq!(done["workflow_id"], "wf-1");
    assert!(done["create_time"].as_u64().unwrap() > 0);

    let pending: Value = http
        .get(format!(
            "{mine}/api/jobs?status=in_progress,pending&limit=200&offset=0"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pending["jobs"].as_array().unwrap().len(), 2);
    let page: Value = http
        .get(format!("{mine}/api/jobs?limit=1&sort_order=asc"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["jobs"][0]["id"], ids[0].as_str());
    assert_eq!(page["pagination"]["has_more"], true);
    for bad in ["status=bogus", "limit=0", "sort_by=x", "offset=-1"] {
        assert_eq!(
            http.get(format!("{mine}/api/jobs?{bad}"))
                .send()
                .await
                .unwrap()
                .status(),
            400,
            "{bad}"
        );
    }

    let one: Value = http
        .get(format!("{mine}/api/jobs/{}", l.job_id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["workflow"]["prompt"]["2"]["class_type"], "SaveImage");
    assert_eq!(one["outputs"], outputs);

    // Another participant: nothing listed, every id unknown, cancels refused.
    let other: Value = http
        .get(format!("{theirs}/api/jobs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(other["pagination"]["total"], 0);
    for id in &ids {
        assert_eq!(
            http.get(format!("{theirs}/api/jobs/{id}"))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        assert_eq!(
            http.post(format!("{theirs}/api/jobs/{id}/cancel"))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        assert_eq!(
            http.get(format!("{theirs}/history/{id}"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap(),
            json!({})
        );
    }
    let r: Value = http
        .post(format!("{theirs}/api/jobs/cancel"))
        .json(&json!({"job_ids": ids}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["cancelled"], false);
    http.post(format!("{theirs}/queue"))
        .json(&json!({"clear": true}))
        .send()
        .await
        .unwrap();
    http.post(format!("{theirs}/interrupt"))
        .send()
        .await
        .unwrap();
    let still: Value = http
        .get(format!("{mine}/api/jobs?status=pending"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        still["jobs"].as_array().unwrap().len(),
        2,
        "nothing of user07's was touched"
    );

    // The owner cancels: one by id, the rest by clearing the queue.
    let r: Value = http
        .post(format!("{mine}/api/jobs/{}/cancel", ids[1]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["cancelled"], true);
    http.post(format!("{mine}/queue"))
        .json(&json!({"clear": true}))
        .send()
        .await
        .unwrap();
    let cancelled: Value = http
        .get(format!("{mine}/api/jobs?status=cancelled"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["jobs"].as_array().unwrap().len(), 2);
    let r: Value = http
        .post(format!("{mine}/api/jobs/{}/cancel", l.job_id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["cancelled"], false, "a finished job is not cancelled");
    let r = http
        .post(format!("{mine}/api/jobs/cancel"))
        .json(&json!({"job_ids": ["nope"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn an_open_editor_socket_shows_the_participant_online_until_it_closes() {
    let (_r, queue, mine, _theirs, _s) = setup().await;
    assert!(queue.online().await.unwrap().is_empty());
    let (ws, _) = tokio_tungstenite::connect_async(format!(
        "{}/ws?clientId=abc",
        mine.replacen("http", "ws", 1)
    ))
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while queue.online().await.unwrap().get("user07") != Some(&1) {
        assert!(std::time::Instant::now() < deadline, "not online");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(queue.online().await.unwrap().get("user08"), None);
    drop(ws);
    while queue.online().await.unwrap().contains_key("user07") {
        assert!(
            std::time::Instant::now() < deadline,
            "still online after closing"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_submit_the_client_gave_up_on_and_retried_queues_one_job() {
    use tokio::io::AsyncWriteExt;
    let (_r, queue, mine, _theirs, _s) = setup().await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut body = prompt(1);
    body["prompt_id"] = json!(id);
    body["client_id"] = json!("editor-1");
    let body = body.to_string();
    let url = reqwest::Url::parse(&mine).unwrap();
    // The editor's request goes out whole, then the client gives up on it
    // (a timeout on a flaky network) without reading the answer — several
    // times, each perhaps queued or not.
    for _ in 0..3 {
        let mut tcp =
            tokio::net::TcpStream::connect((url.host_str().unwrap(), url.port().unwrap()))
                .await
                .unwrap();
        let req = format!(
            "POST {}/prompt HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            url.path(),
            body.len()
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        drop(tcp);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Its retry with the same prompt_id gets the one job, queued once.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{mine}/prompt"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["prompt_id"], id.as_str());
    let again: Value = http
        .post(format!("{mine}/prompt"))
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["number"], v["number"], "the same job both times");
    let waiting = queue.participant_queue("user07", 1).await.unwrap().waiting;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0].job_id, id);
    // The same id with another workflow is still refused.
    let mut other = prompt(2);
    other["prompt_id"] = json!(id);
    let r = http
        .post(format!("{mine}/prompt"))
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn an_editor_socket_that_stops_answering_pings_is_closed_and_its_participant_goes_offline() {
    use futures_util::StreamExt;
    let redis = RedisServer::start();
    let queue = Queue::connect(
        &redis.url(),
        &support::unique_prefix(),
        QueueSettings::default(),
    )
    .await
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_url = format!(
        "ws://{}/user07/ws?clientId=",
        listener.local_addr().unwrap()
    );
    let fs = FrontendState::new(
        "user07",
        queue.clone(),
        state.path().join("static"),
        state.path().join("users/user07"),
        1 << 20,
    )
    .with_socket_ping(std::time::Duration::from_millis(300));
    tokio::spawn(run(listener, fs, CancellationToken::new()));
    // A live editor keeps reading (and so answers every ping); a vanished
    // laptop reads nothing.
    let (mut live, _) = tokio_tungstenite::connect_async(format!("{ws_url}live"))
        .await
        .unwrap();
    let (mut gone, _) = tokio_tungstenite::connect_async(format!("{ws_url}gone"))
        .await
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut pings = 0;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(3000) {
            match tokio::time::timeout(std::time::Duration::from_millis(100), live.next()).await {
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_)))) => pings += 1,
                Ok(Some(Ok(_))) | Err(_) => {}
                Ok(None) | Ok(Some(Err(_))) => return (pings, false),
            }
        }
        (pings, true)
    });
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    // Reading now: the server's pings, then its close — it gave up on us.
    let mut closed = false;
    while let Ok(Some(m)) =
        tokio::time::timeout(std::time::Duration::from_secs(2), gone.next()).await
    {
        if matches!(
            m,
            Ok(tokio_tungstenite::tungstenite::Message::Close(_)) | Err(_)
        ) {
            closed = true;
            break;
        }
    }
    assert!(closed, "the silent socket was not closed");
    let (pings, still_open) = reader.await.unwrap();
    assert!(pings >= 3, "the live socket was pinged: {pings}");
    assert!(still_open, "the answering socket stayed open");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while queue.online().await.unwrap().get("user07") != Some(&1) {
        assert!(
            std::time::Instant::now() < deadline,
            "only the live one counts"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
