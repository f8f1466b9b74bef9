//! `--curve-server`, `--curve-client`, `--curve-keys`, `--allow-keys`, `--plain` and
//! `--plain-server`: the socket's security, set with the library's own calls (socket
//! options, and an `auth::Authenticator` installed on the context when the server
//! checks its clients).

use anyhow::{Context as _, Result, bail};
use lwmq::auth::{self, Authenticator};
use lwmq::{Context, CurveKeyPair, CurvePublicKey, CurveSecretKey, Socket};

use crate::cli::SecurityOpts;

/// Applies the security options to `socket` (before it binds or connects).
pub fn apply(ctx: &Context, socket: &Socket, opts: &SecurityOpts) -> Result<()> {
    if let Some(arg) = &opts.curve_server {
        let secret = secret_key(arg).context("--curve-server")?;
        socket.set_curve_server(true);
        socket.set_curve_secret_key(&secret);
        if let Some(dir) = &opts.allow_keys {
            let auth = Authenticator::new();
            let n = auth
                .load_curve_keys(auth::ANY_DOMAIN, dir)
                .context("--allow-keys")?;
            if n == 0 {
                bail!(
                    "--allow-keys: no CURVE public key in {}: no client could connect",
                    dir.display()
                );
            }
            ctx.set_zap_handler(auth);
        }
    }
    if let Some(arg) = &opts.curve_client {
        let server = public_key(arg).context("--curve-client")?;
        let ours = match &opts.curve_keys {
            Some(path) => {
                CurveKeyPair::from_secret(auth::read_secret_key(path).context("--curve-keys")?)
            }
            None => CurveKeyPair::generate(),
        };
        socket.set_curve_secret_key(&ours.secret);
        socket.set_curve_server_key(&server);
    }
    if let Some(creds) = &opts.plain {
        let (user, password) = user_password(creds).context("--plain")?;
        socket.set_plain_client(user, password)?;
    }
    if !opts.plain_server.is_empty() {
        let auth = Authenticator::new();
        for creds in &opts.plain_server {
            let (user, password) = user_password(creds).context("--plain-server")?;
            auth.add_plain_user(auth::ANY_DOMAIN, user, password);
        }
        socket.set_plain_server(true);
        ctx.set_zap_handler(auth);
    }
    Ok(())
}

/// `USER:PASSWORD`.
fn user_password(s: &str) -> Result<(&str, &str)> {
    match s.split_once(':') {
        Some((u, p)) if !u.is_empty() => Ok((u, p)),
        _ => bail!("expected USER:PASSWORD, got {s:?}"),
    }
}

/// A key given as its 40 characters of Z85 or as a file holding it.
fn looks_like_z85(s: &str) -> bool {
    s.len() == 40 && !std::path::Path::new(s).exists()
}

fn secret_key(arg: &str) -> Result<CurveSecretKey> {
    if looks_like_z85(arg) {
        return CurveSecretKey::from_z85(arg)
            .map_err(|e| anyhow::anyhow!("not a Z85 secret key: {e}"));
    }
    Ok(auth::read_secret_key(arg)?)
}

fn public_key(arg: &str) -> Result<CurvePublicKey> {
    if looks_like_z85(arg) {
        return CurvePublicKey::from_z85(arg)
            .map_err(|e| anyhow::anyhow!("not a Z85 public key: {e}"));
    }
    Ok(auth::read_public_key(arg)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_keys_parse_or_fail_clearly() {
        assert_eq!(
            user_password("admin:se:cret").unwrap(),
            ("admin", "se:cret")
        );
        assert!(user_password("admin").is_err());
        assert!(user_password(":x").is_err());
        let pair = CurveKeyPair::generate();
        assert_eq!(public_key(&pair.public.to_z85()).unwrap(), pair.public);
        assert_eq!(secret_key(&pair.secret.to_z85()).unwrap(), pair.secret);
        let e = public_key("/nonexistent/server.pub").unwrap_err();
        assert!(
            format!("{e:#}").contains("/nonexistent/server.pub"),
            "{e:#}"
        );
    }
}
