//! The server's own certificate for operators without a CA
//! (`--tls-self-signed`): made once, kept in the data directory so that its
//! fingerprint, which clients pin (`-o rest.fingerprint=SHA256:…`), stays
//! the same across restarts.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rewind_core::{Error, Result};

/// The self-signed certificate (PEM) in a data directory.
pub fn self_signed_cert_path(data: &Path) -> PathBuf {
    data.join("tls-self-signed.crt")
}

/// Its private key (PEM, mode 0600).
pub fn self_signed_key_path(data: &Path) -> PathBuf {
    data.join("tls-self-signed.key")
}

/// The certificate and key files of `--tls-self-signed` in `data`, made
/// first if there are none (a P-256 key; names `localhost`, 127.0.0.1, ::1
/// and this host's name, which a pinning client does not need). Both files
/// are mode 0600.
pub fn self_signed(data: &Path) -> Result<(PathBuf, PathBuf)> {
    let (cert, key) = (self_signed_cert_path(data), self_signed_key_path(data));
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(h) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() && h != "localhost" {
            names.push(h.to_string());
        }
    }
    let failed = |e: rcgen::Error| {
        Error::io(
            "make a self-signed TLS certificate",
            std::io::Error::other(e),
        )
    };
    let signing_key = rcgen::KeyPair::generate().map_err(failed)?;
    let mut params = rcgen::CertificateParams::new(names).map_err(failed)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "rewind serve (self-signed)");
    let made = params.self_signed(&signing_key).map_err(failed)?;
    fs::create_dir_all(data).map_err(|e| Error::io(format!("create {}", data.display()), e))?;
    // The key first: a certificate without its key is never left alone.
    write_private(&key, signing_key.serialize_pem().as_bytes())?;
    write_private(&cert, made.pem().as_bytes())?;
    Ok((cert, key))
}

/// Writes a file atomically (temporary file, fsync, rename), mode 0600.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(format!("write {}", path.display()), e)
    })
}

/// The SHA-256 fingerprint (`SHA256:` and hex) of the first certificate
/// of a PEM file: the server's own, which clients pin.
pub fn fingerprint(cert: &Path) -> Result<String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let first = CertificateDer::pem_file_iter(cert)
        .map_err(|e| {
            Error::InvalidInput(format!(
                "{}: not a PEM certificate file: {e}",
                cert.display()
            ))
        })?
        .next()
        .ok_or_else(|| Error::InvalidInput(format!("{}: no certificate in it", cert.display())))?
        .map_err(|e| {
            Error::InvalidInput(format!(
                "{}: not a PEM certificate file: {e}",
                cert.display()
            ))
        })?;
    Ok(rewind_backends::rest::cert_fingerprint(&first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_certificate_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path()).unwrap();
        let fp = fingerprint(&cert).unwrap();
        assert!(fp.starts_with("SHA256:") && fp.len() == 7 + 64, "{fp}");
        for p in [&cert, &key] {
            let mode = fs::metadata(p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", p.display());
        }
        // Made once: a second start finds the same one.
        self_signed(dir.path()).unwrap();
        assert_eq!(fingerprint(&cert).unwrap(), fp);
        // And the TLS side takes it.
        crate::http::tls_acceptor(&cert, &key).unwrap();
    }
}
