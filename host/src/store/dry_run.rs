//! A dry run's private copy of the SQLite store: a directory of its own in the
//! temporary directory (mode 0700) holding the copy and its `-wal` and `-shm`
//! (mode 0600), removed when the run's last store handle goes. The directory
//! is locked while the run lives, so the next dry run can tell what a killed
//! run left (unlocked: the kernel drops a dead process's locks) from a live
//! run's copy, and removes it.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How a dry run's directory is named, in the temporary directory.
pub const PREFIX: &str = "nuntiq-dry-run-";

/// The copy's file name inside its directory.
const FILE: &str = "copy.db";

/// A dry run's directory, locked until dropped, then removed.
pub struct DryRunCopy {
    /// Removed on drop (fields drop in order: before the lock is let go).
    dir: tempfile::TempDir,
    /// An exclusive `flock` on the directory.
    _lock: File,
}

impl DryRunCopy {
    /// Removes what killed dry runs left in `$TMPDIR`, then makes a directory
    /// of our own there, locked, with an empty 0600 file for the copy (SQLite
    /// gives `-wal` and `-shm` the mode of their database).
    pub fn create() -> io::Result<Self> {
        let tmp = std::env::temp_dir();
        sweep(&tmp);
        let mut tries = 0;
        loop {
            let dir = tempfile::Builder::new()
                .prefix(PREFIX)
                .permissions(Permissions::from_mode(0o700))
                .tempdir_in(&tmp)?;
            match lock(dir.path()) {
                Ok(Some(lock)) => {
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(dir.path().join(FILE))?;
                    return Ok(Self { dir, _lock: lock });
                }
                // Another dry run's sweep took it between mkdir and lock: make another.
                Ok(None) if tries < 5 => tries += 1,
                Ok(None) => return Err(io::Error::other("other dry runs kept removing its directory")),
                Err(e) => return Err(e),
            }
        }
    }

    /// Where the copy goes.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join(FILE)
    }
}

/// Opens `dir` without following a symlink.
fn open_dir(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
}

/// Locks a directory just made; `None` when it is no longer at its path (a
/// sweep removed it first).
fn lock(dir: &Path) -> io::Result<Option<File>> {
    let file = match open_dir(dir) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // Waits for a sweep that holds it to finish removing it.
    file.lock()?;
    let held = file.metadata()?;
    let still_there = std::fs::symlink_metadata(dir).is_ok_and(|m| m.ino() == held.ino() && m.dev() == held.dev());
    Ok(still_there.then_some(file))
}

/// Removes this user's dry-run directories in `tmp` that no live process
/// holds. Best effort: what cannot be read or removed is left alone.
pub fn sweep(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    // SAFETY: a plain syscall without arguments.
    let uid = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let path = entry.path();
        // Our own directories only: never a symlink, a file or another user's.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != uid {
            continue;
        }
        let Ok(dir) = open_dir(&path) else { continue };
        if dir.try_lock().is_ok() {
            // Held until removed, so a dry run that made it meanwhile waits and makes another.
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn a_copy_lives_alone_and_private_and_a_dead_runs_is_swept() {
        let tmp = tempfile::tempdir().unwrap();
        // A live run's directory: locked here, as its process would hold it.
        let live = tmp.path().join(format!("{PREFIX}live"));
        std::fs::create_dir(&live).unwrap();
        let held = open_dir(&live).unwrap();
        held.lock().unwrap();
        // A killed run's: nobody holds it.
        let dead = tmp.path().join(format!("{PREFIX}dead"));
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(FILE), "copy").unwrap();
        std::fs::write(dead.join(format!("{FILE}-wal")), "wal").unwrap();
        // Not ours to touch: another name, a file, a symlink to a directory.
        let other = tmp.path().join("other-dir");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(tmp.path().join(format!("{PREFIX}file.db")), "old").unwrap();
        std::os::unix::fs::symlink(&other, tmp.path().join(format!("{PREFIX}link"))).unwrap();

        sweep(tmp.path());
        assert!(!dead.exists(), "a killed run's copy is removed");
        assert!(live.join(".").exists(), "a live run's copy stays");
        assert!(other.exists() && tmp.path().join(format!("{PREFIX}file.db")).exists());
        assert!(std::fs::symlink_metadata(tmp.path().join(format!("{PREFIX}link"))).is_ok());
        drop(held);
        sweep(tmp.path());
        assert!(!live.exists(), "once its process is gone, it goes too");
    }

    #[test]
    fn a_copy_is_0600_in_a_0700_directory_removed_with_it() {
        let copy = DryRunCopy::create().unwrap();
        let (path, dir) = (copy.path(), copy.dir.path().to_owned());
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path), 0o600);
        // Another dry run's sweep leaves it alone while it lives.
        sweep(&std::env::temp_dir());
        assert!(path.exists());
        drop(copy);
        assert!(!dir.exists());
    }
}
