//! One real control plane per test binary: etcd, kube-apiserver with authentication and RBAC on,
//! an admin kubeconfig, and this crate's CRDs installed and Established.

use std::os::unix::process::CommandExt;
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
    time::Duration,
};

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::{
    binaries::Binaries,
    guardian::Guardian,
    process::{free_port, random_hex, spawn_logged, try_wait_until, wait_until},
};

/// The controller's ServiceAccount in `deploy/`, as a user name for impersonation.
pub const SERVICE_ACCOUNT: &str = "system:serviceaccount:ccm-system:resource-controller";

pub struct ControlPlane {
    pub binaries: Binaries,
    /// Scratch directory: certificates, etcd data, logs, kubeconfig.
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub server: String,
    pub etcd_url: String,
    apiserver: std::sync::Mutex<ApiServer>,
    guardian: Guardian,
}

/// The running kube-apiserver and what starting it again on the same port needs.
struct ApiServer {
    child: std::process::Child,
    port: u16,
    token: String,
}

static SHARED: OnceLock<ControlPlane> = OnceLock::new();

impl ControlPlane {
    /// The control plane of this test binary, started on first use.
    pub fn shared() -> &'static ControlPlane {
        SHARED.get_or_init(ControlPlane::start)
    }

    fn start() -> ControlPlane {
        let binaries = Binaries::locate();
        let dir = super::process::scratch_dir("controlplane-");
        let guardian = Guardian::start(&dir);

        let etcd_url = start_etcd(&binaries.etcd, &dir, &guardian);
        let token = write_credentials(&dir);
        let port = free_port();
        let child = start_apiserver(&binaries, &dir, &etcd_url, port, &token, &guardian);
        let server = format!("https://127.0.0.1:{port}");
        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &server,
            &dir.join("certs/apiserver.crt"),
            &token,
        );

        let cp = ControlPlane {
            binaries,
            dir,
            kubeconfig,
            server,
            etcd_url,
            apiserver: std::sync::Mutex::new(ApiServer { child, port, token }),
            guardian,
        };
        cp.install_crds();
        cp
    }

    /// Kills kube-apiserver and starts it again on the same port and etcd, as an upgrade or a
    /// crash would; returns once it is ready again.
    pub fn restart_apiserver(&self) {
        let mut api = self.apiserver.lock().unwrap_or_else(|e| e.into_inner());
        let _ = api.child.kill();
        let _ = api.child.wait();
        api.child = start_apiserver(
            &self.binaries,
            &self.dir,
            &self.etcd_url,
            api.port,
            &api.token,
            &self.guardian,
        );
    }

    /// A kubectl command bound to the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.binaries.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// Runs kubectl with `args` and `stdin`, returning its output whatever the exit code.
    pub fn kubectl_with_input(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .kubectl()
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn kubectl");
        child
            .stdin
            .take()
            .expect("kubectl stdin")
            .write_all(stdin.as_bytes())
            .expect("write kubectl stdin");
        child.wait_with_output().expect("wait for kubectl")
    }

    /// Runs kubectl with `args`; panics with its stderr unless it succeeds; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl().args(args).output().expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes a kubeconfig like the admin's, reaching the API server at `server` (e.g. through a
    /// proxy) and acting as `user` when given (impersonated, e.g. a ServiceAccount).
    pub fn kubeconfig_variant(&self, path: &Path, server: Option<&str>, user: Option<&str>) {
        let text = std::fs::read_to_string(&self.kubeconfig).expect("read kubeconfig");
        let mut config: serde_json::Value = serde_json::from_str(&text).expect("kubeconfig json");
        if let Some(server) = server {
            config["clusters"][0]["cluster"]["server"] = server.into();
        }
        if let Some(user) = user {
            config["users"][0]["user"]["as"] = user.into();
        }
        std::fs::write(path, config.to_string()).expect("write kubeconfig");
    }

    /// Applies the namespace, ServiceAccount and RBAC of `deploy/`, once per test binary.
    pub fn install_rbac(&self) {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let deploy = crate::repo_root().join("deploy");
            for file in ["namespace.yaml", "serviceaccount.yaml", "rbac.yaml"] {
                self.kubectl_ok(&["apply", "-f", &deploy.join(file).display().to_string()]);
            }
        });
    }

    /// A client for the admin user, bound to the caller's runtime.
    pub async fn client(&self) -> kube::Client {
        self.client_as(None).await
    }

    /// A client acting as `user` (impersonated by the admin), e.g. a ServiceAccount.
    pub async fn client_as(&self, user: Option<&str>) -> kube::Client {
        let mut kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        for auth in &mut kubeconfig.auth_infos {
            if let Some(info) = auth.auth_info.as_mut() {
                info.impersonate = user.map(str::to_owned);
            }
        }
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("load kubeconfig");
        kube::Client::try_from(config).expect("build client")
    }

    fn install_crds(&self) {
        let crds = crate::repo_root().join("crds");
        let crds = crds.to_str().expect("utf-8 path");
        self.kubectl_ok(&["apply", "--server-side", "-f", crds]);
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "-f",
            crds,
        ]);
    }
}

fn start_etcd(etcd: &Path, dir: &Path, guardian: &Guardian) -> String {
    // A port found free can be taken before etcd binds it: try again on others.
    for _ in 0..5 {
        let (client, peer) = (free_port(), free_port());
        match spawn_etcd(
            etcd,
            &dir.join("etcd"),
            client,
            peer,
            &dir.join("etcd.log"),
            guardian,
        ) {
            // It runs until the test binary exits; the guardian stops and reaps it.
            Ok(_child) => return format!("http://127.0.0.1:{client}"),
            Err(e) if e.contains("address already in use") => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("etcd found no free port in 5 tries");
}

/// Starts a single-member etcd on loopback ports and waits until it is healthy.
pub fn spawn_etcd(
    etcd: &Path,
    data_dir: &Path,
    client: u16,
    peer: u16,
    log: &Path,
    guardian: &Guardian,
) -> Result<std::process::Child, String> {
    spawn_etcd_with(etcd, data_dir, (client, peer), None, log, guardian)
}

/// [`spawn_etcd`], serving clients over mutual TLS when `tls` is a directory made by
/// [`crate::certs::make_mutual_tls`] and a port for its plain health endpoint.
pub fn spawn_etcd_with(
    etcd: &Path,
    data_dir: &Path,
    (client, peer): (u16, u16),
    tls: Option<(&Path, u16)>,
    log: &Path,
    guardian: &Guardian,
) -> Result<std::process::Child, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let client_url = format!("{scheme}://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut cmd = Command::new(etcd);
    // Its own process group: a Ctrl-C at the terminal (make run) stops the controller first,
    // while the cluster still answers; the guardian stops this when its owner exits.
    cmd.process_group(0);
    cmd.arg("--name=test")
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=test={peer_url}"))
        .arg("--unsafe-no-fsync=true")
        .arg("--log-level=warn");
    let mut health = format!("127.0.0.1:{client}");
    if let Some((dir, metrics)) = tls {
        let file = |name: &str| dir.join(name).display().to_string();
        cmd.arg(format!("--trusted-ca-file={}", file("ca.crt")))
            .arg(format!("--cert-file={}", file("server.crt")))
            .arg(format!("--key-file={}", file("server.key")))
            .arg("--client-cert-auth=true")
            .arg(format!("--listen-metrics-urls=http://127.0.0.1:{metrics}"));
        health = format!("127.0.0.1:{metrics}");
    }
    let mut child = spawn_logged(cmd, log, guardian);
    try_wait_until("etcd", &mut child, log, Duration::from_secs(30), || {
        http_get(&health, "/health").is_some_and(|body| body.contains("\"health\":\"true\""))
    })?;
    Ok(child)
}

/// The service-account signing key and the admin's token file; returns the token.
fn write_credentials(dir: &Path) -> String {
    let sa_key = dir.join("service-account.key");
    let status = Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&sa_key)
        .arg("2048")
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl (install it with `make install`)");
    assert!(status.success(), "openssl genrsa failed");
    let token = random_hex(32);
    let tokens = dir.join("tokens.csv");
    std::fs::write(
        &tokens,
        format!("{token},admin,admin-uid,\"system:masters\"\n"),
    )
    .expect("write token file");
    token
}

/// Starts kube-apiserver on `port` and waits until it is ready.
fn start_apiserver(
    binaries: &Binaries,
    dir: &Path,
    etcd_url: &str,
    port: u16,
    token: &str,
    guardian: &Guardian,
) -> std::process::Child {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).expect("create cert dir");
    let sa_key = dir.join("service-account.key");
    let tokens = dir.join("tokens.csv");
    let log = dir.join("kube-apiserver.log");
    let mut cmd = Command::new(&binaries.kube_apiserver);
    cmd.process_group(0);
    cmd.arg(format!("--etcd-servers={etcd_url}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg(format!("--cert-dir={}", certs.display()))
        .arg(format!("--token-auth-file={}", tokens.display()))
        .arg("--authorization-mode=RBAC")
        .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
        .arg(format!("--service-account-key-file={}", sa_key.display()))
        .arg(format!(
            "--service-account-signing-key-file={}",
            sa_key.display()
        ))
        .arg("--service-cluster-ip-range=10.0.0.0/24")
        .arg("--disable-admission-plugins=ServiceAccount")
        .arg("--allow-privileged=true")
        .arg("--endpoint-reconciler-type=none")
        .arg("--v=1");
    let mut child = spawn_logged(cmd, &log, guardian);
    let server = format!("https://127.0.0.1:{port}");

    // Ready once an authenticated /readyz answers ok; kubectl needs the kubeconfig for that.
    let probe_config = dir.join("probe-kubeconfig");
    let crt = certs.join("apiserver.crt");
    wait_until(
        "kube-apiserver",
        &mut child,
        &log,
        Duration::from_secs(90),
        || {
            if !crt.exists() {
                return false;
            }
            write_kubeconfig(&probe_config, &server, &crt, token);
            Command::new(&binaries.kubectl)
                .arg("--kubeconfig")
                .arg(&probe_config)
                .args(["get", "--raw=/readyz"])
                .output()
                .is_ok_and(|o| o.status.success())
        },
    );
    child
}

fn write_kubeconfig(path: &Path, server: &str, ca: &Path, token: &str) {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
        "current-context": "test",
    });
    std::fs::write(
        path,
        serde_json::to_string_pretty(&config).expect("kubeconfig json"),
    )
    .expect("write kubeconfig");
}

/// A plain HTTP/1.0 GET on loopback; `None` when nothing answers.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}
