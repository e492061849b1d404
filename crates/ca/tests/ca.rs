//! The CA through its public API, with real files, real crypto and real handshakes: what the
//! proxy and the CLI rely on.

use mcptap_ca::{Ca, CaError, ServerConfigSource, CA_CERT_FILE, CA_KEY_FILE};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConnection};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::fs;
use std::path::Path;
use std::sync::Arc;
use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

fn key_and_cert_sections(key_file: &str) -> (&str, &str) {
    let at = key_file
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate section");
    key_file.split_at(at)
}

fn verifier(ca: &CertificateDer<'static>) -> Arc<WebPkiServerVerifier> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).expect("CA is a usable trust anchor");
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .expect("verifier")
}

/// Moves TLS records from one connection to the other until there are none left.
fn pump(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).expect("write to a Vec");
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).expect("read from a slice");
        to.process_new_packets()?;
    }
    Ok(())
}

/// An in-memory handshake between `server` and a client that trusts only `ca`, connecting to
/// `name` and offering `alpn`. Returns the client side.
fn handshake(
    ca: &CertificateDer<'static>,
    server: Arc<rustls::ServerConfig>,
    name: &str,
    alpn: &[&[u8]],
) -> Result<Connection, rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(name.to_owned()).expect("a valid server name");
    let mut client = Connection::Client(ClientConnection::new(Arc::new(config), name)?);
    let mut server = Connection::Server(ServerConnection::new(server)?);
    for _ in 0..8 {
        pump(&mut client, &mut server)?;
        pump(&mut server, &mut client)?;
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(client);
        }
    }
    Err(rustls::Error::General(
        "the handshake did not finish".into(),
    ))
}

/// The leaf a config presents for `name` (after a handshake that verified it).
fn leaf_for(ca: &Ca, host: &str, name: &str) -> CertificateDer<'static> {
    let config = ca.server_config(host, &[]).expect("server config");
    let client = handshake(ca.cert_der(), config, name, &[])
        .unwrap_or_else(|e| panic!("handshake for {host} as {name}: {e}"));
    let chain = client
        .peer_certificates()
        .expect("the server sent certificates");
    assert_eq!(chain.len(), 2, "leaf and CA");
    assert_eq!(&chain[1], ca.cert_der(), "the chain ends with the CA");
    chain[0].clone().into_owned()
}

#[cfg(unix)]
#[test]
fn first_run_creates_the_files_with_private_modes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("home/.mcptap");
    let ca = Ca::load_or_create(&dir).expect("create CA");
    assert!(ca.created());
    assert_eq!(ca.dir(), dir);
    assert_eq!(ca.key_path(), dir.join(CA_KEY_FILE));
    assert_eq!(ca.cert_path(), dir.join(CA_CERT_FILE));
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(ca.key_path()), 0o600);
    assert_eq!(mode(ca.cert_path()), 0o644);

    let key_file = fs::read_to_string(ca.key_path()).expect("read key file");
    let (key, cert) = key_and_cert_sections(&key_file);
    assert!(
        key.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "PKCS#8 key first"
    );
    assert_eq!(cert, ca.cert_pem(), "then the certificate");
    assert_eq!(
        fs::read_to_string(ca.cert_path()).expect("read"),
        ca.cert_pem()
    );
    let names: Vec<_> = fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "no temporary files left: {names:?}");

    let (_, x509) = x509_parser::parse_x509_certificate(ca.cert_der()).expect("parses");
    assert_eq!(x509.subject().to_string(), "CN=mcptap CA, O=mcptap");
    assert_eq!(x509.subject(), x509.issuer(), "self-signed");
    let bc = x509.basic_constraints().expect("valid").expect("present");
    assert!(bc.critical && bc.value.ca);
    let ku = x509.key_usage().expect("valid").expect("present");
    assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
    let now = OffsetDateTime::now_utc();
    let not_before = x509.validity().not_before.to_datetime();
    let not_after = x509.validity().not_after.to_datetime();
    assert!(not_before < now - time::Duration::hours(12), "back-dated");
    assert!(
        not_after > now + time::Duration::days(9 * 365),
        "about ten years"
    );
}

#[test]
fn later_runs_load_the_same_ca_and_leave_the_files_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = Ca::load_or_create(tmp.path()).expect("create CA");
    let key_file = fs::read(first.key_path()).expect("read");
    let cert_file = fs::read(first.cert_path()).expect("read");
    let second = Ca::load_or_create(tmp.path()).expect("load CA");
    assert!(!second.created());
    assert_eq!(second.cert_der(), first.cert_der());
    assert_eq!(second.cert_pem(), first.cert_pem());
    assert_eq!(fs::read(first.key_path()).expect("read"), key_file);
    assert_eq!(fs::read(first.cert_path()).expect("read"), cert_file);
    // A leaf from the reloaded CA chains to the certificate clients were given the first time.
    leaf_for(&second, "localhost", "localhost");
}

/// A key file that is not a CA, written with rcgen: key first, like ours.
fn rcgen_key_file(params: rcgen::CertificateParams) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = params.self_signed(&key).expect("sign");
    format!("{}{}", key.serialize_pem(), cert.pem())
}

#[test]
fn unusable_key_files_are_reported_and_left_untouched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::load_or_create(tmp.path()).expect("create CA");
    let good = fs::read_to_string(ca.key_path()).expect("read");
    let (good_key, good_cert) = key_and_cert_sections(&good);
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = Ca::load_or_create(other_dir.path()).expect("create another CA");
    let other_file = fs::read_to_string(other.key_path()).expect("read");
    let (other_key, _) = key_and_cert_sections(&other_file);

    let not_a_ca = rcgen_key_file(
        rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params"),
    );
    let mut no_cert_sign = rcgen::CertificateParams::default();
    no_cert_sign.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    no_cert_sign.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let no_cert_sign = rcgen_key_file(no_cert_sign);
    let pkcs1_label = good_key.replace("PRIVATE KEY", "RSA PRIVATE KEY");

    let cases: Vec<(&str, String, &str)> = vec![
        ("empty", String::new(), "empty"),
        (
            "garbage",
            "this is not PEM at all\n".into(),
            "no private key",
        ),
        ("truncated", good[..good.len() / 2].into(), "malformed PEM"),
        ("key only", good_key.into(), "no certificate"),
        ("cert only", good_cert.into(), "no private key"),
        (
            "two keys",
            format!("{good_key}{other_key}{good_cert}"),
            "2 private keys",
        ),
        ("two certs", format!("{good}{good_cert}"), "2 certificates"),
        (
            "mismatched key",
            format!("{other_key}{good_cert}"),
            "does not belong",
        ),
        ("not a CA", not_a_ca, "not a CA"),
        ("no keyCertSign", no_cert_sign, "keyUsage"),
        (
            "PKCS#1 label",
            format!("{pkcs1_label}{good_cert}"),
            "PKCS#8",
        ),
        ("bad base64", good.replacen("MI", "M!", 1), "malformed PEM"),
    ];
    for (what, content, reason_part) in cases {
        fs::write(ca.key_path(), &content).expect("write case");
        let err = Ca::load_or_create(tmp.path()).expect_err(what);
        match &err {
            CaError::Corrupt { path, reason } => {
                assert_eq!(path, ca.key_path(), "{what}");
                assert!(reason.contains(reason_part), "{what}: {reason}");
            }
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
        assert_eq!(err.path(), Some(ca.key_path()));
        assert!(
            err.to_string()
                .contains(&ca.key_path().display().to_string()),
            "{what}: {err}"
        );
        assert_eq!(
            fs::read_to_string(ca.key_path()).expect("read"),
            content,
            "{what}"
        );
    }
    // The certificate-only file was never touched either.
    assert_eq!(
        fs::read_to_string(ca.cert_path()).expect("read"),
        ca.cert_pem()
    );
}

#[test]
fn an_unreadable_key_file_is_an_io_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::load_or_create(tmp.path()).expect("create CA");
    let original = fs::read(ca.key_path()).expect("read");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(ca.key_path(), fs::Permissions::from_mode(0o000)).expect("chmod");
        if fs::read(ca.key_path()).is_err() {
            let err = Ca::load_or_create(tmp.path()).expect_err("unreadable");
            assert!(matches!(err, CaError::Io { .. }), "{err:?}");
            assert_eq!(err.path(), Some(ca.key_path()));
        } else {
            eprintln!("running with privileges that read mode-000 files; checked below instead");
        }
        fs::set_permissions(ca.key_path(), fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(fs::read(ca.key_path()).expect("read"), original);
    }

    // A directory where the key file should be cannot be read by anyone.
    fs::remove_file(ca.key_path()).expect("remove");
    fs::create_dir(ca.key_path()).expect("mkdir");
    let err = Ca::load_or_create(tmp.path()).expect_err("a directory is not a key file");
    assert!(matches!(err, CaError::Io { .. }), "{err:?}");
    assert_eq!(err.path(), Some(ca.key_path()));
    assert!(err.to_string().contains(CA_KEY_FILE), "{err}");
    assert!(ca.key_path().is_dir(), "left as it was");
}

#[test]
fn a_certificate_without_its_key_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::load_or_create(tmp.path()).expect("create CA");
    fs::remove_file(ca.key_path()).expect("remove key");
    let err = Ca::load_or_create(tmp.path()).expect_err("key missing");
    assert!(matches!(err, CaError::MissingKey { .. }), "{err:?}");
    assert_eq!(err.path(), Some(ca.key_path()));
    let msg = err.to_string();
    assert!(
        msg.contains(CA_KEY_FILE) && msg.contains(CA_CERT_FILE),
        "{msg}"
    );
    assert!(!ca.key_path().exists(), "no new key was made");
    assert_eq!(
        fs::read_to_string(ca.cert_path()).expect("read"),
        ca.cert_pem()
    );
}

#[test]
fn a_missing_certificate_file_is_written_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::load_or_create(tmp.path()).expect("create CA");
    fs::remove_file(ca.cert_path()).expect("remove cert");
    let again = Ca::load_or_create(tmp.path()).expect("load CA");
    assert!(!again.created(), "the CA itself is the old one");
    assert_eq!(again.cert_der(), ca.cert_der());
    assert_eq!(
        fs::read_to_string(ca.cert_path()).expect("read"),
        ca.cert_pem()
    );
    #[cfg(unix)]
    assert_eq!(mode(ca.cert_path()), 0o644);
}

#[test]
fn a_certificate_file_of_another_ca_is_an_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::load_or_create(tmp.path()).expect("create CA");
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = Ca::load_or_create(other_dir.path()).expect("create another CA");
    fs::write(ca.cert_path(), other.cert_pem()).expect("replace cert file");
    let err = Ca::load_or_create(tmp.path()).expect_err("cert file mismatch");
    match &err {
        CaError::Corrupt { path, reason } => {
            assert_eq!(path, ca.cert_path());
            assert!(reason.contains(CA_KEY_FILE), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(
        fs::read_to_string(ca.cert_path()).expect("read"),
        other.cert_pem()
    );

    fs::write(ca.cert_path(), "garbage").expect("write");
    let err = Ca::load_or_create(tmp.path()).expect_err("garbage cert file");
    assert_eq!(err.path(), Some(ca.cert_path()));
    assert_eq!(fs::read_to_string(ca.cert_path()).expect("read"), "garbage");
}

#[test]
fn an_expired_ca_is_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    params.not_before = rcgen::date_time_ymd(2015, 1, 1);
    params.not_after = rcgen::date_time_ymd(2025, 1, 1);
    let content = rcgen_key_file(params);
    let key_path = tmp.path().join(CA_KEY_FILE);
    fs::write(&key_path, &content).expect("write");
    let err = Ca::load_or_create(tmp.path()).expect_err("expired");
    match &err {
        CaError::Expired { path, not_after } => {
            assert_eq!(path, &key_path);
            assert_eq!(not_after.year(), 2025);
        }
        other => panic!("expected Expired, got {other:?}"),
    }
    assert_eq!(fs::read_to_string(&key_path).expect("read"), content);
    assert!(!tmp.path().join(CA_CERT_FILE).exists());
}

#[test]
fn a_mitmproxy_ca_loads_in_either_order() {
    let fixture = include_str!("fixtures/mitmproxy-ca.pem");
    let (key, cert) = key_and_cert_sections(fixture);
    for (order, content) in [
        ("key first", fixture.to_owned()),
        ("cert first", format!("{cert}{key}")),
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join(CA_KEY_FILE), &content).expect("write");
        let ca = Ca::load_or_create(tmp.path()).unwrap_or_else(|e| panic!("{order}: {e}"));
        assert!(!ca.created());
        let fixture_cert = rustls_pki_types::pem::PemObject::from_pem_slice(cert.as_bytes());
        let fixture_cert: CertificateDer<'_> = fixture_cert.expect("fixture certificate");
        assert_eq!(ca.cert_der(), &fixture_cert, "{order}");
        // The RSA CA signs our EC leaves, and a client trusting only it accepts them.
        leaf_for(&ca, "127.0.0.1", "127.0.0.1");
        assert_eq!(
            fs::read_to_string(tmp.path().join(CA_KEY_FILE)).expect("read"),
            content
        );
    }
}

#[test]
fn concurrent_first_runs_share_one_ca() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("conf");
    let start = std::sync::Barrier::new(4);
    let cas: Vec<Ca> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    Ca::load_or_create(&dir)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic").expect("load or create"))
            .collect()
    });
    assert!(cas.iter().filter(|ca| ca.created()).count() <= 1);
    let on_disk = Ca::load_or_create(&dir).expect("load");
    for ca in &cas {
        assert_eq!(
            ca.cert_der(),
            on_disk.cert_der(),
            "every process uses the CA on disk"
        );
    }
}

#[test]
fn leaves_verify_for_their_host_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::load_or_create(tmp.path()).expect("create CA");
    let verifier = verifier(ca.cert_der());
    let now = UnixTime::now();
    // (host asked for, name the client connects to, names the leaf must not be valid for)
    let cases: [(&str, &str, &[&str]); 6] = [
        (
            "localhost",
            "localhost",
            &["example.com", "127.0.0.1", "sub.localhost"],
        ),
        ("LocalHost.", "localhost", &["localhost.localdomain"]),
        (
            "mcp.example.com",
            "MCP.example.com",
            &["example.com", "other.example.com"],
        ),
        ("127.0.0.1", "127.0.0.1", &["127.0.0.2", "localhost", "::1"]),
        ("::1", "::1", &["::2", "127.0.0.1", "localhost"]),
        ("[::1]", "::1", &["0.0.0.1"]),
    ];
    for (host, name, others) in cases {
        let leaf = leaf_for(&ca, host, name);
        let server_name = ServerName::try_from(name.to_owned()).expect("name");
        verifier
            .verify_server_cert(&leaf, &[], &server_name, &[], now)
            .unwrap_or_else(|e| panic!("{host} as {name}: {e}"));
        for other in others {
            let other_name = ServerName::try_from(other.to_string()).expect("name");
            let err = verifier
                .verify_server_cert(&leaf, &[], &other_name, &[], now)
                .expect_err(other);
            assert!(
                matches!(err, rustls::Error::InvalidCertificate(_)),
                "{host} as {other}: {err:?}"
            );
        }
    }
    // And a CA the client does not trust is rejected outright.
    let stranger_dir = tempfile::tempdir().expect("tempdir");
    let stranger = Ca::load_or_create(stranger_dir.path()).expect("create CA");
    let leaf = leaf_for(&stranger, "localhost", "localhost");
    let name = ServerName::try_from("localhost").expect("name");
    assert!(verifier
        .verify_server_cert(&leaf, &[], &name, &[], now)
        .is_err());
}

#[test]
fn leaves_are_back_dated_short_lived_and_well_formed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::load_or_create(tmp.path()).expect("create CA");
    let (_, ca_x509) = x509_parser::parse_x509_certificate(ca.cert_der()).expect("CA parses");
    let ca_ski = ca_x509
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
        .expect("the CA has a subject key identifier");

    let now = OffsetDateTime::now_utc();
    let dns = leaf_for(&ca, "example.com", "example.com");
    let ip = leaf_for(&ca, "::1", "::1");
    let mut serials = Vec::new();
    for (der, want_san) in [(&dns, "dns"), (&ip, "ip")] {
        let (_, x509) = x509_parser::parse_x509_certificate(der).expect("leaf parses");
        let not_before = x509.validity().not_before.to_datetime();
        let not_after = x509.validity().not_after.to_datetime();
        assert!(
            not_before < now - time::Duration::days(1),
            "back-dated: {not_before}"
        );
        assert!(
            not_after > now + time::Duration::days(7),
            "usable for a while: {not_after}"
        );
        assert!(
            not_after < now + time::Duration::days(90),
            "short-lived: {not_after}"
        );
        assert!(!x509.is_ca());
        assert_eq!(x509.issuer(), ca_x509.subject());
        let eku = x509.extended_key_usage().expect("valid").expect("present");
        assert!(eku.value.server_auth);
        let san = x509
            .subject_alternative_name()
            .expect("valid")
            .expect("present");
        match (want_san, san.value.general_names.as_slice()) {
            ("dns", [GeneralName::DNSName(name)]) => assert_eq!(*name, "example.com"),
            ("ip", [GeneralName::IPAddress(octets)]) => {
                assert_eq!(*octets, std::net::Ipv6Addr::LOCALHOST.octets().as_slice());
            }
            (want, got) => panic!("expected a {want} SAN, got {got:?}"),
        }
        let aki = x509
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.clone(),
                _ => None,
            })
            .expect("an authority key identifier");
        assert_eq!(aki.0, ca_ski.as_slice());
        let serial = x509.raw_serial().to_vec();
        assert!(
            serial.len() >= 16 && serial[0] & 0x80 == 0,
            "random positive serial"
        );
        serials.push(serial);
    }
    assert_ne!(
        serials[0], serials[1],
        "serials differ even though the leaf key is shared"
    );
}

#[test]
fn configs_are_cached_per_host_and_alpn() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::load_or_create(tmp.path()).expect("create CA");
    let h2 = [b"h2".to_vec(), b"http/1.1".to_vec()];
    let a = ca.server_config("mcp.example.com", &h2).expect("config");
    let b = ca.server_config("mcp.example.com", &h2).expect("config");
    assert!(Arc::ptr_eq(&a, &b), "same host, same config");
    let c = ca.server_config("MCP.Example.com.", &h2).expect("config");
    assert!(Arc::ptr_eq(&a, &c), "normalised names share a config");
    let d = ca
        .server_config("mcp.example.com", &[b"http/1.1".to_vec()])
        .expect("config");
    assert!(!Arc::ptr_eq(&a, &d), "the ALPN set is part of the key");
    assert_eq!(d.alpn_protocols, [b"http/1.1".to_vec()]);
    assert_eq!(a.alpn_protocols, h2);
    let e = ca.server_config("other.example.com", &h2).expect("config");
    assert!(!Arc::ptr_eq(&a, &e));
    let v6 = ca.server_config("[::1]", &h2).expect("config");
    assert!(Arc::ptr_eq(
        &v6,
        &ca.server_config("0:0:0:0:0:0:0:1", &h2).expect("config")
    ));

    // Minting is fast enough for the handshake path: 100 distinct hosts, generously bounded.
    let started = std::time::Instant::now();
    for i in 0..100 {
        ca.server_config(&format!("host{i}.example.com"), &h2)
            .expect("config");
    }
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(10),
        "100 leaves took {took:?}"
    );
}

#[test]
fn hosts_that_cannot_be_in_a_certificate_are_peer_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::load_or_create(tmp.path()).expect("create CA");
    for host in [
        "",
        "example.com:443",
        "bad host",
        "*.example.com",
        "fe80::1%eth0",
    ] {
        let err = ca.server_config(host, &[]).expect_err(host);
        assert!(err.is_invalid_host(), "{host:?}: {err:?}");
        assert_eq!(err.path(), None);
        assert!(err.to_string().contains(&format!("{host:?}")), "{err}");
    }
}

#[tokio::test]
async fn a_client_trusting_only_the_ca_completes_a_handshake_with_h2() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = Ca::load_or_create(tmp.path()).expect("create CA");
    let config = ca
        .server_config("127.0.0.1", &[b"h2".to_vec(), b"http/1.1".to_vec()])
        .expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        tls.write_all(b"hello over TLS").await?;
        tls.shutdown().await?;
        Ok::<_, std::io::Error>(alpn)
    });

    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).expect("trust anchor");
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("127.0.0.1").expect("IP server name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .expect("handshake with a client that trusts only the mcptap CA");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.expect("read");
    assert_eq!(got, b"hello over TLS");
    let server_alpn = server.await.expect("server task").expect("server side");
    assert_eq!(server_alpn.as_deref(), Some(&b"h2"[..]));
}
