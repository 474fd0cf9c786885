//! TLS material: the listener's certificate and key (`[server.tls]`), and the private CAs a
//! provider may trust (`ca_file`).
//!
//! Everything that reads a file here runs when a config is compiled (start-up,
//! `gateway check`, every reload), never on the request path. A file that cannot be read,
//! holds no usable PEM, or a key that does not match its certificate, is a [`ConfigError`]
//! naming the key (`server.tls.key`, `providers.NAME.ca_file`), the file and the fix, so
//! start-up exits 2 and a reload keeps the running config and certificate.
//!
//! One crypto provider, ring, is passed explicitly to every rustls config ([`provider`]); the
//! process-wide default is never installed nor read, so a second provider linked in by some
//! dependency cannot make start-up panic or change the ciphers.
//!
//! The listener's [`ServerConfig`] is compiled into each [`crate::runtime::Runtime`]; the
//! listener serves the one in its [`ServerTls`], an `ArcSwap` that a reload replaces. A
//! handshake takes the config current when it starts, so open connections keep the
//! certificate they were made with and new ones get the new pair.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerConfig;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, RootCertStore};
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, TlsConfig};

/// ALPN protocols the listener offers, in its order of preference.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The one crypto provider of the process: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks `[server.tls]` and builds the listener's server config: TLS 1.2 and
/// 1.3, no client certificates, ALPN `h2` then `http/1.1`.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, ConfigError> {
    let provider = provider();
    let key = load_pair(tls, &provider)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("server.tls", format!("cannot set up TLS: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Reads the certificate chain and the private key of `[server.tls]` and checks that the
/// key belongs to the chain's first (leaf) certificate.
pub fn load_pair(tls: &TlsConfig, provider: &CryptoProvider) -> Result<CertifiedKey, ConfigError> {
    const CERT: &str = "server.tls.cert";
    const KEY: &str = "server.tls.key";
    let chain = read_certs(
        CERT,
        &tls.cert,
        "the server's certificate chain, leaf first",
    )?;
    let key_pem = read(KEY, &tls.key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            let hint = if CertificateDer::pem_slice_iter(&key_pem).any(|c| c.is_ok()) {
                " (it holds a certificate: are cert and key swapped?)"
            } else {
                ""
            };
            ConfigError::new(
                KEY,
                format!(
                    "{:?} holds no PEM private key{hint}; point key at the certificate's \
                     private key (\"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\")",
                    tls.key
                ),
            )
        }
        e => ConfigError::new(
            KEY,
            format!(
                "{:?} is not valid PEM ({e}); point key at the certificate's PEM private key",
                tls.key
            ),
        ),
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| {
            ConfigError::new(
                KEY,
                format!(
                    "{:?} holds a private key that cannot be used ({e}); use an RSA (2048 bits or more), \
                     ECDSA P-256/P-384 or Ed25519 key",
                    tls.key
                ),
            )
        })?;
    let pair = CertifiedKey::new(chain, signing_key);
    match pair.keys_match() {
        // A key type whose public half rustls cannot derive: nothing to compare, as rustls
        // itself accepts it.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(ConfigError::new(
                KEY,
                format!(
                    "{:?} does not match the certificate in {:?}; point key at that certificate's \
                     private key, or cert at the certificate issued for this key",
                    tls.key, tls.cert
                ),
            ))
        }
        Err(e) => Err(ConfigError::new(
            CERT,
            format!(
                "the first certificate in {:?} cannot be parsed ({e}); it must be the server's \
                 own (leaf) certificate, followed by its intermediates",
                tls.cert
            ),
        )),
    }
}

/// Reads a provider's `ca_file` (`key` is its dotted path) into a root store: the CAs that
/// upstream TLS to the provider trusts instead of the public roots.
pub fn load_roots(key: &str, path: &str) -> Result<RootCertStore, ConfigError> {
    let certs = read_certs(key, path, "a PEM bundle of the CA certificates to trust")?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            ConfigError::new(
                key,
                format!(
                    "certificate {} in {path:?} cannot be used as a trust anchor ({e}); \
                     the file must hold PEM CA certificates",
                    i + 1
                ),
            )
        })?;
    }
    Ok(roots)
}

/// The listener's TLS: the server config that new handshakes use. A reload replaces it;
/// connections already open keep the one they were made with.
#[derive(Debug)]
pub struct ServerTls {
    current: ArcSwap<ServerConfig>,
}

impl ServerTls {
    /// Serves `config` until [`ServerTls::replace`].
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self {
            current: ArcSwap::new(config),
        }
    }

    /// An acceptor with the current config, for one handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// New handshakes use `config` from now on.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        self.current.store(config);
    }

    /// The config new handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }
}

fn read(key: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| {
        ConfigError::new(
            key,
            format!(
                "cannot read {path:?}: {e}; check the path and that the gateway's user may read it"
            ),
        )
    })
}

/// Every certificate of a PEM file; an error when there is none. `what` says what the file
/// should hold, for the fix.
fn read_certs(
    key: &str,
    path: &str,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ConfigError::new(
                key,
                format!("{path:?} is not valid PEM ({e}); it must hold {what}"),
            )
        })?;
    if certs.is_empty() {
        let hint = if PrivateKeyDer::from_pem_slice(&bytes).is_ok() {
            " (it holds a private key: are cert and key swapped?)"
        } else {
            ""
        };
        return Err(ConfigError::new(
            key,
            format!(
                "{path:?} holds no PEM certificate (\"BEGIN CERTIFICATE\"){hint}; it must hold {what}"
            ),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    use rcgen::{CertificateParams, KeyPair};

    /// A self-signed `localhost` certificate and its key, as PEM.
    fn self_signed() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes `files` to a fresh directory and returns their paths.
    fn write(name: &str, files: &[(&str, &str)]) -> Vec<String> {
        let dir = std::env::temp_dir().join(format!("gateway-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        files
            .iter()
            .map(|(file, text)| {
                let p = dir.join(file);
                std::fs::write(&p, text).unwrap();
                p.display().to_string()
            })
            .collect()
    }

    fn pair(cert: &str, key: &str) -> Result<CertifiedKey, ConfigError> {
        load_pair(
            &TlsConfig {
                cert: cert.into(),
                key: key.into(),
            },
            &provider(),
        )
    }

    #[test]
    fn a_matching_pair_loads_and_builds_a_server_config_with_alpn() {
        let (cert, key) = self_signed();
        let p = write("good", &[("cert.pem", &cert), ("key.pem", &key)]);
        assert_eq!(pair(&p[0], &p[1]).unwrap().cert.len(), 1);
        let config = server_config(&TlsConfig {
            cert: p[0].clone(),
            key: p[1].clone(),
        })
        .unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_named() {
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        let p = write("mismatch", &[("cert.pem", &cert), ("key.pem", &other_key)]);
        let e = pair(&p[0], &p[1]).unwrap_err();
        assert_eq!(e.key, "server.tls.key");
        assert!(
            e.message.contains("does not match the certificate"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains(&p[1]) && e.message.contains(&p[0]),
            "{}",
            e.message
        );
    }

    #[test]
    fn unreadable_empty_and_swapped_files_are_named() {
        let (cert, key) = self_signed();
        let p = write(
            "bad",
            &[("cert.pem", &cert), ("key.pem", &key), ("empty.pem", "")],
        );
        let e = pair(&p[0], "/nonexistent/key.pem").unwrap_err();
        assert_eq!(e.key, "server.tls.key");
        assert!(
            e.message
                .starts_with("cannot read \"/nonexistent/key.pem\""),
            "{}",
            e.message
        );
        let e = pair(&p[2], &p[1]).unwrap_err();
        assert_eq!(e.key, "server.tls.cert");
        assert!(
            e.message.contains("holds no PEM certificate"),
            "{}",
            e.message
        );
        let e = pair(&p[1], &p[0]).unwrap_err();
        assert_eq!(e.key, "server.tls.cert");
        assert!(e.message.contains("swapped"), "{}", e.message);
        let e = pair(&p[0], &p[0]).unwrap_err();
        assert_eq!(e.key, "server.tls.key");
        assert!(e.message.contains("swapped"), "{}", e.message);
        // The error never quotes key material.
        assert!(!e.message.contains("PRIVATE KEY-----"), "{}", e.message);
    }

    #[test]
    fn ca_bundles() {
        let (cert, key) = self_signed();
        let p = write(
            "ca",
            &[
                ("ca.pem", &cert),
                ("key.pem", &key),
                ("junk.pem", "-----BEGIN CERTIFICATE-----\n!!\n"),
            ],
        );
        assert_eq!(load_roots("providers.p.ca_file", &p[0]).unwrap().len(), 1);
        for (path, frag) in [
            (p[1].as_str(), "holds no PEM certificate"),
            (p[2].as_str(), "not valid PEM"),
            ("/nonexistent/ca.pem", "cannot read"),
        ] {
            let e = load_roots("providers.p.ca_file", path).unwrap_err();
            assert_eq!(e.key, "providers.p.ca_file");
            assert!(e.message.contains(frag), "{path}: {}", e.message);
        }
    }
}
