//! The cluster's certificate authority, node certificates and join tokens.
//!
//! The first node creates the CA (ECDSA P-256). Every member holds the CA
//! key, so any member can admit a new node: all members are equally trusted
//! (each holds the whole replicated state). A join token is signed by the CA
//! key and names the cluster, a single-use token id, an expiry and the CA
//! certificate's fingerprint, which the joining node pins to authenticate
//! the member it joins through.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use ring::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// The DNS name every member's certificate carries; members verify each
/// other by the CA, not by host names.
pub const CLUSTER_SERVER_NAME: &str = "omega-cluster";
const TOKEN_PREFIX: &str = "omega-join-";
const TOKEN_VERSION: u8 = 1;
/// Signature length of ECDSA P-256 in fixed encoding.
const SIGNATURE_BYTES: usize = 64;

/// Errors of the PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Certificate or key generation failed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The token is not well formed.
    #[error("not a valid join token")]
    MalformedToken,
    /// The token's signature does not verify against this cluster's CA.
    #[error("the join token is not signed by this cluster")]
    ForgedToken,
    /// The token is for another cluster.
    #[error("the join token is for cluster {token}, this is cluster {ours}")]
    OtherCluster {
        /// The token's cluster.
        token: String,
        /// This cluster.
        ours: String,
    },
    /// The token expired.
    #[error("the join token expired")]
    ExpiredToken,
}

fn certificate_error(error: impl std::fmt::Display) -> PkiError {
    PkiError::Certificate(error.to_string())
}

/// What a join token says, once its signature is checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Format version.
    pub version: u8,
    /// The cluster it admits to.
    pub cluster_id: [u8; 16],
    /// Single-use id (recorded in the replicated state when used).
    pub token_id: [u8; 16],
    /// Expiry, milliseconds since the epoch.
    pub expires_ms: u64,
    /// BLAKE3 of the CA certificate (DER): the joiner pins it.
    pub ca_fingerprint: [u8; 32],
}

impl TokenClaims {
    /// Reads a token's claims without checking its signature: what a joining
    /// node (which has no CA yet) can learn from it.
    pub fn parse_unverified(token: &str) -> Result<(TokenClaims, Vec<u8>, Vec<u8>), PkiError> {
        let encoded = token
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(PkiError::MalformedToken)?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| PkiError::MalformedToken)?;
        if bytes.len() <= SIGNATURE_BYTES {
            return Err(PkiError::MalformedToken);
        }
        let (body, signature) = bytes.split_at(bytes.len() - SIGNATURE_BYTES);
        let claims: TokenClaims = postcard::from_bytes(body).map_err(|_| PkiError::MalformedToken)?;
        if claims.version != TOKEN_VERSION {
            return Err(PkiError::MalformedToken);
        }
        Ok((claims, body.to_vec(), signature.to_vec()))
    }
}

/// A certificate and its private key, DER.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedKey {
    /// The certificate.
    pub cert_der: Vec<u8>,
    /// The PKCS#8 private key.
    pub key_der: Vec<u8>,
}

impl CertifiedKey {
    /// BLAKE3 of the certificate, hex: how members are recognised.
    pub fn fingerprint(&self) -> String {
        blake3::hash(&self.cert_der).to_hex().to_string()
    }
}

/// The cluster's certificate authority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterCa {
    /// The cluster's id.
    pub cluster_id: [u8; 16],
    /// The CA certificate and key.
    pub ca: CertifiedKey,
}

fn ca_params(cluster_id: &[u8; 16]) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("Omega cluster {}", hex::encode(cluster_id)));
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    params
}

impl ClusterCa {
    /// A new cluster with a fresh id and CA.
    pub fn create() -> Result<ClusterCa, PkiError> {
        let cluster_id: [u8; 16] = rand::random();
        let key = KeyPair::generate().map_err(certificate_error)?;
        let cert = ca_params(&cluster_id).self_signed(&key).map_err(certificate_error)?;
        Ok(ClusterCa {
            cluster_id,
            ca: CertifiedKey {
                cert_der: cert.der().to_vec(),
                key_der: key.serialize_der(),
            },
        })
    }

    /// The cluster id, hex.
    pub fn cluster_id_hex(&self) -> String {
        hex::encode(self.cluster_id)
    }

    /// BLAKE3 of the CA certificate.
    pub fn fingerprint(&self) -> [u8; 32] {
        *blake3::hash(&self.ca.cert_der).as_bytes()
    }

    fn key_pair(&self) -> Result<KeyPair, PkiError> {
        KeyPair::try_from(self.ca.key_der.as_slice()).map_err(certificate_error)
    }

    /// Issues a certificate for node `node_id`, with a fresh key.
    pub fn issue(&self, node_id: u64) -> Result<CertifiedKey, PkiError> {
        let issuer = Issuer::new(ca_params(&self.cluster_id), self.key_pair()?);
        let key = KeyPair::generate().map_err(certificate_error)?;
        let mut params = CertificateParams::new(vec![CLUSTER_SERVER_NAME.to_owned()]).map_err(certificate_error)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, format!("{NODE_NAME_PREFIX}{node_id}"));
        params.distinguished_name = name;
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer).map_err(certificate_error)?;
        Ok(CertifiedKey {
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }

    /// Signs a join token.
    pub fn sign_token(&self, token_id: [u8; 16], expires_ms: u64) -> Result<String, PkiError> {
        let claims = TokenClaims {
            version: TOKEN_VERSION,
            cluster_id: self.cluster_id,
            token_id,
            expires_ms,
            ca_fingerprint: self.fingerprint(),
        };
        let body = postcard::to_stdvec(&claims).map_err(certificate_error)?;
        let rng = ring::rand::SystemRandom::new();
        let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &self.ca.key_der, &rng)
            .map_err(certificate_error)?;
        let signature = signer.sign(&rng, &body).map_err(certificate_error)?;
        let mut bytes = body;
        bytes.extend_from_slice(signature.as_ref());
        Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Checks a token's signature, cluster and expiry (single use is the
    /// state machine's rule).
    pub fn verify_token(&self, token: &str, now_ms: u64) -> Result<TokenClaims, PkiError> {
        let (claims, body, signature) = TokenClaims::parse_unverified(token)?;
        let public = self.key_pair()?.public_key_raw().to_vec();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
            .verify(&body, &signature)
            .map_err(|_| PkiError::ForgedToken)?;
        if claims.cluster_id != self.cluster_id {
            return Err(PkiError::OtherCluster {
                token: hex::encode(claims.cluster_id),
                ours: self.cluster_id_hex(),
            });
        }
        if claims.expires_ms <= now_ms {
            return Err(PkiError::ExpiredToken);
        }
        Ok(claims)
    }
}

/// What a node keeps of its membership: written once when it creates or
/// joins a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Its Raft node id.
    pub node_id: u64,
    /// The cluster and its CA.
    pub cluster: ClusterCa,
    /// Its own certificate and key.
    pub node: CertifiedKey,
}

impl NodeIdentity {
    /// Reads the identity file, if the node has one.
    pub fn load(path: &Path) -> Result<Option<NodeIdentity>, PkiError> {
        let io = |source| PkiError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(|error| io(std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string()))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(io(error)),
        }
    }

    /// Writes the identity file durably, readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), PkiError> {
        let bytes = postcard::to_stdvec(self).map_err(certificate_error)?;
        write_private(path, &bytes).map_err(|source| PkiError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Writes a secret durably (a temporary file, fsync, rename, fsync of the
/// folder), readable by its owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A node certificate's common name is this followed by its node id.
const NODE_NAME_PREFIX: &str = "omega node ";

/// The node id a certificate's common name names (`omega node N`).
pub fn node_id_of_common_name(name: &str) -> Option<u64> {
    name.strip_prefix(NODE_NAME_PREFIX)?.parse().ok()
}
