//! A cluster's certificate authority, made in memory (feature `certs`): for runs whose
//! endpoints are all started by one program, and for writing the PEM files of a run
//! spread over several.

use crate::tls::{Tls, server_name};
use crate::{TlsIdentity, tls_name};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use snapshot_core::{Endpoint, TransportError};
use std::time::{Duration, SystemTime};

/// How long a certificate from [`Ca::issue`] is valid: a year.
pub const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How long a [`Ca`] made by [`Ca::new`] is valid: ten years.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Certificates are valid from this long before they are made, for clocks that are
/// a little behind.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// The certificate authority of one cluster: it signs a certificate for each endpoint,
/// named after it ([`tls_name`]), with an ECDSA P-256 key of its own.
///
/// Its certificate may sign only names of its cluster (a name constraint), and no
/// other authority below it.
///
/// ```
/// use snapshot_core::{Endpoint, NodeId};
/// use transport_tcp::{Ca, TcpConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ca = Ca::new("bank")?;
/// let node = TcpConfig {
///     tls: Some(ca.issue(Endpoint::Node(NodeId(1)))?),
///     ..TcpConfig::new("bank", Vec::new())
/// };
/// assert_eq!(node.tls.as_ref().unwrap().names(), ["node-1.bank"]);
/// # Ok(())
/// # }
/// ```
pub struct Ca {
    cluster: String,
    issuer: Issuer<'static, KeyPair>,
    certificate: CertificateDer<'static>,
    pem: CaPem,
}

/// Shows the cluster, not the key.
impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// A [`Ca`] in PEM: its certificate, which every endpoint needs, and its private key,
/// which only what issues certificates needs.
#[derive(Clone)]
pub struct CaPem {
    /// The certificate (`-----BEGIN CERTIFICATE-----`).
    pub cert: String,
    /// The private key, PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
    pub key: String,
}

/// Shows the certificate, not the key.
impl std::fmt::Debug for CaPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaPem")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

/// A [`TlsIdentity`] in PEM, the three files that
/// [`TlsIdentity::from_pem_files`] reads.
#[derive(Clone)]
pub struct TlsPem {
    /// The authority's certificates.
    pub ca: String,
    /// The endpoint's certificate chain, its own certificate first.
    pub cert: String,
    /// The endpoint's private key.
    pub key: String,
}

/// Shows the certificates, not the key.
impl std::fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPem")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

fn rcgen_error(what: &str) -> impl FnOnce(rcgen::Error) -> TransportError + '_ {
    move |error| TransportError::Config(format!("{what}: {error}"))
}

/// A time as rcgen takes it: one the certificate can carry (years 1 to 9999 at most),
/// or [`TransportError::Config`].
fn when(time: SystemTime) -> Result<time::OffsetDateTime, TransportError> {
    let nanos = match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).ok(),
        Err(before) => i128::try_from(before.duration().as_nanos())
            .ok()
            .map(|nanos| -nanos),
    };
    nanos
        .and_then(|nanos| time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok())
        .ok_or_else(|| {
            TransportError::Config(format!(
                "a certificate cannot be valid from or until {time:?}"
            ))
        })
}

/// Now, moved `offset` later or earlier (now itself if that cannot be represented).
fn now_shifted(offset: Duration, later: bool) -> SystemTime {
    let now = SystemTime::now();
    let shifted = if later {
        now.checked_add(offset)
    } else {
        now.checked_sub(offset)
    };
    shifted.unwrap_or(now)
}

/// The certificate parameters of the authority of `cluster`, but its validity: the
/// same each time, so that an authority read back from PEM signs as the one written.
fn ca_params(cluster: &str) -> Result<CertificateParams, TransportError> {
    server_name(Endpoint::Role(0), cluster)?;
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, "snapshot-rs");
    subject.push(
        DnType::CommonName,
        format!("snapshot-rs authority of cluster {cluster}"),
    );
    params.distinguished_name = subject;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DnsName(cluster.to_owned())],
        excluded_subtrees: Vec::new(),
    });
    Ok(params)
}

impl Ca {
    /// A new authority for the cluster `cluster`, with a fresh key, valid from an hour
    /// ago for ten years. Fails with [`TransportError::Config`] if `cluster` is not a
    /// DNS name (letters, digits, hyphens, dots), which certificates could not carry.
    pub fn new(cluster: &str) -> Result<Self, TransportError> {
        let mut params = ca_params(cluster)?;
        params.not_before = when(now_shifted(BACKDATE, false))?;
        params.not_after = when(now_shifted(CA_VALIDITY, true))?;
        let key = KeyPair::generate().map_err(rcgen_error("making the CA's key"))?;
        let certificate = params
            .self_signed(&key)
            .map_err(rcgen_error("making the CA's certificate"))?;
        let pem = CaPem {
            cert: certificate.pem(),
            key: key.serialize_pem(),
        };
        Ok(Ca {
            cluster: cluster.to_owned(),
            certificate: certificate.der().clone(),
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    /// The authority of the cluster `cluster` that [`to_pem`](Self::to_pem) wrote,
    /// to issue more certificates. Fails with [`TransportError::Config`] if the PEM
    /// does not parse, or is not that of an authority of `cluster` made by
    /// [`Ca::new`] (a certificate it issues would not chain to it).
    pub fn from_pem(cluster: &str, pem: &CaPem) -> Result<Self, TransportError> {
        let params = ca_params(cluster)?;
        let key = KeyPair::from_pem(&pem.key).map_err(rcgen_error("reading the CA's key"))?;
        let certificate = CertificateDer::from_pem_slice(pem.cert.as_bytes()).map_err(|error| {
            TransportError::Config(format!("reading the CA's certificate: {error}"))
        })?;
        let ca = Ca {
            cluster: cluster.to_owned(),
            issuer: Issuer::new(params, key),
            certificate,
            pem: pem.clone(),
        };
        // A certificate it issues must chain to its certificate.
        let probe = ca.issue(Endpoint::Role(0))?;
        Tls::new(&probe, Endpoint::Role(0), cluster).map_err(|error| {
            TransportError::Config(format!(
                "the CA's certificate and key are not those of an authority of cluster \
                 {cluster} made by Ca::new: {error}"
            ))
        })?;
        Ok(ca)
    }

    /// The cluster whose endpoints it names.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Its certificate, which every endpoint of the cluster trusts.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// Its certificate and private key, in PEM.
    pub fn to_pem(&self) -> CaPem {
        self.pem.clone()
    }

    /// A certificate and key for `endpoint`, named [`tls_name`]`(endpoint, cluster)`,
    /// valid from an hour ago for [`CERT_VALIDITY`], for both sides of a connection;
    /// with this authority's certificate, the identity the endpoint's
    /// [`TcpConfig::tls`](crate::TcpConfig::tls) takes.
    pub fn issue(&self, endpoint: Endpoint) -> Result<TlsIdentity, TransportError> {
        self.issue_valid(
            endpoint,
            now_shifted(BACKDATE, false),
            now_shifted(CERT_VALIDITY, true),
        )
    }

    /// As [`issue`](Self::issue), valid from `not_before` to `not_after`: for
    /// certificates that expire soon, or have expired (to see them refused).
    pub fn issue_valid(
        &self,
        endpoint: Endpoint,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<TlsIdentity, TransportError> {
        let name = tls_name(endpoint, &self.cluster);
        let mut params = CertificateParams::default();
        let dns = name
            .clone()
            .try_into()
            .map_err(rcgen_error("naming the certificate"))?;
        params.subject_alt_names = vec![SanType::DnsName(dns)];
        let mut subject = DistinguishedName::new();
        subject.push(DnType::OrganizationName, "snapshot-rs");
        subject.push(DnType::CommonName, name);
        params.distinguished_name = subject;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = when(not_before)?;
        params.not_after = when(not_after)?;
        let key = KeyPair::generate().map_err(rcgen_error("making an endpoint's key"))?;
        let certificate = params
            .signed_by(&key, &self.issuer)
            .map_err(rcgen_error("signing an endpoint's certificate"))?;
        Ok(TlsIdentity {
            ca: vec![self.certificate.clone()],
            cert_chain: vec![certificate.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }
}

fn encode(tag: &str, contents: &[u8]) -> String {
    pem::encode(&pem::Pem::new(tag, contents))
}

impl TlsIdentity {
    /// The identity in PEM, as [`from_pem_files`](Self::from_pem_files) and
    /// [`from_pem`](Self::from_pem) read it (feature `certs`).
    pub fn to_pem(&self) -> TlsPem {
        let certificates = |list: &[CertificateDer<'_>]| {
            list.iter()
                .map(|cert| encode("CERTIFICATE", cert))
                .collect::<String>()
        };
        let tag = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        TlsPem {
            ca: certificates(&self.ca),
            cert: certificates(&self.cert_chain),
            key: encode(tag, self.key.secret_der()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapshot_core::NodeId;

    #[test]
    fn an_issued_identity_names_its_endpoint_and_survives_pem() {
        let ca = Ca::new("unit").unwrap();
        let identity = ca.issue(Endpoint::Node(NodeId(4))).unwrap();
        assert_eq!(identity.names(), ["node-4.unit"]);
        assert!(Tls::new(&identity, Endpoint::Node(NodeId(4)), "unit").is_ok());
        let pem = identity.to_pem();
        assert!(pem.key.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = TlsIdentity::from_pem(&pem.ca, &pem.cert, &pem.key).unwrap();
        assert_eq!(back.cert_chain, identity.cert_chain);
        assert_eq!(back.ca, identity.ca);
        assert_eq!(back.key.secret_der(), identity.key.secret_der());
        assert!(!format!("{identity:?}{pem:?}{:?}", ca.to_pem()).contains("PRIVATE KEY-----"));
    }

    #[test]
    fn a_ca_read_back_from_pem_issues_certificates_its_cluster_accepts() {
        let ca = Ca::new("unit").unwrap();
        let again = Ca::from_pem("unit", &ca.to_pem()).unwrap();
        let identity = again.issue(Endpoint::Role(0)).unwrap();
        assert_eq!(identity.names(), ["master.unit"]);
        let trusting_the_first = TlsIdentity {
            ca: vec![ca.certificate().clone()],
            ..identity
        };
        assert!(Tls::new(&trusting_the_first, Endpoint::Role(0), "unit").is_ok());
    }

    #[test]
    fn an_endpoint_refuses_a_certificate_that_does_not_name_it_or_has_expired() {
        let ca = Ca::new("unit").unwrap();
        let other = ca.issue(Endpoint::Role(3)).unwrap();
        let refused = Tls::new(&other, Endpoint::Role(2), "unit").err();
        assert!(
            matches!(&refused, Some(TransportError::Config(why)) if why.contains("role-3.unit")),
            "{refused:?}"
        );
        let day = Duration::from_secs(24 * 60 * 60);
        let now = SystemTime::now();
        let expired = ca
            .issue_valid(Endpoint::Role(2), now - 2 * day, now - day)
            .unwrap();
        let refused = Tls::new(&expired, Endpoint::Role(2), "unit").err();
        assert!(
            matches!(&refused, Some(TransportError::Config(why)) if why.contains("expired")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_ca_of_another_cluster_or_a_foreign_key_is_not_read_back() {
        let ca = Ca::new("unit").unwrap();
        assert!(Ca::from_pem("other", &ca.to_pem()).is_err());
        let mixed = CaPem {
            key: Ca::new("unit").unwrap().to_pem().key,
            ..ca.to_pem()
        };
        assert!(Ca::from_pem("unit", &mixed).is_err());
    }

    #[test]
    fn a_cluster_name_that_is_no_dns_name_is_refused() {
        for name in ["two words", ""] {
            assert!(
                matches!(
                    Ca::new(name),
                    Err(TransportError::Config(why)) if why.contains("DNS name")
                ),
                "{name:?}"
            );
        }
    }
}
