//! Small helpers for starting and waiting on local servers.

use std::{
    fs::File,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::guardian::Guardian;

/// Where scratch directories go: cargo's per-target tmp dir for tests, `target/tmp` otherwise.
pub fn scratch_base() -> std::path::PathBuf {
    option_env!("CARGO_TARGET_TMPDIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("target/tmp"))
}

/// A new scratch directory that outlives the handle (the guardian removes it at exit).
pub fn scratch_dir(prefix: &str) -> std::path::PathBuf {
    let base = scratch_base();
    std::fs::create_dir_all(&base).expect("create scratch base");
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .expect("create scratch dir")
        .keep()
}

/// A port that was free a moment ago on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// A random hex string, unique enough for tokens and names in tests.
pub fn random_hex(len: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < len {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        h.write_usize(out.len());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(len);
    out
}

/// Spawns `cmd` with output going to `log`, handed to the guardian.
pub fn spawn_logged(mut cmd: Command, log: &Path, guardian: &Guardian) -> Child {
    let out = File::create(log).expect("create log file");
    let err = out.try_clone().expect("clone log file handle");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    guardian.watch(child.id());
    child
}

/// Polls `ready` until it holds; on timeout or early exit of `child`, panics with the log's tail.
pub fn wait_until(
    what: &str,
    child: &mut Child,
    log: &Path,
    timeout: Duration,
    ready: impl FnMut() -> bool,
) {
    if let Err(e) = try_wait_until(what, child, log, timeout, ready) {
        panic!("{e}");
    }
}

/// As [`wait_until`], but says what went wrong instead of panicking (the child is killed).
pub fn try_wait_until(
    what: &str,
    child: &mut Child,
    log: &Path,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "{what} exited with {status} before it was ready:\n{}",
                tail(log)
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{what} not ready after {timeout:?}:\n{}",
                tail(log)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last lines of a log file, for failure messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The fields of /proc/<pid>/stat after the parenthesised command name, as numbers.
fn stat_fields(pid: u32) -> Vec<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    after.split(' ').map(|f| f.parse().unwrap_or(0.0)).collect()
}

/// A numeric field of a /proc status file (sizes in kB).
fn status_field(status: &str, key: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
}

/// What a process used so far, from /proc: CPU seconds, current RSS and peak RSS in MiB.
pub fn usage(pid: u32) -> (f64, f64, f64) {
    // utime and stime are the 12th and 13th fields after the command name.
    let fields = stat_fields(pid);
    let ticks = fields[11] + fields[12];
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib = |key: &str| status_field(&status, key).expect("status field");
    // The kernel reports CPU time in USER_HZ, 100 on Linux.
    (
        ticks / 100.0,
        kib("VmRSS:") / 1024.0,
        kib("VmHWM:") / 1024.0,
    )
}

/// Where a process's CPU went: user and system seconds, minor page faults, and context
/// switches (voluntary: it waited; involuntary: it was preempted).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    pub user: f64,
    pub system: f64,
    pub minor_faults: f64,
    pub voluntary_switches: f64,
    pub involuntary_switches: f64,
}

impl CpuSplit {
    pub fn of(pid: u32) -> CpuSplit {
        let fields = stat_fields(pid);
        // Switches are counted per thread: sum the threads alive now.
        let mut switches = (0.0, 0.0);
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("proc tasks")
            .flatten()
        {
            let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            let count = |key: &str| status_field(&status, key).unwrap_or(0.0);
            switches.0 += count("voluntary_ctxt_switches:");
            switches.1 += count("nonvoluntary_ctxt_switches:");
        }
        CpuSplit {
            // After the command name: minflt is the 8th field, utime the 12th, stime the 13th.
            minor_faults: fields[7],
            user: fields[11] / 100.0,
            system: fields[12] / 100.0,
            voluntary_switches: switches.0,
            involuntary_switches: switches.1,
        }
    }

    pub fn since(&self, earlier: &CpuSplit) -> CpuSplit {
        CpuSplit {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
            minor_faults: self.minor_faults - earlier.minor_faults,
            voluntary_switches: self.voluntary_switches - earlier.voluntary_switches,
            involuntary_switches: self.involuntary_switches - earlier.involuntary_switches,
        }
    }
}
