//! The documentation agrees with the code: the flag table in `docs/operations.md` is the one the
//! CLI definition generates (`make docs` rewrites it) and lists every flag `run --help` shows.

use ccm_harness as support;
use std::process::Command;

const BEGIN: &str = "<!-- BEGIN GENERATED FLAGS: make docs -->\n";
const END: &str = "<!-- END GENERATED FLAGS -->";

fn operations() -> std::path::PathBuf {
    support::repo_root().join("docs/operations.md")
}

#[test]
fn the_flag_table_is_generated_from_the_cli() {
    let text = std::fs::read_to_string(operations()).expect("read docs/operations.md");
    let start = text.find(BEGIN).expect("begin marker") + BEGIN.len();
    let end = text.find(END).expect("end marker");
    let table = resource_controller::reference::flag_table();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        let updated = format!("{}{table}{}", &text[..start], &text[end..]);
        std::fs::write(operations(), updated).expect("write docs/operations.md");
        return;
    }
    assert_eq!(
        &text[start..end],
        table,
        "docs/operations.md's flag table is stale: run `make docs`"
    );
}

#[test]
fn every_flag_of_run_help_is_documented() {
    let out = Command::new(env!("CARGO_BIN_EXE_resource-controller"))
        .args(["run", "--help"])
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let docs = std::fs::read_to_string(operations()).expect("read docs/operations.md");
    let flags: Vec<&str> = help
        .split_whitespace()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        .filter(|w| !matches!(*w, "--help" | "--version"))
        .collect();
    assert!(flags.len() > 30, "too few flags read from:\n{help}");
    for flag in flags {
        assert!(
            docs.contains(&format!("`{flag}`")),
            "{flag} is not documented"
        );
    }
}

#[test]
fn every_condition_and_event_reason_is_explained() {
    use resource_controller::controller::reasons;
    let docs = std::fs::read_to_string(operations()).expect("read docs/operations.md");
    let events = docs
        .split("## Events and condition reasons")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the reasons section");
    let missing: Vec<&str> = reasons::whole()
        .into_iter()
        .chain(reasons::parts())
        .filter(|r| !events.contains(&format!("`{r}`")))
        .collect();
    assert!(missing.is_empty(), "reasons not explained: {missing:?}");
}

/// Property names under `spec` and `status` of a CRD's schema, at every depth.
fn schema_fields(crd: &serde_json::Value) -> Vec<String> {
    fn walk(schema: &serde_json::Value, out: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, sub) in props {
                out.push(name.clone());
                walk(sub, out);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(items, out);
        }
        if let Some(values) = schema.get("additionalProperties") {
            walk(values, out);
        }
    }
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
    let mut out = Vec::new();
    for part in ["spec", "status"] {
        walk(&root[part], &mut out);
    }
    out
}

#[test]
fn the_architecture_describes_every_field_of_both_crds() {
    let root = support::repo_root();
    let docs = std::fs::read_to_string(root.join("docs/architecture.md")).expect("read docs");
    for file in ["workers.ccm.dev.yaml", "workertemplates.ccm.dev.yaml"] {
        let text = std::fs::read_to_string(root.join("crds").join(file)).expect("read crd");
        let crd: serde_json::Value = serde_yaml_ng::from_str(&text).expect("crd yaml");
        let fields = schema_fields(&crd);
        assert!(fields.len() > 20, "{file}: too few fields read");
        let missing: Vec<&String> = fields
            .iter()
            .filter(|f| !docs.contains(f.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{file}: fields not in docs/architecture.md: {missing:?}"
        );
    }
}

/// The core stays pure: nothing in its dependency tree talks to Kubernetes, AWS, a runtime or
/// the network. (Cargo stops its code from naming crates it does not depend on; this stops the
/// dependency itself.)
#[test]
fn the_core_and_the_planning_crate_depend_on_no_kube_aws_tokio_or_http_crate() {
    for pure in ["ccm-core", "ccm-planning"] {
        let out = Command::new(env!("CARGO"))
            .args([
                "tree",
                "--offline",
                "-p",
                pure,
                "-e",
                "normal",
                "--prefix",
                "none",
            ])
            .current_dir(support::repo_root())
            .output()
            .expect("cargo tree");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tree = String::from_utf8_lossy(&out.stdout);
        let forbidden = [
            "kube",
            "k8s-openapi",
            "aws-",
            "tokio",
            "hyper",
            "reqwest",
            "warp",
            "tonic",
            "etcd-client",
        ];
        let crates: Vec<&str> = tree
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(crates.contains(&pure), "{tree}");
        for name in crates {
            assert!(
                !forbidden.iter().any(|f| name.starts_with(f)),
                "{pure} reaches {name}:\n{tree}"
            );
        }
    }
}

#[test]
fn every_base_image_of_the_dockerfile_is_pinned_by_digest() {
    let dockerfile =
        std::fs::read_to_string(support::repo_root().join("Dockerfile")).expect("read Dockerfile");
    let images: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert_eq!(images.len(), 2, "{images:?}");
    for image in images {
        let (tag, digest) = image
            .split_once("@sha256:")
            .unwrap_or_else(|| panic!("{image} is not pinned by digest"));
        assert!(tag.contains(':'), "{image}: keep the tag beside the digest");
        assert!(
            digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "{image}: not a SHA-256 digest"
        );
    }
}

#[test]
fn every_exported_metric_is_in_the_metrics_table() {
    let text = std::fs::read_to_string(operations()).expect("read operations.md");
    let table: Vec<&str> = text.lines().filter(|l| l.starts_with("| `ccm_")).collect();
    let encoded = resource_controller::telemetry::Metrics::default().encode();
    let families = encoded
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next());
    for family in families {
        assert!(
            table.iter().any(|row| row.contains(&format!("`{family}"))),
            "{family} is exported but not in the metrics table of docs/operations.md"
        );
    }
}

/// Every `.rs` file under `dir`, as a path from `root` with `/` separators.
fn rust_files(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).expect("under the root");
            out.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The module map of docs/architecture.md has a row for every source file of every crate
/// (`crates/*/src/**/*.rs`), and each path it names exists.
#[test]
fn the_module_map_lists_every_source_file_and_only_existing_ones() {
    let root = support::repo_root();
    let docs = std::fs::read_to_string(root.join("docs/architecture.md")).expect("read docs");
    let map = docs
        .split("\n## Module map\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the module map section");
    let listed: std::collections::BTreeSet<&str> = map
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let mut sources = Vec::new();
    for krate in std::fs::read_dir(root.join("crates")).expect("read crates") {
        let src = krate.expect("crate dir").path().join("src");
        if src.is_dir() {
            rust_files(&root, &src, &mut sources);
        }
    }
    assert!(
        sources.len() > 100,
        "too few source files found: {sources:?}"
    );
    sources.sort();
    let unlisted: Vec<&String> = sources
        .iter()
        .filter(|f| !listed.contains(f.as_str()))
        .collect();
    let gone: Vec<&&str> = listed.iter().filter(|p| !root.join(p).exists()).collect();
    assert!(
        unlisted.is_empty() && gone.is_empty(),
        "docs/architecture.md's module map is out of date:\n  files without a row: \
         {unlisted:#?}\n  rows naming no file: {gone:#?}"
    );
}
