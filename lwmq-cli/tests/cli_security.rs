//! End to end: `lwmq keygen`, and CURVE and PLAIN between `lwmq` processes
//! (`--curve-server`, `--curve-client`, `--curve-keys`, `--allow-keys`, `--plain`,
//! `--plain-server`), including refusals and their exit code.

mod common;

use std::time::Duration;

use common::{Proc, TempDir, run, watchdog};

const LIMIT: Duration = Duration::from_secs(60);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The value of `name = "..."` in keygen's output.
fn field(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .and_then(|r| r.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no {name} in {out:?}"))
}

#[test]
fn keygen_prints_a_pair_as_lines_or_json_and_writes_files() {
    let _w = watchdog(LIMIT);
    let out = run(&["keygen"], b"");
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let public = lwmq::CurvePublicKey::from_z85(&field(&stdout, "public-key")).unwrap();
    let secret = lwmq::CurveSecretKey::from_z85(&field(&stdout, "secret-key")).unwrap();
    assert_eq!(secret.public_key(), public, "a matching pair");

    let out = run(&["keygen", "--json"], b"");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let secret = lwmq::CurveSecretKey::from_z85(v["secret"].as_str().unwrap()).unwrap();
    assert_eq!(secret.public_key().to_z85(), v["public"].as_str().unwrap());

    let dir = TempDir::new("keygen");
    let path = dir.path("server");
    let out = run(&["keygen", "--out", path.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let public = lwmq::auth::read_public_key(dir.path("server.pub")).unwrap();
    assert_eq!(
        text(&out.stdout).trim(),
        public.to_z85(),
        "prints the public key"
    );
    let secret = lwmq::auth::read_secret_key(&path).unwrap();
    assert_eq!(secret.public_key(), public);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the secret is its owner's only");
    assert!(
        lwmq::auth::read_secret_key(dir.path("server.pub")).is_err(),
        "the .pub file holds no secret"
    );
}

#[test]
fn curve_between_lwmq_processes_with_allowed_and_refused_client_keys() {
    let _w = watchdog(LIMIT);
    let dir = TempDir::new("curve");
    let allowed = TempDir::new("allowed");
    for name in ["server", "client", "other"] {
        let out = run(&["keygen", "--out", dir.path(name).to_str().unwrap()], b"");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    std::fs::copy(dir.path("client.pub"), allowed.path("client.pub")).unwrap();
    let p = |n: &str| dir.path(n).to_str().unwrap().to_owned();
    let rep = Proc::lwmq(&[
        "rep",
        "--bind",
        "tcp://127.0.0.1:0",
        "--curve-server",
        &p("server"),
        "--allow-keys",
        allowed.0.to_str().unwrap(),
        "-n",
        "1",
        "pong",
    ]);
    let ep = rep.bound_endpoint();

    // A key not in the directory: refused, exit code 1, the reason on stderr.
    let out = run(
        &[
            "req",
            &ep,
            "--curve-client",
            &p("server.pub"),
            "--curve-keys",
            &p("other"),
            "ping",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("rejected") && err.contains("refused our key"),
        "{err}"
    );

    // A wrong server key (given as Z85 text): the handshake fails as authentication.
    let wrong = field(&text(&run(&["keygen"], b"").stdout), "public-key");
    let out = run(&["req", &ep, "--curve-client", &wrong, "ping"], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("server key"), "{err}");

    // The allowed key: the request goes through, encrypted.
    let out = run(
        &[
            "req",
            &ep,
            "--curve-client",
            &p("server.pub"),
            "--curve-keys",
            &p("client"),
            "ping",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "pong\n");
    let (code, lines, _) = rep.finish();
    assert_eq!((code, lines), (Some(0), vec!["ping".to_owned()]));
}

#[test]
fn plain_between_lwmq_processes() {
    let _w = watchdog(LIMIT);
    let rep = Proc::lwmq(&[
        "rep",
        "--bind",
        "tcp://127.0.0.1:0",
        "--plain-server",
        "admin:secret",
        "-n",
        "1",
        "ok",
    ]);
    let ep = rep.bound_endpoint();
    let out = run(&["req", &ep, "--plain", "admin:guess", "hi"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("rejected"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["req", &ep, "--plain", "admin:secret", "hi"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok\n");
    assert_eq!(rep.finish().0, Some(0));
}

#[test]
fn bad_security_arguments_are_usage_or_clear_errors() {
    let _w = watchdog(LIMIT);
    let out = run(
        &["req", "tcp://127.0.0.1:1", "--plain", "nocolon", "x"],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("USER:PASSWORD"));
    let out = run(
        &[
            "req",
            "tcp://127.0.0.1:1",
            "--curve-client",
            "/no/such/key",
            "x",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/no/such/key"));
    // --curve-keys without --curve-client, two mechanisms at once: usage errors.
    let out = run(&["req", "tcp://127.0.0.1:1", "--curve-keys", "k", "x"], b"");
    assert_eq!(out.status.code(), Some(2));
    let out = run(
        &[
            "req",
            "tcp://127.0.0.1:1",
            "--plain",
            "a:b",
            "--curve-client",
            "k",
            "x",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
}
