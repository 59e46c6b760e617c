//! The scenarios through nginx before the kill (calls spread over both instances, a named
//! pool, a Streamable HTTP session), and the HTTP helpers the kill scenario shares: clients,
//! echo checks, pool membership and the instances' relay counters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_client::{text_of, Client, ClientOptions, Error as ClientError};
use serde_json::json;

use super::{Cluster, NAMED};
use crate::procs;

/// A plain HTTP client for the operator routes (no proxy from the environment).
pub(super) fn http() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

/// Waits until the pool counts `n` members in `GET /servers` through `url`, each taking its
/// items over its WebSocket channel (which must reach the registration's home through nginx:
/// an instance that is not the home answers 421 and the reverse server long-polls until a
/// retry lands there).
pub(super) async fn wait_members(
    url: &str,
    pool: Option<&str>,
    n: usize,
    deadline: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let got = procs::pool_members(url, pool).await;
        let ready = |m: &Vec<serde_json::Value>| {
            m.len() == n && m.iter().all(|m| m["delivery"] == "channel")
        };
        if got.as_ref().is_ok_and(ready) {
            return Ok(());
        }
        if start.elapsed() > deadline {
            return Err(format!(
                "pool {} has not {n} members on channels after {deadline:?}: {got:?}",
                pool.unwrap_or("(default)")
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The sum of an instance's metric lines that start with `prefix`, from its own `/metrics`.
async fn metric(url: &str, prefix: &str) -> Result<f64, String> {
    let text = http()?
        .get(format!("{url}/metrics"))
        .send()
        .await
        .map_err(|e| format!("GET {url}/metrics: {e}"))?
        .text()
        .await
        .map_err(|e| format!("GET {url}/metrics: {e}"))?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// Requests an instance relayed to another one's pools.
const RELAYED_OUT: &str = "mcp_proxy_relayed_total{direction=\"out\"}";
/// Requests an instance served for another one.
const RELAYED_IN: &str = "mcp_proxy_relayed_total{direction=\"in\"}";

/// Both instances' relay counters: `[(out, in)]`.
async fn relays(cluster: &Cluster) -> Result<Vec<(f64, f64)>, String> {
    let mut counts = Vec::new();
    for i in &cluster.instances {
        counts.push((
            metric(&i.url, RELAYED_OUT).await?,
            metric(&i.url, RELAYED_IN).await?,
        ));
    }
    Ok(counts)
}

/// Checks that both instances took part in what happened between `before` and now: requests
/// reached the pool's home through the other instance (relayed out there, in at the home).
async fn both_took_part(
    cluster: &Cluster,
    before: &[(f64, f64)],
    what: &str,
) -> Result<String, String> {
    let after = relays(cluster).await?;
    let mut report = Vec::new();
    for ((i, (out0, in0)), (out1, in1)) in cluster.instances.iter().zip(before).zip(&after) {
        report.push(format!(
            "{} relayed {} out, {} in",
            i.name,
            out1 - out0,
            in1 - in0
        ));
    }
    let relayed_out: f64 = after.iter().zip(before).map(|(a, b)| a.0 - b.0).sum();
    let relayed_in: f64 = after.iter().zip(before).map(|(a, b)| a.1 - b.1).sum();
    if relayed_out < 1.0 || relayed_in < 1.0 {
        return Err(format!(
            "{what}: no request went through the instance that is not the pool's home \
             (nginx did not spread them, or nothing was relayed): {}",
            report.join("; ")
        ));
    }
    Ok(report.join("; "))
}

pub(super) fn client(url: &str) -> Result<Client, String> {
    let options = ClientOptions {
        timeout: Duration::from_secs(120),
        ..ClientOptions::default()
    };
    Client::with_options(url, options).map_err(|e| e.to_string())
}

/// Calls echo with `text` and checks the answer is exactly it.
pub(super) async fn echo(client: &Client, text: &str) -> Result<(), String> {
    let result = client
        .call_tool("echo", json!({ "text": text }))
        .await
        .map_err(|e| e.to_string())?;
    let answer = text_of(&result);
    if answer == text {
        Ok(())
    } else {
        Err(format!("asked {text:?}, got {answer:?}"))
    }
}

/// `n` concurrent echo calls over 16 clients (nginx spreads each client's requests over both
/// instances); every answer must be its own question's.
pub(super) async fn many_calls(endpoint: &str, n: usize, tag: &str) -> Result<(), String> {
    let clients: Vec<Arc<Client>> = (0..16)
        .map(|_| client(endpoint).map(Arc::new))
        .collect::<Result<_, _>>()?;
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            let text = format!("{tag} {i}: {}", "x".repeat(i % 23));
            tokio::spawn(async move { echo(&client, &text).await })
        })
        .collect();
    let mut failures = Vec::new();
    for call in calls {
        if let Err(e) = call.await.map_err(|e| e.to_string()).and_then(|r| r) {
            failures.push(e);
        }
    }
    match failures.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "{} of {n} calls to {endpoint} failed; first: {first}",
            failures.len()
        )),
    }
}

pub(super) fn spread_calls(cluster: &Cluster, n: usize) -> Result<(), String> {
    cluster.rt.block_on(async {
        let before = relays(cluster).await?;
        many_calls(&cluster.url, n, "question").await?;
        let report = both_took_part(cluster, &before, "default pool").await?;
        println!("     {report}");
        Ok(())
    })
}

pub(super) fn named_pool(cluster: &Cluster) -> Result<(), String> {
    cluster.rt.block_on(async {
        many_calls(
            &format!("{}/servers/{NAMED}/message", cluster.url),
            100,
            NAMED,
        )
        .await?;
        let session = client(&format!("{}/servers/{NAMED}/mcp", cluster.url))?;
        session.initialize().await.map_err(|e| e.to_string())?;
        for i in 0..10 {
            echo(&session, &format!("{NAMED} session call {i}")).await?;
        }
        session.close().await.map_err(|e| e.to_string())?;
        // Twice, so both instances answer it (round robin).
        for _ in 0..2 {
            let absent = client(&format!("{}/servers/gamma/message", cluster.url))?;
            match absent.call_tool("echo", json!({"text": "x"})).await {
                Err(ClientError::Status {
                    status: 503, body, ..
                }) if body.contains("gamma") => {}
                other => return Err(format!("an absent pool answered {other:?}")),
            }
        }
        Ok(())
    })
}

pub(super) fn streamable_session(cluster: &Cluster) -> Result<(), String> {
    cluster.rt.block_on(async {
        let session = client(&format!("{}/mcp", cluster.url))?;
        let info = session.initialize().await.map_err(|e| e.to_string())?;
        if info.server_info.name != "Reverse MCP Server" {
            return Err(format!("initialize answered {:?}", info.server_info));
        }
        let before = relays(cluster).await?;
        let tools = session.list_tools().await.map_err(|e| e.to_string())?;
        if !tools.iter().any(|t| t.name == "echo") {
            let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
            return Err(format!("tools/list has no echo: {names:?}"));
        }
        // Sequential, so round robin alternates them between the instances.
        for i in 0..20 {
            echo(&session, &format!("session call {i}")).await?;
        }
        session.ping().await.map_err(|e| e.to_string())?;
        both_took_part(cluster, &before, "session").await?;
        session.close().await.map_err(|e| e.to_string())?;
        // Closed means closed, on every instance.
        match session
            .call_tool("echo", json!({"text": "after close"}))
            .await
        {
            Ok(r) => Err(format!("a closed session still answered {:?}", text_of(&r))),
            Err(_) => Ok(()),
        }
    })
}
