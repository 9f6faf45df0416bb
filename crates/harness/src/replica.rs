//! The built `resource-controller run` binary as one replica: started with short leader-election
//! timings, its output in a log file, its health endpoints polled over HTTP.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use super::process::free_port;

/// The Lease timings every replica in the tests uses: a leader cut off from the API server steps
/// down after `RENEW_DEADLINE`, a standby takes over `LEASE_TTL` after it last saw a renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(4);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(2);
pub const RETRY_PERIOD: Duration = Duration::from_millis(500);

/// The Lease timings `deploy/` runs with (the binary's defaults), as flags that replace the
/// tests' short ones.
pub const DEPLOYED_LEASE: [&str; 6] = [
    "--leader-lease-ttl",
    "15",
    "--leader-renew-deadline",
    "10s",
    "--leader-retry-period",
    "2s",
];

pub struct Replica {
    child: Child,
    pub identity: String,
    pub port: u16,
    pub log: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    /// Starts a replica reconciling `namespace` through `kubeconfig`, its log in `dir`, with
    /// `extra` arguments and `env` on top of the defaults.
    pub fn start(
        kubeconfig: &Path,
        namespace: &str,
        identity: &str,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Replica {
        let port = free_port();
        let log = dir.join(format!("{identity}.log"));
        let out = std::fs::File::create(&log).expect("create replica log");
        let err = out.try_clone().expect("clone log handle");
        let ttl = LEASE_TTL.as_secs().to_string();
        let renew = format!("{}ms", RENEW_DEADLINE.as_millis());
        let retry = format!("{}ms", RETRY_PERIOD.as_millis());
        let binary = crate::controller_binary();
        let defaults = [
            ("--poll-interval", "300ms"),
            ("--reconcile-interval", "2"),
            ("--sim-boot-delay", "300ms"),
            ("--sim-cml-boot", "300ms"),
            ("--leader-lease-ttl", &ttl),
            ("--leader-renew-deadline", &renew),
            ("--leader-retry-period", &retry),
        ];
        // A flag in `extra` replaces its default.
        let defaults = defaults
            .iter()
            .filter(|(flag, _)| !extra.contains(flag))
            .flat_map(|(flag, value)| [*flag, *value]);
        let child = Command::new(binary)
            .args(["run", "--namespace", namespace, "--cluster-id", namespace])
            .args(defaults)
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("HEALTH_PORT", port.to_string())
            .env("CONTROLLER_INSTANCE_ID", identity)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start the controller binary");
        Replica {
            child,
            identity: identity.to_owned(),
            port,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `TERM`, `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// The exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Status, content type and body of a GET on the replica's health port.
    pub async fn get(&self, path: &str) -> Option<(u16, String, String)> {
        let response = reqwest::get(format!("http://127.0.0.1:{}{path}", self.port))
            .await
            .ok()?;
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Some((status, kind, response.text().await.ok()?))
    }

    /// Whether `/readyz` says this replica leads (and is ready).
    pub async fn leads(&self) -> bool {
        matches!(self.get("/readyz").await, Some((200, _, body)) if body.starts_with("leader"))
    }

    /// Polls `path` until `done` holds for its status and body; returns the body.
    pub async fn until(&self, path: &str, done: impl Fn(u16, &str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let last = self.get(path).await;
            if let Some((status, _, body)) = &last
                && done(*status, body)
            {
                return body.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: {path} never as expected: {last:?}\n{}",
                self.identity,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn until_leader(&self) -> String {
        self.until("/readyz", |s, b| s == 200 && b.starts_with("leader"))
            .await
    }
}
