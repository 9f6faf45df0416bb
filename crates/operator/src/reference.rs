//! Reference text generated from the code, so the documentation cannot drift from it: the table
//! of `resource-controller run` flags in `docs/operations.md` (`make docs` writes it; a test
//! fails while it is stale).

use clap::CommandFactory;

use crate::cli::Cli;

/// A Markdown table of every flag of `run`: its environment variable, default and help.
pub fn flag_table() -> String {
    let mut cli = Cli::command();
    cli.build();
    let mut out = String::from("| flag | env | default | meaning |\n| --- | --- | --- | --- |\n");
    let Some(run) = cli.find_subcommand("run") else {
        return out;
    };
    for arg in run.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue;
        };
        if arg.is_hide_set() || long == "help" || long == "version" {
            continue;
        }
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| format!("`{}`", v.to_string_lossy()))
            .collect();
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        out.push_str(&format!(
            "| `--{long}` | {env} | {} | {} |\n",
            defaults.join(", "),
            help.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_run_flag_is_a_row_with_its_env_and_default() {
        let table = super::flag_table();
        assert!(
            table.contains("| `--cluster-id` | `CLUSTER_ID` |  |"),
            "{table}"
        );
        assert!(
            table.contains("| `--log-format` | `LOG_FORMAT` | `text` |"),
            "{table}"
        );
        assert!(!table.contains("`--help`"));
    }
}
