//! The built-in authorization server in a cluster: its state (keys, clients, sign-ins,
//! consents, codes, refresh families) lives in the shared Redis, so each step of a sign-in
//! may reach another instance, and a token from one instance opens the pool through any.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mcp_client::{text_of, Client, ClientOptions};
use mcp_proxy::auth::oauth::{OAuth, OAuthConfig};
use mcp_proxy::auth::server::redis_store::RedisStore;
use mcp_proxy::auth::server::revocation::CACHE_FOR;
use mcp_proxy::auth::server::{AuthServer, AuthServerConfig, Credentials};
use mcp_proxy::Config;
use serde_json::{json, Value};

use super::{Node, Redis};

/// Every instance's public URL (a balancer's, in production; nothing fetches it).
const PUBLIC: &str = "https://mcp.example.com";
const PASSPHRASE: &str = "a passphrase for the cluster";
const REDIRECT: &str = "http://127.0.0.1:4321/callback";

fn builtin(redis: &Redis) -> impl Fn(&mut Config) + '_ {
    move |c: &mut Config| {
        let resources = OAuthConfig::new(PUBLIC, PUBLIC).unwrap();
        let store = Arc::new(RedisStore::new(&redis.url, "mcp-proxy:").unwrap());
        let settings = AuthServerConfig::new(Credentials::passphrase(PASSPHRASE).unwrap());
        let server = Arc::new(AuthServer::new(settings, resources.clone(), store).unwrap());
        c.oauth = Some(Arc::new(OAuth::with_local_issuer(
            resources,
            server.clone(),
        )));
        c.auth_server = Some(server);
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The hidden inputs of a page's form (the values the tests put there need no unescaping
/// beyond `&amp;`).
fn hidden(html: &str) -> Vec<(String, String)> {
    html.split("<input type=\"hidden\" name=\"")
        .skip(1)
        .map(|rest| {
            let (name, rest) = rest.split_once("\" value=\"").unwrap();
            let (value, _) = rest.split_once('"').unwrap();
            (name.to_owned(), value.replace("&amp;", "&"))
        })
        .collect()
}

/// `name=value` of every `Set-Cookie`.
fn cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn each_step_of_a_sign_in_may_reach_another_instance() {
    let redis = Redis::start();
    let a = Node::start_with(&redis, builtin(&redis)).await;
    let b = Node::start_with(&redis, builtin(&redis)).await;
    let server = mcp_server::Server::new(mcp_server::ServerConfig::new("cluster-as", "1.0.0"));
    mcp_server::demo::register_seed_tools(&server, true);
    let mut config = mcp_reverse::Configuration::new(&a.url).with_held_polls(2);
    config.server_name = Some("alpha".into());
    let reverse = mcp_reverse::ReverseClient::new(server, config)
        .unwrap()
        .spawn();

    // Registered at A.
    let client: Value = http()
        .post(format!("{}/oauth/register", a.url))
        .json(&json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = client["client_id"].as_str().unwrap().to_owned();
    let verifier = "a-verifier-of-more-than-forty-three-characters-0123456789";
    let challenge = URL_SAFE_NO_PAD.encode(ring_sha256(verifier));
    let mut url = url::Url::parse(&format!("{}/oauth/authorize", b.url)).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("resource", &format!("{PUBLIC}/servers/alpha/mcp"));
    // The login page from B, the sign-in posted to A, the consent to B.
    let page = http().get(url.as_str()).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let mut jar = cookies(&page);
    let mut form = hidden(&page.text().await.unwrap());
    form.push(("action".into(), "login".into()));
    form.push(("password".into(), PASSPHRASE.into()));
    let consent = http()
        .post(format!("{}/oauth/authorize", a.url))
        .header("cookie", jar.join("; "))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(consent.status(), 200);
    jar.extend(cookies(&consent));
    let mut form = hidden(&consent.text().await.unwrap());
    form.push(("action".into(), "allow".into()));
    let back = http()
        .post(format!("{}/oauth/authorize", b.url))
        .header("cookie", jar.join("; "))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 303);
    let location = url::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
    let query: HashMap<String, String> = location.query_pairs().into_owned().collect();
    assert_eq!(query["iss"], PUBLIC);

    // The code exchanged at A, refreshed at B.
    let exchange = |node: &Node, form: Vec<(&'static str, String)>| {
        let url = format!("{}/oauth/token", node.url);
        async move {
            let resp = http().post(url).form(&form).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()
        }
    };
    let tokens = exchange(
        &a,
        vec![
            ("grant_type", "authorization_code".into()),
            ("client_id", client_id.clone()),
            ("code", query["code"].clone()),
            ("redirect_uri", REDIRECT.into()),
            ("code_verifier", verifier.into()),
        ],
    )
    .await;
    let renewed = exchange(
        &b,
        vec![
            ("grant_type", "refresh_token".into()),
            ("client_id", client_id.clone()),
            (
                "refresh_token",
                tokens["refresh_token"].as_str().unwrap().into(),
            ),
        ],
    )
    .await;

    // Both access tokens open alpha through either instance.
    for token in [&tokens["access_token"], &renewed["access_token"]] {
        for node in [&a, &b] {
            let client = Client::with_options(
                &format!("{}/servers/alpha/mcp", node.url),
                ClientOptions {
                    token: Some(token.as_str().unwrap().into()),
                    ..ClientOptions::default()
                },
            )
            .unwrap();
            let mut who = None;
            let start = std::time::Instant::now();
            while who.is_none() {
                if let Ok(()) = client.initialize().await.map(|_| ()) {
                    if let Ok(r) = client.call_tool("whoami", json!({})).await {
                        who = Some(serde_json::from_str::<Value>(&text_of(&r)).unwrap());
                        break;
                    }
                }
                assert!(
                    start.elapsed() < crate::common::DEADLINE,
                    "alpha never answered"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            assert_eq!(who.unwrap()["subject"], "owner");
        }
    }

    // The family revoked at A: A refuses its access token at once; B, which found it valid a
    // moment ago, within the revocation check's cache time.
    let revoked = http()
        .post(format!("{}/oauth/revoke", a.url))
        .form(&[
            ("client_id", client_id.as_str()),
            ("token", renewed["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let since = std::time::Instant::now();
    let access = renewed["access_token"].as_str().unwrap();
    assert_eq!(status_with(&a, access).await, 401);
    while status_with(&b, access).await != 401 {
        assert!(
            since.elapsed() < CACHE_FOR + std::time::Duration::from_secs(2),
            "B still accepts a token revoked {:?} ago",
            since.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    reverse.shutdown().await.unwrap();
}

/// The status of an `initialize` on alpha through `node` with the access token `token`.
async fn status_with(node: &Node, token: &str) -> u16 {
    http()
        .post(format!("{}/servers/alpha/mcp", node.url))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "revocation", "version": "0"}}}),
        )
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn ring_sha256(text: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .to_vec()
}
