//! How the CML client trusts a worker's certificate: a CA bundle, a pinned certificate (trust on
//! first use, the default), or nothing at all (the explicit opt-in). Pinning is a rustls verifier
//! of our own, so the credentials only ever travel over a connection whose certificate matched.

use std::sync::Arc;

use reqwest::ClientBuilder;
use rustls::{
    CertificateError, DigitallySignedStruct, Error as TlsError, OtherError, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use super::{CertificateFingerprint, TlsPolicy};

/// The fingerprint of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> CertificateFingerprint {
    CertificateFingerprint(Sha256::digest(der).into())
}

/// `builder` set up to trust the worker's certificate as `policy` says. Every client reports
/// the certificate it saw (`tls_info`), so the probe can pin it.
pub fn configure(builder: ClientBuilder, policy: &TlsPolicy) -> Result<ClientBuilder, String> {
    let builder = builder.tls_info(true);
    Ok(match policy {
        TlsPolicy::Ca(pem) => builder.tls_certs_only(crate::tls::ca_certificates(pem)?),
        TlsPolicy::SkipVerify => builder.tls_danger_accept_invalid_certs(true),
        TlsPolicy::Pinned(accepted) => builder.tls_backend_preconfigured(pinned_config(accepted)?),
    })
}

/// A TLS configuration that accepts only the `accepted` certificates, or any at first use.
fn pinned_config(accepted: &[CertificateFingerprint]) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = PinnedVerifier {
        accepted: accepted.to_vec(),
        provider: provider.clone(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // reqwest leaves a preconfigured connection's ALPN to us.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificate CML presented is not the pinned one.
#[derive(Debug, thiserror::Error)]
#[error("the certificate changed: pinned {}, presented {presented}", list(.pinned))]
pub struct CertificateChanged {
    pub pinned: Vec<CertificateFingerprint>,
    pub presented: CertificateFingerprint,
}

fn list(fingerprints: &[CertificateFingerprint]) -> String {
    let shown: Vec<String> = fingerprints.iter().map(|f| f.to_string()).collect();
    shown.join(" or ")
}

/// The pin refusal behind a failed request, if that is why it failed.
pub fn certificate_changed<'e>(
    e: &'e (dyn std::error::Error + 'static),
) -> Option<&'e CertificateChanged> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(changed) = refusal(e) {
            return Some(changed);
        }
        next = e.source();
    }
    None
}

fn refusal<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e CertificateChanged> {
    if let Some(changed) = e.downcast_ref::<CertificateChanged>() {
        return Some(changed);
    }
    // io::Error's `source` skips the error it wraps (which may be another io::Error).
    if let Some(wrapped) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        return refusal(wrapped);
    }
    match e.downcast_ref::<TlsError>()? {
        TlsError::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<CertificateChanged>()
        }
        _ => None,
    }
}

/// Accepts a certificate by its fingerprint alone: CML's certificate is self-signed for a host
/// name that is not the address we reach it on, so the chain and name cannot be checked; the
/// handshake signature still proves the server holds the certificate's key.
#[derive(Debug)]
struct PinnedVerifier {
    /// Empty at first use: any certificate is accepted, and the probe reports it.
    accepted: Vec<CertificateFingerprint>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let presented = fingerprint(end_entity);
        if self.accepted.is_empty() || self.accepted.contains(&presented) {
            return Ok(ServerCertVerified::assertion());
        }
        let changed = CertificateChanged {
            pinned: self.accepted.clone(),
            presented,
        };
        Err(TlsError::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(changed)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_refusal_is_found_behind_the_io_error_that_carries_it() {
        let changed = CertificateChanged {
            pinned: vec![CertificateFingerprint([1; 32])],
            presented: CertificateFingerprint([2; 32]),
        };
        let tls =
            TlsError::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(changed))));
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let found = certificate_changed(&io).expect("found");
        assert_eq!(found.presented, CertificateFingerprint([2; 32]));
        assert!(found.to_string().contains("pinned 01:01"));
        let other = std::io::Error::other("connection refused");
        assert!(certificate_changed(&other).is_none());
    }

    #[test]
    fn the_fingerprint_is_the_sha256_of_the_der() {
        // SHA-256 of the empty input.
        assert!(
            fingerprint(b"")
                .to_string()
                .starts_with("E3:B0:C4:42:98:FC:1C:14")
        );
    }
}
