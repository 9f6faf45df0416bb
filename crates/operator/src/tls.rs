//! CA bundles for the HTTPS clients (CML, Control Plane API).

use rustls_pki_types::{CertificateDer, pem::PemObject};

/// The certificates of a PEM bundle; an error names what is wrong with it. reqwest itself would
/// accept anything here and fail every handshake later.
pub fn ca_certificates(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, String> {
    let ders = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the CA bundle is not valid PEM: {e}"))?;
    if ders.is_empty() {
        return Err("the CA bundle holds no certificate".into());
    }
    ders.iter()
        .map(|der| {
            reqwest::Certificate::from_der(der)
                .map_err(|e| format!("the CA bundle holds a bad certificate: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_is_not_a_certificate_is_refused() {
        assert!(ca_certificates(b"not a pem").is_err());
        assert!(ca_certificates(b"").is_err());
    }
}
