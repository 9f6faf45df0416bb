//! The CRDs on a real kube-apiserver: samples apply, kubectl shows the columns and docs, defaults
//! are filled in, and invalid objects are rejected with a message naming the field.

use ccm_harness as support;

use serde_json::{Value, json};
use support::{ControlPlane, TestNamespace};

fn example_files() -> Vec<String> {
    let dir = support::repo_root().join("deploy/examples");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("read deploy/examples")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "expected sample manifests, found {files:?}"
    );
    files
}

async fn namespace(prefix: &str) -> (&'static ControlPlane, TestNamespace) {
    let cp = ControlPlane::shared();
    let ns = TestNamespace::create(&cp.client().await, prefix).await;
    (cp, ns)
}

#[tokio::test]
async fn every_sample_applies_with_kubectl() {
    let (cp, ns) = namespace("samples").await;
    for file in example_files() {
        cp.kubectl_ok(&["apply", "-n", &ns.name, "-f", &file]);
    }
    let names = cp.kubectl_ok(&["get", "wkt,wk", "-n", &ns.name, "-o", "name"]);
    for expected in [
        "workertemplate.ccm.dev/personal-standard",
        "workertemplate.ccm.dev/enterprise-large",
        "worker.ccm.dev/personal-1",
        "worker.ccm.dev/enterprise-1",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from:\n{names}"
        );
    }
    // The kustomization lists the same objects.
    let dir = support::repo_root().join("deploy/examples");
    cp.kubectl_ok(&["apply", "-n", &ns.name, "-k", &dir.display().to_string()]);
    ns.delete().await;
}

#[tokio::test]
async fn kubectl_get_shows_printer_columns() {
    let (cp, ns) = namespace("columns").await;
    for file in example_files() {
        cp.kubectl_ok(&["apply", "-n", &ns.name, "-f", &file]);
    }
    let templates = cp.kubectl_ok(&["get", "wkt", "-n", &ns.name]);
    let header: Vec<&str> = templates
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "INSTANCE-TYPE",
            "LICENSE",
            "MIN",
            "MAX",
            "WORKERS",
            "READY",
            "AGE"
        ],
        "{templates}"
    );
    let personal = templates
        .lines()
        .find(|l| l.starts_with("personal-standard"))
        .unwrap_or_else(|| panic!("no personal-standard row in:\n{templates}"));
    let cells: Vec<&str> = personal.split_whitespace().collect();
    assert_eq!(
        cells[1..5],
        ["m5zn.metal", "Personal", "0", "5"],
        "{personal}"
    );

    let workers = cp.kubectl_ok(&["get", "wk", "-n", &ns.name]);
    let header: Vec<&str> = workers
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME", "TEMPLATE", "PHASE", "INSTANCE", "IP", "READY", "AGE"
        ],
        "{workers}"
    );
    assert!(
        workers
            .lines()
            .any(|l| l.starts_with("enterprise-1") && l.contains("enterprise-large")),
        "{workers}"
    );

    // The category and short names resolve too.
    let all = cp.kubectl_ok(&["get", "ccm", "-n", &ns.name, "-o", "name"]);
    assert_eq!(all.lines().count(), 5, "{all}");
    ns.delete().await;
}

/// `kubectl explain PATH`, once the API server publishes the CRDs' schemas: that comes a moment
/// after they are Established, and tests starting together may ask before.
async fn explain(cp: &ControlPlane, path: &str) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = cp
            .kubectl()
            .args(["explain", path])
            .output()
            .expect("run kubectl");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            tokio::time::Instant::now() < deadline && err.contains("couldn't find resource"),
            "kubectl explain {path} failed: {err}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn kubectl_explain_shows_field_docs() {
    let cp = ControlPlane::shared();
    let spec = explain(cp, "worker.spec").await;
    assert!(spec.contains("templateRef"), "{spec}");
    assert!(
        spec.contains("The WorkerTemplate (same namespace) this worker is built from"),
        "{spec}"
    );
    assert!(spec.contains("desiredState"), "{spec}");

    let drain = explain(cp, "workertemplate.spec.scaling.drainTimeout").await;
    assert!(
        drain.contains("Longest a drain waits for labs to end"),
        "{drain}"
    );

    let status = explain(cp, "wk.status.instance").await;
    assert!(
        status.contains("privateIp") && status.contains("Private IPv4 address"),
        "{status}"
    );
}

/// A template that the API server accepts; each invalid case changes one thing in it.
fn valid_template(name: &str) -> Value {
    json!({
        "apiVersion": "ccm.dev/v1alpha1",
        "kind": "WorkerTemplate",
        "metadata": {"name": name},
        "spec": {
            "instanceType": "m5zn.metal",
            "image": {"namePattern": "CML-2.9.*"},
            "capacity": {"cpuCores": 48, "memoryGiB": 192, "storageGiB": 500, "maxNodes": 20},
            "licenseType": "Personal",
            "scaling": {"maxWorkers": 3}
        }
    })
}

fn valid_worker(name: &str) -> Value {
    json!({
        "apiVersion": "ccm.dev/v1alpha1",
        "kind": "Worker",
        "metadata": {"name": name},
        "spec": {"templateRef": {"name": "personal-standard"}}
    })
}

/// RFC 7386 merge: objects merge, `null` deletes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

struct Invalid {
    case: &'static str,
    base: fn(&str) -> Value,
    patch: Value,
    /// Substrings the API server's answer must contain: the field path and the reason.
    expect: &'static [&'static str],
}

fn invalid_manifests() -> Vec<Invalid> {
    let t = valid_template as fn(&str) -> Value;
    let w = valid_worker as fn(&str) -> Value;
    vec![
        Invalid {
            case: "image id and pattern both set",
            base: t,
            patch: json!({"spec": {"image": {"id": "ami-0123456789abcdef0"}}}),
            expect: &["spec.image", "exactly one of image.id or image.namePattern"],
        },
        Invalid {
            case: "image with neither id nor pattern",
            base: t,
            patch: json!({"spec": {"image": {"namePattern": null}}}),
            expect: &["spec.image", "exactly one of image.id or image.namePattern"],
        },
        Invalid {
            case: "malformed AMI id",
            base: t,
            patch: json!({"spec": {"image": {"namePattern": null, "id": "ubuntu-22.04"}}}),
            expect: &["spec.image.id", "should match"],
        },
        Invalid {
            case: "image owners without a pattern",
            base: t,
            patch: json!({"spec": {"image": {"namePattern": null, "id": "ami-0123456789abcdef0", "owners": ["self"]}}}),
            expect: &["spec.image.owners", "only applies with image.namePattern"],
        },
        Invalid {
            case: "port range start after end",
            base: t,
            patch: json!({"spec": {"portRange": {"start": 9000, "end": 2000}}}),
            expect: &[
                "spec.portRange",
                "start must be less than or equal to portRange.end",
            ],
        },
        Invalid {
            case: "a lead time that is neither auto nor a duration",
            base: t,
            patch: json!({"spec": {"scaling": {"scaleUpLeadTime": "soon"}}}),
            expect: &["spec.scaling.scaleUpLeadTime", "should match"],
        },
        Invalid {
            case: "port beyond 65535",
            base: t,
            patch: json!({"spec": {"portRange": {"end": 70000}}}),
            expect: &["spec.portRange.end", "65535"],
        },
        Invalid {
            case: "minWorkers above maxWorkers",
            base: t,
            patch: json!({"spec": {"scaling": {"minWorkers": 5, "maxWorkers": 2}}}),
            expect: &[
                "spec.scaling",
                "minWorkers must be less than or equal to scaling.maxWorkers",
            ],
        },
        Invalid {
            case: "warmWorkers above maxWorkers",
            base: t,
            patch: json!({"spec": {"scaling": {"warmWorkers": 4, "maxWorkers": 2}}}),
            expect: &[
                "spec.scaling",
                "warmWorkers must be less than or equal to scaling.maxWorkers",
            ],
        },
        Invalid {
            case: "a warmRoom asking for nothing",
            base: t,
            patch: json!({"spec": {"scaling": {"warmRoom": {"nodes": 0}}}}),
            expect: &["spec.scaling.warmRoom", "must ask for some room"],
        },
        Invalid {
            case: "a warmRoom bigger than a worker",
            base: t,
            patch: json!({"spec": {"scaling": {"warmRoom": {"nodes": 8, "cpuCores": 1000}}}}),
            expect: &["spec.scaling.warmRoom", "must fit in one worker's capacity"],
        },
        Invalid {
            case: "a schedule window warmer than maxWorkers",
            base: t,
            patch: json!({"spec": {"scaling": {"maxWorkers": 2, "schedule": {"windows": [
                {"days": ["Mon"], "from": "18:00", "to": "22:00", "warmWorkers": 3}
            ]}}}}),
            expect: &[
                "spec.scaling",
                "window's minWorkers and warmWorkers must be less than or equal to scaling.maxWorkers",
            ],
        },
        Invalid {
            case: "a schedule window at 24:00",
            base: t,
            patch: json!({"spec": {"scaling": {"schedule": {"windows": [
                {"days": ["Mon"], "from": "18:00", "to": "24:00"}
            ]}}}}),
            expect: &["spec.scaling.schedule.windows[0].to", "should match"],
        },
        Invalid {
            case: "a schedule window on no day",
            base: t,
            patch: json!({"spec": {"scaling": {"schedule": {"windows": [
                {"days": ["Monday"], "from": "18:00", "to": "22:00"}
            ]}}}}),
            expect: &[
                "spec.scaling.schedule.windows[0].days[0]",
                "Unsupported value",
            ],
        },
        Invalid {
            case: "maxWorkers missing",
            base: t,
            patch: json!({"spec": {"scaling": {"maxWorkers": null, "minWorkers": 1}}}),
            expect: &["spec.scaling.maxWorkers", "Required value"],
        },
        Invalid {
            case: "maxConcurrentDrains zero",
            base: t,
            patch: json!({"spec": {"scaling": {"maxConcurrentDrains": 0}}}),
            expect: &[
                "spec.scaling.maxConcurrentDrains",
                "greater than or equal to 1",
            ],
        },
        Invalid {
            case: "empty instanceType",
            base: t,
            patch: json!({"spec": {"instanceType": ""}}),
            expect: &["spec.instanceType", "at least 1 chars long"],
        },
        Invalid {
            case: "malformed instanceType",
            base: t,
            patch: json!({"spec": {"instanceType": "M5 Metal"}}),
            expect: &["spec.instanceType", "should match"],
        },
        Invalid {
            case: "fallback repeats instanceType",
            base: t,
            patch: json!({"spec": {"fallbackInstanceTypes": ["c5.metal", "m5zn.metal"]}}),
            expect: &["spec.fallbackInstanceTypes", "must not repeat instanceType"],
        },
        Invalid {
            case: "zero CPU cores",
            base: t,
            patch: json!({"spec": {"capacity": {"cpuCores": 0}}}),
            expect: &["spec.capacity.cpuCores", "greater than or equal to 1"],
        },
        Invalid {
            case: "capacity missing maxNodes",
            base: t,
            patch: json!({"spec": {"capacity": {"maxNodes": null}}}),
            expect: &["spec.capacity.maxNodes", "Required value"],
        },
        Invalid {
            case: "a tag key in the Kubernetes cluster namespace",
            base: t,
            patch: json!({"spec": {"tags": {"kubernetes.io/cluster/prod": "owned"}}}),
            expect: &["spec.tags", "are reserved"],
        },
        Invalid {
            case: "a tag value over 256 characters",
            base: t,
            patch: json!({"spec": {"tags": {"team": "x".repeat(257)}}}),
            expect: &["spec.tags", "values at most 256"],
        },
        Invalid {
            case: "a CA with TLS verification off",
            base: t,
            patch: json!({"spec": {"cml": {"caSecretRef": {"name": "cml-ca"}, "insecureSkipTlsVerify": true}}}),
            expect: &[
                "spec.cml.caSecretRef",
                "cannot be combined with insecureSkipTlsVerify",
            ],
        },
        Invalid {
            case: "a metadata hop limit of zero",
            base: t,
            patch: json!({"spec": {"metadataOptions": {"httpPutResponseHopLimit": 0}}}),
            expect: &[
                "spec.metadataOptions.httpPutResponseHopLimit",
                "greater than or equal to 1",
            ],
        },
        Invalid {
            case: "licensing on an Evaluation template",
            base: t,
            patch: json!({"spec": {"licenseType": "Evaluation",
                "licensing": {"tokenSecretRef": {"name": "smart-licensing"}}}}),
            expect: &["spec.licensing", "an Evaluation worker runs unregistered"],
        },
        Invalid {
            case: "an Enterprise product on a Personal template",
            base: t,
            patch: json!({"spec": {"licensing": {"tokenSecretRef": {"name": "smart-licensing"},
                "productLicense": "CML_Enterprise"}}}),
            expect: &["spec.licensing.productLicense", "must match licenseType"],
        },
        Invalid {
            case: "expansion nodes on a Personal template",
            base: t,
            patch: json!({"spec": {"licensing": {"tokenSecretRef": {"name": "smart-licensing"},
                "expansionNodes": 20}}}),
            expect: &[
                "spec.licensing.expansionNodes",
                "only applies to an Enterprise product",
            ],
        },
        Invalid {
            case: "a product license that is not a CML name",
            base: t,
            patch: json!({"spec": {"licenseType": "Enterprise", "licensing": {
                "tokenSecretRef": {"name": "smart-licensing"}, "productLicense": "CML Enterprise!"}}}),
            expect: &["spec.licensing.productLicense", "should match"],
        },
        Invalid {
            case: "licensing without a token Secret",
            base: t,
            patch: json!({"spec": {"licensing": {"productLicense": "CML_Personal"}}}),
            expect: &["spec.licensing.tokenSecretRef", "Required value"],
        },
        Invalid {
            case: "duration in words",
            base: t,
            patch: json!({"spec": {"scaling": {"drainTimeout": "4 hours"}}}),
            expect: &["spec.scaling.drainTimeout", "should match"],
        },
        Invalid {
            case: "negative duration",
            base: t,
            patch: json!({"spec": {"scaling": {"scaleDownGracePeriod": "-5m"}}}),
            expect: &["spec.scaling.scaleDownGracePeriod", "should match"],
        },
        Invalid {
            case: "unknown license type",
            base: t,
            patch: json!({"spec": {"licenseType": "Gold"}}),
            expect: &["spec.licenseType", "Unsupported value", "\"Personal\""],
        },
        Invalid {
            case: "unknown provider",
            base: t,
            patch: json!({"spec": {"provider": "gcp"}}),
            expect: &["spec.provider", "Unsupported value", "\"simulated\""],
        },
        Invalid {
            case: "unknown root volume type",
            base: t,
            patch: json!({"spec": {"rootVolume": {"type": "st9"}}}),
            expect: &["spec.rootVolume.type", "Unsupported value"],
        },
        Invalid {
            case: "reserved tag key",
            base: t,
            patch: json!({"spec": {"tags": {"ccm:managed": "false"}}}),
            expect: &["spec.tags", "reserved"],
        },
        Invalid {
            case: "malformed subnet id",
            base: t,
            patch: json!({"spec": {"subnetIds": ["vpc-0123abcd"]}}),
            expect: &["spec.subnetIds[0]", "should match"],
        },
        Invalid {
            case: "misspelled field",
            base: t,
            patch: json!({"spec": {"instanceTyp": "m5zn.metal"}}),
            expect: &["unknown field", "spec.instanceTyp"],
        },
        Invalid {
            case: "unknown desiredState",
            base: w,
            patch: json!({"spec": {"desiredState": "Paused"}}),
            expect: &["spec.desiredState", "Unsupported value", "\"Draining\""],
        },
        Invalid {
            case: "worker without templateRef",
            base: w,
            patch: json!({"spec": {"templateRef": null, "desiredState": "Running"}}),
            expect: &["spec.templateRef", "Required value"],
        },
        Invalid {
            case: "empty template name",
            base: w,
            patch: json!({"spec": {"templateRef": {"name": ""}}}),
            expect: &["spec.templateRef.name", "at least 1 chars long"],
        },
    ]
}

#[tokio::test]
async fn invalid_manifests_are_rejected_naming_the_field() {
    let (cp, ns) = namespace("invalid").await;
    let cases = invalid_manifests();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let mut manifest = (case.base)(&format!("invalid-{i}"));
        merge(&mut manifest, &case.patch);
        let out =
            cp.kubectl_with_input(&["apply", "-n", &ns.name, "-f", "-"], &manifest.to_string());
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!("{}: accepted", case.case));
        } else if let Some(missing) = case.expect.iter().find(|e| !stderr.contains(*e)) {
            failures.push(format!("{}: answer lacks {missing:?}: {stderr}", case.case));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Nothing invalid slipped in.
    let left = cp.kubectl_ok(&["get", "wkt,wk", "-n", &ns.name, "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");
    ns.delete().await;
}

#[tokio::test]
async fn template_ref_cannot_change() {
    let (cp, ns) = namespace("immutable").await;
    let worker = valid_worker("w1");
    let created = cp.kubectl_with_input(&["apply", "-n", &ns.name, "-f", "-"], &worker.to_string());
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );

    let out = cp
        .kubectl()
        .args(["patch", "wk", "w1", "-n", &ns.name, "--type=merge", "-p"])
        .arg(r#"{"spec":{"templateRef":{"name":"enterprise-large"}}}"#)
        .output()
        .expect("run kubectl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "templateRef change was accepted");
    assert!(
        stderr.contains("spec.templateRef") && stderr.contains("templateRef is immutable"),
        "{stderr}"
    );

    // Other spec fields stay mutable.
    cp.kubectl_ok(&[
        "patch",
        "wk",
        "w1",
        "-n",
        &ns.name,
        "--type=merge",
        "-p",
        r#"{"spec":{"desiredState":"Draining"}}"#,
    ]);
    ns.delete().await;
}

#[tokio::test]
async fn defaults_are_filled_in_by_the_api_server() {
    let (cp, ns) = namespace("defaults").await;
    let template = valid_template("minimal");
    let out = cp.kubectl_with_input(&["apply", "-n", &ns.name, "-f", "-"], &template.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let worker = valid_worker("w");
    let out = cp.kubectl_with_input(&["apply", "-n", &ns.name, "-f", "-"], &worker.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let stored: Value = serde_json::from_str(
        &cp.kubectl_ok(&["get", "wkt", "minimal", "-n", &ns.name, "-o", "json"]),
    )
    .expect("json");
    let spec = &stored["spec"];
    assert_eq!(spec["provider"], "aws");
    assert_eq!(spec["rootVolume"], json!({"sizeGiB": 500, "type": "gp3"}));
    assert_eq!(spec["portRange"], json!({"start": 2000, "end": 9999}));
    assert_eq!(spec["cml"]["port"], 443);
    assert_eq!(spec["cml"]["insecureSkipTlsVerify"], false);
    assert_eq!(spec["cml"]["usePrivateIp"], true);
    assert_eq!(spec["associatePublicIpAddress"], false);
    assert_eq!(
        spec["metadataOptions"],
        json!({"httpTokens": "required", "httpPutResponseHopLimit": 1, "instanceMetadataTags": false})
    );
    assert_eq!(
        spec["scaling"],
        json!({
            "minWorkers": 0, "maxWorkers": 3, "warmWorkers": 0, "maxStoppedWorkers": 0,
            "scaleDownGracePeriod": "30m", "drainTimeout": "4h", "maxConcurrentDrains": 1,
            "launchTimeout": "10m", "readyTimeout": "30m"
        })
    );
    let stored: Value =
        serde_json::from_str(&cp.kubectl_ok(&["get", "wk", "w", "-n", &ns.name, "-o", "json"]))
            .expect("json");
    assert_eq!(stored["spec"]["desiredState"], "Running");

    // Licensing: its timeouts default, and an Enterprise template may take expansion nodes.
    let mut licensed = valid_template("licensed");
    licensed["spec"]["licenseType"] = json!("Enterprise");
    licensed["spec"]["licensing"] = json!({
        "tokenSecretRef": {"name": "smart-licensing"}, "expansionNodes": 20});
    cp.kubectl_with_input(&["apply", "-n", &ns.name, "-f", "-"], &licensed.to_string());
    let stored: Value = serde_json::from_str(
        &cp.kubectl_ok(&["get", "wkt", "licensed", "-n", &ns.name, "-o", "json"]),
    )
    .expect("json");
    assert_eq!(
        stored["spec"]["licensing"],
        json!({"tokenSecretRef": {"name": "smart-licensing"}, "expansionNodes": 20,
               "registrationTimeout": "5m", "deregistrationTimeout": "2m"})
    );

    // What the API server stores reads back into the Rust types.
    let client = cp.client().await;
    let api: kube::Api<resource_controller::crd::WorkerTemplate> =
        kube::Api::namespaced(client, &ns.name);
    let typed = api.get("minimal").await.expect("get typed template");
    assert_eq!(
        typed.spec.scaling.drain_timeout.as_std().as_secs(),
        4 * 3600
    );
    ns.delete().await;
}
