//! `resource-controller simulate`: replays a schedule of lab bookings through the autoscaler's
//! planner in simulated time, for WorkerTemplates as users apply them, and prints labs on time,
//! instance-hours and the fleet's motion beside a clairvoyant lower bound. Nothing is created:
//! no cluster, no cloud.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use ccm_core::GoDuration;
use ccm_planning::{
    Durations, Settings, Spread, Template,
    sweep::{self, Axis},
};
use clap::{Args, ValueEnum};
use kube::ResourceExt;
use serde::Deserialize;

use crate::{
    controller::autoscaler::template_view,
    crd::{BootKind, LeadTime, WorkerTemplate},
};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// WorkerTemplates as YAML (several documents in a file, several files), as for kubectl.
    #[arg(long, value_name = "FILE", required = true, num_args = 1..)]
    pub templates: Vec<PathBuf>,
    /// Lab bookings, CSV (header: id,start,end,known_at,nodes,cpu_cores,memory_gb,storage_gb,
    /// licenses) or a JSON array of objects with those fields; times in RFC 3339, licenses
    /// separated by `|` in CSV.
    #[arg(long, value_name = "FILE")]
    pub schedule: PathBuf,
    /// The controller's --scale-up-lead-time, for templates without their own
    /// `scaleUpLeadTime` (a duration, or `auto`: the p95 of the launches measured in the replay
    /// plus 5 minutes, once 3 are).
    #[arg(long, default_value = "35m")]
    pub lead_time: GoDuration,
    /// How often the planner runs in simulated time.
    #[arg(long, default_value = "10s")]
    pub tick: GoDuration,
    /// Launch to Ready: a duration (`10m`) or a uniform range (`8m..12m`).
    #[arg(long, default_value = "8m..12m")]
    pub launch: Spread,
    /// Start of a stopped worker to Ready.
    #[arg(long, default_value = "3m..5m")]
    pub start: Spread,
    /// License registration, for templates with `spec.licensing`.
    #[arg(long, default_value = "1m")]
    pub license: Spread,
    /// Stop request to stopped.
    #[arg(long, default_value = "2m")]
    pub stop: Spread,
    /// Terminate request to gone.
    #[arg(long, default_value = "2m")]
    pub terminate: Spread,
    /// Seed of the duration draws: the same seed, the same figures.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Start from an empty fleet. By default the schedule is first replayed once, whole weeks
    /// earlier and not counted, so the fleet starts as running these settings leaves it
    /// (stopped pools filled, boots measured for `scaleUpLeadTime: auto`).
    #[arg(long)]
    pub cold_start: bool,
    /// A table for people, or JSON.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Also draw the replay as SVG into this file: the workers the labs need at least, the
    /// workers up and the workers ready, over time; with --sweep, each setting's labs on time
    /// against its instance-hours.
    #[arg(long, value_name = "FILE")]
    pub picture: Option<PathBuf>,
    /// Replay over the values of a knob and print the trade-off, e.g. `warmWorkers=0..3`,
    /// `leadTime=20m..60m/10m` or `maxStoppedWorkers=0,2,4` (each knob is set on every
    /// template, or on one with `TEMPLATE.KNOB`; `leadTime` is also the controller's);
    /// give it twice for a grid.
    #[arg(long, value_name = "KNOB=VALUES")]
    pub sweep: Vec<Axis>,
    /// Take the launch and start durations from a live template's measured boots
    /// (`status.bootDurations`: from the shortest to the longest of the last 20 of each kind),
    /// through the current kubeconfig; a kind with none measured keeps --launch or --start.
    #[arg(long, value_name = "NAMESPACE/TEMPLATE")]
    pub from_cluster: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Runs the replay and prints what it found.
pub async fn simulate(args: &SimulateArgs) -> anyhow::Result<()> {
    let mut durations = durations(args);
    if let Some(live) = &args.from_cluster {
        measured(live, &mut durations).await?;
    }
    let templates = read_templates(&args.templates)?;
    let text = std::fs::read_to_string(&args.schedule)
        .with_context(|| format!("reading {}", args.schedule.display()))?;
    let bookings = ccm_planning::schedule::parse(&text)
        .with_context(|| format!("{} is not a schedule", args.schedule.display()))?;
    let settings = Settings {
        lead_time: args.lead_time.as_std(),
        tick: args.tick.as_std(),
        durations,
        seed: args.seed,
        cold_start: args.cold_start,
    };
    anyhow::ensure!(args.sweep.len() <= 2, "--sweep takes one or two knobs");
    if !args.sweep.is_empty() {
        let points = sweep::sweep(&templates, &bookings, &settings, &args.sweep);
        if let Some(file) = &args.picture {
            let dots: Vec<(String, f64, f64)> = points
                .iter()
                .map(|p| {
                    (
                        p.setting.join(" "),
                        p.outcome.running_hours,
                        p.outcome.on_time_ratio(),
                    )
                })
                .collect();
            let title = format!("{} on {}", names(&templates), args.schedule.display());
            let svg = ccm_planning::picture::trade_off_svg(&dots, &title, 1200, 420);
            std::fs::write(file, svg).with_context(|| format!("writing {}", file.display()))?;
        }
        let text = match args.output {
            Output::Table => sweep::table(&points),
            Output::Json => serde_json::to_string_pretty(&points)? + "\n",
        };
        return print_all(&text);
    }
    let outcome =
        ccm_planning::replay_with_progress(&templates, &bookings, &settings, &mut progress_bar());
    if let Some(file) = &args.picture {
        let title = format!("{} on {}", names(&templates), args.schedule.display());
        let svg = ccm_planning::picture::svg(&outcome.timeline, &title, 1200, 420);
        std::fs::write(file, svg).with_context(|| format!("writing {}", file.display()))?;
    }
    let text = match args.output {
        Output::Table => {
            format!(
                "templates {}; {} bookings; lead time {}; launch {}, start {}, seed {}; {}\n\n{}",
                names(&templates),
                bookings.len(),
                lead_times(&templates, args.lead_time),
                durations.launch,
                durations.start,
                args.seed,
                if args.cold_start {
                    "from an empty fleet"
                } else {
                    "after a warm-up run of the same bookings"
                },
                outcome.table()
            )
        }
        Output::Json => serde_json::to_string_pretty(&outcome)? + "\n",
    };
    print_all(&text)
}

/// A progress bar on stderr while it is a terminal; nothing otherwise (logs, pipes, tests).
fn progress_bar() -> impl FnMut(f64) {
    use std::io::{IsTerminal as _, Write as _};
    let terminal = std::io::stderr().is_terminal();
    move |done: f64| {
        if !terminal {
            return;
        }
        let filled = (done * 40.0) as usize;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\rreplaying [{:<40}] {:>3.0} %",
            "#".repeat(filled),
            done * 100.0
        );
        if done >= 1.0 {
            let _ = writeln!(err);
        }
    }
}

/// Prints `text`; a reader that stopped early (`| head`) is not an error.
fn print_all(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn names(templates: &[Template]) -> String {
    let names: Vec<&str> = templates.iter().map(|t| t.name.as_str()).collect();
    names.join(", ")
}

/// The controller's lead time, and each template's own where it has one.
fn lead_times(templates: &[Template], flag: GoDuration) -> String {
    let own: Vec<String> = templates
        .iter()
        .filter_map(|t| {
            let lead = match t.lead_time? {
                LeadTime::Auto => "auto".to_owned(),
                LeadTime::Fixed(d) => d.to_string(),
            };
            Some(format!("{} {lead}", t.name))
        })
        .collect();
    if own.is_empty() {
        flag.to_string()
    } else {
        format!("{flag} ({})", own.join(", "))
    }
}

fn durations(args: &SimulateArgs) -> Durations {
    Durations {
        launch: args.launch,
        start: args.start,
        license: args.license,
        stop: args.stop,
        terminate: args.terminate,
    }
}

/// Replaces the launch and start spreads with what `live` (`namespace/name`) measured.
async fn measured(live: &str, durations: &mut Durations) -> anyhow::Result<()> {
    let (namespace, name) = live
        .split_once('/')
        .context("--from-cluster takes NAMESPACE/TEMPLATE")?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster of the current kubeconfig")?;
    let api: kube::Api<WorkerTemplate> = kube::Api::namespaced(client, namespace);
    let template = api
        .get(name)
        .await
        .with_context(|| format!("reading WorkerTemplate {live}"))?;
    let recent = template
        .status
        .and_then(|s| s.boot_durations)
        .map(|d| d.recent)
        .unwrap_or_default();
    let spread = |kind: BootKind| {
        let seconds = recent.iter().filter(|s| s.kind == kind).map(|s| s.seconds);
        let (low, high) = seconds.fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s), hi.max(s)));
        (low <= high).then(|| Spread {
            low: Duration::from_secs(low),
            high: Duration::from_secs(high),
        })
    };
    anyhow::ensure!(!recent.is_empty(), "{live} has measured no boots yet");
    if let Some(launch) = spread(BootKind::Launch) {
        durations.launch = launch;
    }
    if let Some(start) = spread(BootKind::Start) {
        durations.start = start;
    }
    Ok(())
}

/// Every WorkerTemplate of the files, as the replay uses them.
fn read_templates(files: &[PathBuf]) -> anyhow::Result<Vec<Template>> {
    let mut templates = Vec::new();
    for file in files {
        templates.extend(templates_in(file)?);
    }
    anyhow::ensure!(!templates.is_empty(), "no WorkerTemplate in {files:?}");
    Ok(templates)
}

fn templates_in(file: &Path) -> anyhow::Result<Vec<Template>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut found = Vec::new();
    for (k, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let value = serde_yaml_ng::Value::deserialize(doc)
            .with_context(|| format!("{}: document {} is not YAML", file.display(), k + 1))?;
        if value.get("kind").and_then(|v| v.as_str()) != Some("WorkerTemplate") {
            continue;
        }
        let t: WorkerTemplate = serde_yaml_ng::from_value(value).with_context(|| {
            format!(
                "{}: document {} is not a valid WorkerTemplate",
                file.display(),
                k + 1
            )
        })?;
        let schedule = t.spec.scaling.schedule.as_ref().map(|s| s.resolve());
        let schedule = schedule
            .transpose()
            .with_context(|| format!("{}: WorkerTemplate {}", file.display(), t.name_any()))?;
        found.push(Template {
            name: t.name_any(),
            view: template_view(&t, None, None),
            licensed: t.spec.licensing.is_some(),
            schedule,
            lead_time: t.spec.scaling.scale_up_lead_time,
        });
    }
    Ok(found)
}
