//! The certificates of a cluster's TLS: `master certs` writes a certificate authority
//! and a certificate and key per endpoint as PEM files, and a run that starts its own
//! nodes makes the same in memory.
//!
//! The master's certificate names two endpoints, `master.<cluster>` and
//! `role-1.<cluster>`: the observer runs in the master's process and has an endpoint
//! of its own, which uses the master's identity (see [`observer_shares_master`]).

use crate::protocol::{MASTER, OBSERVER};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use snapshot_core::{Endpoint, NodeId};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use transport_tcp::{CERT_VALIDITY, Ca, TlsIdentity, tls_name};

/// Why `master certs` wrote nothing, or not everything.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// The request cannot be met (a cluster name that is no DNS name, no nodes).
    #[error("{0}")]
    Usage(String),
    /// Files of these names exist already: nothing was written.
    #[error("refusing to overwrite {}", list(.0))]
    Exists(Vec<PathBuf>),
    /// A certificate could not be made, or a file written.
    #[error("{0}")]
    Failed(String),
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The observer's endpoint uses the master's identity: the master's certificate names
/// both (`master.<cluster>` and `role-1.<cluster>`). Says whether `identity` names the
/// observer of `cluster` too.
pub fn observer_shares_master(identity: &TlsIdentity, cluster: &str) -> bool {
    identity
        .names()
        .iter()
        .any(|name| name == &tls_name(OBSERVER, cluster))
}

/// The files `master certs` writes for `nodes` into `dir`, in the order it writes
/// them: each certificate, then its key; the keys' are the second of each pair.
pub fn file_names(nodes: &[NodeId]) -> Vec<String> {
    let mut names = vec![
        "ca.pem".to_string(),
        "ca-key.pem".to_string(),
        "master.pem".to_string(),
        "master-key.pem".to_string(),
    ];
    for node in nodes {
        names.push(format!("node-{}.pem", node.0));
        names.push(format!("node-{}-key.pem", node.0));
    }
    names
}

/// The authority's subject, as the authority `Ca::new` makes names itself: a
/// certificate that this issuer signs chains to that authority.
fn ca_issuer(ca: &Ca) -> Result<Issuer<'static, KeyPair>, CertsError> {
    let failed = |e: rcgen::Error| CertsError::Failed(format!("reading the CA's key: {e}"));
    let key = KeyPair::from_pem(&ca.to_pem().key).map_err(failed)?;
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, "snapshot-rs");
    subject.push(
        DnType::CommonName,
        format!("snapshot-rs authority of cluster {}", ca.cluster()),
    );
    params.distinguished_name = subject;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(Issuer::new(params, key))
}

/// The master's identity from `ca`: one certificate that names the master and the
/// observer, valid from an hour ago for [`CERT_VALIDITY`], for both sides of a
/// connection.
pub fn master_identity(ca: &Ca) -> Result<TlsIdentity, CertsError> {
    let failed =
        |e: rcgen::Error| CertsError::Failed(format!("making the master's certificate: {e}"));
    let cluster = ca.cluster();
    let names = [tls_name(MASTER, cluster), tls_name(OBSERVER, cluster)];
    let mut params = CertificateParams::default();
    for name in &names {
        params
            .subject_alt_names
            .push(SanType::DnsName(name.clone().try_into().map_err(failed)?));
    }
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, "snapshot-rs");
    subject.push(DnType::CommonName, names[0].clone());
    params.distinguished_name = subject;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + CERT_VALIDITY;
    let key = KeyPair::generate().map_err(failed)?;
    let certificate = params.signed_by(&key, &ca_issuer(ca)?).map_err(failed)?;
    TlsIdentity::from_pem(&ca.to_pem().cert, &certificate.pem(), &key.serialize_pem())
        .map_err(|e| CertsError::Failed(format!("reading the master's certificate: {e}")))
}

/// The identity of `endpoint` from `ca`: the master's (which names the observer too)
/// for the master, its own for any other.
pub fn identity(ca: &Ca, endpoint: Endpoint) -> Result<TlsIdentity, CertsError> {
    if endpoint == MASTER {
        return master_identity(ca);
    }
    ca.issue(endpoint).map_err(|e| {
        CertsError::Failed(format!("issuing {}: {e}", tls_name(endpoint, ca.cluster())))
    })
}

/// Makes the authority of `cluster` and the certificates of its master and of
/// `nodes`, and writes them into `dir` (made if missing) as [`file_names`] lists them;
/// keys with mode 0600. Writes nothing if any of those files exists. Returns the
/// paths written.
pub fn write(cluster: &str, nodes: &[NodeId], dir: &Path) -> Result<Vec<PathBuf>, CertsError> {
    if nodes.is_empty() {
        return Err(CertsError::Usage("no nodes: --nodes 1,2,3".to_string()));
    }
    let unique: BTreeSet<_> = nodes.iter().collect();
    if unique.len() != nodes.len() {
        return Err(CertsError::Usage(
            "a node is named twice in --nodes".to_string(),
        ));
    }
    let names = file_names(nodes);
    let paths: Vec<PathBuf> = names.iter().map(|name| dir.join(name)).collect();
    let existing: Vec<PathBuf> = paths
        .iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .cloned()
        .collect();
    if !existing.is_empty() {
        return Err(CertsError::Exists(existing));
    }
    let ca =
        Ca::new(cluster).map_err(|e| CertsError::Usage(format!("cluster {cluster:?}: {e}")))?;
    let ca_pem = ca.to_pem();
    let mut contents = vec![ca_pem.cert, ca_pem.key];
    let master = master_identity(&ca)?.to_pem();
    contents.extend([master.cert, master.key]);
    for &node in nodes {
        let pem = identity(&ca, Endpoint::Node(node))?.to_pem();
        contents.extend([pem.cert, pem.key]);
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| CertsError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    for (index, (path, text)) in paths.iter().zip(&contents).enumerate() {
        let mode = if index % 2 == 1 { 0o600 } else { 0o644 };
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut file| {
                file.write_all(text.as_bytes())
                    .and_then(|()| file.sync_all())
            });
        if let Err(e) = written {
            return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
                CertsError::Exists(vec![path.clone()])
            } else {
                CertsError::Failed(format!("cannot write {}: {e}", path.display()))
            });
        }
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_master_certificate_names_the_observer_and_chains_to_the_ca() {
        let ca = Ca::new("unit").unwrap();
        let master = master_identity(&ca).unwrap();
        assert_eq!(master.names(), ["master.unit", "role-1.unit"]);
        assert!(observer_shares_master(&master, "unit"));
        // Both endpoints open with it: each checks its certificate against the CA.
        for endpoint in [MASTER, OBSERVER] {
            let config = transport_tcp::TcpConfig {
                tls: Some(master.clone()),
                ..transport_tcp::TcpConfig::new("unit", Vec::new())
            };
            transport_tcp::TcpTransport::<u8>::new(endpoint, config).unwrap();
        }
    }
}
