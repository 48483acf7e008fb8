//! Named pipes on disk: their names, creating, opening and removing them, and waiting
//! on them. The only module that talks to the OS directly.

use snapshot_core::Endpoint;
use std::ffi::CString;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The name an endpoint has in FIFO names: `node-5`, `role-0`.
pub(crate) fn endpoint_name(endpoint: Endpoint) -> String {
    match endpoint {
        Endpoint::Node(id) => format!("node-{}", id.0),
        Endpoint::Role(role) => format!("role-{role}"),
    }
}

/// The FIFO that carries frames from `from` to `to`: `dir/<from>-to-<to>`.
pub fn fifo_path(dir: &Path, from: Endpoint, to: Endpoint) -> PathBuf {
    dir.join(format!("{}-to-{}", endpoint_name(from), endpoint_name(to)))
}

/// Which file a path named when we looked, so that we never remove a FIFO that
/// someone else has put in the place of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &Metadata) -> Self {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// The file behind an open descriptor.
    pub(crate) fn of_file(file: &File) -> io::Result<Self> {
        Ok(Self::of(&file.metadata()?))
    }
}

/// Creates a FIFO (mode 0600) at `path`. Returns its id if this call created it, and
/// `None` if something was already there (the peer may have created it; whether it
/// is a FIFO is checked when it is opened).
pub(crate) fn create(path: &Path) -> io::Result<Option<FileId>> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path contains a NUL byte"))?;
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } == 0 {
        return Ok(Some(FileId::of(&fs::symlink_metadata(path)?)));
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EEXIST) {
        Ok(None)
    } else {
        Err(error)
    }
}

/// Removes `path` if it still names the file `id`. A path already gone is fine.
pub(crate) fn remove_if_same(path: &Path, id: FileId) {
    match fs::symlink_metadata(path) {
        Ok(meta) if FileId::of(&meta) == id => match fs::remove_file(path) {
            Ok(()) => tracing::trace!(path = %path.display(), "removed FIFO"),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "could not remove FIFO")
            }
        },
        _ => {}
    }
}

fn ensure_fifo(file: File) -> io::Result<File> {
    if file.metadata()?.file_type().is_fifo() {
        Ok(file)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "something other than a FIFO is in its place",
        ))
    }
}

/// Opens the read end of the FIFO at `path` without waiting for a writer. The
/// descriptor stays non-blocking: the endpoint reads it when [`poll`] says so.
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    ensure_fifo(file)
}

/// Opens the write end of the FIFO at `path` if its reader is there, and fails with
/// `ENXIO` if not. The descriptor stays non-blocking: a full pipe is waited for with
/// [`poll`], while the endpoint goes on reading. Asks the kernel to let the pipe hold
/// `pipe_size` bytes (best effort: if it refuses, the pipe keeps the size it has);
/// zero leaves it alone.
pub(crate) fn open_write(path: &Path, pipe_size: usize) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let file = ensure_fifo(file)?;
    if pipe_size > 0 {
        let size = libc::c_int::try_from(pipe_size).unwrap_or(libc::c_int::MAX);
        // SAFETY: `file` is open for the duration of the call; F_SETPIPE_SZ only
        // resizes the pipe's buffer, and when it fails the pipe stays as it was.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETPIPE_SZ, size) } < 0 {
            tracing::trace!(
                path = %path.display(),
                error = %io::Error::last_os_error(),
                "the pipe keeps its size"
            );
        }
    }
    Ok(file)
}

/// Waits until one of `fds` is ready for what it asks, or `timeout` passes (`None`:
/// for ever; zero: only looks). Returns how many are ready (0 on timeout); each
/// entry's `revents` says what happened to it.
///
/// On Linux a FIFO whose writer has never opened it does not report a hang-up, so a
/// read end opened early stays quiet here until its writer comes.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let timespec = timeout.map(|timeout| libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        // Below a billion: fits every c_long.
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    });
    let timespec_ptr = timespec
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    loop {
        // SAFETY: `fds` is a valid array of pollfd for the length given, whose
        // descriptors the caller keeps open for the duration of the call; the timeout
        // points to a timespec that outlives it, or is null; no signal mask is given.
        let ready = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                timespec_ptr,
                std::ptr::null(),
            )
        };
        if ready >= 0 {
            return Ok(ready as usize);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close_on_exec(file: &File) -> bool {
        // SAFETY: `file` is open for the duration of the call; F_GETFD only reads the
        // descriptor's flags.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFD) };
        assert!(flags >= 0, "F_GETFD: {}", io::Error::last_os_error());
        flags & libc::FD_CLOEXEC != 0
    }

    fn status_flags(file: &File) -> libc::c_int {
        // SAFETY: as above, with F_GETFL.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        assert!(flags >= 0, "F_GETFL: {}", io::Error::last_os_error());
        flags
    }

    #[test]
    fn both_ends_are_non_blocking_and_close_on_exec() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        assert!(create(&path).unwrap().is_some());
        assert!(create(&path).unwrap().is_none(), "already there");
        let read = open_read(&path).unwrap();
        let write = open_write(&path, 1 << 20).unwrap();
        for end in [&read, &write] {
            assert!(close_on_exec(end));
            assert_ne!(status_flags(end) & libc::O_NONBLOCK, 0);
        }
    }

    #[test]
    fn a_fifo_without_its_writer_is_quiet_until_the_writer_has_come_and_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        create(&path).unwrap();
        let read = open_read(&path).unwrap();
        let mut fds = [libc::pollfd {
            fd: read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        assert_eq!(poll(&mut fds, Some(Duration::ZERO)).unwrap(), 0);
        drop(open_write(&path, 0).unwrap());
        assert_eq!(poll(&mut fds, Some(Duration::ZERO)).unwrap(), 1);
        assert_ne!(fds[0].revents & libc::POLLHUP, 0);
    }
}
