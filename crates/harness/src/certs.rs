//! Certificates for the test servers, made with openssl: a CA, a server certificate for
//! 127.0.0.1, and a client certificate for mutual TLS.

use std::{path::Path, process::Command};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A key and a certificate `name.crt` signed by the CA in `dir`, for `usage` (`serverAuth` or
/// `clientAuth`).
fn signed(dir: &Path, name: &str, subject: &str, usage: &str) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let crt = format!("{name}.crt");
    let ext = format!("{name}.ext");
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject,
        ],
    );
    let names = if usage == "serverAuth" {
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    } else {
        ""
    };
    let extensions = format!(
        "{names}basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n"
    );
    std::fs::write(dir.join(&ext), extensions).expect("ext file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

fn make_ca(dir: &Path) {
    std::fs::create_dir_all(dir).expect("cert dir");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=ccm-test-ca",
        ],
    );
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).expect("read pem")
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (CA, certificate, key) as PEM.
pub fn make_certificates(dir: &Path) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    make_ca(dir);
    signed(dir, "server", "/CN=127.0.0.1", "serverAuth");
    (
        read(dir, "ca.crt"),
        read(dir, "server.crt"),
        read(dir, "server.key"),
    )
}

/// Everything mutual TLS needs, as files in one directory: `ca.crt`, `server.crt`/`.key` for
/// 127.0.0.1, and `client.crt`/`.key` with the common name `user` (etcd takes it as the user).
pub fn make_mutual_tls(dir: &Path, user: &str) {
    make_ca(dir);
    signed(dir, "server", "/CN=127.0.0.1", "serverAuth");
    signed(dir, "client", &format!("/CN={user}"), "clientAuth");
}
