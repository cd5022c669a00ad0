//! Horizontal scale: three `crier serve` processes on one database under mixed load. Every
//! write is read back at once from another process (read-your-writes across processes),
//! and every subscriber of every process receives every notice once, in one order.

use std::time::Duration;

use eventstore::testing::TestDatabase;
use serde_json::json;

use crate::support::*;

const PROCESSES: usize = 3;
const WRITERS: usize = 6;
const UPDATES_PER_WRITER: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_answer_consistently_and_every_subscriber_hears_every_notice_in_order() {
    let db = TestDatabase::create().await;
    let mut apis = Vec::new();
    for _ in 0..PROCESSES {
        apis.push(Api::start(&db).await);
    }
    let bases: Vec<String> = apis.iter().map(|api| api.server.base.clone()).collect();
    let key = apis[0].key("publisher", None).await;
    let service = apis[1].service("Teams").await;

    // Two subscribers per process, connected before the first notice.
    let mut subscribers = Vec::new();
    for base in &bases {
        for _ in 0..2 {
            subscribers.push(SseClient::open(base, "", None, Some(0)).await);
        }
    }

    // Writers spread over the processes; each write is read back from the next process.
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let bases = bases.clone();
            let key = key.clone();
            let service = service.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let declared: serde_json::Value = http
                    .post(format!("{}/v1/incidents", bases[writer % PROCESSES]))
                    .bearer_auth(&key)
                    .json(&json!({
                        "title": format!("Outage {writer}"), "impact": "minor",
                        "message": "Investigating.",
                        "affected_services": [{"service_id": service, "status": "partial_outage"}],
                    }))
                    .send()
                    .await
                    .expect("declare")
                    .json()
                    .await
                    .expect("JSON");
                let id = declared["id"].as_str().expect("id").to_owned();
                for n in 0..UPDATES_PER_WRITER {
                    let via = &bases[(writer + n) % PROCESSES];
                    let written = http
                        .post(format!("{via}/v1/incidents/{id}/updates"))
                        .bearer_auth(&key)
                        .json(&json!({"status": "identified", "message": format!("{writer}: {n}")}))
                        .send()
                        .await
                        .expect("update");
                    assert_eq!(written.status(), 201);
                    let version = written.json::<serde_json::Value>().await.expect("JSON")
                        ["version"]
                        .as_u64()
                        .expect("version");
                    let elsewhere = &bases[(writer + n + 1) % PROCESSES];
                    let read: serde_json::Value = http
                        .get(format!("{elsewhere}/v1/incidents/{id}"))
                        .send()
                        .await
                        .expect("read")
                        .json()
                        .await
                        .expect("JSON");
                    assert!(
                        read["version"].as_u64() >= Some(version),
                        "process {elsewhere} served version {} after {via} acknowledged {version}",
                        read["version"]
                    );
                }
                id
            })
        })
        .collect();
    // Readers load the public documents of every process meanwhile.
    let readers: Vec<_> = bases
        .iter()
        .map(|base| {
            let base = base.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for _ in 0..30 {
                    for path in ["/api/v2/summary.json", "/v1/incidents", "/v1/feed.atom"] {
                        let answer = http
                            .get(format!("{base}{path}"))
                            .send()
                            .await
                            .expect("read");
                        assert_eq!(answer.status(), 200, "{base}{path}");
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    for reader in readers {
        reader.await.expect("reader");
    }

    // Every subscriber: the service, each declaration and each update, once, in one order.
    let notices = 1 + WRITERS * (1 + UPDATES_PER_WRITER);
    let mut orders = Vec::new();
    for subscriber in &mut subscribers {
        let mut ids = Vec::new();
        while ids.len() < notices {
            match subscriber.next(Duration::from_secs(30)).await {
                Some(message) => ids.push(message.id),
                None => break,
            }
        }
        assert_eq!(ids.len(), notices, "a subscriber missed notices");
        assert!(
            subscriber.next(Duration::from_millis(500)).await.is_none(),
            "and no more"
        );
        orders.push(ids);
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "every subscriber heard one order"
    );
    assert!(orders[0].windows(2).all(|w| w[0] < w[1]), "the log's order");

    // Every process answers the same.
    let mut summaries = Vec::new();
    for api in &apis {
        let summary = api.get("/v1/incidents?limit=500", None).await.expect(200);
        summaries.push(summary["items"].clone());
    }
    assert!(summaries.windows(2).all(|w| w[0] == w[1]));
}
