//! TLS for the hub's endpoints (HTTPS for the service API, MQTTS for devices): a private CA and
//! a server certificate generated with rcgen, or the user's own certificate and key, and the
//! rustls server configuration (TLS 1.2 and 1.3) both endpoints use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use time::OffsetDateTime;

/// File names inside the state directory.
pub(crate) const CA_CERT: &str = "ca.pem";
/// The CA's private key (kept so the server certificate can be reissued for new host names).
pub(crate) const CA_KEY: &str = "ca.key";
/// The server certificate chain.
pub(crate) const SERVER_CERT: &str = "server.pem";
/// The server's private key.
pub(crate) const SERVER_KEY: &str = "server.key";

/// Why TLS material could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong, e.g. "no certificate".
        what: String,
    },
    /// Certificate generation failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("the certificate or key is unusable: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A server certificate chain, its key, and the CA file clients should trust (if we made it).
#[derive(Debug)]
pub struct TlsMaterial {
    /// Leaf first.
    pub(crate) chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub(crate) key: PrivateKeyDer<'static>,
    /// The CA certificate clients trust (`None` for a user-supplied certificate).
    pub ca_path: Option<PathBuf>,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        TlsMaterial {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            ca_path: self.ca_path.clone(),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn ca_params(now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "fleetsim local CA");
    dn.push(DnType::OrganizationName, "fleetsim");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::from_secs(24 * 3600);
    params.not_after = now + Duration::from_secs(20 * 365 * 24 * 3600);
    params
}

/// Makes (or reuses) the CA in `dir` and issues a fresh server certificate for `names`
/// (DNS names or IP addresses), written as `server.pem` / `server.key`. The CA is created once
/// and kept: clients that trust `ca.pem` keep trusting the hub across restarts and new names.
pub(crate) fn generate(
    dir: &Path,
    names: &[String],
    now: OffsetDateTime,
) -> Result<TlsMaterial, TlsError> {
    let ca_cert_path = dir.join(CA_CERT);
    let ca_key_path = dir.join(CA_KEY);
    let ca_key = if ca_key_path.exists() && ca_cert_path.exists() {
        let pem = std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
        KeyPair::from_pem(&pem)?
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params(now).self_signed(&key)?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        std::fs::write(&ca_cert_path, cert.pem()).map_err(io(&ca_cert_path))?;
        key
    };
    // Same subject and key as ca.pem, so what it signs chains to ca.pem.
    let ca = ca_params(now).self_signed(&ca_key)?;

    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("localhost", String::as_str),
    );
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.not_before = now - Duration::from_secs(24 * 3600);
    params.not_after = now + Duration::from_secs(397 * 24 * 3600);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    let server_cert = dir.join(SERVER_CERT);
    let server_key = dir.join(SERVER_KEY);
    std::fs::write(&server_cert, cert.pem()).map_err(io(&server_cert))?;
    write_private(&server_key, &key.serialize_pem())?;
    Ok(TlsMaterial {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| TlsError::Pem {
            path: server_key,
            what: e.to_owned(),
        })?,
        ca_path: Some(ca_cert_path),
    })
}

/// Loads the user's own certificate chain and key (PEM).
pub(crate) fn load(cert: &Path, key: &Path) -> Result<TlsMaterial, TlsError> {
    let pem_err = |path: &Path, e: rustls::pki_types::pem::Error| TlsError::Pem {
        path: path.to_owned(),
        what: e.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_owned(),
            what: "no CERTIFICATE block".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e))?;
    Ok(TlsMaterial {
        chain,
        key: key_der,
        ca_path: None,
    })
}

/// A rustls server configuration (TLS 1.2 and 1.3, no client certificates) for `material`.
pub(crate) fn server_config(material: &TlsMaterial) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(material.chain.clone(), material.key.clone_key())?;
    Ok(Arc::new(config))
}

/// A TLS acceptor for `material`, for any TCP server.
pub fn acceptor(material: &TlsMaterial) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    Ok(tokio_rustls::TlsAcceptor::from(server_config(material)?))
}

/// Writes a secret file readable by its owner only (on Unix).
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    std::fs::write(path, contents).map_err(io(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_reissues_for_new_names_and_loads_back() {
        let dir = std::env::temp_dir().join(format!("fleetsim-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = generate(&dir, &names, now).unwrap();
        let ca = std::fs::read_to_string(dir.join(CA_CERT)).unwrap();
        let more = vec!["hub.test".to_string(), "localhost".to_string()];
        let second = generate(&dir, &more, now).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join(CA_CERT)).unwrap(), ca);
        assert_ne!(first.chain, second.chain);
        assert!(server_config(&second).is_ok());
        let loaded = load(&dir.join(SERVER_CERT), &dir.join(SERVER_KEY)).unwrap();
        assert_eq!(loaded.chain, second.chain);
        assert!(matches!(
            load(&dir.join(CA_KEY), &dir.join(SERVER_KEY)),
            Err(TlsError::Pem { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
