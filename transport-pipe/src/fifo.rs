//! Named pipes on disk: their names, creating, opening and removing them, and waiting
//! on them. The only module that talks to the OS directly.

use snapshot_core::Endpoint;
use std::ffi::CString;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The name an endpoint has in FIFO names: `node-5`, `observer`, `master`.
pub(crate) fn endpoint_name(endpoint: Endpoint) -> String {
    match endpoint {
        Endpoint::Node(id) => format!("node-{}", id.0),
        Endpoint::Observer => "observer".to_owned(),
        Endpoint::Master => "master".to_owned(),
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
/// descriptor stays non-blocking: the reader waits in [`wait_readable`].
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    ensure_fifo(file)
}

/// Opens the write end of the FIFO at `path` if its reader is there, and fails with
/// `ENXIO` if not. The descriptor it returns blocks on writes.
pub(crate) fn open_write(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let file = ensure_fifo(file)?;
    set_nonblocking(&file, false)?;
    Ok(file)
}

fn set_nonblocking(file: &File, nonblocking: bool) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is open for the duration of both calls; F_GETFL/F_SETFL only read
    // and set the descriptor's status flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if nonblocking {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        if libc::fcntl(fd, libc::F_SETFL, flags) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What woke a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The FIFO has bytes, or its writer has gone.
    Fifo,
    /// The transport is shutting down.
    Stop,
}

/// Waits until the FIFO's read end `fifo` has something to say, or `stop` (the read
/// end of the transport's stop pipe) reports that the transport is going away.
///
/// On Linux a FIFO whose writer has never opened it does not report a hang-up, so a
/// reader that opened it early sleeps here, without polling, until its writer comes.
pub(crate) fn wait_readable(fifo: &File, stop: &impl AsFd) -> io::Result<Wake> {
    let mut fds = [
        libc::pollfd {
            fd: stop.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: fifo.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of two pollfd for the length given, and both
        // descriptors stay open for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if fds[0].revents != 0 {
            return Ok(Wake::Stop);
        }
        if fds[1].revents & libc::POLLNVAL != 0 {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        if fds[1].revents != 0 {
            return Ok(Wake::Fifo);
        }
    }
}
