//! The collector's own certificate authority: it signs the collector's server certificate
//! and every agent's client certificate, and nothing else.
//!
//! An agent's request is used for exactly one thing: its public key (after checking the
//! request's signature). Subject, validity and extensions are the collector's choice:
//! a client-only, non-CA certificate naming the org from the enrollment token.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};
use vedetta_common::files::write_private;
use vedetta_common::identity::{SERVER_NAME, fingerprint};

/// How long an agent certificate is valid. Renewal is by re-enrollment.
pub const AGENT_CERT_VALIDITY: Duration = Duration::days(397);
const CA_VALIDITY: Duration = Duration::days(3650);
const SERVER_CERT_VALIDITY: Duration = Duration::days(825);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate request refused: {0}")]
    BadRequest(String),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate error: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// The files of the PKI inside the data directory.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The HTTPS API's certificate (names people and browsers use, not the agents' one).
    pub https_cert: PathBuf,
    pub https_key: PathBuf,
}

impl PkiPaths {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            https_cert: dir.join("https.crt"),
            https_key: dir.join("https.key"),
        }
    }
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

fn random_serial() -> SerialNumber {
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = OffsetDateTime::now_utc();
    // A little back-dating tolerates clock skew between collector and agents.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + lifetime;
    params.serial_number = Some(random_serial());
}

/// Creates the CA and the server certificate; returns the CA fingerprint.
pub fn create(paths: &PkiPaths, ca_name: &str) -> Result<String, PkiError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "Vedetta");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca_params, CA_VALIDITY);
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let server_key = KeyPair::generate()?;
    let mut server_params = CertificateParams::new(vec![SERVER_NAME.to_owned()])?;
    server_params.distinguished_name = DistinguishedName::new();
    server_params
        .distinguished_name
        .push(DnType::CommonName, SERVER_NAME);
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.use_authority_key_identifier_extension = true;
    validity(&mut server_params, SERVER_CERT_VALIDITY);
    let issuer = Issuer::new(ca_params, &ca_key);
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    let write_public = |path: &Path, contents: &str| {
        std::fs::write(path, contents).map_err(|source| PkiError::Io {
            action: "write",
            path: path.to_owned(),
            source,
        })
    };
    let write_secret = |path: &Path, contents: &str| {
        write_private(path, contents.as_bytes()).map_err(|source| PkiError::Io {
            action: "write",
            path: path.to_owned(),
            source,
        })
    };
    write_secret(&paths.ca_key, &ca_key.serialize_pem())?;
    write_public(&paths.ca_cert, &ca_cert.pem())?;
    write_secret(&paths.server_key, &server_key.serialize_pem())?;
    write_public(
        &paths.server_cert,
        &format!("{}{}", server_cert.pem(), ca_cert.pem()),
    )?;
    Ok(fingerprint(ca_cert.der()))
}

/// The CA, loaded to sign agent certificates.
#[derive(Debug)]
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

impl CertificateAuthority {
    pub fn load(paths: &PkiPaths) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(&read(&paths.ca_key)?)?;
        let pem = read(&paths.ca_cert)?;
        let der = parse_pem_certificates(&pem)
            .into_iter()
            .next()
            .ok_or_else(|| {
                PkiError::BadRequest(format!("no certificate in {}", paths.ca_cert.display()))
            })?;
        let issuer = Issuer::from_ca_cert_der(&der, key)?;
        Ok(Self { issuer, der })
    }

    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.der)
    }

    /// Signs a client certificate for `agent_id` of `org` with the public key of `csr_der`.
    pub fn sign_agent(
        &self,
        csr_der: &[u8],
        org: &str,
        agent_id: &str,
    ) -> Result<Vec<u8>, PkiError> {
        let request = CertificateSigningRequestParams::from_der(&csr_der.into())
            .map_err(|error| PkiError::BadRequest(error.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        params.distinguished_name.push(DnType::CommonName, agent_id);
        params.subject_alt_names = vec![SanType::URI(
            format!("urn:vedetta:agent:{org}:{agent_id}")
                .try_into()
                .map_err(|_| PkiError::BadRequest("agent name not encodable".into()))?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, AGENT_CERT_VALIDITY);
        let certificate = params.signed_by(&request.public_key, &self.issuer)?;
        Ok(certificate.der().to_vec())
    }
}

impl CertificateAuthority {
    /// Issues the HTTPS API's certificate for `names` (host names or addresses), unless
    /// one for exactly these names is already there. Returns its chain and key.
    pub fn https_identity(
        &self,
        paths: &PkiPaths,
        names: &[String],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
        let names_file = paths.https_cert.with_extension("names");
        let wanted = names.join("\n");
        let current = std::fs::read_to_string(&names_file).unwrap_or_default();
        if current != wanted || !paths.https_cert.exists() || !paths.https_key.exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.subject_alt_names = names
                .iter()
                .map(|name| match name.parse::<std::net::IpAddr>() {
                    Ok(address) => Ok(SanType::IpAddress(address)),
                    Err(_) => Ok(SanType::DnsName(name.clone().try_into()?)),
                })
                .collect::<Result<_, rcgen::Error>>()?;
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, format!("{SERVER_NAME} API"));
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.use_authority_key_identifier_extension = true;
            validity(&mut params, SERVER_CERT_VALIDITY);
            let certificate = params.signed_by(&key, &self.issuer)?;
            let ca_pem = read(&paths.ca_cert)?;
            write_private(&paths.https_key, key.serialize_pem().as_bytes()).map_err(|source| {
                PkiError::Io {
                    action: "write",
                    path: paths.https_key.clone(),
                    source,
                }
            })?;
            for (path, contents) in [
                (&paths.https_cert, format!("{}{ca_pem}", certificate.pem())),
                (&names_file, wanted),
            ] {
                std::fs::write(path, contents).map_err(|source| PkiError::Io {
                    action: "write",
                    path: path.clone(),
                    source,
                })?;
            }
        }
        let chain = parse_pem_certificates(&read(&paths.https_cert)?);
        let key = KeyPair::from_pem(&read(&paths.https_key)?)?;
        Ok((
            chain,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        ))
    }
}

/// A certificate chain and key the operator provides for the API (PEM files), checked to
/// belong together before the collector listens with them.
pub fn provided_identity(
    certificate: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
    use rustls::pki_types::pem::PemObject;
    let chain = parse_pem_certificates(&read(certificate)?);
    if chain.is_empty() {
        return Err(PkiError::BadRequest(format!(
            "no certificate in {}",
            certificate.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(read(key)?.as_bytes()).map_err(|error| {
        PkiError::BadRequest(format!(
            "no usable private key in {}: {error}",
            key.display()
        ))
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|error| PkiError::BadRequest(format!("unsupported private key: {error}")))?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing)
        .keys_match()
        .map_err(|error| {
            PkiError::BadRequest(format!(
                "the key does not belong to {}: {error}",
                certificate.display()
            ))
        })?;
    Ok((chain, key))
}

/// Every certificate in a PEM text, in order.
pub fn parse_pem_certificates(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect()
}

/// The server's certificate chain and key, for the QUIC endpoint.
pub fn load_server_identity(
    paths: &PkiPaths,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PkiError> {
    let chain = parse_pem_certificates(&read(&paths.server_cert)?);
    let key = KeyPair::from_pem(&read(&paths.server_key)?)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((chain, key))
}
