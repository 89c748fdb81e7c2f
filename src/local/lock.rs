//! One `run` per state directory. The second one stops before it touches the first one's socket,
//! CA, bootstrap or base id, and names the running one.
//!
//! An advisory lock (`flock`) on `<state dir>/lock`: the kernel drops it when the holder dies,
//! however it dies, so a crash never leaves a stale lock behind. The file says who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Held for the life of a local gateway.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another ai-extproc run is using {dir} ({holder}); stop it, or give this one another --state-dir")]
    Held { dir: PathBuf, holder: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StateLock {
    /// Takes `dir/lock`, recording `holder` (pid, addresses) in it for whoever comes next.
    pub fn acquire(dir: &Path, holder: &str) -> Result<Self, LockError> {
        let path = dir.join("lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim() {
                    "" => "its pid is not recorded".to_string(),
                    t => t.to_string(),
                };
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(holder.as_bytes()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_description() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path(), "pid 42, listening on 127.0.0.1:8080").unwrap();
        let err = StateLock::acquire(dir.path(), "pid 43").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("pid 42, listening on 127.0.0.1:8080"),
            "{text}"
        );
        assert!(text.contains("--state-dir"), "{text}");
        drop(first);
        StateLock::acquire(dir.path(), "pid 43").expect("free once the first is gone");
    }
}
