//! Named pipes on disk: their names, creating, opening and removing them, and waiting
//! on them. The only module that talks to the OS directly.

use rustix::event::{PollFd, Secs, Timespec};
use rustix::fs::{CWD, Mode, OFlags};
use rustix::io::Errno;
use snapshot_core::Endpoint;
use std::ffi::CString;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
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
    // What mkfifo(3) does: mknodat(AT_FDCWD, path, S_IFIFO | 0600, 0).
    match rustix::fs::mkfifoat(CWD, c_path.as_c_str(), Mode::RUSR | Mode::WUSR) {
        Ok(()) => Ok(Some(FileId::of(&fs::symlink_metadata(path)?))),
        Err(Errno::EXIST) => Ok(None),
        Err(errno) => Err(errno.into()),
    }
}

/// `O_NONBLOCK`, as [`OpenOptionsExt::custom_flags`] takes it (std adds `O_CLOEXEC`
/// itself). The flag's value is small and positive, so the conversion is exact.
const NONBLOCK: i32 = OFlags::NONBLOCK.bits() as i32;

/// Removes `path` if it still names the file `id`. A path already gone is fine.
pub(crate) fn remove_if_same(path: &Path, id: FileId) {
    match fs::symlink_metadata(path) {
        Ok(meta) if FileId::of(&meta) == id => match fs::remove_file(path) {
            Ok(()) => tracing::trace!(path = %path.display(), "removed FIFO"),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), error = &error as &dyn std::error::Error, "could not remove FIFO")
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
        .custom_flags(NONBLOCK)
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
        .custom_flags(NONBLOCK)
        .open(path)?;
    let file = ensure_fifo(file)?;
    if pipe_size > 0 {
        // fcntl takes an int: a larger size asks for the most there is. When it
        // fails, the pipe stays as it was.
        let size = pipe_size.min(i32::MAX as usize);
        if let Err(errno) = rustix::pipe::fcntl_setpipe_size(&file, size) {
            tracing::trace!(
                path = %path.display(),
                error = %io::Error::from(errno),
                "the pipe keeps its size"
            );
        }
    }
    Ok(file)
}

/// Waits until one of `fds` is ready for what it asks, or `timeout` passes (`None`:
/// for ever; zero: only looks), in `ppoll(2)`, which is retried when a signal
/// interrupts it. Returns how many are ready (0 on timeout); each entry's
/// [`revents`](PollFd::revents) says what happened to it.
///
/// On Linux a FIFO whose writer has never opened it does not report a hang-up, so a
/// read end opened early stays quiet here until its writer comes.
pub(crate) fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> io::Result<usize> {
    let timespec = timeout.map(|timeout| {
        // A timeout past the end of time waits until then.
        Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: Secs::MAX,
            tv_nsec: 0,
        })
    });
    loop {
        match rustix::event::poll(fds, timespec.as_ref()) {
            Ok(ready) => return Ok(ready),
            Err(Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::PollFlags;
    use rustix::io::FdFlags;

    fn close_on_exec(file: &File) -> bool {
        let flags = rustix::io::fcntl_getfd(file).expect("F_GETFD");
        flags.contains(FdFlags::CLOEXEC)
    }

    fn status_flags(file: &File) -> OFlags {
        rustix::fs::fcntl_getfl(file).expect("F_GETFL")
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
            assert!(status_flags(end).contains(OFlags::NONBLOCK));
        }
    }

    #[test]
    fn the_pipe_takes_the_size_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        create(&path).unwrap();
        let _read = open_read(&path).unwrap();
        let write = open_write(&path, 1 << 20).unwrap();
        // Within /proc/sys/fs/pipe-max-size (1 MiB by default) for an unprivileged
        // process; root may go past it.
        assert!(rustix::pipe::fcntl_getpipe_size(&write).unwrap() >= 1 << 20);
    }

    #[test]
    fn a_fifo_without_its_writer_is_quiet_until_the_writer_has_come_and_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        create(&path).unwrap();
        let read = open_read(&path).unwrap();
        let mut fds = [PollFd::new(&read, PollFlags::IN)];
        assert_eq!(poll(&mut fds, Some(Duration::ZERO)).unwrap(), 0);
        drop(open_write(&path, 0).unwrap());
        assert_eq!(poll(&mut fds, Some(Duration::ZERO)).unwrap(), 1);
        assert!(fds[0].revents().contains(PollFlags::HUP));
    }

    #[test]
    fn a_timeout_too_long_to_represent_still_returns_what_is_ready() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        create(&path).unwrap();
        let _read = open_read(&path).unwrap();
        let write = open_write(&path, 0).unwrap();
        let mut fds = [PollFd::new(&write, PollFlags::OUT)];
        assert_eq!(poll(&mut fds, Some(Duration::MAX)).unwrap(), 1);
        assert!(fds[0].revents().contains(PollFlags::OUT));
    }
}
