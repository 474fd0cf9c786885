//! TLS over real sockets: the HTTPS listener (HTTP/1.1 and HTTP/2 by ALPN, untrusted
//! clients refused, the handshake bounded and off the accept loop), certificate swaps on
//! reload that spare open connections, refused reloads that keep the old certificate,
//! `gateway check` on the pair, and a provider behind a private CA (`ca_file`).
//!
//! Every certificate is made at run time by a throwaway CA (rcgen on ring); clients trust
//! only the CAs a test names.
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use support::*;

// ---------------------------------------------------------------------------------------
// Certificates

/// A throwaway certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate for `127.0.0.1` and `localhost`, and its key, as PEM.
struct Leaf {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    fn leaf(&self, subject: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, subject);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// A fresh directory for PEM files and configs.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gateway-tls-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    /// Writes `text` to `name`; returns the path.
    fn write(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    /// Writes `leaf` to `cert.pem` / `key.pem`.
    fn install(&self, leaf: &Leaf) {
        self.write("cert.pem", &leaf.cert);
        self.write("key.pem", &leaf.key);
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    /// A gateway config serving HTTPS with `cert.pem` / `key.pem` of this directory and a
    /// mock provider behind alias `m`.
    fn tls_config(&self, extra_server: &str) -> String {
        format!(
            "[server]\n{extra_server}\n[server.tls]\ncert = {:?}\nkey = {:?}\n\n\
             [providers.demo]\nkind = \"mock\"\n\n[models.m]\ntargets = [\"demo/mock-model\"]\n",
            self.path("cert.pem"),
            self.path("key.pem")
        )
    }
}

/// A rustls server config serving `leaf`, offering h2 and http/1.1.
fn server_tls(leaf: &Leaf) -> Arc<rustls::ServerConfig> {
    let dir = Dir::new();
    let tls = gateway::config::TlsConfig {
        cert: dir.write("cert.pem", &leaf.cert),
        key: dir.write("key.pem", &leaf.key),
    };
    gateway::tls::server_config(&tls).unwrap()
}

// ---------------------------------------------------------------------------------------
// Clients

/// A client config trusting only `cas`, on ring.
fn client_tls(cas: &[&Ca], alpn: &[&[u8]]) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca.der()).unwrap();
    }
    let mut c = ClientConfig::builder_with_provider(gateway::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    c
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled HTTPS client trusting only `ca`: HTTP/1.1 (no ALPN), or HTTP/2 only (ALPN h2).
fn https_client(ca: &Ca, h2: bool) -> HttpsClient {
    let b = HttpsConnectorBuilder::new()
        .with_tls_config(client_tls(&[ca], &[]))
        .https_only();
    let connector = if h2 {
        b.enable_http2().build()
    } else {
        b.enable_http1().build()
    };
    let mut builder = Client::builder(TokioExecutor::new());
    builder.http2_only(h2);
    builder.build(connector)
}

fn https_url(addr: SocketAddr, path: &str) -> String {
    format!("https://{addr}{path}")
}

async fn https_send(c: &HttpsClient, method: &str, url: &str, body: &str) -> Got {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = c.request(req).await.expect("gateway answers over TLS");
    collect(resp).await
}

/// One TLS connection to `addr` trusting only `cas`, offering `alpn`.
async fn tls_connect(
    addr: SocketAddr,
    cas: &[&Ca],
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = TlsConnector::from(Arc::new(client_tls(cas, alpn)));
    connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
}

/// The leaf certificate a new connection to `addr` is served (the client trusts `cas`).
async fn served_cert(addr: SocketAddr, cas: &[&Ca]) -> CertificateDer<'static> {
    let s = tls_connect(addr, cas, &[]).await.expect("handshake");
    s.get_ref().1.peer_certificates().expect("a certificate")[0].clone()
}

/// A request over one connection that lives across the test steps.
enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    async fn open(addr: SocketAddr, ca: &Ca, h2: bool) -> Conn {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let stream = tls_connect(addr, &[ca], alpn).await.expect("handshake");
        let negotiated = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(negotiated, Some(alpn[0].to_vec()), "ALPN");
        let io = TokioIo::new(stream);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Conn::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Conn::H1(send)
        }
    }

    /// POSTs [`CHAT`] to the gateway at `addr` on this connection.
    async fn chat(&mut self, addr: SocketAddr) -> (StatusCode, Version) {
        let req = Request::post(https_url(addr, "/v1/chat/completions"))
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(CHAT.as_bytes())))
            .unwrap();
        let resp: Response<Incoming> = match self {
            Conn::H1(s) => {
                s.ready().await.expect("connection still open");
                // HTTP/1.1 wants origin-form.
                let (mut parts, body) = req.into_parts();
                parts.uri = "/v1/chat/completions".parse().unwrap();
                s.send_request(Request::from_parts(parts, body)).await
            }
            Conn::H2(s) => {
                s.ready().await.expect("connection still open");
                s.send_request(req).await
            }
        }
        .expect("answer on the open connection");
        let (status, version) = (resp.status(), resp.version());
        resp.into_body().collect().await.expect("body completes");
        (status, version)
    }
}

async fn reload(addr: SocketAddr, ca: &Ca) -> Got {
    https_send(
        &https_client(ca, false),
        "POST",
        &https_url(addr, "/admin/reload"),
        "",
    )
    .await
}

async fn tls_metric(addr: SocketAddr, ca: &Ca, sample: &str) -> f64 {
    let got = https_send(
        &https_client(ca, false),
        "GET",
        &https_url(addr, "/metrics"),
        "",
    )
    .await;
    metric_value(&got.text(), sample)
}

const RELOAD_ERRORS: &str = r#"gateway_config_reloads_total{result="error"}"#;

// ---------------------------------------------------------------------------------------
// The listener

#[tokio::test]
async fn https_serves_http1_and_http2_by_alpn() {
    let ca = Ca::new("test CA");
    let dir = Dir::new();
    dir.install(&ca.leaf("gateway"));
    let gw = Gateway::start(&dir.tls_config("")).await;
    let url = https_url(gw.addr, "/v1/chat/completions");

    let got = https_send(&https_client(&ca, false), "POST", &url, CHAT).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["object"], "chat.completion");

    // The pooled client negotiates h2 by ALPN; the answer says which protocol carried it.
    let req = Request::post(&url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(CHAT.as_bytes())))
        .unwrap();
    let resp = https_client(&ca, true).request(req).await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), 200);

    // Without the pool in between: ALPN picks each protocol on its own connection.
    for h2 in [false, true] {
        let (status, version) = Conn::open(gw.addr, &ca, h2).await.chat(gw.addr).await;
        assert_eq!(status, 200);
        let want = if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        assert_eq!(version, want);
    }
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_refused() {
    let ca = Ca::new("test CA");
    let other = Ca::new("another CA");
    let dir = Dir::new();
    dir.install(&ca.leaf("gateway"));
    let gw = Gateway::start(&dir.tls_config("")).await;

    let e = tls_connect(gw.addr, &[&other], &[]).await.unwrap_err();
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a TLS error: {e}"));
    assert!(
        matches!(
            tls,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        "{tls:?}"
    );
    let req = Request::get(https_url(gw.addr, "/healthz"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let err = https_client(&other, false).request(req).await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let req = Request::get(gw.url("/healthz"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert!(client().request(req).await.is_err());

    // The listener is unharmed.
    let got = https_send(
        &https_client(&ca, false),
        "GET",
        &https_url(gw.addr, "/healthz"),
        "",
    )
    .await;
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn a_silent_client_is_cut_at_header_read_timeout_without_blocking_others() {
    let ca = Ca::new("test CA");
    let dir = Dir::new();
    dir.install(&ca.leaf("gateway"));
    let gw = Gateway::start(&dir.tls_config("header_read_timeout = \"200ms\"")).await;

    // Connects and never starts the handshake.
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    // The accept loop is free: others are served meanwhile.
    let got = https_send(
        &https_client(&ca, false),
        "POST",
        &https_url(gw.addr, "/v1/chat/completions"),
        CHAT,
    )
    .await;
    assert_eq!(got.status, 200);
    // The gateway closes the silent one (EOF, or a reset) rather than waiting forever.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf))
        .await
        .expect("the gateway closes a connection that never completes its handshake");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn a_client_silent_after_its_handshake_is_cut_at_header_read_timeout() {
    use tokio::io::AsyncWriteExt;
    let ca = Ca::new("test CA");
    let dir = Dir::new();
    dir.install(&ca.leaf("gateway"));
    let gw = Gateway::start(&dir.tls_config("header_read_timeout = \"300ms\"")).await;
    // ALPN h2 or none goes to the server that sniffs the protocol from the first bytes:
    // nothing, part of the HTTP/2 preface, or all of it and then silence.
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for alpn in [&[&b"h2"[..]][..], &[]] {
        for sent in [&b""[..], &PREFACE[..12], PREFACE] {
            let mut s = tls_connect(gw.addr, &[&ca], alpn).await.expect("handshake");
            s.write_all(sent).await.unwrap();
            s.flush().await.unwrap();
            let closed = closed_by_peer(&mut s, Duration::from_secs(20)).await;
            assert_eq!(closed, Ok(()), "ALPN {alpn:?}, sent {sent:?}");
        }
    }
    // A connection that began a request lives on past header_read_timeout, like any
    // HTTP/2 connection between requests. (A limit of 2 s here: the first request must
    // begin within it even on a busy machine.)
    let gw = Gateway::start(&dir.tls_config("header_read_timeout = \"2s\"")).await;
    let mut h2 = Conn::open(gw.addr, &ca, true).await;
    assert_eq!(h2.chat(gw.addr).await, (StatusCode::OK, Version::HTTP_2));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h2.chat(gw.addr).await, (StatusCode::OK, Version::HTTP_2));
}

// ---------------------------------------------------------------------------------------
// Reload

#[tokio::test]
async fn reload_swaps_the_certificate_and_spares_open_connections() {
    let ca1 = Ca::new("first CA");
    let ca2 = Ca::new("second CA");
    let (old, new) = (ca1.leaf("gateway-old"), ca2.leaf("gateway-new"));
    let dir = Dir::new();
    dir.install(&old);
    let (gw, _path) = Gateway::start_file(&dir.tls_config("")).await;
    assert_eq!(served_cert(gw.addr, &[&ca1]).await, old.der);

    // Keep-alive HTTP/1.1 and HTTP/2 connections, opened before the reload.
    let mut h1 = Conn::open(gw.addr, &ca1, false).await;
    let mut h2 = Conn::open(gw.addr, &ca1, true).await;
    assert_eq!(h1.chat(gw.addr).await.0, 200);
    assert_eq!(h2.chat(gw.addr).await.0, 200);

    dir.install(&new);
    let got = reload(gw.addr, &ca1).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["generation"], 2);

    // The open connections carry on, with the certificate they were made with.
    assert_eq!(h1.chat(gw.addr).await, (StatusCode::OK, Version::HTTP_11));
    assert_eq!(h2.chat(gw.addr).await, (StatusCode::OK, Version::HTTP_2));
    // New connections get the new certificate: one trusting only the old CA is refused.
    assert_eq!(served_cert(gw.addr, &[&ca1, &ca2]).await, new.der);
    assert!(tls_connect(gw.addr, &[&ca1], &[]).await.is_err());
    let got = https_send(
        &https_client(&ca2, true),
        "POST",
        &https_url(gw.addr, "/v1/chat/completions"),
        CHAT,
    )
    .await;
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn a_bad_pair_fails_the_reload_and_keeps_the_old_certificate() {
    let ca = Ca::new("test CA");
    let (good, other) = (ca.leaf("gateway"), ca.leaf("someone-else"));
    let dir = Dir::new();
    dir.install(&good);
    let (gw, _path) = Gateway::start_file(&dir.tls_config("")).await;

    // A key that belongs to another certificate.
    dir.write("key.pem", &other.key);
    let got = reload(gw.addr, &ca).await;
    got.assert_error(400, "invalid_config");
    let msg = got.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("gateway.toml")
            && msg.contains("server.tls.key")
            && msg.contains("does not match"),
        "{msg}"
    );
    assert_eq!(tls_metric(gw.addr, &ca, RELOAD_ERRORS).await, 1.0);
    assert_eq!(served_cert(gw.addr, &[&ca]).await, good.der);

    // An unreadable key.
    std::fs::remove_file(dir.path("key.pem")).unwrap();
    let got = reload(gw.addr, &ca).await;
    got.assert_error(400, "invalid_config");
    let msg = got.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("server.tls.key") && msg.contains("cannot read"),
        "{msg}"
    );
    assert_eq!(tls_metric(gw.addr, &ca, RELOAD_ERRORS).await, 2.0);
    assert_eq!(served_cert(gw.addr, &[&ca]).await, good.der);
    assert_eq!(gw.state.runtime().generation, 1);

    // Fixed: the next reload goes through.
    dir.install(&other);
    assert_eq!(reload(gw.addr, &ca).await.json()["generation"], 2);
    assert_eq!(served_cert(gw.addr, &[&ca]).await, other.der);
}

#[tokio::test]
async fn adding_or_removing_server_tls_waits_for_a_restart() {
    let ca = Ca::new("test CA");
    let leaf = ca.leaf("gateway");
    let dir = Dir::new();
    dir.install(&leaf);
    let plain =
        "[providers.demo]\nkind = \"mock\"\n\n[models.m]\ntargets = [\"demo/mock-model\"]\n";

    // Removed: the reload applies, the listener keeps serving HTTPS with its certificate.
    let (gw, path) = Gateway::start_file(&dir.tls_config("")).await;
    std::fs::write(&path, plain).unwrap();
    assert_eq!(
        gateway::runtime::reload::reload(&gw.state, "test").unwrap(),
        2
    );
    assert_eq!(served_cert(gw.addr, &[&ca]).await, leaf.der);

    // Added: the reload applies, the listener stays plain HTTP.
    let (gw, path) = Gateway::start_file(plain).await;
    std::fs::write(&path, dir.tls_config("")).unwrap();
    assert_eq!(
        gateway::runtime::reload::reload(&gw.state, "test").unwrap(),
        2
    );
    assert_eq!(
        post(&gw.url("/v1/chat/completions"), CHAT).await.status,
        200
    );
}

// ---------------------------------------------------------------------------------------
// gateway check

#[test]
fn check_validates_the_pair() {
    let ca = Ca::new("test CA");
    let (good, other) = (ca.leaf("gateway"), ca.leaf("someone-else"));
    let dir = Dir::new();
    dir.install(&good);
    let config = dir.write("gateway.toml", &dir.tls_config(""));
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["check", "--config", &config])
            .env_remove("GATEWAY_CONFIG")
            .output()
            .unwrap()
    };

    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tls: cert"), "{text}");

    dir.write("key.pem", &other.key);
    let out = check();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{config}: server.tls.key: ")) && err.contains("does not match"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Upstreams behind a private CA

fn provider_config(url: &str, ca_file: Option<&str>) -> String {
    let ca = ca_file
        .map(|p| format!("ca_file = {p:?}\n"))
        .unwrap_or_default();
    // One attempt and a high breaker threshold: each request shows this config's trust.
    config_for(
        url,
        &format!("{ca}retry = {{ max_attempts = 1 }}\nbreaker = {{ failure_threshold = 100 }}"),
    )
}

#[tokio::test]
async fn ca_file_lets_a_provider_behind_a_private_ca_be_reached() {
    let ca = Ca::new("private CA");
    let up = Upstream::start_tls(server_tls(&ca.leaf("llm.internal")), |_, _| Reply::ok()).await;
    let dir = Dir::new();
    let ca_file = dir.write("ca.pem", &ca.pem());

    let gw = Gateway::start(&provider_config(&up.url(), Some(&ca_file))).await;
    let got = post(&gw.url("/v1/chat/completions"), CHAT).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(up.hits(), 1);

    // The public roots do not vouch for a private CA.
    let gw = Gateway::start(&provider_config(&up.url(), None)).await;
    post(&gw.url("/v1/chat/completions"), CHAT)
        .await
        .assert_error(502, "upstream_unavailable");
    assert_eq!(
        gw.metric(r#"gateway_upstream_errors_total{provider="up",kind="tls"}"#)
            .await,
        1.0
    );
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn a_changed_ca_file_is_not_served_from_the_old_pool() {
    let ca = Ca::new("private CA");
    let other = Ca::new("another CA");
    let up = Upstream::start_tls(server_tls(&ca.leaf("llm.internal")), |_, _| Reply::ok()).await;
    let dir = Dir::new();
    let (good, wrong) = (
        dir.write("ca.pem", &ca.pem()),
        dir.write("other.pem", &other.pem()),
    );
    let (gw, path) = Gateway::start_file(&provider_config(&up.url(), Some(&good))).await;
    let url = gw.url("/v1/chat/completions");
    assert_eq!(post(&url, CHAT).await.status, 200);

    // A pooled keep-alive connection exists now; trusting another CA must not reuse it.
    std::fs::write(&path, provider_config(&up.url(), Some(&wrong))).unwrap();
    gateway::runtime::reload::reload(&gw.state, "test").unwrap();
    post(&url, CHAT)
        .await
        .assert_error(502, "upstream_unavailable");

    // Same path, its contents rotated to the right CA: re-read on reload.
    std::fs::write(&wrong, ca.pem()).unwrap();
    gateway::runtime::reload::reload(&gw.state, "test").unwrap();
    assert_eq!(post(&url, CHAT).await.status, 200);

    // A broken ca_file fails the reload, naming the key; the running config stays.
    std::fs::write(&wrong, "not a certificate\n").unwrap();
    let e = gateway::runtime::reload::reload(&gw.state, "test").unwrap_err();
    assert_eq!(e.key, "providers.up.ca_file");
    assert!(
        e.message.contains("holds no PEM certificate"),
        "{}",
        e.message
    );
    assert_eq!(post(&url, CHAT).await.status, 200);
    assert_eq!(up.hits(), 3);
}
