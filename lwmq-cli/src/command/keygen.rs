//! `lwmq keygen`: a new CURVE key pair ([`lwmq::CurveKeyPair::generate`]), printed in
//! Z85 (as czmq's certificate lines, or JSON), or written to a pair of files.

use std::io::Write as _;

use anyhow::{Context as _, Result};
use lwmq::CurveKeyPair;

use crate::cli::KeygenArgs;

/// The certificate lines for a pair (`secret`: with the secret key).
fn lines(pair: &CurveKeyPair, secret: bool) -> String {
    let mut s = format!(
        "#   lwmq CURVE key pair (Z85)\ncurve\n    public-key = \"{}\"\n",
        pair.public
    );
    if secret {
        s.push_str(&format!("    secret-key = \"{}\"\n", pair.secret.to_z85()));
    }
    s
}

/// Runs `lwmq keygen`.
pub fn run(args: KeygenArgs) -> Result<()> {
    let pair = CurveKeyPair::generate();
    if let Some(path) = &args.out {
        write_private(path, &lines(&pair, true))
            .with_context(|| format!("cannot write {}", path.display()))?;
        let mut public = path.clone().into_os_string();
        public.push(".pub");
        let public = std::path::PathBuf::from(public);
        std::fs::write(&public, lines(&pair, false))
            .with_context(|| format!("cannot write {}", public.display()))?;
        eprintln!(
            "lwmq: wrote the key pair to {} and the public key to {}",
            path.display(),
            public.display()
        );
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut v = serde_json::json!({ "public": pair.public.to_z85() });
        if args.out.is_none() {
            v["secret"] = pair.secret.to_z85().into();
        }
        writeln!(out, "{v}")?;
    } else if args.out.is_some() {
        writeln!(out, "{}", pair.public)?;
    } else {
        write!(out, "{}", lines(&pair, true))?;
    }
    out.flush()?;
    Ok(())
}

/// Writes a file only its owner can read (created that way: no moment of wider access).
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // A file that existed keeps its mode on open: narrow it before writing the secret.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(text.as_bytes())
}
