//! The binary: `check`, exit codes, `--config` fallbacks, `--version`, serving the shipped
//! config, `gateway mock` with a fault flag, and SIGTERM.
#![allow(clippy::disallowed_methods)] // clocks are banned in src/policy/ only

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod support;

use support::gateway_command as gateway;

fn tmp_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gateway-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("gateway.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_accepts_the_shipped_config() {
    let out = gateway(&["check", "--config", "config/gateway.toml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("demo"), "{text}");
    assert!(text.contains("demo/mock-model"), "{text}");
}

#[test]
fn check_reports_errors_with_file_key_and_exit_2() {
    let p = tmp_config(
        "bad",
        "[providers.openai]\nbase_url = \"https://api.openai.com/v1\"\n[models.coder]\ntargets = [\"openai/x\", { provider = \"foo\", model = \"m\" }]\n",
    );
    let out = gateway(&["check", "--config", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: models.coder.targets[1]: unknown provider \"foo\" (known: openai)",
            p.display()
        )),
        "{err}"
    );
}

#[test]
fn check_shows_keys_only_redacted() {
    let p = tmp_config(
        "keys",
        "[providers.openai]\nbase_url = \"https://api.openai.com/v1\"\napi_keys = [\"${GW_TEST_KEY}\"]\n",
    );
    let out = gateway(&["check", "--config", p.to_str().unwrap()])
        .env("GW_TEST_KEY", "sk-proj-supersecretvalue9876")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("supersecret"), "{text}");
    assert!(text.contains("…9876"), "{text}");
}

#[test]
fn missing_env_var_is_a_config_error() {
    let p = tmp_config(
        "env",
        "[providers.openai]\nbase_url = \"https://api.openai.com/v1\"\napi_keys = [\"${GW_TEST_UNSET_VAR}\"]\n",
    );
    let out = gateway(&["check", "--config", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("providers.openai.api_keys[0]") && err.contains("GW_TEST_UNSET_VAR"),
        "{err}"
    );
}

#[test]
fn config_falls_back_to_env_then_cwd() {
    let p = tmp_config("envpath", "[providers.x]\nkind = \"mock\"\n");
    let out = gateway(&["check"])
        .env("GATEWAY_CONFIG", &p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No flag, no env: ./gateway.toml in the working directory.
    let dir = p.parent().unwrap();
    let out = gateway(&["check"]).current_dir(dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let empty = std::env::temp_dir().join(format!("gateway-cli-{}-empty", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = gateway(&["check"]).current_dir(&empty).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway.toml"));
}

#[test]
fn non_loopback_listen_without_keys_is_refused() {
    let p = tmp_config("listen", "[providers.x]\nkind = \"mock\"\n");
    let out = gateway(&["--config", p.to_str().unwrap(), "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
}

#[test]
fn usage_errors_exit_2_and_version_exits_0() {
    assert_eq!(
        gateway(&["--no-such-flag"]).output().unwrap().status.code(),
        Some(2)
    );
    let out = gateway(&["--version"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("gateway "));
}

#[test]
fn bind_failure_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = gateway(&["--config", "config/gateway.toml", "--listen", &addr])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every stderr line of a child; `join` waits until its stderr closed.
struct Lines(
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    std::thread::JoinHandle<()>,
);

impl Lines {
    fn join(self) -> Vec<String> {
        self.1.join().unwrap();
        self.0.lock().unwrap().clone()
    }
}

/// Starts a child and waits for the log line carrying its address.
fn spawn_listening(cmd: Command) -> (Child, String) {
    let (child, addr, _) = spawn_logged(cmd);
    (child, addr)
}

/// Like [`spawn_listening`], also keeping every stderr line.
fn spawn_logged(mut cmd: Command) -> (Child, String, Lines) {
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split(['/', ' ', '"']).next().unwrap().to_string();
                let _ = tx.send(addr);
            }
            keep.lock().unwrap().push(line);
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("child starts listening");
    (child, addr, Lines(lines, reader))
}

fn http(addr: &str, raw: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn post_raw(addr: &str, path: &str, extra: &str, body: &str) -> String {
    http(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\n{extra}content-length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn sigterm_and_wait(mut child: Child) -> Option<i32> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..300 {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("gateway did not exit after SIGTERM");
}

#[test]
fn serves_the_shipped_config_with_no_keys_and_exits_0_on_sigterm() {
    let (child, addr) = spawn_listening(gateway(&[
        "--config",
        "config/gateway.toml",
        "--listen",
        "127.0.0.1:0",
    ]));
    let resp = post_raw(
        &addr,
        "/v1/chat/completions",
        "",
        r#"{"model":"demo","messages":[{"role":"user","content":"hello"}]}"#,
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("chat.completion"), "{resp}");
    let resp = post_raw(
        &addr,
        "/v1/chat/completions",
        "",
        r#"{"model":"demo","stream":true,"messages":[]}"#,
    );
    assert!(resp.contains("data: [DONE]"), "{resp}");
    assert_eq!(sigterm_and_wait(child), Some(0));
}

#[test]
fn access_log_lines_are_in_the_file_when_the_process_exits() {
    let dir = std::env::temp_dir().join(format!("gateway-cli-{}-access", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.jsonl");
    let _ = std::fs::remove_file(&log);
    let p = tmp_config(
        "access",
        &format!(
            "[log]\naccess_log = {:?}\n[providers.demo]\nkind = \"mock\"\n\
             [models.demo]\ntargets = [\"demo/m\"]\n",
            log.display().to_string()
        ),
    );
    let (child, addr) = spawn_listening(gateway(&[
        "--config",
        p.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]));
    for _ in 0..20 {
        let resp = post_raw(&addr, "/v1/chat/completions", "", r#"{"model":"demo"}"#);
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
    assert_eq!(sigterm_and_wait(child), Some(0));
    // Read once, right after exit: no polling, the process flushed before it ended.
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 20, "{text}");
}

#[test]
fn mock_subcommand_injects_the_configured_fault() {
    let (child, addr) = spawn_listening(gateway(&[
        "mock",
        "--listen",
        "127.0.0.1:0",
        "--fault",
        "status=429,retry-after=3",
    ]));
    let resp = post_raw(&addr, "/v1/chat/completions", "", r#"{"model":"x"}"#);
    assert!(resp.starts_with("HTTP/1.1 429"), "{resp}");
    assert!(resp.to_lowercase().contains("retry-after: 3"), "{resp}");
    // A per-request header overrides the flag.
    let resp = post_raw(
        &addr,
        "/v1/chat/completions",
        "x-mock-fault: none\r\n",
        r#"{"model":"x"}"#,
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(sigterm_and_wait(child), Some(0));
}

#[test]
fn mock_rejects_an_unknown_fault() {
    let out = gateway(&["mock", "--fault", "explode"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn json_request_log_has_the_contract_fields_and_no_secrets() {
    let (upstream, up_addr) = spawn_listening(gateway(&["mock", "--listen", "127.0.0.1:0"]));
    let p = tmp_config(
        "logs",
        &format!(
            "[server]\napi_keys = [\"gw-client-key-7777777\"]\n\
             [providers.up]\nbase_url = \"http://{up_addr}/v1\"\napi_keys = [\"sk-upstream-secret-abcdef123456\"]\n\
             [models.m]\ntargets = [\"up/mock-model\"]\n"
        ),
    );
    let (child, addr, lines) = spawn_logged(gateway(&[
        "--config",
        p.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--log-level",
        "trace",
    ]));
    let auth = "authorization: Bearer gw-client-key-7777777\r\nx-request-id: log-test-1\r\n";
    let resp = post_raw(
        &addr,
        "/v1/chat/completions",
        auth,
        r#"{"model":"m","messages":[]}"#,
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let resp = post_raw(
        &addr,
        "/v1/chat/completions",
        "authorization: Bearer wrong-key-0000000\r\n",
        r#"{"model":"m"}"#,
    );
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    assert_eq!(sigterm_and_wait(child), Some(0));
    sigterm_and_wait(upstream);
    let lines = lines.join();
    let all = lines.join("\n");
    for secret in ["sk-upstream-secret", "gw-client-key", "wrong-key-0000000"] {
        assert!(!all.contains(secret), "secret {secret} in logs:\n{all}");
    }
    let request: serde_json::Value = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["request_id"] == "log-test-1")
        .unwrap_or_else(|| panic!("no request line:\n{all}"));
    for field in [
        "method",
        "path",
        "status",
        "duration_ms",
        "model",
        "target",
        "attempts",
        "queue_ms",
        "first_byte_ms",
    ] {
        assert!(request.get(field).is_some(), "{field} missing: {request}");
    }
    assert_eq!(request["status"], 200);
    assert_eq!(request["model"], "m");
    assert_eq!(request["target"], "up/mock-model");
    assert_eq!(request["attempts"], 1);
}

/// Reads datagrams until one contains `want`; returns it.
fn wait_datagram(sock: &std::os::unix::net::UnixDatagram, want: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no {want:?} from the gateway"
        );
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.contains(want) {
                return msg;
            }
        }
    }
}

#[test]
fn systemd_notify_ready_reloading_stopping_and_watchdog() {
    let p = tmp_config(
        "notify",
        "[providers.demo]\nkind = \"mock\"\n[models.a]\ntargets = [\"demo/x\"]\n",
    );
    let sock_path = p.parent().unwrap().join("notify.sock");
    let _ = std::fs::remove_file(&sock_path);
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut cmd = gateway(&["--config", p.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    cmd.env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000");
    let (child, addr) = spawn_listening(cmd);
    wait_datagram(&sock, "READY=1");
    wait_datagram(&sock, "WATCHDOG=1");

    // SIGHUP reloads: RELOADING=1 with MONOTONIC_USEC (for Type=notify-reload), then READY=1.
    std::fs::write(
        &p,
        "[providers.demo]\nkind = \"mock\"\n[models.b]\ntargets = [\"demo/y\"]\n",
    )
    .unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status();
    let reloading = wait_datagram(&sock, "RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    wait_datagram(&sock, "READY=1");
    let models = http(
        &addr,
        "GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(
        models.contains("\"id\":\"b\"") && !models.contains("\"id\":\"a\""),
        "{models}"
    );
    let admin = http(
        &addr,
        "GET /admin/providers HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert!(admin.contains("\"generation\":2"), "{admin}");

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    wait_datagram(&sock, "STOPPING=1");
    assert_eq!(sigterm_and_wait(child), Some(0));
}

#[test]
fn log_level_follows_a_reload() {
    let base = "[providers.demo]\nkind = \"mock\"\n[models.d]\ntargets = [\"demo/x\"]\n";
    let p = tmp_config("loglevel", &format!("[log]\nlevel = \"info\"\n{base}"));
    let (child, addr, lines) = spawn_logged(gateway(&[
        "--config",
        p.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]));
    let body = r#"{"model":"d"}"#;
    assert!(
        post_raw(
            &addr,
            "/v1/chat/completions",
            "x-request-id: before-reload\r\n",
            body
        )
        .starts_with("HTTP/1.1 200")
    );
    std::fs::write(&p, format!("[log]\nlevel = \"warn\"\n{base}")).unwrap();
    let reload = post_raw(&addr, "/admin/reload", "", "");
    assert!(reload.starts_with("HTTP/1.1 200"), "{reload}");
    assert!(
        post_raw(
            &addr,
            "/v1/chat/completions",
            "x-request-id: after-reload\r\n",
            body
        )
        .starts_with("HTTP/1.1 200")
    );
    assert_eq!(sigterm_and_wait(child), Some(0));
    let all = lines.join().join("\n");
    assert!(all.contains("before-reload"), "{all}");
    assert!(
        !all.contains("after-reload"),
        "info lines after a reload to warn:\n{all}"
    );
}
