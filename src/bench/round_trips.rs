//! Counts a service's round trips to PostgreSQL from outside: a TCP proxy between
//! the service and the server that reads the frontend protocol and counts the
//! messages after which a client waits for the server — `Sync` (the end of every
//! extended-protocol exchange: a prepared query, a prepare, a BEGIN sent as a
//! statement) and `Query` (a simple-protocol statement such as `batch_execute`).
//! Whatever the service's code believes it does, this is what crossed the wire.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use super::{pg_config, BenchError, Result};

/// The SSLRequest code: a startup-phase message the server answers with one byte.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

pub struct Counter {
    /// The database URL the service should use: the proxy's address.
    pub url: String,
    count: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Counter {
    /// Listens on a free local port and forwards to the server of `database_url`.
    pub async fn start(database_url: &str) -> Result<Counter> {
        let cfg = pg_config(database_url)?;
        let host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => return Err(BenchError::new("round trips are counted over TCP only")),
        };
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        let upstream = format!("{host}:{port}");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(BenchError::new)?;
        let local = listener.local_addr().map_err(BenchError::new)?;
        let user = cfg.get_user().unwrap_or("postgres");
        let db = cfg.get_dbname().unwrap_or("postgres");
        let url = format!("postgres://{user}@127.0.0.1:{}/{db}", local.port());
        let count = Arc::new(AtomicU64::new(0));
        let task = {
            let count = count.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let count = count.clone();
                    tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(&upstream).await {
                            let _ = pipe(client, server, count).await;
                        }
                    });
                }
            })
        };
        Ok(Counter { url, count, task })
    }

    /// Round trips seen so far, on every connection.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(client: TcpStream, server: TcpStream, count: Arc<AtomicU64>) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, mut client_write) = client.into_split();
    let (mut server_read, server_write) = server.into_split();
    let back = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    });
    let result = forward(BufReader::new(client_read), server_write, &count).await;
    back.abort();
    result
}

/// Client to server, message by message, written on when nothing more is buffered
/// (so a pipelined batch still leaves in one write).
async fn forward(
    mut from: BufReader<OwnedReadHalf>,
    mut to: OwnedWriteHalf,
    count: &AtomicU64,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(8192);
    // Startup phase: untyped, length-prefixed messages up to the StartupMessage
    // itself (an SSL or GSS request is answered and followed by another).
    loop {
        let len = from.read_u32().await?;
        let mut body = vec![0u8; (len as usize).saturating_sub(4)];
        from.read_exact(&mut body).await?;
        to.write_u32(len).await?;
        to.write_all(&body).await?;
        let code = body
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        if code != Some(SSL_REQUEST) && code != Some(GSSENC_REQUEST) {
            break;
        }
    }
    // Then typed messages: one byte of type, a length that counts itself.
    loop {
        let kind = from.read_u8().await?;
        let len = from.read_u32().await?;
        if kind == b'S' || kind == b'Q' {
            count.fetch_add(1, Ordering::Relaxed);
        }
        out.push(kind);
        out.extend_from_slice(&len.to_be_bytes());
        let start = out.len();
        out.resize(start + (len as usize).saturating_sub(4), 0);
        from.read_exact(&mut out[start..]).await?;
        if from.buffer().is_empty() {
            to.write_all(&out).await?;
            out.clear();
        }
    }
}
