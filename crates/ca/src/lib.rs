//! mcptap's certificate authority.
//!
//! To show what an MCP client and server say over HTTPS, the proxy ends the client's TLS itself,
//! presenting for each host a certificate signed by a root CA the client was told to trust. This
//! crate owns that CA:
//!
//! - [`Ca::load_or_create`] keeps it in a directory ([`CA_KEY_FILE`], [`CA_CERT_FILE`]),
//!   creating it on first use and refusing, with an error naming the file, to use or replace one
//!   that is damaged;
//! - [`Ca`] mints a leaf certificate per host (DNS name or IP address), caches it, and hands out
//!   ready rustls server configs through the small [`ServerConfigSource`] seam, which tests and
//!   embedders can implement themselves.
//!
//! All cryptography uses rustls's ring provider, passed explicitly; the process-wide default
//! provider is never consulted.
#![deny(missing_docs)]

mod cache;
mod error;
mod files;
mod host;
mod leaf;
mod root;

pub use error::CaError;

/// The largest TLS record mcptap sends, header included (`max_fragment_size`): 16,336 bytes
/// of data per record instead of 16,384. rustls copies each record's data behind its 5-byte
/// header; with records of a multiple of 64 bytes that copy meets the same cache-line offset
/// between source and destination on every record, and on AMD Zen the `rep movsb` behind
/// `memcpy` runs some twenty times slower at some offsets (measured: the copy was 3.8 ms of a
/// 10 MB download relayed, 0.5 ms without the slow offset). A size of 16 more than a multiple
/// of 64 moves the offset by 16 bytes per record, so at most one record in four can land on it.
pub const TLS_RECORD_MAX: usize = 16_336 + 5;
pub use files::{pem_encode, CA_CERT_FILE, CA_KEY_FILE};

use cache::{CacheKey, ConfigCache};
use files::{Access, Written};
use host::CertHost;
use leaf::LeafIssuer;
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::OffsetDateTime;

/// Where the proxy gets the TLS server config for a client connection.
pub trait ServerConfigSource: Send + Sync {
    /// A ready server config presenting a certificate for `host`, offering the application
    /// protocols `alpn` (in order of preference).
    ///
    /// `host` is what the client asked for: the SNI name, or, when the client sent none (as
    /// for IP literals), the CONNECT target's host. DNS names are matched case-insensitively
    /// and may end in a dot; IPv6 addresses may be in brackets. No port.
    fn server_config(&self, host: &str, alpn: &[Vec<u8>]) -> Result<Arc<ServerConfig>, CaError>;
}

/// The mcptap CA, loaded from (or created in) a directory.
///
/// Cheap to share behind an `Arc`; [`ServerConfigSource::server_config`] may be called from any
/// number of threads.
pub struct Ca {
    dir: PathBuf,
    key_path: PathBuf,
    cert_path: PathBuf,
    created: bool,
    cert_pem: String,
    leaves: LeafIssuer,
    cache: ConfigCache,
}

impl Ca {
    /// Loads the CA from `dir`, or creates it there if `dir` holds no CA yet.
    ///
    /// A new CA is an EC P-256 key and a self-signed certificate valid for ten years. It is
    /// written to [`CA_KEY_FILE`] (private key then certificate, mode 0600) and
    /// [`CA_CERT_FILE`] (certificate only, mode 0644); `dir` is created with mode 0700 if
    /// missing. An existing key file is used as it is, whichever order its key and certificate
    /// are in (a mitmproxy `mitmproxy-ca.pem` with a PKCS#8 key works too); if the
    /// certificate-only file is missing it is written again from the key file.
    ///
    /// Nothing that exists is ever replaced: a file that cannot be read, does not parse, or
    /// does not make a usable CA is reported with its path, and left untouched.
    pub fn load_or_create(dir: &Path) -> Result<Ca, CaError> {
        Ca::open(dir, cache::DEFAULT_CAPACITY)
    }

    fn open(dir: &Path, cache_capacity: usize) -> Result<Ca, CaError> {
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let now = OffsetDateTime::now_utc();
        let (key_file, created) = match files::read_if_exists(&key_path)? {
            Some(bytes) => (bytes, false),
            None => create(dir, &key_path, &cert_path, &provider, now)?,
        };
        warn_if_readable_by_others(&key_path);
        let (key, cert) = root::parse_key_file(&key_path, &key_file)?;
        let leaves = root::open(&key_path, key, cert, provider, now)?;
        let cert_pem = ensure_cert_file(&cert_path, &key_path, leaves.ca_der())?;
        Ok(Ca {
            dir: dir.to_owned(),
            key_path,
            cert_path,
            created,
            cert_pem,
            leaves,
            cache: ConfigCache::new(cache_capacity),
        })
    }

    /// Whether this call to [`Ca::load_or_create`] created the CA (so clients do not trust it
    /// yet).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The CA certificate, PEM-encoded: what clients must trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER-encoded.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        self.leaves.ca_der()
    }

    /// The certificate-only file ([`CA_CERT_FILE`]): the file to give clients.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The file holding the private key and the certificate ([`CA_KEY_FILE`]). Keep it secret.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// The directory holding the CA files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl ServerConfigSource for Ca {
    fn server_config(&self, host: &str, alpn: &[Vec<u8>]) -> Result<Arc<ServerConfig>, CaError> {
        let key = CacheKey {
            host: CertHost::parse(host)?,
            alpn: alpn.to_vec(),
        };
        let now = OffsetDateTime::now_utc();
        if let Some(config) = self.cache.get(&key, now) {
            return Ok(config);
        }
        let leaf = self.leaves.mint(&key.host, now)?;
        let config = self.leaves.server_config(&leaf, alpn)?;
        tracing::debug!(host = %key.host, "minted a leaf certificate");
        Ok(self.cache.insert(key, config, leaf.not_after, now))
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// Generates a CA and writes it to `dir`. Returns the key file's contents and whether this call
/// created it (false if another process created it first, in which case that CA is used).
fn create(
    dir: &Path,
    key_path: &Path,
    cert_path: &Path,
    provider: &rustls::crypto::CryptoProvider,
    now: OffsetDateTime,
) -> Result<(Vec<u8>, bool), CaError> {
    if files::exists(cert_path)? {
        return Err(CaError::MissingKey {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
        });
    }
    files::create_dir(dir)?;
    let new = root::generate(provider, now)?;
    match files::write_new(key_path, new.key_file.as_bytes(), Access::Private)? {
        Written::Created => {
            tracing::debug!("created a new CA in {}", dir.display());
            // Written now rather than left to `ensure_cert_file`, so both files exist as soon as
            // possible; a crash in between is repaired on the next start.
            files::write_new(cert_path, new.cert_file.as_bytes(), Access::Public)?;
            Ok((new.key_file.into_bytes(), true))
        }
        Written::AlreadyExists => match files::read_if_exists(key_path)? {
            Some(bytes) => Ok((bytes, false)),
            None => Err(CaError::io(
                key_path,
                "read",
                std::io::ErrorKind::NotFound.into(),
            )),
        },
    }
}

/// Makes sure the certificate-only file holds the CA certificate, writing it if it is missing.
/// Returns the certificate as PEM.
fn ensure_cert_file(
    cert_path: &Path,
    key_path: &Path,
    ca_der: &CertificateDer<'_>,
) -> Result<String, CaError> {
    let pem = files::pem_encode("CERTIFICATE", ca_der);
    let on_disk = match files::read_if_exists(cert_path)? {
        Some(bytes) => bytes,
        None => match files::write_new(cert_path, pem.as_bytes(), Access::Public)? {
            Written::Created => {
                tracing::info!("wrote the CA certificate to {}", cert_path.display());
                return Ok(pem);
            }
            Written::AlreadyExists => files::read_if_exists(cert_path)?.unwrap_or_default(),
        },
    };
    if root::parse_cert_file(cert_path, &on_disk)? != *ca_der {
        return Err(CaError::corrupt(
            cert_path,
            format!(
                "it is not the certificate in {}",
                key_path.file_name().map_or_else(
                    || key_path.display().to_string(),
                    |n| n.to_string_lossy().into_owned()
                )
            ),
        ));
    }
    Ok(pem)
}

fn warn_if_readable_by_others(key_path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(key_path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "{} holds the CA's private key but others may read it (chmod 600 it)",
                    key_path.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = key_path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::open(dir.path(), 8).expect("create CA");
        let alpn = [b"h2".to_vec()];
        let first = ca.server_config("host0.test", &alpn).expect("mint");
        for i in 1..40 {
            ca.server_config(&format!("host{i}.test"), &alpn)
                .expect("mint");
            assert!(ca.cache.len() <= 8, "cache grew to {}", ca.cache.len());
        }
        assert_eq!(ca.cache.len(), 8);
        // host0 was evicted long ago: asking again mints a new config.
        let again = ca.server_config("host0.test", &alpn).expect("mint");
        assert!(!Arc::ptr_eq(&first, &again));
        // ...while the newest host is still cached.
        let newest = ca.server_config("host39.test", &alpn).expect("cached");
        assert!(Arc::ptr_eq(
            &newest,
            &ca.server_config("host39.test", &alpn).expect("cached")
        ));
    }

    #[test]
    fn entries_near_expiry_are_minted_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::open(dir.path(), 8).expect("create CA");
        let key = |host: &str| CacheKey {
            host: CertHost::parse(host).expect("valid host"),
            alpn: Vec::new(),
        };
        let now = OffsetDateTime::now_utc();
        let leaf = ca.leaves.mint(&key("x.test").host, now).expect("mint");
        let config = ca.leaves.server_config(&leaf, &[]).expect("config");

        // A certificate expiring in 3 days is served from the cache...
        ca.cache.insert(
            key("fresh.test"),
            config.clone(),
            now + time::Duration::days(3),
            now,
        );
        let hit = ca.server_config("fresh.test", &[]).expect("cached");
        assert!(Arc::ptr_eq(&hit, &config));

        // ...one expiring in 23 hours is inside the renewal window: a new one is minted.
        ca.cache.insert(
            key("stale.test"),
            config.clone(),
            now + time::Duration::hours(23),
            now,
        );
        let served = ca.server_config("stale.test", &[]).expect("mint");
        assert!(!Arc::ptr_eq(&served, &config));
        let again = ca.server_config("stale.test", &[]).expect("cached");
        assert!(
            Arc::ptr_eq(&served, &again),
            "the new config replaced the stale one"
        );
    }
}
