//! The files a configuration names: the password file and the CA bundle.
//! Read at `nginx -t` and at start (as the master's user), as nginx reads
//! certificates: small regular files only, opened without blocking.

use super::ConfError;

/// Largest `password_file` read (as nginx's `ssl_password_file`).
pub const MAX_PASSWORD_FILE: usize = 4096;
/// Largest `ca_file` read.
pub const MAX_CA_FILE: usize = 1 << 20;

/// Reads a file named by the configuration: a regular file of at most
/// `max` bytes. Opened without blocking (a FIFO would hang `nginx -t`)
/// and checked on the open handle; a device, FIFO or directory is refused,
/// and nothing past `max` bytes is read.
pub fn read_config_file(
    path: &std::path::Path,
    what: &'static str,
    max: usize,
) -> Result<Vec<u8>, ConfError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let shown = path.display().to_string();
    let cannot = |e: std::io::Error| ConfError::CannotRead {
        what,
        path: shown.clone(),
        reason: e.to_string(),
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(cannot)?;
    if !f.metadata().map_err(cannot)?.is_file() {
        return Err(ConfError::NotRegularFile { what, path: shown });
    }
    let mut out = Vec::new();
    f.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(cannot)?;
    if out.len() > max {
        return Err(ConfError::FileTooLarge {
            what,
            path: shown,
            max,
        });
    }
    Ok(out)
}

/// The password in a `password_file`'s contents: its first line, which
/// must not be empty.
pub fn password_from(file: &str, bytes: &[u8]) -> Result<String, ConfError> {
    let text = String::from_utf8_lossy(bytes);
    match text.lines().next() {
        Some(first) if !first.is_empty() => Ok(first.to_string()),
        _ => Err(ConfError::EmptyPassword(file.to_string())),
    }
}

/// Checks that a `ca_file`'s contents hold a PEM certificate.
pub fn check_ca(file: &str, bytes: &[u8]) -> Result<(), ConfError> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    if bytes.windows(BEGIN.len()).any(|w| w == BEGIN) {
        Ok(())
    } else {
        Err(ConfError::NoCertificate(file.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_and_ca_files_are_checked() {
        assert_eq!(password_from("p", b"secret\nignored\n").unwrap(), "secret");
        assert!(password_from("p", b"\nsecret")
            .unwrap_err()
            .to_string()
            .contains("\"p\" is empty"));
        assert!(password_from("p", b"").is_err());
        assert!(check_ca("c", b"x\n-----BEGIN CERTIFICATE-----\nAAA").is_ok());
        assert!(check_ca("c", b"-----BEGIN PRIVATE KEY-----")
            .unwrap_err()
            .to_string()
            .contains("no PEM certificate"));
    }

    #[test]
    fn config_files_are_small_regular_files_read_without_blocking() {
        let dir = std::env::temp_dir().join(format!("dwepc-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let regular = dir.join("pw");
        std::fs::write(&regular, "secret\n").unwrap();
        assert_eq!(
            read_config_file(&regular, "password_file", MAX_PASSWORD_FILE).unwrap(),
            b"secret\n"
        );
        // a FIFO with no writer: refused at once, not waited on
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let t = std::time::Instant::now();
        let e = read_config_file(&fifo, "password_file", MAX_PASSWORD_FILE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        // a device that never ends, a directory, a large file
        let e = read_config_file(std::path::Path::new("/dev/zero"), "password_file", 4096)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(read_config_file(&dir, "ca_file", MAX_CA_FILE)
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; 5000]).unwrap();
        let e = read_config_file(&big, "password_file", MAX_PASSWORD_FILE)
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than 4096 bytes"), "{e}");
        assert!(read_config_file(&dir.join("none"), "ca_file", 10)
            .unwrap_err()
            .to_string()
            .contains("cannot read ca_file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
