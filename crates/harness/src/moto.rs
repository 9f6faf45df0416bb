//! moto's EC2 server from the project venv, one per test binary (plus one with authentication
//! on, started only by tests that need it). Tests isolate their state by using their own region.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::config::Credentials;

use super::{
    guardian::Guardian,
    process::{free_port, spawn_logged, wait_until},
};

pub struct Moto {
    pub endpoint: String,
    _guardian: Guardian,
}

static OPEN: OnceLock<Moto> = OnceLock::new();
static AUTHENTICATING: OnceLock<Moto> = OnceLock::new();

impl Moto {
    /// A moto server that accepts any credentials.
    pub fn shared() -> &'static Moto {
        OPEN.get_or_init(|| Moto::start(false))
    }

    /// A moto server that checks credentials (it knows none, so every key is refused).
    pub fn authenticating() -> &'static Moto {
        AUTHENTICATING.get_or_init(|| Moto::start(true))
    }

    fn start(auth: bool) -> Moto {
        let server = moto_server();
        let dir = super::process::scratch_dir("moto-");
        let guardian = Guardian::start(&dir);
        let port = free_port();
        let mut cmd = Command::new(server);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        if auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let log = dir.join("moto.log");
        let mut child = spawn_logged(cmd, &log, &guardian);
        let addr = format!("127.0.0.1:{port}");
        wait_until(
            "moto_server",
            &mut child,
            &log,
            Duration::from_secs(60),
            || std::net::TcpStream::connect(&addr).is_ok(),
        );
        Moto {
            endpoint: format!("http://{addr}"),
            _guardian: guardian,
        }
    }

    /// SDK configuration for `region` on this server with static test credentials.
    pub async fn sdk_config(&self, region: &str) -> SdkConfig {
        sdk_config(&self.endpoint, region).await
    }
}

/// SDK configuration for any endpoint, with static test credentials.
pub async fn sdk_config(endpoint: &str, region: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            "AKIATESTTESTTEST",
            "test-secret",
            None,
            None,
            "tests",
        ))
        .load()
        .await
}

fn moto_server() -> PathBuf {
    let path = crate::repo_root().join("target/venv/bin/moto_server");
    assert!(path.is_file(), "no {}: run `make venv`", path.display());
    path
}

/// The id of one of moto's stock Amazon images.
pub async fn stock_image(ec2: &aws_sdk_ec2::Client) -> String {
    let images = ec2
        .describe_images()
        .owners("amazon")
        .send()
        .await
        .expect("stock images");
    images.images()[0].image_id().expect("image id").to_owned()
}
