//! Reading the files the configuration names: only regular files, never more than a cap.
//!
//! Every file the broker reads (the config file, rule files, `jwks_file`, `tls_ca_file`,
//! `admin.tokens_file`, the admin state file, signing keys, `explain`'s `@PATH` and claims
//! files) goes through [`read_regular_file`]: a FIFO, a device such as `/dev/zero`, a
//! directory or a file over the cap is an error, at once, never a hang or an exhausted
//! memory. The file is opened with `O_NONBLOCK` (opening a FIFO for reading would
//! otherwise wait for a writer) and checked on the open handle (`fstat`), so a file
//! swapped between the check and the read is caught too.

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The config file, a rule file, the admin state file.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;
/// A `jwks_file` or a `tls_ca_file`.
pub const MAX_CA_BYTES: u64 = 1024 * 1024;
/// `admin.tokens_file`, a signing key, `explain`'s `@PATH` token.
pub const MAX_SMALL_BYTES: u64 = 256 * 1024;

/// The contents of the regular file at `path` (symbolic links followed), at most `cap`
/// bytes. Anything else is an `io::Error` that says what was wrong.
pub fn read_regular_file(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    // Refuse before opening what is visibly not a regular file...
    let meta = std::fs::metadata(path)?;
    check(&meta, cap)?;
    // ...and check the open handle, which is what is read.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    check(&file.metadata()?, cap)?;
    let mut out = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0).min(1 << 20));
    file.take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(too_large(cap));
    }
    Ok(out)
}

/// [`read_regular_file`] as UTF-8 text.
pub fn read_regular_text(path: &Path, cap: u64) -> io::Result<String> {
    String::from_utf8(read_regular_file(path, cap)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
}

fn check(meta: &std::fs::Metadata, cap: u64) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if !t.is_file() {
        let what = if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what}: only regular files are read"),
        ));
    }
    if meta.len() > cap {
        return Err(too_large(cap));
    }
    Ok(())
}

fn too_large(cap: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("larger than the {cap}-byte limit for this file"),
    )
}

/// Tests: a new temporary directory holding the file `name` (its parent directories made)
/// with `contents`, and the file's path. The directory goes with the returned guard.
#[cfg(test)]
pub(crate) fn temp_file(name: &str, contents: impl AsRef<[u8]>) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, contents).expect("write");
    (dir, path)
}

/// Tests: make a FIFO at `path`, which nothing writes to.
#[cfg(test)]
pub(crate) fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_regular_file_up_to_the_cap() {
        let (_dir, p) = temp_file("f", b"0123456789");
        assert_eq!(read_regular_file(&p, 10).expect("read"), b"0123456789");
        let e = read_regular_file(&p, 9).expect_err("over the cap");
        assert!(e.to_string().contains("9-byte limit"), "{e}");
        assert_eq!(read_regular_text(&p, 10).expect("text"), "0123456789");
    }

    #[test]
    fn follows_symlinks_to_regular_files() {
        let (dir, p) = temp_file("f", b"x");
        let l = dir.path().join("l");
        std::os::unix::fs::symlink(&p, &l).expect("symlink");
        assert_eq!(read_regular_file(&l, 10).expect("read"), b"x");
    }

    #[test]
    fn refuses_devices_directories_and_fifos_without_blocking() {
        let e = read_regular_file(Path::new("/dev/zero"), 1 << 20).expect_err("device");
        assert!(e.to_string().contains("a device"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let e = read_regular_file(dir.path(), 1 << 20).expect_err("directory");
        assert!(e.to_string().contains("a directory"), "{e}");
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        // Without a writer, opening a FIFO for reading would wait forever.
        let e = read_regular_file(&fifo, 1 << 20).expect_err("fifo");
        assert!(e.to_string().contains("a FIFO"), "{e}");
        let e = read_regular_file(&dir.path().join("missing"), 10).expect_err("missing");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
