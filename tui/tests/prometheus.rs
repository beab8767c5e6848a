//! The monitoring assets against a live cluster: `promtool check rules`
//! accepts `assets/monitoring/alerts.yml`; a real Prometheus (Debian's
//! `prometheus` package) scrapes three `blixardd` processes with those
//! rules loaded; every query of the Grafana dashboard and the query of
//! every alert (its expression without the threshold) returns data; and
//! stopping a node makes `BlixardNodeDown` pending. CI installs Prometheus
//! and sets `BLIXARD_REQUIRE_PROMETHEUS=1`, so there it cannot skip.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/monitoring")
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The result of an instant query, or why there is none.
fn query(prometheus: &str, expr: &str) -> Result<Vec<Value>, String> {
    let (code, body) = http_get(
        prometheus,
        &format!("/api/v1/query?query={}", url_encode(expr)),
    )
    .ok_or("no answer")?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if code != 200 || v["status"] != "success" {
        return Err(format!("{code}: {body}"));
    }
    let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
    Ok(result)
}

/// Whether a query result holds a number (not only NaN): data, not just a series.
fn has_a_number(result: &[Value]) -> bool {
    result.iter().any(|r| {
        r["value"][1]
            .as_str()
            .is_some_and(|v| v.parse::<f64>().is_ok_and(|x| !x.is_nan()))
    })
}

/// An alert expression's query: the expression without its trailing
/// "<comparison> <number>".
fn without_threshold(expr: &str) -> String {
    let expr = expr.trim();
    for op in [" >= ", " <= ", " == ", " != ", " > ", " < "] {
        if let Some(i) = expr.rfind(op) {
            let threshold = expr[i + op.len()..].trim();
            if threshold.parse::<f64>().is_ok() {
                return expr[..i].trim().to_string();
            }
        }
    }
    panic!("alert expression {expr:?} is not <query> <comparison> <number>");
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

fn metrics_address(d: &Daemon) -> String {
    let ready: Value =
        serde_json::from_str(&std::fs::read_to_string(d.dir.join("ready.json")).expect("ready"))
            .expect("json");
    ready["metrics_address"]
        .as_str()
        .expect("metrics address")
        .to_string()
}

fn unsupported() -> Option<String> {
    [PROMETHEUS, PROMTOOL]
        .iter()
        .find(|p| !Path::new(p).exists())
        .map(|p| format!("{p} is missing (Debian package prometheus)"))
}

#[test]
fn prometheus_finds_data_for_every_dashboard_query_and_alert_and_sees_a_node_down() {
    if let Some(why) = unsupported() {
        if std::env::var_os("BLIXARD_REQUIRE_PROMETHEUS").is_some() {
            panic!("BLIXARD_REQUIRE_PROMETHEUS is set but: {why}");
        }
        eprintln!("SKIPPED prometheus_finds_data_for_every_dashboard_query_and_alert_and_sees_a_node_down: {why}");
        return;
    }
    let rules = monitoring().join("alerts.yml");
    let check = Command::new(PROMTOOL)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool");
    assert!(check.status.success(), "promtool check rules: {check:?}");

    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().to_path_buf();
    let config = runner_config(&root, "metrics_listen = \"127.0.0.1:0\"\n");
    let (mut daemons, all) = start_cluster(&root, &["--config", &config]);
    let targets: Vec<String> = daemons.iter().map(metrics_address).collect();
    let prom_config = root.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {:?}\nscrape_configs:\n  - job_name: blixard\n    static_configs:\n      - targets: {:?}\n",
            rules.display().to_string(),
            targets
        ),
    )
    .expect("prometheus config");
    let web = free_port();
    let _prometheus = Prometheus(
        Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                root.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("prometheus.log")).expect("log"))
            .spawn()
            .expect("start prometheus"),
    );
    eventually(
        Duration::from_secs(60),
        "Prometheus to scrape all three nodes",
        || {
            let r = query(&web, "sum(up{job=\"blixard\"})").ok()?;
            (r.first()?["value"][1] == "3").then_some(())
        },
    );
    // VMs start (and one fails) while Prometheus watches: boot times and
    // starts land in its window.
    let runner = write_runner(&root).display().to_string();
    let failing = root.join("fails.sh");
    std::fs::write(&failing, "#!/bin/sh\necho failing on purpose\nexit 3\n").expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let failing = failing.display().to_string();
    for (name, runner, extra) in [
        ("web-1", &runner, None),
        ("web-2", &runner, None),
        ("broken", &failing, Some("never")),
    ] {
        let mut args = vec![
            "vm",
            "create",
            name,
            "--vcpus",
            "1",
            "--memory-mib",
            "32",
            "--runner",
            runner,
        ];
        if let Some(policy) = extra {
            args.extend(["--restart-policy", policy]);
        }
        let out = cli(&all, &args);
        assert!(out.status.success(), "{out:?}");
    }
    eventually(
        Duration::from_secs(60),
        "web-1 and web-2 running, broken failed",
        || {
            let out = cli(&all, &["vm", "list"]);
            let v = json_of(&out);
            let state = |n: &str| {
                v.as_array()?
                    .iter()
                    .find(|vm| vm["name"] == n)
                    .map(|vm| vm["state"].as_str().unwrap_or("").to_string())
            };
            (state("web-1")? == "running"
                && state("web-2")? == "running"
                && state("broken")? == "failed")
                .then_some(())
        },
    );

    // Some writes while the queries run, for the rate()s of the write path.
    let writer = {
        let all = all.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut n = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("churn-{n}");
                cli(
                    &all,
                    &[
                        "vm",
                        "create",
                        &name,
                        "--vcpus",
                        "1",
                        "--memory-mib",
                        "32",
                        "--stopped",
                    ],
                );
                cli(&all, &["vm", "delete", &name]);
                n += 1;
            }
        });
        (stop, handle)
    };

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring().join("grafana-dashboard.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut exprs: Vec<(String, String)> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            exprs.push((
                format!("dashboard panel {:?}", panel["title"]),
                expr.replace("$__rate_interval", "5m"),
            ));
        }
    }
    let (code, body) = http_get(&web, "/api/v1/rules").expect("rules");
    assert_eq!(code, 200, "{body}");
    let loaded: Value = serde_json::from_str(&body).expect("rules JSON");
    let mut alerts = Vec::new();
    for group in loaded["data"]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["name"].as_str().expect("name").to_string();
            let expr = rule["query"].as_str().expect("query");
            exprs.push((format!("alert {name}"), without_threshold(expr)));
            alerts.push(name);
        }
    }
    assert_eq!(alerts.len(), 8, "{alerts:?}");
    for (what, expr) in &exprs {
        eventually(
            Duration::from_secs(60),
            &format!("data for {what}: {expr}"),
            || query(&web, expr).ok().filter(|r| has_a_number(r)).map(drop),
        );
    }
    writer.0.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.1.join().expect("writer");

    // A node goes away: BlixardNodeDown becomes pending (then firing).
    daemons[2].kill9();
    let state = eventually(Duration::from_secs(60), "BlixardNodeDown pending", || {
        let (_, body) = http_get(&web, "/api/v1/alerts")?;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == "BlixardNodeDown")
            .and_then(|a| a["state"].as_str().map(str::to_string))
    });
    assert!(state == "pending" || state == "firing", "{state}");
    eprintln!(
        "checked {} queries; BlixardNodeDown is {state}",
        exprs.len()
    );
}
