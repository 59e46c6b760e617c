//! What the console shows, as JSON: this instance's pools, members and latest audit lines
//! (filtered), and the cluster's view merged from every instance's.

use std::time::{Duration, SystemTime};

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::stats::Chart;
use super::Console;
use crate::audit::{rfc3339, Delivery, Record};
use crate::broker::{Broker, MemberInfo};

/// Audit lines the page shows unless it asks for fewer.
pub const DEFAULT_AUDIT_LINES: usize = 100;
/// The most audit lines one view carries.
pub const MAX_AUDIT_LINES: usize = 500;
/// The longest filter text accepted (longer is cut).
const FILTER_CAP: usize = 128;

/// The page's audit filters, from the query string.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct Filter {
    /// A pool name; `/` is the default pool; empty: every pool.
    #[serde(default)]
    pool: String,
    /// `ok`, `failed`, or an HTTP status; empty: any.
    #[serde(default)]
    status: String,
    /// Part of the tool, resource or prompt name.
    #[serde(default)]
    tool: String,
    /// Part of a request id.
    #[serde(default)]
    request_id: String,
    /// How many lines (at most [`MAX_AUDIT_LINES`]).
    limit: Option<usize>,
}

impl Filter {
    fn keeps(&self, r: &Record) -> bool {
        let pool_ok = match self.pool.as_str() {
            "" => true,
            "/" => r.pool.is_empty(),
            p => r.pool == p,
        };
        let status_ok = match self.status.as_str() {
            "" => true,
            "ok" => !r.failed(),
            "failed" => r.failed(),
            s => s.parse::<u16>().is_ok_and(|s| s == r.status),
        };
        let tool_ok = self.tool.is_empty()
            || r.name
                .as_deref()
                .is_some_and(|n| n.contains(self.tool.as_str()));
        let id_ok = self.request_id.is_empty()
            || r.request_id
                .as_deref()
                .is_some_and(|id| id.contains(self.request_id.as_str()));
        pool_ok && status_ok && tool_ok && id_ok
    }

    fn limit(&self) -> usize {
        self.limit
            .unwrap_or(DEFAULT_AUDIT_LINES)
            .min(MAX_AUDIT_LINES)
    }

    /// Cuts every field to a sane length.
    pub(crate) fn bounded(mut self) -> Filter {
        for f in [
            &mut self.pool,
            &mut self.status,
            &mut self.tool,
            &mut self.request_id,
        ] {
            *f = crate::audit::Capped::new(f.trim(), FILTER_CAP).text;
        }
        self
    }

    /// The filter as a query string, to ask other instances for the same lines.
    pub(crate) fn query(&self) -> String {
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        format!(
            "pool={}&status={}&tool={}&request_id={}&limit={}",
            enc(&self.pool),
            enc(&self.status),
            enc(&self.tool),
            enc(&self.request_id),
            self.limit()
        )
    }
}

/// One member as the page shows it.
#[derive(Serialize)]
struct MemberView {
    member: u64,
    /// `up`, `suspect` (its polls dropped: probably dying) or `down` (gone from its pool).
    status: &'static str,
    delivery: Delivery,
    kind: &'static str,
    protocol_versions: Vec<String>,
    connected_since: String,
    down_since: Option<String>,
    in_flight: usize,
    outstanding: usize,
    queued: usize,
    polls_open: usize,
    client_sessions: usize,
    chart: Chart,
}

/// One pool as the page shows it.
#[derive(Serialize)]
struct PoolView {
    name: Option<String>,
    instance: Option<String>,
    client_sessions: usize,
    in_flight: usize,
    members: Vec<MemberView>,
    chart: Chart,
}

fn member_view(
    m: &MemberInfo,
    status: &'static str,
    down_since: Option<SystemTime>,
    chart: Chart,
) -> MemberView {
    let since = SystemTime::now()
        .checked_sub(Duration::from_secs_f64(m.age_seconds.max(0.0)))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    MemberView {
        member: m.member,
        status,
        delivery: if m.delivery == "channel" {
            Delivery::Channel
        } else {
            Delivery::Poll
        },
        kind: m.kind,
        protocol_versions: m.protocol_versions.clone(),
        connected_since: rfc3339(since),
        down_since: down_since.map(rfc3339),
        in_flight: if status == "down" { 0 } else { m.in_flight },
        outstanding: if status == "down" { 0 } else { m.outstanding },
        queued: if status == "down" { 0 } else { m.queued },
        polls_open: if status == "down" { 0 } else { m.polls_open },
        client_sessions: if status == "down" {
            0
        } else {
            m.client_sessions
        },
        chart,
    }
}

impl Console {
    /// This instance's view: its pools (members gone lately shown as down) and its latest
    /// audit lines that `filter` keeps.
    pub(crate) fn local_view(
        &self,
        broker: &Broker,
        instance: Option<&str>,
        filter: &Filter,
    ) -> Value {
        let (member_charts, pool_charts) = self.stats.charts();
        let chart_of = |pool: &str, member: u64| {
            member_charts
                .get(&(pool.to_owned(), member))
                .cloned()
                .unwrap_or_default()
        };
        let servers = broker.servers();
        self.observe_members(&servers);
        let mut pools: Vec<PoolView> = servers
            .into_iter()
            .map(|p| {
                let name = p.name.clone().unwrap_or_default();
                PoolView {
                    client_sessions: p.members.iter().map(|m| m.client_sessions).sum(),
                    in_flight: p.members.iter().map(|m| m.in_flight).sum(),
                    members: p
                        .members
                        .iter()
                        .map(|m| {
                            let status = if m.suspect { "suspect" } else { "up" };
                            member_view(m, status, None, chart_of(&name, m.member))
                        })
                        .collect(),
                    chart: pool_charts.get(&name).cloned().unwrap_or_default(),
                    name: p.name,
                    instance: instance.map(str::to_owned),
                }
            })
            .collect();
        {
            let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
            let mut down: Vec<_> = members.down.iter().collect();
            down.sort_by_key(|((pool, member), _)| (pool.clone(), *member));
            for ((pool, member), (info, at, _)) in down {
                let view = member_view(info, "down", Some(*at), chart_of(pool, *member));
                let name = (!pool.is_empty()).then(|| pool.clone());
                match pools.iter_mut().find(|p| p.name == name) {
                    Some(p) => p.members.push(view),
                    None => pools.push(PoolView {
                        name,
                        instance: instance.map(str::to_owned),
                        client_sessions: 0,
                        in_flight: 0,
                        members: vec![view],
                        chart: pool_charts.get(pool).cloned().unwrap_or_default(),
                    }),
                }
            }
        }
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        for pool in &mut pools {
            pool.members.sort_by_key(|m| m.member);
        }
        let lines = self.recent.latest(filter.limit(), |r| filter.keeps(r));
        let lines: Vec<&Record> = lines.iter().map(|r| r.as_ref()).collect();
        json!({
            "instances": [instance],
            "generated_at": rfc3339(SystemTime::now()),
            "pools": pools,
            "audit": {"total": self.recent.total(), "lines": lines},
            "console_sessions": self.sessions.count(),
        })
    }
}

/// `local` with the views `others` gathered from the other instances: their pools added
/// (by name, then instance), their audit lines merged newest first and cut at the filter's
/// limit.
pub(crate) fn merge(mut local: Value, others: Vec<Value>, filter: &Filter) -> Value {
    for other in others {
        for key in ["instances", "pools"] {
            if let (Some(Value::Array(mine)), Some(Value::Array(theirs))) =
                (local.get_mut(key), other.get(key))
            {
                mine.extend(theirs.iter().cloned());
            }
        }
        let total = other["audit"]["total"].as_u64().unwrap_or(0);
        if let Some(t) = local["audit"]["total"].as_u64() {
            local["audit"]["total"] = json!(t + total);
        }
        if let (Some(Value::Array(mine)), Some(Value::Array(theirs))) =
            (local["audit"].get_mut("lines"), other["audit"].get("lines"))
        {
            mine.extend(theirs.iter().cloned());
        }
    }
    if let Some(Value::Array(pools)) = local.get_mut("pools") {
        pools.sort_by(|a, b| {
            let key = |p: &Value| {
                (
                    p["name"].as_str().map(str::to_owned),
                    p["instance"].to_string(),
                )
            };
            key(a).cmp(&key(b))
        });
    }
    if let Some(Value::Array(lines)) = local["audit"].get_mut("lines") {
        lines.sort_by(|a, b| b["time"].as_str().cmp(&a["time"].as_str()));
        lines.truncate(filter.limit());
    }
    local
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_query_round_trips() {
        let f = Filter {
            pool: "a b".into(),
            status: "failed".into(),
            tool: "é&x".into(),
            request_id: String::new(),
            limit: Some(9999),
        };
        let q = f.query();
        assert!(q.contains("limit=500"), "{q}");
        let back: Filter = serde_json::from_value(json!({
            "pool": "a b", "status": "failed", "tool": "é&x"
        }))
        .unwrap();
        assert_eq!(back.tool, f.tool);
        assert!(!q.contains(' ') && !q.contains("é"));
    }

    #[test]
    fn merged_views_keep_the_newest_lines() {
        let mk = |instance: &str, times: &[&str]| {
            json!({
                "instances": [instance],
                "pools": [{"name": instance, "instance": instance}],
                "audit": {"total": times.len(), "lines": times.iter().map(|t| json!({"time": t})).collect::<Vec<_>>()},
            })
        };
        let filter = Filter {
            limit: Some(3),
            ..Filter::default()
        };
        let merged = merge(
            mk("b", &["2", "4"]),
            vec![mk("a", &["1", "3", "5"])],
            &filter,
        );
        let times: Vec<&str> = merged["audit"]["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["time"].as_str().unwrap())
            .collect();
        assert_eq!(times, ["5", "4", "3"]);
        assert_eq!(merged["audit"]["total"], 5);
        assert_eq!(merged["pools"][0]["name"], "a");
        assert_eq!(merged["instances"].as_array().unwrap().len(), 2);
    }
}
