//! `deploy/monitoring` as shipped: promtool accepts the alerts and their unit tests pass (each
//! alert fires on its trouble and keeps quiet on a healthy fleet), every alert says what to do
//! and links to a runbook that exists, and every dashboard query parses. That the queries name
//! only exported metrics is checked against a real scrape in `binary.rs`; that the component
//! applies server side, in `rbac.rs`.

use ccm_harness as support;

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use serde_yaml_ng::Value;
use support::monitoring;

fn run(mut command: Command) -> String {
    let out = command.output().expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

/// The rule file and the unit tests side by side, as promtool wants them.
fn rules_dir() -> PathBuf {
    let dir = support::process::scratch_dir("monitoring-");
    let rules = monitoring::rule_file(&monitoring::component().join("prometheusrule.yaml"));
    std::fs::write(dir.join("rules.yaml"), rules).expect("write rules");
    let tests = support::repo_root().join("tests/monitoring/alerts.test.yaml");
    std::fs::copy(tests, dir.join("alerts.test.yaml")).expect("copy tests");
    dir
}

fn alerts() -> Vec<Value> {
    let path = monitoring::component().join("prometheusrule.yaml");
    let rule: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("read")).expect("yaml");
    rule["spec"]["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").clone())
        .collect()
}

#[test]
fn promtool_accepts_the_alerts_and_their_unit_tests_pass() {
    let dir = rules_dir();
    let mut check = monitoring::promtool();
    check
        .current_dir(&dir)
        .args(["check", "rules", "rules.yaml"]);
    let out = run(check);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", alerts().len())),
        "{out}"
    );
    let mut test = monitoring::promtool();
    test.current_dir(&dir)
        .args(["test", "rules", "alerts.test.yaml"]);
    let out = run(test);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_says_what_to_do_and_links_to_a_runbook_that_exists() {
    let operations = std::fs::read_to_string(support::repo_root().join("docs/operations.md"))
        .expect("read operations.md");
    let anchors: BTreeSet<String> = operations
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(anchor)
        .collect();
    let tests =
        std::fs::read_to_string(support::repo_root().join("tests/monitoring/alerts.test.yaml"))
            .expect("read the alert tests");
    for alert in alerts() {
        let name = alert["alert"].as_str().expect("every rule is an alert");
        let severity = alert["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{name}: severity {severity:?}"
        );
        for field in ["summary", "description"] {
            let text = alert["annotations"][field].as_str().unwrap_or("");
            assert!(!text.is_empty(), "{name} has no {field}");
        }
        let url = alert["annotations"]["runbook_url"].as_str().unwrap_or("");
        let (base, target) = url.split_once('#').expect("runbook_url ends in #anchor");
        assert!(base.ends_with("/operations.md"), "{name}: {url}");
        assert!(
            anchors.contains(target),
            "{name}: no runbook #{target} in docs/operations.md (there are {anchors:?})"
        );
        // A firing case, not only a quiet one.
        assert!(
            tests.contains(&format!(
                "alertname: {name}\n        exp_alerts:\n          - "
            )),
            "{name} is never shown firing in alerts.test.yaml"
        );
    }
}

#[test]
fn every_dashboard_query_parses_and_a_broken_one_is_refused() {
    let component = monitoring::component();
    let names = monitoring::queried_metrics(&[&component.join("dashboard.json")])
        .unwrap_or_else(|e| panic!("{e}"));
    for expected in ["ccm_workers", "ccm_desired_workers", "ccm_remote_up"] {
        assert!(
            names.contains(expected),
            "{expected} not on the dashboard: {names:?}"
        );
    }
    let dir = support::process::scratch_dir("monitoring-");
    let broken = dir.join("broken.json");
    std::fs::write(
        &broken,
        r#"{"panels": [{"targets": [{"expr": "sum(rate(ccm_workers[5m])"}]}]}"#,
    )
    .expect("write");
    let refused = monitoring::queried_metrics(&[&broken]).expect_err("an unclosed paren");
    assert!(refused.contains("sum(rate(ccm_workers[5m])"), "{refused}");
}

#[test]
fn the_dashboard_covers_what_an_operator_watches() {
    let path = monitoring::component().join("dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for wanted in [
        "Workers by phase",
        "Demand, desired and ready",
        "Scaling actions",
        "Reconcile rate",
        "Reconcile errors",
        "Reconcile latency",
        "Cloud calls by outcome",
        "Remotes up",
        "Leader",
    ] {
        assert!(
            titles.contains(&wanted),
            "no {wanted:?} panel in {titles:?}"
        );
    }
    assert_eq!(dashboard["uid"], "resource-controller");
}
