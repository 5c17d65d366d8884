//! The export socket: on sled, the running server holds the data
//! directory's lock, so `latchkey export` asks the server itself for the
//! dump, over a Unix socket in the data directory (`export.sock`, owner
//! only, like the database files: whoever may read those may read a dump).
//! The client writes `export` and a newline; the server answers with the
//! dump's lines and closes. Depends on `service` only.

use std::future::Future;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::error::{Error, Result};
use crate::service::Latchkey;

/// How long the socket waits for a client's request line.
const REQUEST_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The socket's file name in the data directory.
pub const EXPORT_SOCKET: &str = "export.sock";

/// The socket of `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(EXPORT_SOCKET)
}

/// Serves exports on the data directory's socket until `shutdown` (sled
/// only: with PostgreSQL, `latchkey export` reads the database itself).
pub async fn serve_exports(core: Latchkey, shutdown: impl Future<Output = ()>) {
    if core.backend() != "sled" {
        return;
    }
    let path = socket_path(&core.config().data_dir);
    let listener = match bind(&path) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::warn!(error = %err, "no export socket: `latchkey export` needs the server stopped");
            return;
        }
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let core = core.clone();
                    tokio::spawn(async move {
                        if let Err(err) = answer(&core, stream).await {
                            tracing::warn!(error = %err, "an export over the socket failed");
                        }
                    });
                }
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Binds the socket owner-only, replacing one a killed server left behind.
fn bind(path: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|err| Error::Storage(format!("cannot bind {}: {err}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|err| Error::Storage(format!("cannot restrict {}: {err}", path.display())))?;
    Ok(listener)
}

async fn answer(core: &Latchkey, stream: UnixStream) -> Result<()> {
    let io = |err: std::io::Error| Error::Internal(format!("export socket: {err}"));
    let (read, mut write) = stream.into_split();
    let mut request = String::new();
    let mut read = BufReader::new(tokio::io::AsyncReadExt::take(read, 64));
    // A client that sends nothing is let go.
    tokio::time::timeout(REQUEST_WAIT, read.read_line(&mut request))
        .await
        .map_err(|_| Error::Internal("export socket: no request within 10 s".into()))?
        .map_err(io)?;
    if request.trim() != "export" {
        write.write_all(b"unknown request\n").await.map_err(io)?;
        return Ok(());
    }
    let mut dump = Vec::new();
    core.export(|line| {
        dump.extend_from_slice(line.as_bytes());
        dump.push(b'\n');
        Ok(())
    })
    .await?;
    write.write_all(&dump).await.map_err(io)?;
    write.shutdown().await.map_err(io)
}

/// Asks the server on `data_dir` for a dump; hands its lines to `write`.
///
/// # Errors
/// [`Error::Storage`] when no server answers on the socket.
pub fn request_export(data_dir: &Path, mut write: impl FnMut(&str) -> Result<()>) -> Result<usize> {
    use std::io::{BufRead, Write};
    let path = socket_path(data_dir);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(|err| {
        Error::Storage(format!("no latchkey answers on {}: {err}", path.display()))
    })?;
    let io = |err: std::io::Error| Error::Storage(format!("export socket: {err}"));
    stream.write_all(b"export\n").map_err(io)?;
    let mut lines = 0;
    let mut ended = false;
    for line in std::io::BufReader::new(stream).lines() {
        let line = line.map_err(io)?;
        ended = crate::service::is_dump_end(&line);
        write(&line)?;
        lines += 1;
    }
    if !ended {
        return Err(Error::Storage(
            "the server's dump ended early (see the server's log)".into(),
        ));
    }
    Ok(lines)
}
