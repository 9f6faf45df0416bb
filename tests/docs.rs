//! The documentation agrees with the code: the flag table in `docs/operations.md` is the one the
//! CLI definition generates (`make docs` rewrites it) and lists every flag `run --help` shows.

use std::{path::Path, process::Command};

const BEGIN: &str = "<!-- BEGIN GENERATED FLAGS: make docs -->\n";
const END: &str = "<!-- END GENERATED FLAGS -->";

fn operations() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md")
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
